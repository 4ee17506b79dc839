"""Blockwise ranking primitives shared by every exact search: query blocks that fit the memory
budget, and the exact two-stage selection of each row's smallest ranking values."""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_MEMORY_BUDGET = 256 * 2**20
"Bytes allowed for one block of the ranking matrix (the ``memory_budget`` default)."
_EXTRA_CANDIDATES = 4  # float32 candidates beyond k, re-ranked with exact distances


def _blocks(n_query: int, n_ref: int, budget: int, itemsize: int):
    """(lo, hi) query blocks whose (b, n_ref) matrix fits ``budget`` with topk workspace."""
    b = max(1, min(n_query, budget // (2 * n_ref * itemsize)))
    for lo in range(0, n_query, b):
        yield lo, min(lo + b, n_query)


def _contiguous(q: np.ndarray) -> bool:
    return q.size > 0 and int(q[-1]) - int(q[0]) == q.size - 1


def _smallest(R: torch.Tensor, c: int, group: int = 8) -> torch.Tensor:
    """(b, c) column indices of the ``c`` smallest entries of each row of ``R`` (b, n), unordered.

    Exact two-stage selection, cheaper than ``topk`` over whole rows on the CPU: the columns
    are split into ``m = n // group`` strided groups ``{j, j + m, j + 2m, ...}``, whose minima
    take one vectorised pass; the ``c`` smallest entries of a row all lie in its ``c`` groups
    with the smallest minima (an entry in any other group has ``c`` distinct smaller-or-equal
    entries, the minima of those groups), so ``topk`` then runs on ``n / group`` minima and on
    the ``c * group`` members of the chosen groups (plus the ``n % group`` tail columns).
    """
    b, n = R.shape
    m = n // group
    if m < 8 * c:
        return torch.topk(R, c, dim=1, largest=False, sorted=False).indices
    minima = R[:, : m * group].view(b, group, m).amin(1)  # (b, m)
    gid = torch.topk(minima, c, dim=1, largest=False, sorted=False).indices  # (b, c)
    step = torch.arange(group, device=R.device) * m  # (group,)
    cols = (gid[:, :, None] + step).reshape(b, c * group)  # (b, c * group)
    if m * group < n:
        tail = torch.arange(m * group, n, device=R.device)
        cols = torch.cat([cols, tail.expand(b, -1)], 1)
    sel = torch.topk(torch.gather(R, 1, cols), c, dim=1, largest=False, sorted=False).indices
    return torch.gather(cols, 1, sel)
