"""SAE training: seeded batch order, checkpoints, exact resume after a real kill, stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from repscope.dictionaries.source import BatchPlan
from repscope.dictionaries.train import TrainConfig, lr_at, train_sae

CFG = dict(architecture="batchtopk", d_sae=48, k=3, batch_size=32, steps=60, lr=3e-3,
           warmup_steps=5, dead_window_tokens=200, checkpoint_every=10, log_every=5,
           block_rows=64, window_blocks=2, seed=3)

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from repscope.dictionaries.train import TrainConfig, train_sae
    cfg = TrainConfig(**{cfg})
    X = np.random.default_rng(0).standard_normal((700, 12)).astype(np.float32)
    kill_at = int(sys.argv[2])
    def die(step, metrics):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    train_sae(X, cfg, out_dir=sys.argv[1], callback=die)
""")


def _saved_step(out):
    """The step of the training state checkpointed in ``out`` (safetensors header JSON)."""
    from safetensors import safe_open

    with safe_open(str(out / "state.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["repscope_state"])["step"]


def _run(script, out, kill_at):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), str(out), str(kill_at)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_resume_after_kill_reproduces_uninterrupted_weights(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(cfg=repr(CFG)))
    killed = _run(script, tmp_path / "b", 37)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = {"step": _saved_step(tmp_path / "b")}
    assert state["step"] == 30  # last checkpoint before the kill
    resumed = _run(script, tmp_path / "b", -1)
    assert resumed.returncode == 0, resumed.stderr
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels as the subprocesses
    try:
        X = np.random.default_rng(0).standard_normal((700, 12)).astype(np.float32)
        train_sae(X, TrainConfig(**CFG), out_dir=tmp_path / "a")
    finally:
        torch.set_num_threads(threads)
    a = load_file(str(tmp_path / "a" / "sae.safetensors"))
    b = load_file(str(tmp_path / "b" / "sae.safetensors"))
    assert a.keys() == b.keys() and {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"} <= a.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    cfg = json.loads((tmp_path / "a" / "cfg.json").read_text())
    assert cfg["architecture"] == "batchtopk" and cfg["d_in"] == 12 and cfg["d_sae"] == 48
    assert cfg["train"]["steps"] == 60


def test_resume_refuses_changed_config(tmp_path):
    X = np.random.default_rng(0).standard_normal((200, 5)).astype(np.float32)
    cfg = TrainConfig(d_sae=10, k=2, batch_size=20, steps=4, checkpoint_every=2)
    train_sae(X, cfg, out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"Cannot resume .* differs in \['k'\]"):
        train_sae(X, TrainConfig(d_sae=10, k=3, batch_size=20, steps=4), out_dir=tmp_path)


def test_batch_plan_is_a_seeded_permutation_of_contiguous_windows():
    plan = BatchPlan(1000, 64, seed=1, block_rows=100, window_blocks=3)
    epoch = np.concatenate([plan.rows(s) for s in range(plan.batches_per_epoch)])
    assert len(epoch) == len(np.unique(epoch)) == 15 * 64
    # each batch touches at most two windows of three contiguous blocks
    for s in range(plan.batches_per_epoch):
        assert len(np.unique(plan.rows(s) // 100)) <= 6
    # pure function of (seed, step): iterating or jumping gives the same rows
    streamed = dict(plan.iter_rows(10, 20))
    assert all(np.array_equal(streamed[s], plan.rows(s)) for s in range(10, 20))
    assert not np.array_equal(plan.rows(0), BatchPlan(1000, 64, seed=2, block_rows=100).rows(0))
    assert not np.array_equal(plan.rows(0), plan.rows(plan.batches_per_epoch))  # next epoch reshuffled


def test_lr_schedule_and_unit_norm_decoder():
    lrs = [lr_at(s, 100, 1.0, 10, 0.2) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[50] == 1.0 and lrs[99] == pytest.approx(0.05)
    X = np.random.default_rng(1).standard_normal((300, 6)).astype(np.float32) * 7
    res = train_sae(X, TrainConfig(d_sae=12, k=2, batch_size=30, steps=15))
    norms = res.sae.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    # input normalisation: E||s x||^2 = d_in
    scale = float(res.sae.input_scale)
    assert np.mean(np.sum((scale * X) ** 2, 1)) == pytest.approx(6, rel=0.05)


def test_dead_latents_tracked_and_revived_by_auxk():
    X = np.random.default_rng(2).standard_normal((2000, 8)).astype(np.float32)
    res = train_sae(X, TrainConfig(d_sae=64, k=1, batch_size=100, steps=40, lr=1e-2,
                                   dead_window_tokens=300, log_every=1))
    dead = [h["dead_fraction"] for h in res.history]
    assert dead[0] == 0.0 and max(dead) > 0.0
    assert any(h.get("auxk", 0) > 0 for h in res.history)


def test_train_from_activation_store(tmp_path):
    from repscope.capture import ActivationStore

    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 6)).astype(np.float32)
    with ActivationStore.create(tmp_path / "store", layers={"l0": 6}, shard_rows=128,
                                vocab=[f"t{i}" for i in range(50)]) as writer:
        for c in range(5):
            rows = slice(100 * c, 100 * (c + 1))
            writer.append({"l0": X[rows]}, {"doc_id": np.full(100, c), "position": np.arange(100),
                                            "token_id": rng.integers(0, 50, 100)}, chunk=c)
        writer.finish()
    store = ActivationStore.open(tmp_path / "store")
    cfg = TrainConfig(d_sae=12, k=2, batch_size=50, steps=12, block_rows=64)
    from_store = train_sae(store, cfg, layer="l0").sae
    from_array = train_sae(X, cfg).sae
    for name, tensor in from_array.state_dict().items():
        assert torch.equal(tensor, from_store.state_dict()[name]), name
    with pytest.raises(ValueError, match="Layer 'nope' is not in the store"):
        train_sae(store, cfg, layer="nope")


def test_decoder_tangent_projection_and_storage_order_adam():
    from repscope.dictionaries.sae import build_sae
    from repscope.dictionaries.train import _adam, _sync_grads, remove_parallel_grad

    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.randn(2500, 7, dtype=torch.float64))  # > one projection block
    W.grad = torch.randn(2500, 7, dtype=torch.float64)
    unit = W.detach() / W.detach().norm(dim=1, keepdim=True)
    expected = W.grad - (W.grad * unit).sum(1, keepdim=True) * unit
    remove_parallel_grad(W)
    assert torch.allclose(W.grad, expected, atol=1e-12)
    assert (W.grad * W.detach()).sum(1).abs().max() < 1e-10
    # the optimiser updates W_enc through its contiguous (d_sae, d_in) storage: no copies,
    # and the same update as plain Adam over the parameters
    sae = build_sae("topk", 6, 20, k=2)
    ref = build_sae("topk", 6, 20, k=2)
    opt, tensors = _adam(sae, 1e-2)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=6.25e-10)
    assert all(t.is_contiguous() for t in tensors)
    assert tensors[[n for n, _ in sae.named_parameters()].index("W_enc")].data_ptr() == sae.W_enc.data_ptr()
    x = torch.randn(16, 6)
    for _ in range(3):
        for model, o in ((sae, opt), (ref, ref_opt)):
            model.zero_grad(set_to_none=True)
            model.training_loss(x).loss.backward()
            if o is opt:
                _sync_grads(sae, tensors)
            o.step()
    for (name, p), q in zip(sae.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


def test_heldout_split_batch_default_and_warnings(caplog):
    from repscope.dictionaries.source import holdout_split

    train, held = holdout_split(1000, 0.1, seed=0)
    assert len(held) == 128 and np.intersect1d(train, held).size == 0 and len(train) + len(held) == 1000
    assert np.all(np.diff(held.reshape(-1, 64), axis=1) == 1)  # whole 64-row segments
    assert len(holdout_split(60, 0.5, seed=0)[1]) == 0  # a single segment: nothing held out
    X = np.random.default_rng(0).standard_normal((746, 4)).astype(np.float32)  # the README's rows
    with caplog.at_level("WARNING"):
        res = train_sae(X, TrainConfig(d_sae=1024, k=2, steps=3, eval_every=1, log_every=1))
    assert res.resolved["batch_size"] == len(res.train_rows) // 8  # default tied to the rows
    assert len(res.heldout_rows) == 64 and "heldout_fvu" in res.history[-1] and "fvu" in res.history[0]
    assert "1024 latents for only 682 training rows" in caplog.text
    with pytest.raises(ValueError, match=r"The 'batch_size' parameter of train_sae must be an int in "
                                         r"\[1, training rows=682\]. Got 1024 instead."):
        train_sae(X, TrainConfig(d_sae=8, k=2, batch_size=1024, steps=1))


def test_evaluation_metrics_named_precisely():
    from repscope.dictionaries.evaluate import evaluate_sae
    from repscope.dictionaries.sae import build_sae

    rng = np.random.default_rng(1)
    X = (rng.standard_normal((300, 6)) + 2.0).astype(np.float32)
    sae = build_sae("topk", 6, 12, k=3)
    ev = evaluate_sae(sae, X, split="held-out")
    with torch.no_grad():
        H = sae.decode(sae.encode(torch.from_numpy(X))).double().numpy()
    Xd = X.astype(np.float64)
    err = ((Xd - H) ** 2).sum()
    assert ev.mse == pytest.approx(err / X.size) and ev.sq_error_per_token == pytest.approx(err / 300)
    assert ev.value == pytest.approx(err / ((Xd - Xd.mean(0)) ** 2).sum())
    assert ev.explained_variance == pytest.approx(1 - ev.value)
    assert ev.explained_variance_uncentred == pytest.approx(1 - err / (Xd**2).sum())
    assert ev.l2_ratio == pytest.approx(np.mean(np.linalg.norm(H, axis=1) / np.linalg.norm(Xd, axis=1)))
    assert ev.params["split"] == "held-out"
