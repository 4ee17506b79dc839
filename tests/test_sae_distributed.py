"""Data-parallel SAE training (``repscope.dictionaries.distributed``): two processes with
gloo on loopback end with the one-process weights (1e-5 after 100 steps), for the same global
batches; a one-process checkpoint resumes on two processes; batch-wide architectures are refused.

Each call spawns two fresh interpreters (torch import ~3 s each on this machine), so the
cases share runs where they can."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.dictionaries.distributed import train_sae_parallel
from repscope.dictionaries.sae import build_sae
from repscope.dictionaries.train import TrainConfig, train_sae

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def sparse_rows(n: int = 3000, d: int = 24, features: int = 96, seed: int = 0) -> np.ndarray:
    """Rows that are sparse non-negative mixtures of unit features, plus noise."""
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((features, d))
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    codes = rng.exponential(1.0, (n, features)) * (rng.random((n, features)) < 0.05)
    return (codes @ F + 0.02 * rng.standard_normal((n, d))).astype(np.float32)


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


# topk with dead latents (the AuxK term, a ratio of batch sums, is live for most steps), relu
# (an L1 mean) with an odd batch that splits unevenly (128 + 127 rows)
CASES = {
    "topk": TrainConfig(architecture="topk", d_sae=192, k=2, batch_size=256, steps=100, lr=3e-3,
                        warmup_steps=10, dead_window_tokens=512, log_every=10, seed=3),
    "relu": TrainConfig(architecture="relu", d_sae=64, l1_coeff=3e-3, batch_size=255, steps=100,
                        lr=3e-3, warmup_steps=10, log_every=10, seed=4),
}


@pytest.mark.parametrize("name", ["topk", pytest.param("relu", marks=pytest.mark.slow)])
def test_two_processes_equal_one_process_after_100_steps(name):
    X = sparse_rows()
    cfg = CASES[name]
    one = train_sae(X, cfg)
    two = train_sae_parallel(X, cfg, processes=2)
    assert two.steps == one.steps == 100
    np.testing.assert_array_equal(two.train_rows, one.train_rows)
    # the weights moved far (lr 3e-3 for 100 steps) yet agree to float32 summation order
    init = build_sae(cfg.architecture, X.shape[1], cfg.d_sae, **cfg.hyper())
    assert float((one.sae.W_dec - init.W_dec).abs().max()) > 1e-2
    assert max_diff(one.sae, two.sae) < 1e-5
    # logged metrics are the global batch's: weighted means over the processes
    for a, b in zip(one.history, two.history, strict=True):
        assert a["step"] == b["step"]
        for key in ("loss", "mse", "l0", "dead_fraction"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    if name == "topk":
        assert any(h["auxk"] > 0 and h["dead_fraction"] > 0 for h in one.history)


def test_one_process_checkpoint_resumes_on_two_processes(tmp_path):
    """A one-process run stopped after its step-50 checkpoint continues on two processes and
    ends with the uninterrupted one-process weights; process 0 wrote the SAE directory."""
    from repscope.dictionaries.io import load_sae

    X = sparse_rows(seed=1)
    cfg = TrainConfig(**{**CASES["topk"].__dict__, "checkpoint_every": 50})
    full = train_sae(X, cfg)

    class Stop(Exception):
        pass

    def stop_at_60(step: int, metrics: dict) -> None:
        if step == 60:
            raise Stop

    with pytest.raises(Stop):
        train_sae(X, cfg, out_dir=tmp_path, callback=stop_at_60)
    resumed = train_sae_parallel(X, cfg, processes=2, out_dir=tmp_path)
    assert resumed.steps == 100 and [h["step"] for h in resumed.history][0] == 0
    assert max_diff(full.sae, resumed.sae) < 1e-5
    assert max_diff(resumed.sae, load_sae(tmp_path)) == 0.0


def test_refusals_are_one_line():
    X = sparse_rows(n=400)
    with pytest.raises(ValueError, match=r"'architecture' parameter of train_sae_parallel must not "
                                         r"be one of \['batchtopk', 'matryoshka'\].*'batchtopk'"):
        train_sae_parallel(X, TrainConfig(architecture="batchtopk", d_sae=32, steps=2))
    with pytest.raises(ValueError, match=r"'processes' parameter of train_sae_parallel"):
        train_sae_parallel(X, TrainConfig(d_sae=32, steps=2), processes=0)
    with pytest.raises(ValueError, match=r"'batch_size' parameter of train_sae_distributed must be "
                                         r"at least the number of processes \(2\)\. Got 1 instead"):
        train_sae_parallel(X, TrainConfig(d_sae=32, k=2, batch_size=1, steps=2), processes=2)


@pytest.mark.slow
def test_torchrun_launches_the_cli_data_parallel(tmp_path):
    """``torchrun --nproc-per-node 2 repscope sae train``: the command notices WORLD_SIZE, trains
    data parallel on gloo over loopback, and process 0 writes the one-process SAE."""
    import json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from repscope.capture import ActivationStore
    from repscope.dictionaries.io import load_sae

    X = sparse_rows(n=2000, seed=2)
    with ActivationStore.create(tmp_path / "store", layers={"l0": X.shape[1]}, shard_rows=512,
                                vocab=[f"t{i}" for i in range(10)]) as writer:
        writer.append({"l0": X}, {"doc_id": np.zeros(len(X), dtype=np.int64),
                                  "position": np.arange(len(X)),
                                  "token_id": np.zeros(len(X), dtype=np.int64)}, chunk=0)
        writer.finish()
    keys = {"architecture": "topk", "d_sae": 64, "k": 4, "batch_size": 128, "steps": 30,
            "lr": 3e-3, "warmup_steps": 5, "log_every": 10, "seed": 5}
    (tmp_path / "cfg.json").write_text(json.dumps(keys))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    repscope = str(Path(sys.executable).with_name("repscope"))
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "sae"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(port), repscope, "sae", "train",
         "--store", str(tmp_path / "store"), "--layer", "l0", "--out", str(out),
         "--config", str(tmp_path / "cfg.json"), "--no-progress", "--eval-rows", "200"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "eval.json").exists()
    one = train_sae(ActivationStore.open(tmp_path / "store"), TrainConfig(**keys), layer="l0")
    assert max_diff(one.sae, load_sae(out)) < 1e-5
