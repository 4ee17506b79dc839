"""Attention outputs next to the residual stream: how many dimensions each one fills (Wang, Shu,
Qiu, Ge and He 2025, "Attention layers add into low-dimensional residual subspaces",
arXiv:2508.16929).

Wang et al. find that the output of an attention layer (its contribution before the residual
add) fills a low-dimensional subspace: about 60% of the directions hold 99% of its variance,
an effect they trace to the output projection. :func:`attention_subspaces` reports, per block,
for the attention output and for the residual stream (the block's output) on the same rows:

- ``rank99`` and ``rank99_fraction``: principal directions needed for 99% of the variance
  (registered ``pca`` with ``variance=0.99``) and that count over the width ``d``, Wang et al.'s
  headline number;
- ``effective_rank``: Roy and Vetterli's ``exp(entropy of the normalised singular values)``;
- ``participation_ratio``: ``(sum lambda)^2 / sum lambda^2``;
- ``twonn``: a nonlinear ID (Facco et al. 2017) on a row subsample, with its bootstrap interval.

The capture names the attention-output modules with
:func:`repscope.capture.predictions.attention_output_modules` (Llama ``model.layers.i.self_attn``,
BERT ``encoder.layer.i.attention.output.dense``, GPT-2 ``h.i.attn``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from repscope._validate import param_error

__all__ = ["attention_subspaces", "pair_attention_layers"]

_SUFFIXES = (".self_attn", ".attention.output.dense", ".attn")


def pair_attention_layers(layer_names: Any) -> dict[str, str]:
    """``block -> attention-output layer`` for the captured layers that are attention outputs
    and whose block output was captured too."""
    names = list(layer_names)
    out = {}
    for name in names:
        for suf in _SUFFIXES:
            if name.endswith(suf):
                block = name[: -len(suf)]
                if block in names:
                    out[block] = name
                break
    return out


def attention_subspaces(data: Any, *, pairs: Mapping[str, str] | None = None, max_rows: int = 4000,
                        n_boot: int = 50, seed: int = 0) -> Any:
    """A DataFrame, one row per (block, stream) with ``stream`` in {'residual', 'attention'}:
    ``layer, d, n_rows, rank99, rank99_fraction, effective_rank, participation_ratio, twonn,
    twonn_low, twonn_high``. ``data``: an ActivationStore or a mapping ``layer -> (n, d)``
    array with the same rows; ``pairs``: ``block -> attention layer`` (default: found by
    name, :func:`pair_attention_layers`). Spectral numbers use every row; TwoNN a seeded
    subsample of ``max_rows`` rows (``n_boot`` bootstrap resamples)."""
    import pandas as pd

    from repscope import registry
    from repscope.analysis.prompt_geometry import _layer_source

    fn = "attention_subspaces"
    names, read = _layer_source(data, None, fn)
    pairs = dict(pairs) if pairs is not None else pair_attention_layers(names)
    if not pairs:
        raise param_error(fn, "pairs", "at least one (block, attention output) pair among the layers "
                          "(capture the attention outputs too)", names)
    order = {n: i for i, n in enumerate(names)}
    out = []
    for block, attn in sorted(pairs.items(), key=lambda kv: order.get(kv[0], 0)):
        for stream, layer in (("residual", block), ("attention", attn)):
            X = np.asarray(read(layer), np.float64)  # (n, d)
            n, d = X.shape
            rank99 = registry.get("pca")(X, variance=0.99, n_boot=0)
            sub = X if n <= max_rows else X[np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))]
            tw = registry.get("twonn")(sub, n_boot=n_boot, seed=seed)
            out.append({"block": block, "block_index": order.get(block, -1), "stream": stream, "layer": layer,
                        "d": d, "n_rows": n, "rank99": float(rank99.value), "rank99_fraction": float(rank99.value) / d,
                        "effective_rank": float(registry.get("effective_rank")(X).value),
                        "participation_ratio": float(registry.get("participation_ratio")(X, n_boot=0).value),
                        "twonn": float(tw.value), "twonn_low": tw.ci[0] if tw.ci else np.nan,
                        "twonn_high": tw.ci[1] if tw.ci else np.nan})
    return pd.DataFrame.from_records(out)
