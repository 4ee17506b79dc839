"""Checkpoint discovery (order, layouts) and strict loading with clear mismatch errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from repscope.capture.checkpoints import (
    Checkpoint,
    discover_checkpoints,
    load_checkpoint,
    parse_step,
)


class Tiny(torch.nn.Module):
    def __init__(self, d_out: int = 3):
        super().__init__()
        self.emb = torch.nn.Embedding(5, 4)
        self.fc = torch.nn.Linear(4, d_out)
        self.register_buffer("scale", torch.ones(1))


class TiedTiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(5, 4)
        self.head = torch.nn.Linear(4, 5, bias=False)
        self.head.weight = self.emb.weight  # tied weights, saved once by safetensors users


def _weights(seed: int, d_out: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in Tiny(d_out).state_dict().items()}


@pytest.mark.parametrize(("name", "step"), [
    ("step_1000", 1000), ("checkpoint-500", 500), ("model-ckpt300", 300),
    ("epoch3-step200", 200), ("run2_final_77", 77), ("final", None), ("step1000", 1000),
])
def test_parse_step(name, step):
    assert parse_step(name) == step


def test_a_directory_of_state_dicts_is_ordered_by_step(tmp_path):
    for step in (1000, 20, 300):
        torch.save(_weights(step), tmp_path / f"step_{step}.pt")
    save_file(_weights(5), str(tmp_path / "step_5000.safetensors"))
    torch.save({"lr": 1.0}, tmp_path / "optimizer.pt")  # not model weights
    (tmp_path / "notes.txt").write_text("x")
    ckpts = discover_checkpoints(tmp_path)
    assert [(c.name, c.step, c.kind) for c in ckpts] == [
        ("step_20", 20, "state_dict"), ("step_300", 300, "state_dict"),
        ("step_1000", 1000, "state_dict"), ("step_5000", 5000, "safetensors")]
    assert Checkpoint.from_dict(json.loads(json.dumps(ckpts[0].to_dict()))) == ckpts[0]


def test_hf_checkpoint_dirs_and_an_explicit_list(tmp_path):
    for step in (1500, 500):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "config.json").write_text("{}")
        save_file(_weights(step), str(d / "model.safetensors"))
    (tmp_path / "runs").mkdir()  # a log directory without weights is ignored
    ckpts = discover_checkpoints(tmp_path)
    assert [(c.name, c.step, c.kind) for c in ckpts] == [
        ("checkpoint-500", 500, "hf_dir"), ("checkpoint-1500", 1500, "hf_dir")]
    # an explicit list keeps the given order
    listed = discover_checkpoints([tmp_path / "checkpoint-1500", tmp_path / "checkpoint-500"])
    assert [c.name for c in listed] == ["checkpoint-1500", "checkpoint-500"]
    # a single model directory is one checkpoint (not its weights file)
    one = discover_checkpoints(tmp_path / "checkpoint-500")
    assert [(c.name, c.step, c.kind) for c in one] == [("checkpoint-500", 500, "hf_dir")]


def test_local_hf_cache_revisions(tmp_path):
    repo = tmp_path / "models--org--tiny"
    for rev, sha in (("step2000", "b" * 40), ("step143000", "c" * 40), ("main", "c" * 40)):
        snap = repo / "snapshots" / sha
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "config.json").write_text("{}")
        torch.save(_weights(len(rev)), snap / "pytorch_model.bin")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / rev).write_text(sha)
    ckpts = discover_checkpoints(repo)
    assert [(c.name, c.step) for c in ckpts] == [("step2000", 2000), ("step143000", 143000),
                                                 ("main", None)]
    assert ckpts[0].path.endswith("b" * 40)


def test_load_checkpoint_loads_every_layout(tmp_path):
    w = _weights(7)
    torch.save({"model": w, "step": 10, "optimizer": {"lr": 0.1}}, tmp_path / "nested_10.pt")
    torch.save({f"module.{k}": v for k, v in w.items()}, tmp_path / "ddp_20.pt")
    save_file(w, str(tmp_path / "st_30.safetensors"))
    shard = tmp_path / "hf" / "checkpoint-40"
    shard.mkdir(parents=True)
    save_file({k: v for k, v in w.items() if k.startswith("fc")},
              str(shard / "model-00001-of-00002.safetensors"))
    save_file({k: v for k, v in w.items() if not k.startswith("fc")},
              str(shard / "model-00002-of-00002.safetensors"))
    (shard / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        k: ("model-00001-of-00002.safetensors" if k.startswith("fc")
            else "model-00002-of-00002.safetensors") for k in w}}))
    ckpts = discover_checkpoints(tmp_path) + discover_checkpoints(tmp_path / "hf")
    assert [c.name for c in ckpts] == ["nested_10", "ddp_20", "st_30", "checkpoint-40"]
    for ckpt in ckpts:
        model = load_checkpoint(Tiny(), ckpt)
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, w[k], rtol=0, atol=0)


def test_a_tied_weight_saved_once_loads(tmp_path):
    torch.manual_seed(0)
    src = TiedTiny()
    save_file({"emb.weight": src.emb.weight.detach().clone()}, str(tmp_path / "tied.safetensors"))
    model = load_checkpoint(TiedTiny(), tmp_path / "tied.safetensors")
    torch.testing.assert_close(model.head.weight, src.emb.weight)
    assert model.head.weight.data_ptr() == model.emb.weight.data_ptr()


def test_mismatched_checkpoints_raise_clear_errors(tmp_path):
    w = _weights(1, d_out=6)
    w["extra.bias"] = torch.zeros(2)
    del w["scale"]
    torch.save(w, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=(
            r"checkpoint 'bad' \(.*bad.pt\) does not match the model Tiny: 1 missing key\(s\) "
            r"\('scale'\); 1 unexpected key\(s\) \('extra.bias'\); 2 shape mismatch\(es\) "
            r"\('fc.bias: checkpoint \(6,\) vs model \(3,\)', 'fc.weight: checkpoint \(6, 4\) "
            r"vs model \(3, 4\)'\)")):
        load_checkpoint(Tiny(), tmp_path / "bad.pt")
    torch.save({"lr": 0.1, "epoch": 3}, tmp_path / "notweights.pt")
    with pytest.raises(ValueError, match=r"holds no state dict .* got dict"):
        load_checkpoint(Tiny(), tmp_path / "notweights.pt")


def test_discovery_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory: '.*nowhere'"):
        discover_checkpoints(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"found no checkpoints in '.*empty': expected weight files"):
        discover_checkpoints(tmp_path / "empty")
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(ValueError, match="is neither a weights file"):
        discover_checkpoints([tmp_path / "readme.md"])
    with pytest.raises(ValueError, match="empty list of checkpoints"):
        discover_checkpoints([])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    torch.save(_weights(0), tmp_path / "a" / "step_1.pt")
    torch.save(_weights(0), tmp_path / "b" / "step_1.pt")
    with pytest.raises(ValueError, match=r"several checkpoints named \['step_1'\]"):
        discover_checkpoints([tmp_path / "a" / "step_1.pt", tmp_path / "b" / "step_1.pt"])


@pytest.mark.slow
def test_capture_checkpoints_of_the_default_model(tmp_path):
    """Two checkpoints of MiniLM: the base weights (activations equal a direct capture of the
    base model) and perturbed weights (activations differ); one store per checkpoint."""
    import numpy as np

    from repscope.capture import CaptureConfig, run_capture
    from repscope.capture.checkpoints import capture_checkpoints, checkpoint_digest
    from repscope.data.models import load_model

    loaded = load_model("minilm")
    base = {k: v.clone() for k, v in loaded[0].state_dict().items()}
    (tmp_path / "ckpts").mkdir()
    torch.save(base, tmp_path / "ckpts" / "step_0.pt")
    torch.manual_seed(0)
    save_file({k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
               for k, v in base.items()}, str(tmp_path / "ckpts" / "step_10.safetensors"))
    cfg = CaptureConfig(model="minilm", layers=("encoder.layer.0",), pooling="mean",
                        max_docs=3, max_length=16, out=tmp_path / "direct")
    ckpts = discover_checkpoints(tmp_path / "ckpts")
    stores = capture_checkpoints(cfg, ckpts, tmp_path / "stores")
    assert [(c.name, s.path.name) for c, s in stores] == [("step_0", "step_0"),
                                                         ("step_10", "step_10")]
    direct = run_capture(cfg, progress=False, loaded=loaded).read("encoder.layer.0")  # (3, 384)
    at0, at10 = (s.read("encoder.layer.0") for _, s in stores)
    np.testing.assert_allclose(at0, direct, rtol=1e-5, atol=1e-6)
    assert np.abs(at10 - direct).max() > 1e-2
    manifest = json.dumps(stores[1][1].manifest)
    assert "@step_10" in manifest and checkpoint_digest(ckpts[1]) in manifest
