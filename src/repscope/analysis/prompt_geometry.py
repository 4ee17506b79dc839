"""Geometry of each prompt's own token cloud across layers, related to the prompt's loss
(Viswanathan, Gardinazzi, Panerai, Cazzaniga and Biagetti 2025, "The geometry of tokens in
internal representations of large language models", arXiv:2501.10573).

For every document (prompt) and layer, the rows of that document's tokens form a point cloud of
``n_tokens`` points. Per (document, layer):

- ``id``: its intrinsic dimension with a registered estimator (default GRIDE, Denti et al. 2022,
  as in the paper; ``n1 = 2, n2 = 4`` neighbours by default, a small scale because the clouds
  are small), with the estimator's standard error and interval;
- ``overlap_next``: the neighbourhood overlap with the next layer,
  ``chi_k^{l,l+1} = (1/n) sum_i |N_k^l(i) & N_k^{l+1}(i)| / k`` (the fraction of each token's
  ``k`` nearest tokens of the same prompt that stay its neighbours one layer later; NaN on the
  last layer);
- ``cosine_mean``: the mean cosine similarity over distinct token pairs,
  ``(|sum_i u_i|^2 - n) / (n (n - 1))`` with ``u_i`` the unit vectors;
- ``mean_loss``: the prompt's mean next-token loss ``-log p`` over its tokens with a target.

Then, per layer and metric, the correlation across documents between the metric and
``mean_loss``, with a bootstrap interval over documents (:mod:`repscope.analysis.correlate`).

Small-n caveat: a prompt of ``n`` tokens gives an ID from ``n`` points. kNN estimators are then
noisy (GRIDE's standard error is reported per row) and biased low once the dimension exceeds
``log2 n`` or so; documents with fewer than ``min_tokens`` rows get NaN. Compare prompts of
similar length, or read ``n_tokens`` next to the ID.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repscope._validate import as_numpy, check_choice, check_int, param_error
from repscope.analysis.correlate import grouped_correlation

__all__ = ["METRICS", "PromptGeometry", "cosine_mean", "neighbourhood_overlap", "prompt_geometry"]

log = logging.getLogger(__name__)

METRICS = ("id", "overlap_next", "cosine_mean")
_DEFAULT_PARAMS = {"gride": {"n1": 2, "n2": 4, "k": 4}, "twonn": {"fit": "mle"}}


def cosine_mean(X: np.ndarray) -> float:
    """Mean cosine similarity over the ``n (n - 1)`` ordered pairs of distinct rows."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    if n < 2:
        return float("nan")
    U = X / np.linalg.norm(X, axis=1, keepdims=True).clip(1e-300)
    s = U.sum(0)
    return float((s @ s - n) / (n * (n - 1)))


def _knn_sets(X: np.ndarray, k: int) -> np.ndarray:
    from repscope.neighbors import knn

    return knn(np.asarray(X, np.float64), k, duplicates="keep").indices  # (n, k)


def neighbourhood_overlap(A: np.ndarray, B: np.ndarray) -> float:
    """``chi = mean_i |A_i & B_i| / k`` for two ``(n, k)`` neighbour-index tables of the same points."""
    k = A.shape[1]
    hits = (A[:, :, None] == B[:, None, :]).any(2).sum(1)  # (n,)
    return float(hits.mean() / k)


@dataclass(frozen=True)
class PromptGeometry:
    """Per-prompt token-cloud geometry across layers."""

    rows: Any
    "DataFrame, one row per (doc_id, layer): layer_index, n_tokens, id, id_stderr, id_low, id_high, overlap_next, cosine_mean, mean_loss."
    relation: Any
    "DataFrame, one row per (layer, metric): correlation with mean_loss across documents, stderr, ci_low, ci_high, n_docs."
    params: dict[str, Any] = field(default_factory=dict)


def _layer_source(data: Any, layers: Sequence[str] | None, fn: str) -> tuple[list[str], Any]:
    if isinstance(data, Mapping):
        names = list(data) if layers is None else list(layers)
        missing = [n for n in names if n not in data]
        if missing:
            raise param_error(fn, "layers", f"names among {list(data)}", missing)
        return names, lambda name: as_numpy(data[name], np.float32)
    if not hasattr(data, "read") or not hasattr(data, "layers"):
        raise param_error(fn, "data", "an ActivationStore or a mapping layer -> (n, d) array", type(data).__name__)
    names = list(data.layers) if layers is None else list(layers)
    for n in names:
        data.dim(n)  # raises naming the store's layers
    return names, data.read


def store_loss(store: Any, fn: str = "prompt_geometry") -> np.ndarray:
    """Per-row next-token loss ``-log p`` from a store captured with predictions
    (metadata column ``next_logprob``)."""
    meta = store.metadata()
    if "next_logprob" not in meta:
        raise ValueError(f"{fn}: the store {str(store.path)!r} holds no next-token log-likelihoods "
                         f"(metadata column 'next_logprob'); capture it with predictions, or pass loss=.")
    return -meta["next_logprob"].to_numpy(np.float64)


