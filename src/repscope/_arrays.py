"""Row operations on arrays that may be numpy arrays or torch tensors. Torch-free at import:
torch is only touched when the array is already a tensor."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["take_rows"]


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
