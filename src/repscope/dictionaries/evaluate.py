"""Evaluation of sparse dictionaries: plain functions, one documented definition each.

Conventions: ``X`` (n, d) are the evaluation activations, ``X_hat`` (n, d) their
reconstruction, ``Z`` (n, d_sae) the codes, ``W`` (d_sae, d) decoder directions (one per row).
All reductions are in float64.

Libraries disagree on "variance explained"; here the one definition is
``FVU = sum_ij (X_ij - X_hat_ij)^2 / sum_ij (X_ij - mean_i X_ij)^2`` over the whole evaluation
set, so ``1 - FVU`` equals ``sklearn.metrics.r2_score(X, X_hat, multioutput="variance_weighted")``,
the mean reconstruction scores FVU = 1 and the identity FVU = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from repscope._validate import as_numpy, as_torch, check_array, check_float, check_int
from repscope.results import Estimate, result_type

__all__ = [
    "SAEEvaluation",
    "cosine",
    "dead_fraction",
    "decoder_max_cosine",
    "dense_fraction",
    "evaluate_sae",
    "feature_density_histogram",
    "firing_frequency",
    "fvu",
    "l0",
    "match_dictionaries",
    "mean_max_cosine",
    "mse",
    "shrinkage",
]


def _pair(X: Any, X_hat: Any, fn: str) -> tuple[np.ndarray, np.ndarray]:
    X = as_numpy(check_array(X, fn), np.float64)
    X_hat = as_numpy(check_array(X_hat, fn, name="X_hat"), np.float64)
    if X.shape != X_hat.shape:
        raise ValueError(f"{fn} needs 'X' and 'X_hat' of the same shape; got {X.shape} and {X_hat.shape}.")
    return X, X_hat


def fvu(X: Any, X_hat: Any) -> float:
    """Fraction of variance unexplained, ``sum ||x - x_hat||^2 / sum ||x - mean(X)||^2``."""
    X, X_hat = _pair(X, X_hat, "fvu")
    total = ((X - X.mean(0)) ** 2).sum()
    if total == 0:
        raise ValueError("fvu is undefined when every column of 'X' is constant (zero total variance).")
    return float(((X - X_hat) ** 2).sum() / total)


def mse(X: Any, X_hat: Any) -> float:
    """Mean squared error per entry, ``sum ||x - x_hat||^2 / (n d)``."""
    X, X_hat = _pair(X, X_hat, "mse")
    return float(((X - X_hat) ** 2).mean())


def cosine(X: Any, X_hat: Any) -> float:
    """Mean over rows of ``cos(x_i, x_hat_i)`` (rows with a zero norm count as 0)."""
    X, X_hat = _pair(X, X_hat, "cosine")
    den = np.linalg.norm(X, axis=1) * np.linalg.norm(X_hat, axis=1)
    return float(np.where(den > 0, (X * X_hat).sum(1) / np.where(den > 0, den, 1), 0.0).mean())


def shrinkage(X: Any, X_hat: Any) -> float:
    """Relative reconstruction bias ``gamma = sum ||x_hat||^2 / sum <x_hat, x>`` (Wright &
    Sharkey 2024): the scale ``1/gamma`` that best maps ``x_hat`` onto ``x``. 1 means no
    shrinkage; below 1, reconstructions are systematically too short (typical of L1 SAEs)."""
    X, X_hat = _pair(X, X_hat, "shrinkage")
    return float((X_hat**2).sum() / (X_hat * X).sum())


def l0(Z: Any) -> np.ndarray:
    """Number of non-zero codes per row, (n,) ints; its mean is the L0 of an SAE."""
    Z = check_array(Z, "l0", name="Z")
    return as_numpy((as_torch(Z) != 0).sum(1)).astype(np.int64)


def firing_frequency(Z: Any) -> np.ndarray:
    """Fraction of rows on which each latent is non-zero, (d_sae,)."""
    Z = check_array(Z, "firing_frequency", name="Z")
    return as_numpy((as_torch(Z) != 0).double().mean(0))


def dead_fraction(freq: np.ndarray) -> float:
    """Fraction of latents that never fire in the evaluation window (``freq == 0``).

    The window is the ``n`` rows the frequencies were computed on: state it with the number."""
    return float((np.asarray(freq) == 0).mean())


def dense_fraction(freq: np.ndarray, threshold: float = 0.1) -> float:
    """Fraction of latents firing on more than ``threshold`` of the rows (dense latents)."""
    check_float(threshold, "threshold", "dense_fraction", low=0.0, high=1.0)
    return float((np.asarray(freq) > threshold).mean())


def feature_density_histogram(freq: np.ndarray, bins: int = 40, low: float = -8.0) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of ``log10(firing frequency)`` of the live latents over ``[low, 0]``;
    returns ``(counts, edges)``. Dead latents are counted by :func:`dead_fraction`."""
    check_int(bins, "bins", "feature_density_histogram", low=1)
    freq = np.asarray(freq, dtype=np.float64)
    logf = np.log10(freq[freq > 0])
    return np.histogram(np.clip(logf, low, 0.0), bins=bins, range=(low, 0.0))


