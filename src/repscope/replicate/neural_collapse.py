"""Claim ``neural-collapse``: NC1 falls and class means approach a simplex ETF during training.

Papyan, Han and Donoho (PNAS 2020) train classifiers past zero training error (the terminal
phase) on seven datasets, Fashion-MNIST among them, with SGD, momentum and weight decay, and
observe (Figs. 2-7): within-class variability collapses (NC1 = tr(S_W S_B^+)/C falls by
orders of magnitude), the centred class means become equinorm and equiangular with pairwise
cosine -1/(C-1) (a simplex equiangular tight frame, NC2), the classifier aligns with them
(NC3), and the network's decision becomes nearest-class-centre (NC4).

Here an MLP is trained on a seeded Fashion-MNIST subset (Debian ``dataset-fashion-mnist``)
and the penultimate features of the training set are measured at log-spaced epochs with
``repscope.measures.classes`` (NC3/NC4 with the network's own last layer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from repscope.replicate._util import line
from repscope.replicate.claim import Check, Claim, Outcome, Panel, Row
from repscope.replicate.registry import add


def _epochs_to_record(total: int) -> list[int]:
    grid = {0, total}
    e = 1
    while e < total:
        grid.add(e)
        e = max(e + 1, int(round(e * 1.5)))
    return sorted(grid)


def _measure(feats: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray) -> dict[str, float]:
    from repscope.measures.classes import nc1, nc2_equiangularity, nc2_equinorm, nc3, nc4

    ang = nc2_equiangularity(feats, labels=y)
    return {"nc1": nc1(feats, labels=y).value,
            "equinorm": nc2_equinorm(feats, labels=y).value,
            "equiangularity": ang.value,
            "max_angle": float(ang.diagnostics["max_angle"]),
            "nc3": nc3(feats, labels=y, weights=W, bias=b).value,
            "nc4": nc4(feats, labels=y, weights=W, bias=b).value}


def _train(p: Mapping[str, Any], extra: Any = None, random_labels: bool = False) -> dict[str, Any]:
    """Train the MLP; at each recorded epoch measure NC1-NC4 (and ``extra(H, labels, true_labels)``,
    a dict of further numbers) on the training set's penultimate features. ``random_labels``: the
    training labels are a seeded permutation (memorisation, the overfitting control)."""
    import torch
    from torch import nn

    from repscope.landscape.data import load_fashion_mnist

    seed = int(p["seed"])
    split = load_fashion_mnist(n_train=int(p["n_train"]), n_test=int(p["n_test"]), seed=seed)
    Xtr = torch.from_numpy(split.x_train.reshape(len(split.y_train), -1))  # (n, 784)
    y_np = split.y_train
    if random_labels:
        y_np = np.random.default_rng(seed + 7).permutation(y_np)
    ytr = torch.from_numpy(y_np)
    Xte = torch.from_numpy(split.x_test.reshape(len(split.y_test), -1))  # (m, 784)
    yte = torch.from_numpy(split.y_test)
    torch.manual_seed(seed)
    width, depth = int(p["width"]), int(p["depth"])
    layers: list[nn.Module] = []
    d_in = Xtr.shape[1]
    for _ in range(depth):
        layers += [nn.Linear(d_in, width), nn.BatchNorm1d(width), nn.ReLU()]
        d_in = width
    body = nn.Sequential(*layers)
    head = nn.Linear(width, 10)
    params = list(body.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=float(p["lr"]), momentum=0.9,
                          weight_decay=float(p["weight_decay"]))
    epochs = int(p["epochs"])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [epochs // 3, 2 * epochs // 3], gamma=0.1)
    record = _epochs_to_record(epochs)
    gen = torch.Generator().manual_seed(seed)
    hist: dict[str, list[float]] = {"epoch": [], "train_acc": [], "test_acc": []}
    bs = int(p["batch_size"])
    for epoch in range(epochs + 1):
        if epoch in record:
            body.eval()
            with torch.no_grad():
                H = body(Xtr)  # (n, width) penultimate features
                tr = float((head(H).argmax(1) == ytr).float().mean())
                te = float((head(body(Xte)).argmax(1) == yte).float().mean())
            m = _measure(H.double().numpy(), y_np, head.weight.detach().double().numpy(),
                         head.bias.detach().double().numpy())
            if extra is not None:
                m.update(extra(H.double().numpy(), y_np, split.y_train))
            hist["epoch"].append(epoch)
            hist["train_acc"].append(tr)
            hist["test_acc"].append(te)
            for k, v in m.items():
                hist.setdefault(k, []).append(v)
        if epoch == epochs:
            break
        body.train()
        order = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), bs):
            idx = order[i:i + bs]
            loss = nn.functional.cross_entropy(head(body(Xtr[idx])), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return hist


def _analysis(h: Mapping[str, Any], p: Mapping[str, Any], checks: tuple[Check, ...]) -> str:
    """The verdict's explanation from the recorded history (also used to re-render a page)."""
    acc = np.array(h["train_acc"])
    zero = np.flatnonzero(acc >= 1.0)
    tpt = int(h["epoch"][zero[0]]) if zero.size else None
    ok = all(c.passed for c in checks)
    text = ("All four signatures appear as in the paper. " if ok else
            "Not every signature appeared: "
            + "; ".join(c.description for c in checks if not c.passed) + ". ")
    if tpt is None:
        text += "Training never reached zero error, so the run did not enter the terminal phase. "
    else:
        fall = h["nc1"][1] / h["nc1"][-1]
        text += (f"Training error reached 0 at epoch {tpt}, so the terminal phase lasted "
                 f"{int(p['epochs']) - tpt} of {p['epochs']} epochs (Papyan et al.: roughly 300 "
                 f"of 350); NC1 fell {fall:.1f}x over the run"
                 + ("" if fall >= 10 else
                    f", and from {h['nc1'][1]:.3g} at epoch 1: with "
                    f"{int(p['n_train']) // int(p['batch_size'])} steps per epoch the first "
                    "epoch already separates the classes, so the fall measured from it is "
                    "smaller than the paper's orders of magnitude over a longer terminal phase")
                 + ". ")
    return text + (
        "Differences from the paper: a "
        f"{p['depth']}-layer MLP (width {p['width']}, batch norm) instead of their conv nets, "
        f"{p['n_train']:,} training images instead of 60,000 and {p['epochs']} epochs instead of "
        "350 (the step size drops at 1/3 and 2/3 of training, as theirs); measured on the "
        "training set like the paper's figures.")


