"""Permutation tests at the speed of their products, and the README's ``--permutations 200`` line.

Three sections, one run (results in ``benchmarks/permutations.md``):

1. ``throughput``: ``repscope.inference.permutation_test(measure, X, Y, n_perm=200)`` next to
   (a) ONE plain float64 cross product ``Xc^T Yc`` of the same size (the unit of work of a
   linear-CKA shuffle), (b) the floor of 200 such products done alone, each on freshly
   shuffled rows, (c) the loop a user would otherwise write: a NumPy linear CKA recomputed on
   ``Y[perm]`` 200 times (centring, two self products, one cross product per draw), and (d)
   for the measures without a batched null, one plain evaluation. Synthetic data: a
   decaying-spectrum Gaussian X and a noisy rotation of it, seed 0.
2. ``standalone``: ``permutation_test("cka_linear", X, Y, n_perm=200)`` at 746 x 384 (float64
   and float32 inputs) against 200 bare float64 products, alternating, in the "before" and the
   "after" tree (below).
3. ``readme``: wall time of the README's line
   ``repscope analyze --store S --measures twonn --measures 'gride:n1=8' --measures cka_linear
   --permutations 200 --out OUT`` and of the same line with ``--permutations 0`` (so the
   permutations' share shows), for the current tree ("after") and for a git revision
   ("before", default: main when the faster permutation tests were asked for), each run on
   a store captured by that revision's own README capture line (MiniLM, bundled corpus, mean
   pooling, 746 rows x 6 layers x 384). The "before" tree is a temporary ``git worktree``
   removed at the end; it runs with ``PYTHONPATH`` pointing at its ``src``. Each analyze line
   runs ``--rounds`` times (default 3), the trees alternating; the best time is reported.

    python benchmarks/permutations.py                       # both sections
    python benchmarks/permutations.py --sections throughput --n-perm 200
    python benchmarks/permutations.py --sections readme --before 5db55ed

Threads: ``--threads`` (default 1) sets torch's and BLAS's threads in this process and in the
CLI children, so the before/after runs see the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: main when the issue that asked for faster permutation tests was filed (end of session 3)
BEFORE = "5db55ed"
#: (n, d, permutations): the README's store size, then larger; fewer draws at the largest
SIZES = ((746, 384, 200), (2000, 384, 200), (5000, 768, 50))
MEASURES = ("cka_linear", "cka_linear_debiased", "procrustes_angular")


def timed(fn, *args, repeat: int = 1, **kwargs):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    return out, best


def data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.linspace(2.0, 0.2, d)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return X, X @ Q + rng.standard_normal((n, d))


def numpy_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA as a user writes it (Kornblith et al. 2019, feature-space form)."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    cross = np.linalg.norm(Xc.T @ Yc) ** 2
    return float(cross / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc)))


def bench_throughput(n_perm: int, sizes) -> list[dict]:
    import warnings

    warnings.simplefilter("ignore")
    rows = []
    for n, d, k in sizes:
        rows += _size_rows(n, d, min(n_perm, k))
    return rows


def _size_rows(n: int, d: int, n_perm: int) -> list[dict]:
    """One size: every timing alternates with the floor of bare products (best of 2 rounds of
    each), so a change of machine load between them does not bias the ratio."""
    import torch

    from repscope import inference, registry

    X, Y = data(n, d)
    perms = [np.random.default_rng(1).permutation(n) for _ in range(n_perm)]
    Xc = torch.from_numpy(X - X.mean(0))
    Yc = torch.from_numpy(Y - Y.mean(0))
    _, t_product = timed(lambda: Xc.T @ Yc, repeat=5)

    def floor() -> None:
        for p in perms:
            torch.sum((Xc.T @ Yc[torch.from_numpy(p)]) ** 2)

    def user_loop() -> None:
        for p in perms:
            numpy_cka(X, Y[p])

    def pair(fn, *args, **kwargs):
        """(result, best time of fn, best time of the floor), alternating 2 rounds."""
        best, best_floor, out = float("inf"), float("inf"), None
        for _ in range(2):
            best_floor = min(best_floor, timed(floor)[1])
            out, t = timed(fn, *args, **kwargs)
            best = min(best, t)
        return out, best, best_floor

    rows = []
    _, t_user, floor_user = pair(user_loop)
    for name in MEASURES:
        spec = registry.get(name)
        _, t_plain = timed(spec.fn, X, Y, repeat=2)
        res, t_test, t_floor = pair(inference.permutation_test, name, X, Y, n_perm=n_perm, seed=0)
        user = name == "cka_linear"
        rows.append({
            "section": "throughput", "n": n, "d": d, "n_perm": n_perm, "measure": name,
            "batched_null": spec.prepared is not None and spec.prepared.null is not None,
            "one_product_s": t_product, "products_floor_s": t_floor,
            "numpy_loop_s": t_user if user else None,
            "plain_s": t_plain, "test_s": t_test,
            "permutations_per_s": n_perm / t_test,
            "per_draw_over_one_product": t_test / n_perm / t_product,
            "test_over_floor": t_test / t_floor,
            "numpy_loop_over_test": t_user / floor_user * t_floor / t_test if user else None,
            "p_value": res.p_value, "value": res.value,
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _cli(src: Path, args: list[str], env: dict[str, str]) -> float:
    """Wall time of one ``repscope`` command run by the tree at ``src``."""
    code = "import sys; from repscope.cli import main; sys.exit(main(sys.argv[1:]))"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], env={**env, "PYTHONPATH": str(src)},
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"repscope {' '.join(args)} failed (exit {proc.returncode}) with "
                         f"PYTHONPATH={src}:\n{proc.stderr[-2000:]}")
    return wall


#: run by each tree: permutation_test alone (its import path moved from repscope.stats to
#: repscope.inference) against the bare float64 products, alternating, best of 3
STANDALONE = """
import json, sys, time, warnings
import numpy as np, torch
warnings.simplefilter("ignore")
torch.set_num_threads(int(sys.argv[1]))
try:
    from repscope.inference import permutation_test