def _unit_rows(W: Any, name: str, fn: str) -> torch.Tensor:
    W = as_torch(check_array(W, fn, name=name), torch.float64)
    norms = W.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError(f"{fn} got a zero row in '{name}'; directions must be non-zero.")
    return W / norms


def decoder_max_cosine(W: Any, block: int = 2048) -> np.ndarray:
    """For each decoder direction, the largest ``|cos|`` with any other direction, (d_sae,).

    Small values mean a quasi-orthogonal dictionary; values near 1 flag duplicated latents.
    Computed in blocks of rows (never a full d_sae x d_sae matrix)."""
    U = _unit_rows(W, "W", "decoder_max_cosine")  # (m, d)
    out = torch.empty(U.shape[0], dtype=torch.float64)
    for s in range(0, U.shape[0], block):
        C = (U[s : s + block] @ U.T).abs()  # (b, m)
        C[torch.arange(C.shape[0]), torch.arange(s, s + C.shape[0])] = -1.0
        out[s : s + block] = C.max(1).values
    return out.numpy()


def mean_max_cosine(W_true: Any, W: Any) -> float:
    """Recovery of known directions: mean over rows of ``W_true`` of the best ``|cos|`` with
    any row of ``W`` (1 when every true direction is found)."""
    A = _unit_rows(W_true, "W_true", "mean_max_cosine")
    B = _unit_rows(W, "W", "mean_max_cosine")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"mean_max_cosine needs directions of the same width; got {A.shape[1]} and {B.shape[1]}.")
    return float((A @ B.T).abs().max(1).values.mean())


def match_dictionaries(W_a: Any, W_b: Any) -> tuple[float, np.ndarray, np.ndarray]:
    """Stability across seeds: one-to-one Hungarian matching (``linear_sum_assignment``)
    maximising the summed cosine between rows of ``W_a`` and ``W_b``. Returns the mean matched
    cosine, and the matched row indices of ``W_a`` and ``W_b``."""
    from scipy.optimize import linear_sum_assignment

    A = _unit_rows(W_a, "W_a", "match_dictionaries")
    B = _unit_rows(W_b, "W_b", "match_dictionaries")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"match_dictionaries needs directions of the same width; got {A.shape[1]} and {B.shape[1]}.")
    C = (A @ B.T).numpy()  # (m_a, m_b)
    ia, ib = linear_sum_assignment(C, maximize=True)
    return float(C[ia, ib].mean()), ia, ib


@result_type
@dataclass(frozen=True)
class SAEEvaluation(Estimate):
    """Evaluation of one SAE on one set of activations; ``value`` is the FVU."""

    mse: float = float("nan")
    "Mean squared error per entry, ``sum ||x - x_hat||^2 / (n d)``."
    sq_error_per_token: float = float("nan")
    "Squared error per row (token), ``sum ||x - x_hat||^2 / n`` (SAELens' ``mse``)."
    explained_variance: float = float("nan")
    "Centred, ``1 - FVU`` (SAELens' ``explained_variance``; sparsify reports ``fvu``)."
    explained_variance_uncentred: float = float("nan")
    "``1 - sum ||x - x_hat||^2 / sum ||x||^2`` (no mean removed)."
    l2_ratio: float = float("nan")
    "Mean over rows of ``||x_hat|| / ||x||`` (SAELens' and SAEBench's ``l2_ratio``)."
    cosine: float = float("nan")
    "Mean cosine between inputs and reconstructions."
    l0_mean: float = float("nan")
    "Mean number of active latents per row."
    dead_fraction: float = float("nan")
    "Latents that never fired in the ``n_samples``-row window."
    dense_fraction: float = float("nan")
    "Latents firing on more than ``params['dense_threshold']`` of the rows."
    shrinkage: float = float("nan")
    "Relative reconstruction bias gamma (1 = none)."
    decoder_max_cosine_mean: float = float("nan")
    "Mean over latents of the largest |cos| with another decoder direction."
    diagnostics: dict[str, Any] = field(default_factory=dict)
    "l0_hist, density_counts/density_edges, firing_frequency, decoder_max_cosine."