def run(p: Mapping[str, Any]) -> Outcome:
    h = _train(p)
    ep = np.array(h["epoch"], dtype=float)
    acc = np.array(h["train_acc"])
    zero = np.flatnonzero(acc >= 1.0)
    tpt = int(ep[zero[0]]) if zero.size else None
    first = 1  # epoch 0 is the random network; the paper's curves start after the first epoch
    nc1_0, nc1_T = h["nc1"][first], h["nc1"][-1]
    ang_0, ang_T = h["max_angle"][first], h["max_angle"][-1]
    norm_0, norm_T = h["equinorm"][first], h["equinorm"][-1]
    nc3_0, nc3_T = h["nc3"][first], h["nc3"][-1]
    checks = (
        Check("the network reaches zero training error (enters the terminal phase)", tpt is not None,
              f"final train accuracy {acc[-1]:.4f}" + (f", first 100 % at epoch {tpt}" if tpt else "")),
        Check("NC1 falls by at least 10x from epoch 1 to the end (Papyan et al. Fig. 6: "
              "orders of magnitude)", nc1_T < nc1_0 / 10, f"{nc1_0:.3g} -> {nc1_T:.3g}"),
        Check("class means approach a simplex ETF: max-angle deviation |cos + 1/(C-1)| and "
              "equinorm CV both fall by at least 2x", ang_T < ang_0 / 2 and norm_T < norm_0 / 2,
              f"max-angle {ang_0:.3g} -> {ang_T:.3g}; equinorm {norm_0:.3g} -> {norm_T:.3g}"),
        Check("self-duality: NC3 falls by at least 2x", nc3_T < nc3_0 / 2,
              f"{nc3_0:.3g} -> {nc3_T:.3g}"),
    )
    rows = (
        Row("NC1 = tr(S_W S_B^+)/C, epoch 1 -> last", f"{nc1_0:.3g} -> {nc1_T:.3g}",
            "falls towards 0 over orders of magnitude (Fig. 6; FashionMNIST panel)"),
        Row("NC2 max-angle mean |cos + 1/(C-1)|", f"{ang_0:.3g} -> {ang_T:.3g}",
            "falls towards 0 (Fig. 3)"),
        Row("NC2 equinorm std/mean of class-mean norms", f"{norm_0:.3g} -> {norm_T:.3g}",
            "falls towards 0 (Fig. 2)"),
        Row("NC2 equiangularity std of cosines", f"{h['equiangularity'][first]:.3g} -> "
            f"{h['equiangularity'][-1]:.3g}", "falls towards 0 (Fig. 3)"),
        Row("NC3 ||W/||W|| - M/||M||||^2", f"{nc3_0:.3g} -> {nc3_T:.3g}", "falls (Fig. 5)"),
        Row("NC4 classifier vs nearest class mean disagreement", f"{h['nc4'][first]:.3g} -> "
            f"{h['nc4'][-1]:.3g}", "falls to ~0 (Fig. 7)"),
        Row("train / test accuracy at the end", f"{acc[-1]:.3f} / {h['test_acc'][-1]:.3f}",
            "train 100 % (350 epochs on the full dataset)"),
    )
    x = ep[1:]

    def cut(key: str) -> list[float]:
        return h[key][1:]

    panels = (
        Panel("NC1 within-class variability", "epoch", "tr(S_W S_B^+)/C",
              (line("NC1", x, cut("nc1")),), logx=True, logy=True),
        Panel("NC2: towards a simplex ETF", "epoch", "value",
              (line("max-angle |cos+1/(C-1)|", x, cut("max_angle")),
               line("equinorm CV", x, cut("equinorm")),
               line("equiangularity std", x, cut("equiangularity"))), logx=True, logy=True),
        Panel("NC3 / NC4 and accuracy", "epoch", "value",
              (line("NC3 self-duality", x, cut("nc3")), line("NC4 mismatch", x, cut("nc4")),
               line("train error", x, 1 - np.array(cut("train_acc"))),
               line("test error", x, 1 - np.array(cut("test_acc")))), logx=True),
    )
    analysis = _analysis(h, p, checks)
    return Outcome(checks, rows, panels, analysis, details={"history": h})


