"""One place for parameter and array checks, and their error messages.

Every user-facing check raises with the same template, naming the parameter, the function,
what was expected and what was given::

    The 'k' parameter of twonn must be an int in [2, n_samples). Got 1 instead.

Library code never uses ``assert`` for user input.

Torch-free at import: tensors are recognised through ``sys.modules`` (an object can only be a
torch tensor once torch is imported), and torch is imported only inside the functions that
build tensors, so every module can import this one at module level.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "ArrayLike",
    "as_numpy",
    "as_torch",
    "check_array",
    "check_choice",
    "check_float",
    "check_int",
    "check_paired",
    "is_tensor",
    "param_error",
    "resolve_device",
]

ArrayLike = Any  # numpy array, torch tensor, or nested sequence of floats


def is_tensor(X: Any) -> bool:
    """Whether ``X`` is a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(X, torch.Tensor)


def param_error(fn: str, name: str, expected: str, got: Any) -> ValueError:
    """Build the standard error for a bad parameter value."""
    return ValueError(f"The '{name}' parameter of {fn} must be {expected}. Got {got!r} instead.")


def check_int(
    value: Any,
    name: str,
    fn: str,
    *,
    low: int | None = None,
    high: int | None = None,
    high_inclusive: bool = False,
    high_name: str | None = None,
) -> int:
    """Check that ``value`` is an int in ``[low, high)`` (or ``[low, high]``) and return it."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok:
        value = int(value)
        if low is not None and value < low:
            ok = False
        if high is not None and (value > high if high_inclusive else value >= high):
            ok = False
    if not ok:
        lo = "-inf" if low is None else str(low)
        if high is None:
            interval = f"[{lo}, inf)"
        else:
            hi = high_name or str(high)
            if high_name is not None:
                hi = f"{high_name}={high}"
            interval = f"[{lo}, {hi}{']' if high_inclusive else ')'}"
        raise param_error(fn, name, f"an int in {interval}", value)
    return value


def check_float(
    value: Any,
    name: str,
    fn: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Check that ``value`` is a finite real number in the given interval and return it."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = bool(np.isfinite(value))
        if ok and low is not None:
            ok = value >= low if low_inclusive else value > low
        if ok and high is not None:
            ok = value <= high if high_inclusive else value < high
    if not ok:
        lb = "[" if low_inclusive else "("
        rb = "]" if high_inclusive else ")"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise param_error(fn, name, f"a float in {lb}{lo}, {hi}{rb}", value)
    return value


def check_choice(value: Any, name: str, fn: str, options: Iterable[Any]) -> Any:
    """Check that ``value`` is one of ``options`` and return it."""
    options = list(options)
    if value not in options:
        shown = ", ".join(repr(o) for o in options)
        raise param_error(fn, name, f"one of {{{shown}}}", value)
    return value


def check_array(
    X: ArrayLike,
    fn: str,
    *,
    name: str = "X",
    min_samples: int = 1,
    min_features: int = 1,
    allow_nonfinite: bool = False,
) -> np.ndarray | torch.Tensor:
    """Validate a 2-D float matrix of shape ``(n, d)``; return it as numpy or torch, not copied.

    Torch tensors stay torch tensors (on their device); everything else becomes a numpy array.
    Errors name the function, the argument and the bad value: wrong number of dimensions,
    non-float dtype (integers are refused, cast explicitly), empty input, too few rows or
    columns, NaN or infinite entries.
    """
    tensor = is_tensor(X)
    if tensor:
        arr: np.ndarray | torch.Tensor = X.detach()
        is_float = arr.is_floating_point()
        dtype = str(arr.dtype).replace("torch.", "")
    else:
        arr = np.asarray(X)
        is_float = np.issubdtype(arr.dtype, np.floating)
        dtype = str(arr.dtype)
    if arr.ndim != 2:
        raise ValueError(
            f"{fn} expects '{name}' as a 2-D array of shape (n_samples, n_features); "
            f"got an array with {arr.ndim} dimension(s) and shape {tuple(arr.shape)}. "
            + ("Reshape 1-D data with X.reshape(-1, 1)." if arr.ndim == 1 else "")
        )
    if not is_float:
        raise TypeError(
            f"{fn} expects '{name}' with a floating-point dtype (float16/32/64); got dtype {dtype}. "
            f"Cast it explicitly, e.g. X.astype(np.float32)."
        )
    n, d = arr.shape
    if n == 0 or d == 0:
        raise ValueError(f"{fn} got an empty '{name}' of shape {(n, d)}; it needs at least one row and column.")
    if n < min_samples:
        raise ValueError(
            f"{fn} needs at least {min_samples} samples (rows) in '{name}'; got n_samples={n}."
        )
    if d < min_features:
        raise ValueError(
            f"{fn} needs at least {min_features} features (columns) in '{name}'; got n_features={d}."
        )
    if not allow_nonfinite:
        finite = arr.isfinite() if tensor else np.isfinite(arr)
        if not bool(finite.all()):
            bad = (~finite).nonzero()
            first = tuple(int(b[0]) for b in bad) if not tensor else tuple(
                int(v) for v in bad[0]
            )
            count = int((~finite).sum())
            raise ValueError(
                f"{fn} got {count} non-finite value(s) (NaN or inf) in '{name}', the first at "
                f"(row, column)={first}. Remove or impute them first."
            )
    return arr


def check_paired(X: Any, Y: Any, fn: str, *, names: Sequence[str] = ("X", "Y")) -> None:
    """Check that two validated matrices describe the same inputs (same number of rows)."""
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"{fn} compares representations of the same inputs, so '{names[0]}' and '{names[1]}' "
            f"must have the same number of rows; got {X.shape[0]} and {Y.shape[0]}."
        )


def as_numpy(X: ArrayLike, dtype: Any = None) -> np.ndarray:
    """Return ``X`` as a numpy array (moving torch tensors to the CPU)."""
    if is_tensor(X):
        X = X.detach().cpu()
        if X.dtype == sys.modules["torch"].bfloat16:
            X = X.float()
        X = X.numpy()
    X = np.asarray(X)
    return X if dtype is None else X.astype(dtype, copy=False)


def as_torch(X: ArrayLike, dtype: torch.dtype | None = None, device: Any = None) -> torch.Tensor:
    """Return ``X`` as a torch tensor without copying when possible."""
    import torch

    if not isinstance(X, torch.Tensor):
        X = torch.from_numpy(np.ascontiguousarray(X))
    return X.to(dtype=dtype if dtype is not None else X.dtype, device=device or X.device)


def resolve_device(X: Any, device: Any = None) -> torch.device:
    """``device`` if given, else the device of a tensor input, else the CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return X.device if is_tensor(X) else torch.device("cpu")