@torch.no_grad()
def evaluate_sae(sae: Any, X: Any, *, batch_size: int = 4096, dense_threshold: float = 0.1,
                 split: str = "unspecified") -> SAEEvaluation:
    """Every metric above for ``sae`` on ``X`` (n, d_in), streamed in batches. ``split`` says
    which rows ``X`` are (``"held-out"``: never trained on; ``"train"``: in-sample) and is
    recorded in ``params``: evaluate on :attr:`TrainResult.heldout_rows`."""
    X = check_array(X, "evaluate_sae", min_samples=2)
    n = X.shape[0]
    device = sae.W_dec.device
    sums = {"sq_err": 0.0, "x": np.zeros(X.shape[1]), "xx": 0.0, "cos": 0.0, "hh": 0.0, "hx": 0.0,
            "ratio": 0.0}
    fired = torch.zeros(sae.d_sae, dtype=torch.float64)
    l0s = []
    for s in range(0, n, batch_size):
        x = as_torch(X[s : s + batch_size]).to(device=device, dtype=sae.W_dec.dtype)
        z = sae.encode(x)
        h = sae.decode(z).double().cpu()
        x = x.double().cpu()
        sums["sq_err"] += float((x - h).pow(2).sum())
        sums["x"] += x.sum(0).numpy()
        sums["xx"] += float(x.pow(2).sum())
        den = x.norm(dim=1) * h.norm(dim=1)
        sums["cos"] += float(torch.where(den > 0, (x * h).sum(1) / den.clamp_min(1e-300), 0.0).sum())
        sums["hh"] += float(h.pow(2).sum())
        sums["hx"] += float((h * x).sum())
        xn = x.norm(dim=1)
        sums["ratio"] += float(torch.where(xn > 0, h.norm(dim=1) / xn.clamp_min(1e-300), 0.0).sum())
        nz = (z != 0).cpu()
        fired += nz.double().sum(0)
        l0s.append(nz.sum(1).numpy())
    total = sums["xx"] - float((sums["x"] ** 2).sum()) / n  # sum of squared deviations
    freq = (fired / n).numpy()
    l0_all = np.concatenate(l0s)
    counts, edges = feature_density_histogram(freq)
    dmc = decoder_max_cosine(sae.W_dec.detach().cpu())
    return SAEEvaluation(
        measure="sae_evaluation", value=sums["sq_err"] / total, n_samples=n,
        params={"architecture": sae.architecture, "d_in": sae.d_in, "d_sae": sae.d_sae,
                "dense_threshold": dense_threshold, "window_rows": n, "split": split},
        mse=sums["sq_err"] / (n * X.shape[1]),
        sq_error_per_token=sums["sq_err"] / n,
        explained_variance=1.0 - sums["sq_err"] / total,
        explained_variance_uncentred=1.0 - sums["sq_err"] / sums["xx"],
        l2_ratio=sums["ratio"] / n,
        cosine=sums["cos"] / n, l0_mean=float(l0_all.mean()),
        dead_fraction=dead_fraction(freq), dense_fraction=dense_fraction(freq, dense_threshold),
        shrinkage=sums["hh"] / sums["hx"], decoder_max_cosine_mean=float(dmc.mean()),
        diagnostics={"l0_hist": np.bincount(l0_all), "density_counts": counts,
                     "density_edges": edges, "firing_frequency": freq, "decoder_max_cosine": dmc},
    )
