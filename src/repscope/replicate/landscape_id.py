"""Claim ``landscape-id``: objective-landscape ID; a CNN needs fewer directions than an MLP.

Li, Farkhoor, Liu and Yosinski (ICLR 2018) train networks only inside random subspaces
``theta_0 + P z`` of growing dimension d; d_int90, the smallest d reaching 90 % of full
training's accuracy, is far below the parameter count D (MNIST: about 750 for a 784-200-200-10
MLP with D = 199,210, about 290 for LeNet with D = 44,426), and smaller for the convolutional
network, whose architecture fits the task better. Aghajanyan et al. (ACL 2021, SAID) extend
it to fine-tuning. Here: ``repscope.landscape.intrinsic_dimension_sweep`` on the ready tasks
``digits-mlp`` and ``digits-cnn`` (scikit-learn digits, offline), Fastfood projections.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from repscope.replicate._util import line
from repscope.replicate.claim import Check, Claim, Outcome, Panel, Row
from repscope.replicate.registry import add


def run(p: Mapping[str, Any]) -> Outcome:
    from repscope.landscape import intrinsic_dimension_sweep

    res = {}
    for task in ("digits-mlp", "digits-cnn"):
        res[task] = intrinsic_dimension_sweep(
            task, task_params={"training": {"epochs": int(p["epochs"])}},
            seeds=tuple(p["seeds"]), fractions=(0.9,), projection="fastfood",
            d_min=int(p["d_min"]), d_max=int(p["d_max"]), growth=float(p["growth"]),
            precision=float(p["precision"]))
    est = {t: r.d_int(0.9) for t, r in res.items()}
    mlp, cnn = est["digits-mlp"], est["digits-cnn"]

    def val(e) -> float:
        return float("inf") if e.censored else float(e.value)

    rel = {t: val(e) / res[t].n_params for t, e in est.items()}
    lim = float(p["max_fraction"])
    checks = (
        Check("d_int90(CNN) < d_int90(MLP)", val(cnn) < val(mlp),
              f"CNN {val(cnn):g} vs MLP {val(mlp):g}"),
        Check(f"d_int90 far below the parameter count: d_int90 / D < {lim:g} for both",
              all(r < lim for r in rel.values()),
              ", ".join(f"{t}: {r:.2e}" for t, r in rel.items())),
    )

    def text(t: str) -> str:
        e, r = est[t], res[t]
        if e.censored:
            return f"> {e.max_dim:,} (D = {r.n_params:,})"
        rng = "" if e.ci is None else f" [{e.ci[0]:,.0f}, {e.ci[1]:,.0f}]"
        return f"{e.value:,.0f}{rng} of D = {r.n_params:,} ({rel[t]:.1e}); full training {r.baseline_mean:.3f}"

    rows = (
        Row("d_int90, MLP 64-100-100-10 on digits", text("digits-mlp"),
            "MNIST MLP 784-200-200-10: ~750 of 199,210 (3.8e-3)"),
        Row("d_int90, LeNet-style CNN on digits", text("digits-cnn"),
            "MNIST LeNet: ~290 of 44,426 (6.5e-3)"),
    )
    panels = (Panel("accuracy in random subspaces (mean over seeds)", "subspace dimension d",
                    "test accuracy",
                    tuple(line(t, r.dims, r.values.mean(axis=1)) for t, r in res.items()),
                    logx=True),)
    ok = all(c.passed for c in checks)
    analysis = (("Reproduced: " if ok else "Not reproduced: ")
                + f"the CNN reaches 90 % of its full-training accuracy with d = {val(cnn):g} "
                f"random directions, the MLP with {val(mlp):g}; both are a small fraction of their "
                "parameter counts. Differences: 8x8 scikit-learn digits instead of 28x28 MNIST "
                f"(so both networks are smaller), {p['epochs']} epochs per run, seeds "
                f"{list(p['seeds'])}, a geometric grid (growth {p['growth']:g}) refined by "
                f"bisection to {p['precision']:.0%}. The full landscape study (Fashion-MNIST, "
                "MiniLM with SAID) is `benchmarks/landscape_findings.py` and docs/landscape.md.")
    return Outcome(checks, rows, panels, analysis,
                   details={t: {"dims": r.dims, "values": r.values, "n_params": r.n_params,
                                "d_int90": val(est[t]), "baseline": r.baseline}
                            for t, r in res.items()})


CLAIM = add(Claim(
    name="landscape-id",
    title="Objective-landscape intrinsic dimension: CNN < MLP, both far below D",
    citation=("Li, Farkhoor, Liu, Yosinski, 'Measuring the intrinsic dimension of objective "
              "landscapes', ICLR 2018; Aghajanyan, Zettlemoyer, Gupta, 'Intrinsic "
              "dimensionality explains the effectiveness of language model fine-tuning', ACL 2021"),
    statement=("Paraphrased from Li et al. Sec. 3: training in a random d-dimensional subspace "
               "reaches 90 % of full performance at d_int90 far below the number of parameters "
               "(MNIST FC ~750, LeNet ~290), and convolutional networks have a smaller d_int90 "
               "than fully connected ones on the same task."),
    protocol=("`intrinsic_dimension_sweep` on the ready tasks `digits-mlp` and `digits-cnn` "
              "(1,348 / 449 digits, Adam; subspace learning rate 0.1), Fastfood projections, "
              "`seeds`, a geometric d grid from `d_min` to `d_max` and bisection to `precision`."),
    run=run,
    quick={"seeds": [0], "epochs": 15, "d_min": 16, "d_max": 1024, "growth": 2.0,
           "precision": 0.15, "max_fraction": 0.05},
    full={"seeds": [0, 1, 2], "epochs": 40, "d_min": 4, "d_max": 4096, "growth": 2.0,
          "precision": 0.05, "max_fraction": 0.05},
    needs=("scikit-learn digits",),
))
