"""Geometric versus information-theoretic compression: representation ID against the model's
surprisal on the same rows (Cheng, Kervadec and Baroni 2023, "Bridging information-theoretic and
geometric compression in language models", EMNLP 2023).

Cheng et al. relate, across data sets, the intrinsic dimension of a data set's representations
to its coding length under the LM (mean surprisal ``-log p`` per token): data that the model
compresses well (low surprisal) occupy a lower-dimensional manifold. Two levels are offered:

- ``level="group"`` (their analysis): rows are grouped (data sets, or documents, the default);
  each group's ID is estimated with a registered global estimator on its own rows and
  correlated across groups with the group's mean surprisal;
- ``level="row"``: each row's local ID (a registered local estimator, e.g. ``local_mle``, on
  the whole cloud) against that row's surprisal.

Either way the interval is a bootstrap over documents (whole documents resampled; at the
group level with groups = documents this is the bootstrap over groups). At the row level the
local IDs are computed once on all rows and the bootstrap resamples (local ID, surprisal) pairs
by document: it carries the sampling of documents, not the estimation noise of the local IDs.
:func:`id_surprisal_by_layer` repeats this per layer, and per checkpoint of a sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repscope._validate import as_numpy, check_array, check_choice, check_int, param_error
from repscope.analysis.correlate import grouped_correlation
from repscope.results import Estimate, result_type

__all__ = ["IDSurprisal", "id_surprisal", "id_surprisal_by_layer"]

_GROUP_DEFAULTS = {"gride": {"n1": 2, "n2": 4, "k": 4}, "twonn": {"fit": "mle"}}


@result_type
@dataclass(frozen=True)
class IDSurprisal(Estimate):
    """Correlation between representation ID and surprisal; ``value`` = the correlation,
    ``stderr``/``ci`` = bootstrap over documents."""

    level: str = "group"
    "'group' (ID of each group's rows vs its mean surprisal) or 'row' (local ID vs the row's surprisal)."
    method: str = "spearman"
    "'spearman' or 'pearson'."
    n_groups: int = 0
    "Groups (level 'group') or documents (level 'row') with a finite pair."
    slope: float = float("nan")
    "OLS slope of surprisal on ID (nats per dimension)."


def _surprisal(surprisal: Any, n: int, fn: str) -> np.ndarray:
    s = np.asarray(surprisal, np.float64).reshape(-1)
    if s.size != n:
        raise param_error(fn, "surprisal", f"one value per row ({n})", f"{s.size} values")
    return s


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0:
        return float("nan")
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def id_surprisal(X: Any, surprisal: Any, *, doc_ids: Any, groups: Any = None, level: str = "group",
                 estimator: str | None = None, estimator_params: Mapping[str, Any] | None = None,
                 min_rows: int = 16, method: str = "spearman", n_boot: int = 1000, seed: int = 0,
                 ci_level: float = 0.95) -> IDSurprisal:
    """Correlate ID and surprisal on the rows of ``X`` (n, d); see the module docstring.

    ``surprisal`` (n,): ``-log p`` of each row's target (NaN where none; such rows still count
    for the geometry). ``doc_ids`` (n,): the document of each row (the bootstrap unit).
    ``groups`` (n,): the group of each row at level ``"group"`` (default: documents).
    ``estimator``: a registered ``dimension`` measure for groups (default ``"gride"`` with
    ``n1=2, n2=4, k=4``) or a ``local_dimension`` measure for rows (default ``"local_mle"``).
    ``min_rows``: groups with fewer rows get no ID.
    """
    from repscope import registry

    fn = "id_surprisal"
    check_choice(level, "level", fn, ("group", "row"))
    Xa = as_numpy(check_array(X, fn, min_samples=4), np.float32)
    n = Xa.shape[0]
    s = _surprisal(surprisal, n, fn)
    doc = np.asarray(doc_ids).reshape(-1)
    if doc.size != n:
        raise param_error(fn, "doc_ids", f"one document id per row ({n})", f"{doc.size} ids")
    min_rows = check_int(min_rows, "min_rows", fn, low=5)
    estimator = estimator or ("gride" if level == "group" else "local_mle")
    spec = registry.get(estimator)
    want = "dimension" if level == "group" else "local_dimension"
    if spec.family != want:
        raise param_error(fn, "estimator", f"a registered '{want}' measure for level={level!r}", estimator)
    params = {**(_GROUP_DEFAULTS.get(estimator, {}) if level == "group" else {}), **dict(estimator_params or {})}
    spec.resolve_params(params)
    if level == "row":
        est = spec(Xa, **{"n_boot": 0, **params} if "n_boot" in spec.defaults else params)
        ids = np.asarray(est.diagnostics["local"], np.float64)  # (n,)
        r = grouped_correlation(ids, s, doc, method=method, n_boot=n_boot, seed=seed, ci_level=ci_level, fn=fn)
        x, y, diag = ids, s, {"local_id": ids.astype(np.float32), "surprisal": s.astype(np.float32)}
    else:
        g = doc if groups is None else np.asarray(groups).reshape(-1)
        if g.size != n:
            raise param_error(fn, "groups", f"one group label per row ({n})", f"{g.size} labels")
        labels, inv = np.unique(g, return_inverse=True)
        x = np.full(labels.size, np.nan)
        y = np.full(labels.size, np.nan)
        for i in range(labels.size):
            rows = np.flatnonzero(inv == i)
            v = s[rows][np.isfinite(s[rows])]
            y[i] = v.mean() if v.size else np.nan
            if rows.size >= min_rows:
                p = dict(params)
                if "k" in spec.defaults:
                    p["k"] = min(int(p.get("k", spec.defaults["k"])), rows.size - 1)
                try:
                    x[i] = spec(Xa[rows], **p).value
                except ValueError:
                    x[i] = np.nan
        r = grouped_correlation(x, y, None, method=method, n_boot=n_boot, seed=seed, ci_level=ci_level, fn=fn)
        diag = {"group": labels, "group_id": x, "group_surprisal": y}
    return IDSurprisal(
        measure="id_surprisal", value=r.value, n_samples=r.n_rows, stderr=r.stderr, ci=r.ci,
        params={"level": level, "estimator": estimator, "estimator_params": params, "min_rows": min_rows,
                "method": method, "n_boot": n_boot, "seed": seed, "ci_level": ci_level,
                "groups": "documents" if groups is None else "given",
                "uncertainty": "bootstrap over documents" if (level == "row" or groups is None)
                else "bootstrap over groups"},
        diagnostics=diag, level=level, method=method, n_groups=r.n_groups, slope=_slope(x, y))


def id_surprisal_by_layer(sources: Any, *, layers: Sequence[str] | None = None, surprisal: Any = None,
                          doc_ids: Any = None, **kwargs: Any) -> Any:
    """:func:`id_surprisal` for every layer (and every checkpoint): a DataFrame with columns
    ``checkpoint, layer, layer_index, correlation, stderr, ci_low, ci_high, n_groups, slope, level``.

    ``sources``: an ActivationStore (surprisal and doc_ids from its metadata: ``-next_logprob``
    and ``doc_id``), a mapping ``layer -> (n, d)`` array (with ``surprisal`` and ``doc_ids``), or
    a mapping ``checkpoint label -> store`` for a sweep (each store's own predictions: the
    surprisal changes with the checkpoint)."""
    import pandas as pd

    from repscope.analysis.prompt_geometry import _layer_source, store_loss

    fn = "id_surprisal_by_layer"
    if isinstance(sources, Mapping) and sources and all(hasattr(v, "read") for v in sources.values()):
        runs = list(sources.items())
    else:
        runs = [(None, sources)]
    out = []
    for label, data in runs:
        names, read = _layer_source(data, layers, fn)
        if isinstance(data, Mapping):
            if surprisal is None or doc_ids is None:
                raise param_error(fn, "surprisal", "per-row surprisal and doc_ids with array data", None)
            s, doc = surprisal, doc_ids
        else:
            s = store_loss(data, fn) if surprisal is None else surprisal
            doc = data.metadata()["doc_id"].to_numpy() if doc_ids is None else doc_ids
        for li, name in enumerate(names):
            r = id_surprisal(read(name), s, doc_ids=doc, **kwargs)
            out.append({"checkpoint": label, "layer": name, "layer_index": li, "correlation": r.value,
                        "stderr": r.stderr, "ci_low": r.ci[0], "ci_high": r.ci[1], "n_groups": r.n_groups,
                        "slope": r.slope, "level": r.level, "estimator": r.params["estimator"]})
    return pd.DataFrame.from_records(out)