except ImportError:
    from repscope.stats import permutation_test
rng = np.random.default_rng(0)
n, d = 746, 384
X = rng.standard_normal((n, d)) * np.linspace(2.0, 0.2, d)
Y = X @ np.linalg.qr(rng.standard_normal((d, d)))[0] + rng.standard_normal((n, d))
perms = [torch.from_numpy(np.random.default_rng(1).permutation(n)) for _ in range(200)]
Xc, Yc = torch.from_numpy(X - X.mean(0)), torch.from_numpy(Y - Y.mean(0))
for dtype in ("float64", "float32"):
    A, B = X.astype(dtype), Y.astype(dtype)
    tf = tt = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for p in perms:
            torch.sum((Xc.T @ Yc[p]) ** 2)
        tf = min(tf, time.perf_counter() - t)
        t = time.perf_counter()
        permutation_test("cka_linear", A, B, n_perm=200, seed=0)
        tt = min(tt, time.perf_counter() - t)
    print(json.dumps({"input": dtype, "floor_s": tf, "test_s": tt}))
"""


def _standalone(src: Path, env: dict[str, str], threads: int) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", STANDALONE, str(threads)],
                          env={**env, "PYTHONPATH": str(src)}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the standalone timing failed with PYTHONPATH={src}:\n"
                         f"{proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _help(src: Path, command: str, env: dict[str, str]) -> str:
    code = "import sys; from repscope.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, command, "--help"],
                          env={**env, "PYTHONPATH": str(src)}, capture_output=True,
                          text=True).stdout


def bench_trees(before: str, threads: int, work: Path, rounds: int = 3,
                sections: frozenset[str] = frozenset({"readme", "standalone"})) -> list[dict]:
    """The ``readme`` and ``standalone`` sections, each on the before and the after tree."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    commit = subprocess.run(["git", "rev-parse", before], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    tree = work / "before-tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT,
                   check=True, capture_output=True)
    rows = []
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        trees = (("before", tree / "src", commit), ("after", ROOT / "src", head))
        if "standalone" in sections:
            for label, src, rev in trees:
                for r in _standalone(src, env, threads):
                    rows.append({"section": "standalone", "tree": label, "commit": rev[:10],
                                 **r, "test_over_floor": r["test_s"] / r["floor_s"]})
                    print(json.dumps(rows[-1]), flush=True)
        if "readme" not in sections:
            return rows
        stores, caps = {}, {}
        for label, src, _ in trees:
            # every document: the README's line says --max-docs all since the defaults were
            # unified (40); before that, capture's default was every document
            every = ["--max-docs", "all"] if "INT|ALL" in _help(src, "capture", env) else []
            stores[label] = work / f"{label}-store"
            caps[label] = _cli(src, ["capture", "--layers", "encoder.layer.*", "--pooling", "mean",
                                     *every, "--out", str(stores[label])], env)
        best: dict[tuple[str, int], float] = {}
        for r in range(rounds):  # alternate the trees so load changes hit both alike
            for label, src, _ in trees:
                base = ["analyze", "--store", str(stores[label]), "--measures", "twonn",
                        "--measures", "gride:n1=8", "--measures", "cka_linear"]
                for perms in (200, 0):
                    out = work / f"{label}-a{perms}-{r}"
                    t = _cli(src, [*base, "--permutations", str(perms), "--out", str(out)], env)
                    best[label, perms] = min(best.get((label, perms), float("inf")), t)
                    print(f"round {r} {label} --permutations {perms}: {t:.1f} s", flush=True)
        for label, _, rev in trees:
            for perms in (200, 0):
                rows.append({"section": "readme", "tree": label, "commit": rev[:10],
                             "permutations": perms, "analyze_s": best[label, perms],
                             "capture_s": caps[label], "rounds": rounds})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                       capture_output=True)
    return rows


