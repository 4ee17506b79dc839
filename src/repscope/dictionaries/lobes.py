"""Co-occurrence "lobes" of SAE latents (Li, Michaud, Baek, Engels, Sun and Tegmark 2024, "The
geometry of concepts: sparse autoencoder feature structure", Entropy 27(4):344, section 4).

Latents that fire in the same stretches of text form functional groups ("lobes", e.g. math and
code). The recipe, as in the paper:

1. **Windows.** Each document's token rows are cut into consecutive blocks of ``window`` rows
   (the paper: 256 tokens, only full blocks). A latent *occurs* in a window when its code exceeds
   ``threshold`` on at least one row of it. :func:`cooccurrence` counts, over ``N`` windows, the
   windows where each latent occurs (``c_i``) and where each pair occurs together (``n11``).
2. **Affinity.** From the 2x2 table of a pair (``n11``, ``n10 = c_i - n11``, ``n01 = c_j - n11``,
   ``n00 = N - c_i - c_j + n11``), :func:`affinity` gives the phi coefficient (the paper's best
   performer) ``(n11 n00 - n10 n01) / sqrt(c_i (N - c_i) c_j (N - c_j))``, or Jaccard
   ``n11 / (n11 + n10 + n01)``, Dice ``2 n11 / (2 n11 + n10 + n01)``, the overlap coefficient
   ``n11 / min(c_i, c_j)`` or the simple matching coefficient ``(n11 + n00) / N``.
3. **Spectral clustering** of the affinity graph into ``n_lobes`` groups (:func:`lobes`). Phi is
   negative for pairs that avoid each other; ``negative="clip"`` (default) sets those edges to 0,
   ``"shift"`` uses ``phi + 1`` as the paper's code does (every pair then keeps an edge of weight
   about 1, which blurs the blocks). The result records Newman's weighted modularity ``Q`` of the
   partition on the affinity graph.
4. **Spatial modularity** (:func:`spatial_modularity`): are co-occurrence lobes also close in the
   decoder geometry? The decoder directions are clustered spectrally on their cosine affinity
   ``max(cos, 0)`` into as many groups, and the adjusted mutual information (AMI) between the two
   labelings is compared with its permutation null (lobe labels shuffled across latents).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from repscope._validate import as_numpy, check_choice, check_float, check_int, param_error

__all__ = ["AFFINITIES", "Cooccurrence", "Lobes", "SpatialModularity", "affinity", "cooccurrence",
           "lobes", "spatial_modularity", "window_ids"]

log = logging.getLogger(__name__)

AFFINITIES = ("phi", "jaccard", "dice", "overlap", "smc")


@dataclass(frozen=True)
class Cooccurrence:
    """Window counts of a set of latents."""

    latents: np.ndarray
    "(m,) the latent indices counted (rows/columns of ``both``)."
    n_windows: int
    "Windows counted (``N``)."
    count: np.ndarray
    "(m,) windows in which each latent occurs (``c_i``)."
    both: np.ndarray
    "(m, m) windows in which both latents occur (``n11``; the diagonal is ``count``)."
    params: dict[str, Any]
    "window, drop_partial, threshold, n_rows, n_documents."


def window_ids(doc_ids: Any, window: int, *, drop_partial: bool = False) -> np.ndarray:
    """Window index of each row: rows of one document (consecutive, equal ``doc_ids``) are cut
    into blocks of ``window`` rows, numbered 0, 1, ... in row order; ``-1`` marks rows of a
    dropped partial block (``drop_partial``)."""
    fn = "window_ids"
    window = check_int(window, "window", fn, low=1)
    doc = np.asarray(doc_ids).reshape(-1)
    n = doc.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    start = np.r_[True, doc[1:] != doc[:-1]]  # (n,) first row of each run
    run = np.cumsum(start) - 1  # (n,) run number
    first = np.flatnonzero(start)
    pos = np.arange(n) - first[run]  # (n,) position within the document run
    block = pos // window
    lengths = np.diff(np.r_[first, n])  # (runs,)
    blocks_per_run = -(-lengths // window)
    offsets = np.r_[0, np.cumsum(blocks_per_run)[:-1]]
    ids = offsets[run] + block
    if drop_partial:
        full = (block + 1) * window <= lengths[run]
        kept = np.unique(ids[full])
        remap = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
        remap[kept] = np.arange(kept.size)
        ids = remap[ids]
    return ids.astype(np.int64)


def _codes_batches(data: Any, sae: Any, layer: str | None, batch_size: int, bounds: np.ndarray,
                   fn: str) -> Any:
    """Yield ``(lo, hi, codes)`` with ``hi`` on window boundaries (``bounds`` = sorted row
    indices where a new window starts, plus ``n``)."""
    if sae is None:
        codes = data
        n = codes.shape[0]
        read = lambda lo, hi: torch.as_tensor(as_numpy(codes[lo:hi]))  # noqa: E731
    else:
        from repscope.dictionaries.source import as_source

        src = as_source(data, layer, fn)
        n = src.n_rows
        dev = sae.W_dec.device

        def read(lo: int, hi: int) -> torch.Tensor:
            with torch.no_grad():
                x = torch.from_numpy(src.read(np.arange(lo, hi))).to(dev)
                return sae.encode(x).float().cpu()

    lo = 0
    while lo < n:
        target = min(lo + batch_size, n)
        hi = int(bounds[np.searchsorted(bounds, target, side="left")])  # next window boundary
        yield lo, hi, read(lo, hi)
        lo = hi


def cooccurrence(data: Any, *, sae: Any = None, layer: str | None = None, doc_ids: Any = None,
                 window: int = 256, drop_partial: bool = False, threshold: float = 0.0,
                 latents: Any = None, max_latents: int = 2048, batch_size: int = 4096) -> Cooccurrence:
    """Count window occurrences and co-occurrences of latents (see the module docstring).

    ``data``: codes ``(n, d_sae)`` (array or tensor) when ``sae`` is None, else activations
    (array, or a store with ``layer``) encoded by ``sae``. ``doc_ids`` (n,): the document of each
    row (rows of a document consecutive); None = one document. ``latents``: the latents to count
    (default: those occurring in some window, the ``max_latents`` most frequent, which costs a
    first counting pass). ``drop_partial``: drop a document's last block when shorter than
    ``window`` (the paper's choice, made for 1024-token documents; with short documents keep it
    so that each short document is one window).
    """
    fn = "cooccurrence"
    window = check_int(window, "window", fn, low=1)
    threshold = check_float(threshold, "threshold", fn)
    max_latents = check_int(max_latents, "max_latents", fn, low=2)
    batch_size = check_int(batch_size, "batch_size", fn, low=1)
    if sae is None:
        if not hasattr(data, "shape") or len(data.shape) != 2:
            raise ValueError(f"{fn} expects codes of shape (n, d_sae) when no sae= is given; got "
                             f"{type(data).__name__} of shape {getattr(data, 'shape', None)}.")
        n, d_sae = int(data.shape[0]), int(data.shape[1])
    else:
        from repscope.dictionaries.source import as_source

        n, d_sae = as_source(data, layer, fn).n_rows, int(sae.d_sae)
    if n == 0:
        raise ValueError(f"{fn} got no rows.")
    doc = np.zeros(n, dtype=np.int64) if doc_ids is None else np.asarray(doc_ids).reshape(-1)
    if doc.size != n:
        raise param_error(fn, "doc_ids", f"one document id per row (length {n})", f"length {doc.size}")
    wid = window_ids(doc, window, drop_partial=drop_partial)  # (n,)
    change = np.flatnonzero(np.r_[True, wid[1:] != wid[:-1]])
    bounds = np.r_[change, n]
    n_windows = int(wid.max()) + 1 if (wid >= 0).any() else 0
    if n_windows == 0:
        raise ValueError(f"{fn}: no complete window of {window} rows (drop_partial=True); use a "
                         f"smaller window or drop_partial=False.")

    def occurrences(cols: torch.Tensor | None) -> Any:
        for lo, hi, z in _codes_batches(data, sae, layer, batch_size, bounds, fn):
            w = torch.from_numpy(wid[lo:hi])  # (b,)
            keep = w >= 0
            z, w = z[keep], w[keep]
            if cols is not None:
                z = z[:, cols]
            if w.numel() == 0:
                continue
            w = w - w.min()
            occ = torch.zeros(int(w.max()) + 1, z.shape[1], dtype=torch.float64)
            occ.index_add_(0, w, (z > threshold).double())
            yield (occ > 0).double()  # (windows in batch, m)

    if latents is None:
        total = torch.zeros(d_sae, dtype=torch.float64)
        for occ in occurrences(None):
            total += occ.sum(0)
        live = np.flatnonzero(total.numpy() > 0)
        order = np.argsort(-total.numpy()[live], kind="stable")
        latents = np.sort(live[order][:max_latents])
        if live.size > max_latents:
            log.info("%s: counting the %d most frequent of %d occurring latents", fn, max_latents, live.size)
    latents = np.asarray(latents, dtype=np.int64).reshape(-1)
    if latents.size < 2 or latents.min() < 0 or latents.max() >= d_sae:
        raise param_error(fn, "latents", f"at least 2 latent indices in [0, {d_sae})", latents[:8].tolist())
    cols = torch.from_numpy(latents)
    m = latents.size
    both = torch.zeros(m, m, dtype=torch.float64)
    for occ in occurrences(cols):
        both += occ.T @ occ  # (m, m) exact integer counts in float64
    both_np = both.numpy().round().astype(np.int64)
    return Cooccurrence(
        latents=latents, n_windows=n_windows, count=np.diag(both_np).copy(), both=both_np,
        params={"window": window, "drop_partial": drop_partial, "threshold": threshold,
                "n_rows": n, "n_documents": int(np.unique(doc).size)})


def affinity(cooc: Cooccurrence, kind: str = "phi") -> np.ndarray:
    """(m, m) affinity of every pair of counted latents (see the module docstring); 0 where a
    coefficient is undefined (a latent occurring in no or in every window)."""
    check_choice(kind, "kind", "affinity", AFFINITIES)
    N = float(cooc.n_windows)
    n11 = cooc.both.astype(np.float64)  # (m, m)
    c = cooc.count.astype(np.float64)  # (m,)
    ci, cj = c[:, None], c[None, :]
    n10, n01 = ci - n11, cj - n11
    n00 = N - ci - cj + n11
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "phi":
            out = (n11 * n00 - n10 * n01) / np.sqrt(ci * (N - ci) * cj * (N - cj))
        elif kind == "jaccard":
            out = n11 / (n11 + n10 + n01)
        elif kind == "dice":
            out = 2 * n11 / (2 * n11 + n10 + n01)
        elif kind == "overlap":
            out = n11 / np.minimum(ci, cj)
        else:
            out = (n11 + n00) / N
    return np.where(np.isfinite(out), out, 0.0)


def _spectral(A: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not fully connected.*")
        model = SpectralClustering(n_clusters=n_clusters, affinity="precomputed",
                                   assign_labels="kmeans", random_state=seed, n_init=10)
        return model.fit_predict(A).astype(np.int64)


def modularity(A: np.ndarray, labels: np.ndarray) -> float:
    """Newman's modularity of a partition of a weighted graph (self-loops ignored):
    ``Q = sum_c [W_c / W - (S_c / 2W)^2]`` with ``W`` the total edge weight, ``W_c`` the weight
    inside group ``c`` and ``S_c`` the summed strength of its nodes."""
    A = np.array(A, dtype=np.float64)
    np.fill_diagonal(A, 0.0)
    two_w = A.sum()
    if two_w <= 0:
        return float("nan")
    strength = A.sum(1)
    q = 0.0
    for c in np.unique(labels):
        idx = labels == c
        q += A[np.ix_(idx, idx)].sum() / two_w - (strength[idx].sum() / two_w) ** 2
    return float(q)


@dataclass(frozen=True)
class Lobes:
    """A partition of latents into co-occurrence lobes."""

    latents: np.ndarray
    "(m,) latent indices."
    labels: np.ndarray
    "(m,) lobe of each latent (0 .. n_lobes - 1, numbered by decreasing size)."
    sizes: np.ndarray
    "(n_lobes,) latents per lobe."
    modularity: float
    "Newman's weighted modularity of the partition on the affinity graph (0: no better than chance)."
    affinity: np.ndarray
    "(m, m) the affinity clustered (after the ``negative`` rule)."
    params: dict[str, Any]
    "kind, negative, n_lobes, seed and the co-occurrence parameters."


def lobes(cooc: Cooccurrence, n_lobes: int, *, kind: str = "phi", negative: str = "clip",
          seed: int = 0) -> Lobes:
    """Spectral clustering of the latents' co-occurrence affinity into ``n_lobes`` lobes."""
    fn = "lobes"
    m = cooc.latents.size
    n_lobes = check_int(n_lobes, "n_lobes", fn, low=2, high=m, high_name="number of latents")
    check_choice(negative, "negative", fn, ("clip", "shift"))
    A = affinity(cooc, kind)
    A = np.clip(A, 0.0, None) if negative == "clip" else A + 1.0
    A = (A + A.T) / 2
    np.fill_diagonal(A, A.max() if A.size else 1.0)
    labels = _relabel(_spectral(A, n_lobes, seed))
    return Lobes(latents=cooc.latents, labels=labels, sizes=np.bincount(labels, minlength=n_lobes),
                 modularity=modularity(A, labels), affinity=A,
                 params={"kind": kind, "negative": negative, "n_lobes": n_lobes, "seed": seed,
                         "n_windows": cooc.n_windows, **cooc.params})


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters by decreasing size (ties by first appearance)."""
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    remap = np.empty(uniq.max() + 1, dtype=np.int64)
    remap[uniq[order]] = np.arange(uniq.size)
    return remap[labels]


@dataclass(frozen=True)
class SpatialModularity:
    """Agreement between co-occurrence lobes and decoder-geometry clusters."""

    ami: float
    "Adjusted mutual information between the lobes and the geometric clusters."
    null_mean: float
    "Mean AMI over the permutation null (lobe labels shuffled across latents)."
    null_std: float
    "Its standard deviation."
    p_value: float
    "``(1 + #{null >= ami}) / (1 + n_perm)``."
    geometric_labels: np.ndarray
    "(m,) the decoder-cosine clusters."
    params: dict[str, Any]


def spatial_modularity(lobes_: Lobes, W_dec: Any, *, n_perm: int = 200, seed: int = 0) -> SpatialModularity:
    """Do co-occurrence lobes sit together in decoder space? ``W_dec`` (d_sae, d_in): the full
    decoder (rows ``lobes_.latents`` are used) or exactly those rows."""
    from sklearn.metrics import adjusted_mutual_info_score

    fn = "spatial_modularity"
    n_perm = check_int(n_perm, "n_perm", fn, low=1)
    W = as_numpy(W_dec, np.float64)
    if W.ndim != 2:
        raise param_error(fn, "W_dec", "a 2-D (d_sae, d_in) array", f"shape {W.shape}")
    m = lobes_.latents.size
    if W.shape[0] != m:
        if W.shape[0] <= lobes_.latents.max():
            raise param_error(fn, "W_dec", f"the decoder with a row for every latent (>{lobes_.latents.max()})",
                              f"{W.shape[0]} rows")
        W = W[lobes_.latents]
    U = W / np.linalg.norm(W, axis=1, keepdims=True).clip(1e-300)
    C = np.clip(U @ U.T, 0.0, None)  # (m, m)
    n_groups = int(lobes_.sizes.size)
    geo = _relabel(_spectral(C, n_groups, seed))
    ami = float(adjusted_mutual_info_score(lobes_.labels, geo))
    rng = np.random.default_rng(seed)
    null = np.array([adjusted_mutual_info_score(rng.permutation(lobes_.labels), geo) for _ in range(n_perm)])
    return SpatialModularity(ami=ami, null_mean=float(null.mean()), null_std=float(null.std(ddof=1)) if n_perm > 1 else 0.0,
                             p_value=float((1 + (null >= ami).sum()) / (1 + n_perm)),
                             geometric_labels=geo,
                             params={"n_perm": n_perm, "seed": seed, "affinity": "max(cos, 0)",
                                     "n_groups": n_groups})
