"""Row operations on arrays that may be numpy arrays or torch tensors. Torch-free at import:
torch is only touched when the array is already a tensor."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["short_repr", "summarize", "take_rows"]


def take_rows(X: Any, idx: Any) -> Any:
    """Rows ``idx`` of ``X`` (a numpy array, a torch tensor or a nested sequence), as the same
    kind: a tensor's rows are gathered on its own device, anything else becomes a numpy array.

    ``idx`` is an integer array (numpy, or a tensor for a tensor ``X``) or a boolean mask.

    >>> take_rows(np.arange(6).reshape(3, 2), np.array([2, 0]))
    array([[4, 5],
           [0, 1]])
    """
    if hasattr(X, "detach"):  # a torch tensor, so torch is already imported
        import torch

        return X[torch.as_tensor(idx, device=X.device)]
    return np.asarray(X)[np.asarray(idx)]


def summarize(value: Any, *, depth: int = 0) -> str:
    """A short text for ``value``: arrays (numpy or torch) as shape, dtype and range, long
    sequences and mappings cut, floats to 4 significant digits.

    >>> summarize(np.arange(1000.0))
    'array(shape=(1000,), float64, min=0, max=999)'
    >>> summarize({"a": 1.234567, "b": [1, 2]})
    "{'a': 1.235, 'b': [1, 2]}"
    """
    if hasattr(value, "detach") and hasattr(value, "shape"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.size <= 4 and value.ndim <= 1:
            return repr(value.tolist())
        text = f"array(shape={tuple(value.shape)}, {value.dtype}"
        if value.size and np.issubdtype(value.dtype, np.number):
            finite = value[np.isfinite(value)] if np.issubdtype(value.dtype, np.floating) else value
            if finite.size:
                text += f", min={float(finite.min()):.4g}, max={float(finite.max()):.4g}"
        return text + ")"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if depth < 2 and isinstance(value, dict):
        items = list(value.items())
        body = ", ".join(f"{k!r}: {summarize(v, depth=depth + 1)}" for k, v in items[:8])
        return "{" + body + (f", ... +{len(items) - 8}" if len(items) > 8 else "") + "}"
    if depth < 2 and isinstance(value, (list, tuple)) and not isinstance(value, str):
        body = ", ".join(summarize(v, depth=depth + 1) for v in value[:6])
        more = f", ... +{len(value) - 6}" if len(value) > 6 else ""
        return ("[" + body + more + "]") if isinstance(value, list) else \
            ("(" + body + more + ("," if len(value) == 1 else "") + ")")
    import dataclasses

    if depth < 1 and dataclasses.is_dataclass(value) and not isinstance(value, type):
        return short_repr(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def short_repr(obj: Any) -> str:
    """``Name(field=value, ...)`` of a dataclass with every value through :func:`summarize`
    (fields declared with ``repr=False`` left out): a result prints in a few lines, never as
    whole arrays."""
    import dataclasses

    parts = [f"{f.name}={summarize(getattr(obj, f.name))}"
             for f in dataclasses.fields(obj) if f.repr]
    return f"{type(obj).__name__}({', '.join(parts)})"
