"""Inspect what SAE latents respond to: top-activating rows, quantile samples, contexts, and
"SAE embeddings" comparisons of two data sets.

One streaming pass (:func:`feature_stats`) collects, per latent: firing count, sum and maximum
of its activation, the ``top_k`` rows with the largest activation, and ``n_random`` rows drawn
uniformly among the rows where it fires (each firing gets a seeded random key; the smallest
keys are kept, a reservoir sample that is the same whatever the batch size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from repscope._validate import check_int
from repscope.dictionaries.source import as_source

__all__ = ["FeatureStats", "compare_datasets", "context_rows", "feature_stats", "quantile_samples",
           "token_context"]


@dataclass(frozen=True)
class FeatureStats:
    """Per-latent summaries over ``n_rows`` rows (arrays indexed by latent)."""

    n_rows: int
    "Rows streamed (the window of the frequencies)."
    count: np.ndarray
    "(d_sae,) rows on which the latent fired."
    mean_active: np.ndarray
    "(d_sae,) mean activation over the rows where it fired (0 if never)."
    top_values: np.ndarray
    "(d_sae, top_k) largest activations, descending (0 where fewer firings)."
    top_rows: np.ndarray
    "(d_sae, top_k) their row indices (-1 where fewer firings)."
    sample_values: np.ndarray
    "(d_sae, n_random) activations of uniformly sampled firing rows (NaN where fewer)."
    sample_rows: np.ndarray
    "(d_sae, n_random) their row indices (-1 where fewer)."

    @property
    def frequency(self) -> np.ndarray:
        return self.count / self.n_rows


def _merge_top(vals: torch.Tensor, rows: torch.Tensor, new_v: torch.Tensor, new_r: torch.Tensor, k: int,
               largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.cat([vals, new_v], 0)  # (k + b, d_sae)
    r = torch.cat([rows, new_r], 0)
    top = torch.topk(v, min(k, v.shape[0]), dim=0, largest=largest)
    return top.values, torch.gather(r, 0, top.indices)


@torch.no_grad()
def feature_stats(sae: Any, data: Any, *, layer: str | None = None, top_k: int = 20, n_random: int = 50,
                  batch_size: int = 4096, seed: int = 0) -> FeatureStats:
    """Stream ``data`` (array or ActivationStore layer) through ``sae.encode`` once."""
    src = as_source(data, layer, "feature_stats")
    top_k = check_int(top_k, "top_k", "feature_stats", low=1)
    n_random = check_int(n_random, "n_random", "feature_stats", low=0)
    m = sae.d_sae
    count = torch.zeros(m, dtype=torch.float64)
    total = torch.zeros(m, dtype=torch.float64)
    tv, tr = torch.empty(0, m), torch.empty(0, m, dtype=torch.int64)
    sk, sv, sr = torch.empty(0, m), torch.empty(0, m), torch.empty(0, m, dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed)
    for s in range(0, src.n_rows, batch_size):
        rows = np.arange(s, min(s + batch_size, src.n_rows))
        z = sae.encode(torch.from_numpy(src.read(rows)).to(sae.W_dec.device)).float().cpu()  # (b, m)
        r = torch.from_numpy(rows)[:, None].expand_as(z)
        fired = z > 0
        count += fired.double().sum(0)
        total += z.double().sum(0)
        tv, tr = _merge_top(tv, tr, z, r, top_k, largest=True)
        if n_random:
            keys = torch.where(fired, torch.rand(z.shape, generator=gen), torch.full_like(z, float("inf")))
            allk, allv, allr = torch.cat([sk, keys]), torch.cat([sv, z]), torch.cat([sr, r])
            keep = torch.topk(allk, min(n_random, allk.shape[0]), dim=0, largest=False).indices
            sk, sv, sr = (torch.gather(t, 0, keep) for t in (allk, allv, allr))
    valid = tv > 0
    s_valid = torch.isfinite(sk)
    return FeatureStats(
        n_rows=src.n_rows, count=count.numpy().astype(np.int64),
        mean_active=(total / count.clamp_min(1)).numpy(),
        top_values=torch.where(valid, tv, 0).T.numpy(), top_rows=torch.where(valid, tr, -1).T.numpy(),
        sample_values=torch.where(s_valid, sv, float("nan")).T.numpy(),
        sample_rows=torch.where(s_valid, sr, -1).T.numpy(),
    )


def quantile_samples(stats: FeatureStats, feature: int, n_bins: int = 4, per_bin: int = 3) -> list[dict[str, Any]]:
    """Rows sampled from activation-quantile intervals of one latent: the uniform sample of
    firing rows, sorted, is split into ``n_bins`` groups of (nearly) equal size, ``per_bin`` rows
    each (lowest activations first). Each item: ``{"low", "high", "q_low", "q_high", "rows",
    "values"}`` where ``[low, high]`` is the smallest and largest activation of the group (so
    every sample lies inside its printed interval) and ``q_low``-``q_high`` the share of the
    sample below the group (the quantile range, in [0, 1])."""
    check_int(feature, "feature", "quantile_samples", low=0, high=len(stats.count), high_name="d_sae")
    v, r = stats.sample_values[feature], stats.sample_rows[feature]
    ok = r >= 0
    v, r = v[ok], r[ok]
    if len(v) == 0:
        return []
    order = np.argsort(v, kind="stable")
    v, r = v[order], r[order]
    out = []
    for chunk in np.array_split(np.arange(len(v)), n_bins):
        if len(chunk) == 0:
            continue
        pick = chunk[np.linspace(0, len(chunk) - 1, min(per_bin, len(chunk))).astype(int)]
        out.append({"low": float(v[chunk[0]]), "high": float(v[chunk[-1]]),
                    "q_low": chunk[0] / len(v), "q_high": (chunk[-1] + 1) / len(v),
                    "rows": r[pick].tolist(), "values": v[pick].tolist()})
    return out


def context_rows(meta: Any, row: int, window: int = 8) -> tuple[np.ndarray, int]:
    """Row indices of the tokens around ``row`` in its document (metadata in row order with
    ``doc_id``), and the index of ``row`` among them."""
    lo, hi = max(row - window, 0), min(row + window + 1, len(meta))
    keep = (meta["doc_id"].iloc[lo:hi] == meta["doc_id"].iloc[row]).to_numpy()
    rows = np.arange(lo, hi)[keep]
    return rows, int(keep[: row - lo].sum())


def token_context(meta: Any, row: int, window: int = 8) -> tuple[list[str], int]:
    """Tokens around ``row`` in its document, from row metadata in row order with columns
    ``doc_id``, ``position``, ``token`` (``ActivationStore.metadata()``); returns
    ``(tokens, index of the row's own token)``."""
    lo, hi = max(row - window, 0), min(row + window + 1, len(meta))
    around = meta.iloc[lo:hi]
    keep = (around["doc_id"] == meta["doc_id"].iloc[row]).to_numpy()
    tokens = [str(t) for t in around["token"].to_numpy()[keep]]
    return tokens, int(keep[: row - lo].sum())


def compare_datasets(stats_a: FeatureStats, stats_b: FeatureStats, *, alpha: float = 0.05) -> Any:
    """"SAE embeddings" comparison: latents whose firing frequency differs between two data
    sets. Two-sided two-proportion z-test per latent (pooled variance), Fisher's exact test
    where an expected count is below 5, Benjamini-Hochberg q-values over all latents.
    Returns a DataFrame sorted by q-value then by |difference|, with columns
    ``feature, freq_a, freq_b, diff, log2_ratio, z, p, q, significant``."""
    import pandas as pd
    from scipy import stats as st

    if len(stats_a.count) != len(stats_b.count):
        raise ValueError("compare_datasets needs feature statistics of the same SAE (same d_sae).")
    na, nb = stats_a.n_rows, stats_b.n_rows
    ca, cb = stats_a.count.astype(np.float64), stats_b.count.astype(np.float64)
    pa, pb = ca / na, cb / nb
    pooled = (ca + cb) / (na + nb)
    se = np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    z = np.divide(pa - pb, se, out=np.zeros_like(se), where=se > 0)
    p = 2 * st.norm.sf(np.abs(z))
    small = np.minimum.reduce([pooled * na, pooled * nb, (1 - pooled) * na, (1 - pooled) * nb]) < 5
    for j in np.flatnonzero(small):
        table = [[int(ca[j]), na - int(ca[j])], [int(cb[j]), nb - int(cb[j])]]
        p[j] = st.fisher_exact(table).pvalue
    q = st.false_discovery_control(p, method="bh")
    df = pd.DataFrame({
        "feature": np.arange(len(ca)), "freq_a": pa, "freq_b": pb, "diff": pa - pb,
        "log2_ratio": np.log2((ca + 0.5) / (na + 1)) - np.log2((cb + 0.5) / (nb + 1)),
        "z": z, "p": p, "q": q, "significant": q < alpha,
    })
    df["abs_diff"] = df["diff"].abs()
    return df.sort_values(["q", "abs_diff"], ascending=[True, False]).drop(columns="abs_diff").reset_index(drop=True)