def prompt_geometry(data: Any, *, layers: Sequence[str] | None = None, doc_ids: Any = None,
                    loss: Any = None, estimator: str = "gride", estimator_params: Mapping[str, Any] | None = None,
                    k_overlap: int = 4, min_tokens: int = 16, method: str = "spearman",
                    n_boot: int = 1000, seed: int = 0, ci_level: float = 0.95) -> PromptGeometry:
    """Token-cloud geometry of every document at every layer (see the module docstring).

    ``data``: an ActivationStore (token-level rows; ``doc_ids`` and ``loss`` default to its
    metadata ``doc_id`` and ``-next_logprob``) or a mapping ``layer -> (n, d)`` array with
    ``doc_ids`` (n,). ``loss`` (n,): per-row next-token loss (NaN where there is no target), or
    None for geometry without the relation. ``estimator``: a registered dimension estimator
    (``estimator_params`` override its defaults; GRIDE defaults here to ``n1=2, n2=4, k=4``).
    """
    import pandas as pd

    from repscope import registry

    fn = "prompt_geometry"
    names, read = _layer_source(data, layers, fn)
    k_overlap = check_int(k_overlap, "k_overlap", fn, low=1)
    min_tokens = check_int(min_tokens, "min_tokens", fn, low=max(5, k_overlap + 1))
    spec = registry.get(estimator)
    if spec.family != "dimension":
        raise param_error(fn, "estimator", "a registered 'dimension' measure", estimator)
    est_params = {**_DEFAULT_PARAMS.get(estimator, {}), **dict(estimator_params or {})}
    spec.resolve_params(est_params)  # unknown names fail here, once
    is_store = not isinstance(data, Mapping)
    if doc_ids is None:
        if not is_store:
            raise param_error(fn, "doc_ids", "one document id per row with array data", None)
        doc_ids = data.metadata()["doc_id"].to_numpy()
    doc = np.asarray(doc_ids).reshape(-1)
    if loss is None and is_store and "next_logprob" in data.manifest.get("meta_columns", {}):
        loss = store_loss(data, fn)
    docs, inverse = np.unique(doc, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(docs.size)]
    mean_loss = np.full(docs.size, np.nan)
    if loss is not None:
        lv = np.asarray(loss, np.float64).reshape(-1)
        if lv.size != doc.size:
            raise param_error(fn, "loss", f"one value per row ({doc.size})", f"{lv.size} values")
        for i, rows in enumerate(members):
            v = lv[rows][np.isfinite(lv[rows])]
            mean_loss[i] = v.mean() if v.size else np.nan
    records: list[dict[str, Any]] = []
    prev: list[np.ndarray | None] = [None] * docs.size
    prev_rows: list[dict[str, Any]] = []
    for li, name in enumerate(names):
        X = read(name)
        if X.shape[0] != doc.size:
            raise param_error(fn, "doc_ids", f"one id per row of layer {name!r} ({X.shape[0]} rows)", f"{doc.size} ids")
        layer_rows = []
        for i, rows in enumerate(members):
            rec = {"doc_id": docs[i].item(), "layer": name, "layer_index": li, "n_tokens": rows.size,
                   "id": np.nan, "id_stderr": np.nan, "id_low": np.nan, "id_high": np.nan,
                   "overlap_next": np.nan, "cosine_mean": np.nan, "mean_loss": mean_loss[i]}
            if rows.size >= min_tokens:
                Xd = X[rows]
                rec["cosine_mean"] = cosine_mean(Xd)
                p = dict(est_params)
                if "k" in spec.defaults:
                    p["k"] = min(int(p.get("k", spec.defaults["k"])), rows.size - 1)
                try:
                    e = spec(Xd, **p)
                    rec.update(id=e.value, id_stderr=np.nan if e.stderr is None else e.stderr,
                               id_low=np.nan if e.ci is None else e.ci[0],
                               id_high=np.nan if e.ci is None else e.ci[1])
                except ValueError as exc:  # e.g. every token identical at the embedding layer
                    log.info("%s: no ID for document %s at %s: %s", fn, docs[i], name, exc)
                nb = _knn_sets(Xd, k_overlap)
                if prev[i] is not None:
                    prev_rows[i]["overlap_next"] = neighbourhood_overlap(prev[i], nb)
                prev[i] = nb
            layer_rows.append(rec)
        records.extend(layer_rows)
        prev_rows = layer_rows
    table = pd.DataFrame.from_records(records)
    relation = _relation(table, names, method, n_boot, seed, ci_level) if loss is not None else None
    return PromptGeometry(rows=table, relation=relation, params={
        "estimator": estimator, "estimator_params": est_params, "k_overlap": k_overlap,
        "min_tokens": min_tokens, "method": method, "n_boot": n_boot, "seed": seed,
        "ci_level": ci_level, "n_documents": int(docs.size), "layers": names,
        "uncertainty": "bootstrap over documents"})


def _relation(table: Any, names: list[str], method: str, n_boot: int, seed: int, ci_level: float) -> Any:
    import pandas as pd

    check_choice(method, "method", "prompt_geometry", ("spearman", "pearson"))
    out = []
    for name in names:
        t = table[table["layer"] == name]
        for metric in METRICS:
            r = grouped_correlation(t[metric].to_numpy(), t["mean_loss"].to_numpy(), method=method,
                                    n_boot=n_boot, seed=seed, ci_level=ci_level, fn="prompt_geometry")
            out.append({"layer": name, "metric": metric, "correlation": r.value, "stderr": r.stderr,
                        "ci_low": r.ci[0], "ci_high": r.ci[1], "n_docs": r.n_groups, "method": method})
    return pd.DataFrame.from_records(out)