def _fmt(x) -> str:
    return "-" if x is None else (f"{x:.3g}" if isinstance(x, float) else str(x))


def markdown(rows: list[dict], meta: dict) -> str:
    out = ["# Permutation tests: throughput and the README's `--permutations 200` line\n",
           f"`{meta['command']}` on {meta['date']}, {meta['machine']}, load average at start "
           f"{meta['load']}, torch {meta['torch']}, {meta['threads']} thread(s).\n"]
    thr = [r for r in rows if r["section"] == "throughput"]
    if thr:
        out += ["## Throughput (synthetic: decaying-spectrum Gaussian X, Y a noisy rotation of X, "
                "seed 0)\n",
                "| n x d | draws | measure | prepared null | bare products s | test s "
                "| permutations / s | test / bare products "
                "| NumPy loop s | NumPy loop / test |",
                "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in thr:
            out.append(f"| {r['n']} x {r['d']} | {r['n_perm']} | `{r['measure']}` | {r['batched_null']} | "
                       f"{r['products_floor_s']:.2f} | "
                       f"{r['test_s']:.2f} | {r['permutations_per_s']:.0f} | "
                       f"{r['test_over_floor']:.2f} | "
                       f"{_fmt(r['numpy_loop_s'])} | {_fmt(r['numpy_loop_over_test'])} |")
    sa = [r for r in rows if r["section"] == "standalone"]
    if sa:
        out += ["\n## `permutation_test('cka_linear', X, Y, n_perm=200)` alone, 746 x 384, each tree\n",
                "| tree | commit | input dtype | 200 bare float64 products s | test s "
                "| test / bare products |", "|---|---|---|---:|---:|---:|"]
        for r in sa:
            out.append(f"| {r['tree']} | `{r['commit']}` | {r['input']} | {r['floor_s']:.2f} | "
                       f"{r['test_s']:.2f} | {r['test_over_floor']:.2f} |")
    rd = [r for r in rows if r["section"] == "readme"]
    if rd:
        out += ["\n## The README's line (MiniLM, bundled corpus, 746 rows x 6 layers x 384)\n",
                "| tree | commit | --permutations | analyze s (best of rounds) | capture s |",
                "|---|---|---:|---:|---:|"]
        for r in rd:
            out.append(f"| {r['tree']} | `{r['commit']}` | {r['permutations']} | "
                       f"{r['analyze_s']:.1f} | {r['capture_s']:.1f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="throughput,standalone,readme")
    ap.add_argument("--n-perm", type=int, default=200)
    ap.add_argument("--before", default=BEFORE, help="git revision of the 'before' tree")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of each analyze line")
    ap.add_argument("--quick", action="store_true", help="first size only")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    ap.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    sections = set(a.sections.split(","))
    meta = {"command": "python benchmarks/permutations.py " + " ".join(sys.argv[1:]),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
            "torch": torch.__version__, "threads": a.threads}
    rows: list[dict] = []
    if "throughput" in sections:
        rows += bench_throughput(a.n_perm, SIZES[:1] if a.quick else SIZES)
    if sections & {"readme", "standalone"}:
        work = Path(tempfile.mkdtemp(prefix="repscope-perm-"))
        try:
            rows += bench_trees(a.before, a.threads, work, a.rounds,
                                frozenset(sections & {"readme", "standalone"}))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    text = markdown(rows, meta)
    print(text)
    if a.json:
        a.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if a.markdown:
        a.markdown.write_text(text)


if __name__ == "__main__":
    main()
