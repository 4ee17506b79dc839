"""Figures and numbers of docs/lm_geometry.md: SmolLM2-135M-Instruct on the bundled pydoc corpus.

    PYTHONPATH=src HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 python scripts/lm_geometry_figures.py \
        --work /tmp/lm_geometry --out docs/figures/lm_geometry

Steps (each result is written as it is made; the capture and the SAE resume on a rerun):
1. capture every third block of SmolLM2 (and the final block) with next-token predictions
   and the attention outputs of those blocks, on ``--max-docs`` documents of the bundled corpus;
2. predictions: surprisal against the model's own entropy (calibration) and against position;
3. per-prompt token-cloud geometry and its relation to each prompt's mean loss;
4. ID vs surprisal per layer (document level, bootstrap over documents) and the scatter at the
   layer where the relation is strongest;
5. attention-output subspaces next to the residual stream;
6. a top-k SAE on one middle layer and its feature geometry (lobes, crystals, spectrum).

Writes PNG figures, CSV tables and ``results.json`` (parameters, repscope version, headline
numbers, wall time per step) under ``--out``. CPU only; about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("lm_geometry_figures")
STEPS = ("predictions", "prompts", "ids", "attention", "sae")


def _layers(n_blocks: int, every: int) -> list[str]:
    idx = sorted({*range(0, n_blocks, every), n_blocks - 1})
    return [f"model.layers.{i}" for i in idx]


def _predictions_figure(meta: Any, path: Path) -> dict[str, float]:
    """Calibration (mean surprisal per entropy bin vs the identity) and loss by position."""
    from repscope.report.figures import _pyplot

    plt = _pyplot()
    s = -meta["next_logprob"].to_numpy()
    h = meta["entropy"].to_numpy()
    pos = meta["position"].to_numpy()
    ok = np.isfinite(s)
    s, h, pos = s[ok], h[ok], pos[ok]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    axes[0].hist(s, bins=60, alpha=0.6, label="surprisal -log p(next)", density=True)
    axes[0].hist(h, bins=60, alpha=0.6, label="entropy H(p)", density=True)
    axes[0].set_xlabel("nats")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"{ok.sum()} tokens: mean surprisal {s.mean():.2f}, mean entropy {h.mean():.2f}",
                      fontsize=8)
    edges = np.quantile(h, np.linspace(0, 1, 21))
    b = np.clip(np.searchsorted(edges, h, side="right") - 1, 0, 19)
    hm = np.array([h[b == i].mean() for i in range(20)])
    sm = np.array([s[b == i].mean() for i in range(20)])
    se = np.array([s[b == i].std(ddof=1) / np.sqrt((b == i).sum()) for i in range(20)])
    axes[1].errorbar(hm, sm, yerr=1.96 * se, fmt="o", ms=3)
    top = max(hm.max(), sm.max()) * 1.05
    axes[1].plot([0, top], [0, top], "k--", lw=0.7, label="E[surprisal | H] = H (calibrated)")
    axes[1].set_xlabel("entropy bin mean (nats)")
    axes[1].set_ylabel("mean surprisal (nats)")
    axes[1].legend(fontsize=7)
    axes[1].set_title("calibration: surprisal per entropy ventile", fontsize=8)
    pb = np.minimum(pos // 8, 15)
    xs = np.array([pos[pb == i].mean() for i in np.unique(pb)])
    axes[2].plot(xs, [s[pb == i].mean() for i in np.unique(pb)], marker="o", ms=3, label="surprisal")
    axes[2].plot(xs, [h[pb == i].mean() for i in np.unique(pb)], marker="o", ms=3, label="entropy")
    axes[2].set_xlabel("token position in the document")
    axes[2].set_ylabel("nats")
    axes[2].legend(fontsize=7)
    axes[2].set_title("mean per 8 positions", fontsize=8)
    fig.savefig(path)
    plt.close(fig)
    return {"tokens": int(ok.sum()), "mean_surprisal": float(s.mean()), "mean_entropy": float(h.mean()),
            "max_calibration_gap": float(np.max(np.abs(sm - hm)))}


def _prompts(store: Any, resid: list[str], out: Path, args: Any) -> dict[str, Any]:
    """Per-prompt geometry, its relation to the loss, and the equal-length control."""
    import pandas as pd

    from repscope.analysis.correlate import grouped_correlation
    from repscope.analysis.prompt_geometry import prompt_geometry
    from repscope.report import lm_figures

    pg = prompt_geometry(store, layers=resid, n_boot=args.n_boot, seed=args.seed)
    pg.rows.to_csv(out / "prompt_geometry.csv", index=False, float_format="%.5g")
    pg.relation.to_csv(out / "prompt_relation.csv", index=False, float_format="%.4g")
    lm_figures.prompt_geometry_figure(pg, out / "prompt_geometry.png")
    med = pg.rows.groupby("layer", sort=False)[["id", "overlap_next", "cosine_mean"]].median()
    # length control: short prompts have a higher mean loss (early positions are harder) and a
    # noisier ID; the same relation on the prompts cut at max_length only (all of one length)
    full = pg.rows[pg.rows["n_tokens"] == pg.rows["n_tokens"].max()]
    control = []
    for name, t in full.groupby("layer", sort=False):
        for metric in ("id", "overlap_next", "cosine_mean"):
            r = grouped_correlation(t[metric].to_numpy(), t["mean_loss"].to_numpy(), n_boot=args.n_boot,
                                    seed=args.seed)
            control.append({"layer": name, "metric": metric, "correlation": r.value, "ci_low": r.ci[0],
                            "ci_high": r.ci[1], "n_docs": r.n_groups})
    pd.DataFrame.from_records(control).to_csv(out / "prompt_relation_equal_length.csv", index=False,
                                              float_format="%.4g")
    return {"median_by_layer": med.round(4).to_dict(orient="index"),
            "equal_length_documents": int(full["doc_id"].nunique()), "params": pg.params}


def _shrink(out: Path, width: int = 1400) -> None:
    """Docs-sized PNGs: at most ``width`` pixels wide, 256-colour palette (a few tens of kB)."""
    from PIL import Image

    for path in out.glob("*.png"):
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.width > width:
                im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
            im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/lm_geometry"), help="store and SAE directory")
    ap.add_argument("--out", type=Path, default=Path("docs/figures/lm_geometry"))
    ap.add_argument("--max-docs", type=int, default=96)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--every", type=int, default=3, help="capture every n-th block")
    ap.add_argument("--sae-layer", default="model.layers.15")
    ap.add_argument("--sae-steps", type=int, default=1000)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--twonn-rows", type=int, default=4000, help="rows of the TwoNN subsample per layer")
    ap.add_argument("--twonn-boot", type=int, default=50, help="bootstrap resamples of each TwoNN")
    ap.add_argument("--only", default="", help=f"comma-separated steps among {','.join(STEPS)} "
                                               "(default: all; results.json keeps the others' results)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import repscope
    from repscope.analysis.attention_subspaces import attention_subspaces, pair_attention_layers
    from repscope.analysis.id_surprisal import id_surprisal, id_surprisal_by_layer
    from repscope.analysis.prompt_geometry import store_loss
    from repscope.capture import CaptureConfig, run_capture
    from repscope.dictionaries.geometry import feature_geometry
    from repscope.dictionaries.train import TrainConfig, train_sae
    from repscope.report import lm_figures

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    steps = set(args.only.split(",")) if args.only else set(STEPS)
    path = out / "results.json"
    # steps run alone (--only) update the results of the others
    res: dict[str, Any] = json.loads(path.read_text()) if path.exists() and args.only else {}
    res.update({"repscope_version": repscope.__version__, "params": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "only"}})
    times: dict[str, float] = res.setdefault("seconds", {})

    def done(step: str, t0: float) -> None:
        times[step] = round(time.perf_counter() - t0, 1)
        _shrink(out)
        path.write_text(json.dumps(res, indent=1, default=float) + "\n")
        log.info("%s done in %.0f s", step, times[step])

    t0 = time.perf_counter()
    layers = _layers(30, args.every)
    if args.sae_layer not in layers:
        layers = sorted({*layers, args.sae_layer}, key=lambda n: int(n.rsplit(".", 1)[1]))
    cfg = CaptureConfig(model="smollm2", corpus="pydoc", layers=tuple(layers), max_length=args.max_length,
                        max_docs=args.max_docs, seed=args.seed, batch_size=8, predictions="next_token",
                        attention=True, out=args.work / "store")
    store = run_capture(cfg, progress=False)
    meta = store.metadata()
    doc = meta["doc_id"].to_numpy()
    first = meta["position"].to_numpy() == 0  # the attention sink: massive activations from block 12 on
    res["store"] = {"rows": int(store.n_rows), "documents": int(meta["doc_id"].nunique()),
                    "layers": store.layers, "corpus_sha256": store.manifest["data"]["sha256"],
                    "first_position_norm_by_layer": {
                        n: [float(np.median(np.linalg.norm(X[first], axis=1))),
                            float(np.median(np.linalg.norm(X[~first], axis=1)))]
                        for n in store.layers for X in [store.read(n)]}}
    done("capture", t0)

    if "predictions" in steps:
        t0 = time.perf_counter()
        res["predictions"] = _predictions_figure(meta, out / "predictions.png")
        done("predictions", t0)

    pairs = pair_attention_layers(store.layers)
    resid = [n for n in store.layers if n not in set(pairs.values())]
    if "prompts" in steps:
        t0 = time.perf_counter()
        res["prompt_geometry"] = _prompts(store, resid, out, args)
        done("prompt_geometry", t0)

    if "ids" in steps:
        t0 = time.perf_counter()
        ids = id_surprisal_by_layer(store, layers=resid, n_boot=args.n_boot, seed=args.seed)
        ids.to_csv(out / "id_surprisal.csv", index=False, float_format="%.4g")
        best = ids.loc[ids["correlation"].abs().idxmax()]
        scatter = id_surprisal(store.read(best["layer"]), store_loss(store), doc_ids=doc, n_boot=args.n_boot,
                               seed=args.seed)
        lm_figures.id_surprisal_figure(ids, out / "id_surprisal.png", scatter=scatter,
                                       scatter_layer=str(best["layer"]))
        row = id_surprisal_by_layer(store, layers=resid, level="row", n_boot=args.n_boot, seed=args.seed)
        row.to_csv(out / "id_surprisal_rows.csv", index=False, float_format="%.4g")
        res["id_surprisal"] = {"group_level": ids.round(4).to_dict(orient="records"),
                               "row_level": row.round(4).to_dict(orient="records")}
        done("id_surprisal", t0)

    if "attention" in steps:
        t0 = time.perf_counter()
        res["attention_subspaces"] = {}
        for tag, keep in (("", slice(None)), ("_without_first", ~first)):
            data = {n: store.read(n)[keep] for n in [*pairs, *pairs.values()]}
            att = attention_subspaces(data, pairs=pairs, max_rows=args.twonn_rows, n_boot=args.twonn_boot,
                                      seed=args.seed)
            att.to_csv(out / f"attention_subspaces{tag}.csv", index=False, float_format="%.4g")
            lm_figures.attention_subspaces_figure(att, out / f"attention_subspaces{tag}.png")
            res["attention_subspaces"][tag.strip("_") or "all_rows"] = att.round(4).to_dict(orient="records")
        done("attention_subspaces", t0)

    if "sae" in steps:
        # trained and read on rows after the first position: the attention sink's massive
        # activations (norm ~140x the others at this layer) would dominate the input scaling
        t0 = time.perf_counter()
        X = store.read(args.sae_layer)[~first]  # (n, 576)
        tr = train_sae(X, TrainConfig(k=32, expansion=4, steps=args.sae_steps, batch_size=512, seed=args.seed),
                       out_dir=args.work / "sae")
        from repscope.dictionaries.evaluate import evaluate_sae

        ev = evaluate_sae(tr.sae, X[tr.heldout_rows], split="held-out")
        res["sae"] = {"layer": args.sae_layer, "rows": int(X.shape[0]), "d_sae": int(tr.sae.W_dec.shape[0]),
                      "steps": tr.steps, "heldout": {k: float(getattr(ev, k)) for k in (
                          "explained_variance", "cosine", "l0_mean", "dead_fraction", "dense_fraction")}}
        done("sae_train", t0)
        t0 = time.perf_counter()
        fg = feature_geometry(tr.sae, X, doc_ids=doc[~first], window=32, n_latents=512, n_lobes=4, seed=args.seed)
        lm_figures.feature_geometry_figure(fg, out / "feature_geometry.png")
        res["feature_geometry"] = {
            "lobe_sizes": fg.lobes.sizes.tolist(), "modularity_Q": float(fg.lobes.modularity),
            "ami": float(fg.modularity.ami), "ami_null_mean": float(fg.modularity.null_mean),
            "ami_p_value": float(fg.modularity.p_value),
            "crystals": len(fg.crystals.crystals), "parallelograms": int(fg.crystals.n_parallelograms),
            "crystal_sizes": sorted((len(c.pairs) for c in fg.crystals.crystals), reverse=True)[:10],
            "decoder_alpha": fg.spectrum.alpha, "decoder_alpha_stderr": fg.spectrum.alpha_stderr,
            "decoder_r2": fg.spectrum.r2, "null_alpha": fg.spectrum.null_alpha,
            "activation_alpha": fg.spectrum.activation_alpha, "fit_range": list(fg.spectrum.fit_range),
            "params": fg.params}
        done("feature_geometry", t0)
    log.info("wrote %s", out)

if __name__ == "__main__":
    main()