CLAIM = add(Claim(
    name="neural-collapse",
    title="Neural collapse during the terminal phase of training (Fashion-MNIST)",
    citation=("Papyan, Han, Donoho, 'Prevalence of neural collapse during the terminal phase of "
              "deep learning training', PNAS 117(40), 2020"),
    statement=("Paraphrased from the abstract and Figs. 2-7: training beyond zero training error, "
               "(NC1) within-class variation of the last-layer features collapses to their class "
               "means; (NC2) the class means converge to a simplex equiangular tight frame; (NC3) "
               "the classifier converges to the class means up to rescaling; (NC4) the decision "
               "becomes nearest class centre. Observed on seven datasets including Fashion-MNIST."),
    protocol=("A seeded Fashion-MNIST subset (`n_train` images, balanced by chance), an MLP with "
              "batch norm, SGD (momentum 0.9, weight decay 5e-4, step size / 10 at 1/3 and 2/3 of "
              "the epochs), penultimate features of the whole training subset measured at "
              "log-spaced epochs with `nc1`, `nc2_equinorm`, `nc2_equiangularity` "
              "(max-angle in its diagnostics), and `nc3` / `nc4` with the network's own head."),
    run=run,
    quick={"seed": 0, "n_train": 600, "n_test": 500, "width": 128, "depth": 2, "epochs": 60,
           "batch_size": 50, "lr": 0.05, "weight_decay": 5e-4},
    full={"seed": 0, "n_train": 5000, "n_test": 2000, "width": 256, "depth": 3, "epochs": 150,
          "batch_size": 100, "lr": 0.05, "weight_decay": 5e-4},
    needs=("fashion-mnist",),
))
