"""Claim ``grokking-lid``: the local ID of the representations drops before test accuracy jumps.

Ruppik et al. (2025), 'Less is more: local intrinsic dimensions of contextual language models',
measure the mean of per-point local intrinsic dimensions (a TwoNN estimate over each point's
neighbourhood of fixed size) of a transformer's hidden states during training and report that,
on an arithmetic task that groks, reductions of the mean local dimension accompany and predict
the later rise of validation accuracy. The issue pairs it with Doshi, Das, He and Gromov
(ICLR 2024), 'To grok or not to grok', who study memorisation and generalisation of
modular-arithmetic networks under label corruption and weight decay; their abstract states
nothing about local ID, so the statement checked here is Ruppik et al.'s.

Protocol (our own implementation, :mod:`repscope.replicate._transformer`): one decoder block
(d_model 128, 4 heads, ReLU MLP 512, learned positions, no layer norm) on ``[a, b, =]`` ->
``(a + b) mod p``; a seeded ``train_fraction`` of the ``p^2`` pairs trains full batch with AdamW
(weight decay 1.0, betas 0.9 / 0.98; Nanda et al. 2023). At every checkpoint (log-spaced early,
then every ``eval_every`` steps) we record the accuracies and losses and measure, on the
residual stream after the block at the ``=`` position:

- LID, the claim's quantity: the mean over the TRAIN inputs of ``local_twonn`` with ``k``
  neighbours (the paper's localised TwoNN and its mean; the authors' code defaults to 128
  neighbours, up to 60,000 points and removal of exact duplicates, configs/local_estimates in
  aidos-lab/Topo_LLM_public; full uses k = 128, quick k = 64 for its ~700 points; train inputs
  because the paper's point is that the signal needs no labelled held-out data), one input
  per unordered pair ``{a, b}``
  (the twins ``[a, b]`` and ``[b, a]`` have near-identical representations; with both kept a
  TwoNN reads each point's twin as its nearest neighbour and returns values below 1);
- for reference: the same over the novel held-out inputs, the mean local MLE (``k_mle``
  neighbours) and the global TwoNN (MLE fit) of the train inputs.

Test accuracy is measured on NOVEL held-out pairs, those whose twin ``[b, a]`` is held out too:
with the ordered split of Power et al., a held-out pair whose twin trains is answered by
memorisation and the near-symmetry of the block, so accuracy on all held-out pairs sits well
above chance from memorisation on (0.48 at 50 % train pairs in the quick run, 0.04-0.32 at
40 % in the full run, against 0.00-0.01 on novel pairs); it is reported as 'all held-out'.

Thresholds, fixed before any run (and why):

- memorised at ``t_mem``: the first checkpoint with train accuracy >= 0.99 (all but 1 %);
  generalised at ``t_gen``: the first with novel-pair accuracy >= 0.9; jump at ``t_jump``: the
  first with novel-pair accuracy >= 0.5 (about half-way from chance, 1/p, to 1);
- (a) grokking: ``t_gen >= 3 t_mem`` (ordinary learning lets test accuracy follow train
  accuracy within a fraction of the time to fit; grokking papers report delays of 10-1000x);
- (b) LID falls: the peak of LID between ``t_mem`` and ``t_jump`` exceeds LID at ``t_gen`` by at
  least 10 % of the peak AND by 3 combined standard errors of the two means (the point
  standard error, ``sd / sqrt(n)``, understates the error of a mean of overlapping
  neighbourhoods; the 10 % floor is what a figure reader would call a fall);
- (c) before: LID reaches half its eventual drop (peak -> its minimum after the peak) at a
  checkpoint strictly before ``t_jump``;
- every check must hold in every seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from repscope.replicate._util import line
from repscope.replicate.claim import Check, Claim, Outcome, Panel, Row
from repscope.replicate.registry import add

MEMORISED, GENERALISED, JUMP = 0.99, 0.9, 0.5
DELAY, REL_DROP, N_SE = 3.0, 0.10, 3.0
ONSET = 0.1  # reported only: the first visible rise of novel-pair accuracy


def record_steps(steps: int, eval_every: int) -> list[int]:
    """Checkpoints: 0, powers of two below ``eval_every``, then every ``eval_every`` steps."""
    grid = {0, steps, *range(0, steps + 1, eval_every)}
    s = 1
    while s < eval_every:
        grid.add(s)
        s *= 2
    return sorted(x for x in grid if x <= steps)


def measure_lid(H: np.ndarray, k: int, k_mle: int | None = None) -> dict[str, float]:
    """Mean local TwoNN (``k`` neighbours) of the rows of ``H`` with its point standard error;
    with ``k_mle`` also the mean local MLE and the global TwoNN (MLE fit)."""
    from repscope.measures.dimension import local_mle, local_twonn, twonn

    est = local_twonn(H, k=k, summary="mean", n_boot=0)
    loc = np.asarray(est.diagnostics["local"], dtype=float)
    loc = loc[np.isfinite(loc)]
    out = {"lid": float(est.value), "lid_se": float(loc.std(ddof=1) / np.sqrt(loc.size))}
    if k_mle is not None:
        out["mle"] = float(local_mle(H, k=k_mle, summary="mean", n_boot=0).value)
        out["twonn"] = float(twonn(H, fit="mle", n_boot=0).value)
    return out


def _train_one(p: Mapping[str, Any], seed: int) -> dict[str, list[float]]:
    from repscope.replicate._transformer import modular_addition, train_grokking

    data = modular_addition(int(p["p"]), float(p["train_fraction"]), seed)
    k, k_mle = int(p["k"]), int(p["k_mle"])
    rec: dict[str, list[float]] = {key: [] for key in (
        "step", "train_acc", "test_acc", "novel_acc", "train_loss", "test_loss", "lid", "lid_se",
        "mle", "twonn", "lid_test", "lid_test_se")}
    novel, tr_set = data.novel, data.train_unordered
    a, b = np.divmod(novel, data.p)
    novel_set = novel[a <= b]  # one per unordered held-out pair (twins are near-duplicates)
    t_gen: list[int] = []

    def on_checkpoint(ck) -> bool:
        m = measure_lid(ck.reps[tr_set], k, k_mle)  # (n_lid, d_model)
        mt = measure_lid(ck.reps[novel_set], k)  # (n_novel / 2, d_model)
        nov = float(ck.correct[novel].mean())
        for key, v in (("step", ck.step), ("train_acc", ck.train_acc), ("test_acc", ck.test_acc),
                       ("novel_acc", nov),
                       ("train_loss", ck.train_loss), ("test_loss", ck.test_loss),
                       ("lid_test", mt["lid"]), ("lid_test_se", mt["lid_se"]), *m.items()):
            rec[key].append(float(v))
        if not t_gen and nov >= GENERALISED:
            t_gen.append(ck.step)
        # stop once the post-grokking tail (a ``tail`` fraction of t_gen) is recorded
        return bool(t_gen) and ck.step >= (1 + float(p["tail"])) * max(t_gen[0], 1)

    train_grokking(data, steps=int(p["steps"]), lr=float(p["lr"]),
                   weight_decay=float(p["weight_decay"]), seed=seed,
                   record=record_steps(int(p["steps"]), int(p["eval_every"])),
                   on_checkpoint=on_checkpoint, d_model=int(p["d_model"]),
                   n_heads=int(p["n_heads"]), d_mlp=int(p["d_mlp"]))
    rec["n_train"], rec["n_test"] = [data.train.size], [data.test.size]
    rec["n_novel"], rec["n_lid"] = [novel.size], [tr_set.size]
    return rec


def _first(steps: np.ndarray, ok: np.ndarray) -> int | None:
    return int(steps[np.argmax(ok)]) if ok.any() else None


def analyse(rec: Mapping[str, list[float]]) -> dict[str, Any]:
    """The grokking times and the LID drop of one seed's record (the checks' inputs)."""
    s = np.asarray(rec["step"], dtype=float)
    lid, se = np.asarray(rec["lid"]), np.asarray(rec["lid_se"])
    t_mem = _first(s, np.asarray(rec["train_acc"]) >= MEMORISED)
    t_gen = _first(s, np.asarray(rec["novel_acc"]) >= GENERALISED)
    t_jump = _first(s, np.asarray(rec["novel_acc"]) >= JUMP)
    out: dict[str, Any] = {"t_mem": t_mem, "t_gen": t_gen, "t_jump": t_jump,
                           "t_jump_all_held_out": _first(s, np.asarray(rec["test_acc"]) >= JUMP),
                           "novel_acc_at_t_mem": None if t_mem is None else
                           float(np.asarray(rec["novel_acc"])[s == t_mem][0]),
                           "test_acc_at_t_mem": None if t_mem is None else
                           float(np.asarray(rec["test_acc"])[s == t_mem][0])}
    lo = t_mem if t_mem is not None else 0
    hi = t_jump if t_jump is not None else s[-1]
    win = np.flatnonzero((s >= lo) & (s <= hi))
    if win.size == 0:
        return out
    ip = int(win[np.argmax(lid[win])])
    ig = int(np.flatnonzero(s == t_gen)[0]) if t_gen is not None else len(s) - 1
    after = np.arange(ip, len(s))
    low = float(lid[after].min())
    half = lid[ip] - 0.5 * (lid[ip] - low)
    ih = int(after[np.argmax(lid[after] <= half)])
    out.update(peak=float(lid[ip]), t_peak=int(s[ip]), lid_gen=float(lid[ig]),
               drop=float(lid[ip] - lid[ig]), drop_se=float(np.hypot(se[ip], se[ig])),
               lid_min_after=low, t_half=int(s[ih]) if lid[ip] > low else None,
               mle_peak=float(rec["mle"][ip]), mle_gen=float(rec["mle"][ig]),
               twonn_peak=float(rec["twonn"][ip]), twonn_gen=float(rec["twonn"][ig]),
               test_lid_peak=float(rec["lid_test"][ip]), test_lid_gen=float(rec["lid_test"][ig]),
               lid_init=float(lid[0]),
               lid_min_mem=float(lid[s <= lo].min()),
               t_onset_lid=_first(s[after], lid[after] <= (1 - REL_DROP) * lid[ip]),
               t_onset_acc=_first(s, np.asarray(rec["novel_acc"]) >= ONSET))
    return out


def _checks(an: Mapping[int, Mapping[str, Any]]) -> tuple[Check, ...]:
    def grokked(a) -> bool:
        return a["t_mem"] is not None and a["t_gen"] is not None and a["t_gen"] >= DELAY * a["t_mem"]

    def fell(a) -> bool:
        return "drop" in a and a["t_gen"] is not None and \
            a["drop"] >= max(REL_DROP * a["peak"], N_SE * a["drop_se"])

    def before(a) -> bool:
        return a.get("t_half") is not None and a["t_jump"] is not None and a["t_half"] < a["t_jump"]

    def said(a, *keys) -> str:
        return ", ".join(f"{key} {a.get(key)}" if not isinstance(a.get(key), float)
                         else f"{key} {a[key]:.3g}" for key in keys)

    return (
        Check(f"grokking in every seed: train accuracy >= {MEMORISED} at t_mem, test accuracy >= "
              f"{GENERALISED} on novel held-out pairs at t_gen >= {DELAY:g} t_mem", all(grokked(a) for a in an.values()),
              "; ".join(f"seed {sd}: " + said(a, "t_mem", "t_gen") for sd, a in an.items())),
        Check(f"LID (mean local TwoNN of the train inputs) falls in every seed: its peak between "
              f"t_mem and t_jump exceeds its value at t_gen by >= {REL_DROP:.0%} of the peak and "
              f">= {N_SE:g} standard errors", all(fell(a) for a in an.values()),
              "; ".join(f"seed {sd}: " + said(a, "peak", "lid_gen", "drop", "drop_se")
                        for sd, a in an.items())),
        Check(f"the fall comes first in every seed: LID has made half its eventual drop at a "
              f"checkpoint before novel-pair accuracy reaches {JUMP} (t_half < t_jump)",
              all(before(a) for a in an.values()),
              "; ".join(f"seed {sd}: " + said(a, "t_peak", "t_half", "t_jump")
                        for sd, a in an.items())),
    )


def run(p: Mapping[str, Any]) -> Outcome:
    return outcome(p, {int(sd): _train_one(p, int(sd)) for sd in p["seeds"]})


def outcome(p: Mapping[str, Any], recs: Mapping[int, Mapping[str, list[float]]]) -> Outcome:
    """Checks, rows, panels and analysis from the per-seed training records (``run``'s second
    half; a stored result's ``details["records"]`` can be re-analysed without retraining)."""
    seeds = list(recs)
    an = {sd: analyse(recs[sd]) for sd in seeds}
    for sd in seeds:  # the same timing read off the reference estimators
        for key in ("mle", "twonn", "lid_test"):
            alt = analyse({**recs[sd], "lid": recs[sd][key], "lid_se": [0.0] * len(recs[sd][key])})
            an[sd][f"t_half_{key}"] = alt.get("t_half")
    checks = _checks(an)

    def across(key: str, digits: int = 3) -> str:
        vals = [a.get(key) for a in an.values()]
        return ", ".join("n/a" if v is None else (f"{v:.{digits}g}" if isinstance(v, float)
                                                    else str(v)) for v in vals)

    tag = f"per seed: {', '.join(map(str, seeds))}; every cell lists the seeds in this order"
    k, k_mle = int(p["k"]), int(p["k_mle"])
    rows = (
        Row(f"steps to memorise / to generalise ({tag})",
            f"{across('t_mem')} / {across('t_gen')}",
            "train accuracy near 100 % long before validation accuracy rises (Power et al. 2022, "
            "Fig. 1, x / y mod 97 with 50 % of the data: ~10^3 vs ~10^5 steps)"),
        Row(f"step where novel-pair accuracy reaches {ONSET} / {JUMP}",
            f"{across('t_onset_acc')} / {across('t_jump')}", ""),
        Row("accuracy at t_mem: novel held-out pairs / all held-out pairs",
            f"{across('novel_acc_at_t_mem')} / {across('test_acc_at_t_mem')}",
            "test accuracy at chance while train accuracy is ~100 %"),
        Row(f"LID = mean local TwoNN (k = {k}), train inputs: at init / peak after memorising / at "
            "t_gen", f"{across('lid_init')} / {across('peak')} / {across('lid_gen')}",
            "reductions in the mean local dimension accompany and predict the grokking step "
            "(Ruppik et al. 2025, abstract and their arithmetic-task experiment)"),
        Row("step of the LID peak / 10 % below the peak / half its eventual drop",
            f"{across('t_peak')} / {across('t_onset_lid')} / {across('t_half')}",
            "drop precedes the accuracy jump"),
        Row("step of half the eventual drop, same rule: local MLE / global TwoNN / LID of the "
            "novel held-out inputs", f"{across('t_half_mle')} / {across('t_half_twonn')} / "
            f"{across('t_half_lid_test')}", ""),
        Row("LID, novel held-out inputs: at the LID peak step / t_gen",
            f"{across('test_lid_peak')} / {across('test_lid_gen')}", ""),
        Row(f"mean local MLE (k = {k_mle}), train inputs: at LID peak / t_gen",
            f"{across('mle_peak')} / {across('mle_gen')}", ""),
        Row("global TwoNN, train inputs: at LID peak / t_gen",
            f"{across('twonn_peak')} / {across('twonn_gen')}", ""),
        Row("train / held-out / novel held-out pairs; LID points (train, one per unordered pair)",
            f"{recs[seeds[0]]['n_train'][0]} / {recs[seeds[0]]['n_test'][0]} / "
            f"{recs[seeds[0]]['n_novel'][0]}; {recs[seeds[0]]['n_lid'][0]} (p = {p['p']}, "
            f"seed {seeds[0]})", ""),
    )

    def x(sd: int) -> np.ndarray:
        return np.asarray(recs[sd]["step"][1:])  # step 0 is off a log axis

    acc = tuple(ln for sd in seeds for ln in (
        line(f"train, seed {sd}", x(sd), recs[sd]["train_acc"][1:], style="-"),
        line(f"novel held-out, seed {sd}", x(sd), recs[sd]["novel_acc"][1:], style="--"),
        line(f"all held-out, seed {sd}", x(sd), recs[sd]["test_acc"][1:], style=":")))
    lid = tuple(line(f"train inputs, seed {sd}", x(sd), recs[sd]["lid"][1:],
                     se=recs[sd]["lid_se"][1:], style="-") for sd in seeds) + (
        line(f"novel held-out inputs, seed {seeds[0]}", x(seeds[0]), recs[seeds[0]]["lid_test"][1:],
             style=":"),)
    ref = tuple(ln for sd in seeds for ln in (
        line(f"local MLE k={k_mle}, seed {sd}", x(sd), recs[sd]["mle"][1:], style="-"),
        line(f"global TwoNN, seed {sd}", x(sd), recs[sd]["twonn"][1:], style="--")))
    zoom: tuple = ()
    for sd in seeds:
        a, xs = an[sd], np.asarray(recs[sd]["step"])
        keep = xs >= (a["t_mem"] or 0)
        if "peak" in a and keep.any():
            zoom += (line(f"LID / peak, seed {sd}", xs[keep],
                          np.asarray(recs[sd]["lid"])[keep] / a["peak"], style="-"),
                     line(f"novel accuracy, seed {sd}", xs[keep],
                          np.asarray(recs[sd]["novel_acc"])[keep], style="--"))
    panels = (
        Panel("accuracy (chance 1/p)", "step", "accuracy", acc, logx=True),
        Panel(f"LID: mean local TwoNN, k = {k} (band: +-2 SE)", "step", "dimension", lid,
              logx=True),
        Panel("reference estimators, train inputs", "step", "dimension", ref, logx=True),
        Panel("around the jump: LID / its peak (solid), novel-pair accuracy (dashed)",
              "step (linear, from t_mem)", "fraction", zoom),
    )
    return Outcome(checks, rows, panels, _analysis(checks, an, p),
                   details={"records": {str(sd): recs[sd] for sd in seeds},
                            "analysis": {str(sd): an[sd] for sd in seeds}})


def _analysis(checks: tuple[Check, ...], an: Mapping[int, Mapping[str, Any]],
              p: Mapping[str, Any]) -> str:
    ok = all(c.passed for c in checks)
    failed = [c.description.split(" in every seed")[0] for c in checks if not c.passed]
    head = ("Reproduced: the network memorises the train pairs early, generalises to novel pairs "
            "much later, and the mean local dimension of the train inputs' representations "
            "falls, and falls first. " if ok else "Not reproduced (failed: " + "; ".join(failed) + "). ")
    timing = "; ".join(
        f"seed {sd}: LID peak at step {a.get('t_peak')}, 10 % below it at {a.get('t_onset_lid')}, "
        f"half its drop at {a.get('t_half')}; novel accuracy 0.1 at {a.get('t_onset_acc')}, 0.5 "
        f"at {a.get('t_jump')}, 0.9 at {a.get('t_gen')}" for sd, a in an.items())
    together = [sd for sd, a in an.items() if a.get("t_half") is not None
                and a.get("t_jump") is not None and a["t_half"] >= a["t_jump"]]
    finding = (f"In seed(s) {', '.join(map(str, together))} the fall of LID accompanies the rise "
               "of novel-pair accuracy rather than leading it: half the fall is reached at or "
               "after the checkpoint where accuracy crosses 0.5, so at our checkpoint spacing "
               "LID does not forecast the jump. " if together else "")
    late = [sd for sd, a in an.items() if a.get("t_onset_lid") is not None
            and a.get("t_onset_acc") is not None and a["t_onset_lid"] >= a["t_onset_acc"]]
    if late:
        finding += (f"Even the onset of the fall (10 % below the peak) comes at or after the first "
                    f"visible rise of novel-pair accuracy ({ONSET}) in seed(s) "
                    f"{', '.join(map(str, late))}. ")
    refs = {"local MLE": "t_half_mle", "global TwoNN": "t_half_twonn",
            "LID of the novel held-out inputs": "t_half_lid_test"}
    lag = [name for name, key in refs.items() if all(
        a.get(key) is not None and a.get("t_jump") is not None and a[key] >= a["t_jump"]
        for a in an.values())]
    lead = [name for name, key in refs.items() if all(
        a.get(key) is not None and a.get("t_jump") is not None and a[key] < a["t_jump"]
        for a in an.values())]
    if lag:
        finding += ("The reference estimators read the same: " + ", ".join(lag) + " reach half "
                    "their eventual drop at or after the 0.5 crossing in every seed. ")
    if lead:
        finding += ("These reach half their drop before the 0.5 crossing in every seed: "
                    + ", ".join(lead) + ". ")
    dips = [(sd, a) for sd, a in an.items() if a.get("lid_min_mem") is not None]
    if dips:
        finding += ("Before the fall, LID moves the other way: it drops while the network "
                    "memorises (" + "; ".join(
                        f"seed {sd}: {a['lid_init']:.3g} at init -> {a['lid_min_mem']:.3g}"
                        for sd, a in dips) + ") and climbs back to its peak during the plateau "
                    "of chance test accuracy. ")
    return (head + finding + "Timing: " + timing + ". "
            + "Twins: the ordered split of Power et al. leaves the twin [b, a] of about "
            f"{p['train_fraction']:.0%} of the held-out pairs in the train set, and a network "
            "that has only memorised can answer those through the near-symmetry of its block: "
            "accuracy at t_mem is " + "; ".join(
                f"{a.get('test_acc_at_t_mem', float('nan')):.2f} on all held-out pairs vs "
                f"{a.get('novel_acc_at_t_mem', float('nan')):.2f} on novel ones (seed {sd})"
                for sd, a in an.items()) + ". In the first quick run (all inputs kept) the "
            "twins' representations were near-duplicates and the local TwoNN read 0.6-2.4, each "
            "point's nearest neighbour being its twin. Generalisation is therefore measured on "
            "novel pairs (held out with their twin) and LID on one input per unordered pair; "
            "both choices were made after that first quick run, and the checks' thresholds "
            "were not changed. "
            "The half-drop step depends on how long training runs after grokking (the eventual "
            f"minimum; we stop at {1 + float(p['tail']):g} x t_gen), so the onset (10 % below "
            "the peak) is reported beside it. "
            + f"Differences from the papers: one block of width {p['d_model']} on p = {p['p']} "
            f"with {p['train_fraction']:.0%} of the pairs, trained from scratch (Ruppik et al. "
            "measure token embeddings of larger transformers over many sequences; their code's "
            "defaults: 128 neighbours, up to 60,000 points, exact duplicates removed); "
            f"k = {p['k']} neighbours per local estimate; one representation per input (the "
            "residual stream at '=' after the block). Standard errors are sd / sqrt(n) over "
            "points, which ignore the overlap of neighbourhoods, hence the 10 % floor in the "
            "LID-falls check.")


CLAIM = add(Claim(
    name="grokking-lid",
    title="The local ID of a grokking transformer's representations drops before test accuracy "
          "jumps",
    citation=("Ruppik, von Rohrscheidt, van Niekerk, Heck, Vukovic, Feng, Lin, Lubis, Rieck, "
              "Zibrowius, Gasic, 'Less is more: local intrinsic dimensions of contextual language "
              "models', NeurIPS 2025 (arXiv:2506.01034); Doshi, Das, He, Gromov, 'To grok or not "
              "to grok: disentangling generalization and memorization on corrupted algorithmic "
              "datasets', ICLR 2024 (arXiv:2310.13061); set-up of Power et al. 2022 and Nanda et al. ICLR 2023"),
    statement=("Ruppik et al., abstract: 'the mean of the local dimensions predicts when the "
               "model's training capabilities are exhausted, ... overfitting, ... and grokking, "
               "as illustrated with an arithmetic task. Furthermore, our experiments suggest a "
               "practical heuristic: reductions in the mean local dimension tend to accompany "
               "and predict subsequent performance gains.'"),
    protocol=("A one-block transformer (d_model 128, 4 heads, MLP 512, learned positions, no "
              "layer norm; our code) on [a, b, =] -> (a + b) mod p, trained full batch with "
              "AdamW (weight decay 1.0, betas 0.9/0.98) on a seeded fraction of the p^2 pairs; "
              "at log-then-linearly spaced checkpoints, accuracies (test accuracy on novel pairs: "
              "held out with their twin [b, a]) and the mean local TwoNN (`local_twonn`, k "
              "neighbours) of the train inputs' residual stream at '=' after the block, one "
              "input per unordered pair, with the novel held-out inputs, the mean local MLE and "
              "the global TwoNN for reference. Training stops at (1 + tail) x the step where "
              "novel-pair accuracy reaches 0.9. Thresholds and their reasons: the module "
              "docstring (repscope.replicate.grokking)."),
    run=run,
    quick={"seeds": [0], "p": 43, "train_fraction": 0.5, "lr": 3e-3, "weight_decay": 1.0,
           "steps": 2000, "eval_every": 20, "tail": 0.5, "k": 64, "k_mle": 20, "d_model": 128,
           "n_heads": 4, "d_mlp": 512},
    full={"seeds": [0, 1, 2], "p": 67, "train_fraction": 0.4, "lr": 3e-3, "weight_decay": 1.0,
          "steps": 8000, "eval_every": 40, "tail": 0.5, "k": 128, "k_mle": 20, "d_model": 128,
          "n_heads": 4, "d_mlp": 512},
))
