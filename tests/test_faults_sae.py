"""Faults around SAE directories and SAE training: each gives one line naming the file and a
non-zero exit code, or resumes to the same result; nothing is silently wrong.

Corrupt / edited / missing / unreadable SAE files, an unknown --layer, a full disk and a
read-only output directory during `sae train` (real subprocesses), a batch larger than the
rows, and resuming without unpickling anything written by someone else.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from repscope.cli import app
from repscope.dictionaries.train import TrainConfig, train_sae

LAYER = "encoder.layer.2"
TRAIN = ["--d-sae", "16", "--k", "2", "--batch-size", "40", "--steps", "30", "--lr", "0.01",
         "--checkpoint-every", "10", "--no-progress"]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    from repscope.capture import ActivationStore

    path = tmp_path_factory.mktemp("faults_sae") / "store"
    rng = np.random.default_rng(0)
    with ActivationStore.create(path, layers={LAYER: 8}, shard_rows=100,
                                vocab=[f"tok{i}" for i in range(40)]) as w:
        for doc in range(6):
            w.append({LAYER: rng.standard_normal((50, 8)).astype(np.float32)},
                     {"doc_id": np.full(50, doc), "position": np.arange(50),
                      "token_id": rng.integers(0, 40, 50)}, chunk=doc)
        w.finish()
    return path


@pytest.fixture(scope="module")
def trained(store_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "sae"
    res = CliRunner().invoke(app, ["sae", "train", "--store", str(store_dir), "--layer", LAYER,
                                   "--out", str(out), *TRAIN])
    assert res.exit_code == 0, res.output
    return out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _inspect(sae_dir, store_dir, *extra):
    return CliRunner().invoke(app, ["sae", "inspect", str(sae_dir), "--store", str(store_dir), *extra])


def _one_line_error(res, message):
    """Exit code 1 and exactly ``error: message`` on stderr (repscope.cli._errors), nothing else."""
    assert res.exit_code == 1, res.output
    assert res.stderr == f"error: {message}\n", res.stderr


def test_flipped_byte_in_weights_is_caught(trained, store_dir, tmp_path):
    sae = _copy(trained, tmp_path / "sae")
    f = sae / "sae.safetensors"
    data = bytearray(f.read_bytes())
    data[-7] ^= 0x01  # one bit of one weight
    f.write_bytes(bytes(data))
    _one_line_error(_inspect(sae, store_dir),
                    f"'{f}' does not match its checksum in '{sae / 'manifest.json'}': the file is "
                    "corrupt or was modified after it was written.")
    assert not (sae / "features.html").exists()


def test_architecture_edited_from_topk_to_relu_is_caught(trained, store_dir, tmp_path):
    sae = _copy(trained, tmp_path / "sae")
    cfg = json.loads((sae / "cfg.json").read_text())
    assert cfg["architecture"] == "topk"
    cfg["architecture"] = "relu"  # same tensor names and shapes: only the checksum sees it
    (sae / "cfg.json").write_text(json.dumps(cfg))
    _one_line_error(_inspect(sae, store_dir),
                    f"'{sae / 'cfg.json'}' does not match its checksum in '{sae / 'manifest.json'}': "
                    "the file is corrupt or was modified after it was written.")


def test_cfg_cross_checked_against_tensor_shapes_without_manifest(trained, store_dir, tmp_path):
    sae = _copy(trained, tmp_path / "sae")
    (sae / "manifest.json").unlink()
    cfg = json.loads((sae / "cfg.json").read_text())
    cfg["d_sae"] = 20
    (sae / "cfg.json").write_text(json.dumps(cfg))
    _one_line_error(_inspect(sae, store_dir),
                    f"'{sae / 'sae.safetensors'}' does not match '{sae / 'cfg.json'}': tensor 'W_dec' "
                    "has shape (16, 8), cfg.json implies (20, 8) (d_in=8, d_sae=20).")
    cfg["d_sae"], cfg["architecture"] = 16, "mp"  # MP has no encoder tensors
    (sae / "cfg.json").write_text(json.dumps(cfg))
    _one_line_error(_inspect(sae, store_dir),
                    f"'{sae / 'sae.safetensors'}' does not match '{sae / 'cfg.json'}': a 'mp' SAE has "
                    "tensors ['W_dec', 'b_dec', 'input_scale'], the file holds ['W_dec', 'W_enc', "
                    "'b_dec', 'b_enc', 'input_scale'].")


def test_missing_truncated_and_unparsable_files(trained, store_dir, tmp_path):
    sae = _copy(trained, tmp_path / "a")
    (sae / "sae.safetensors").unlink()
    _one_line_error(_inspect(sae, store_dir),
                    f"'{sae / 'sae.safetensors'}' is missing (listed in '{sae / 'manifest.json'}').")
    sae = _copy(trained, tmp_path / "b")
    (sae / "manifest.json").unlink()
    f = sae / "sae.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    res = _inspect(sae, store_dir)
    assert res.exit_code == 1 and res.stderr.startswith(f"error: '{f}' is not a readable safetensors file (")
    assert res.stderr.count("\n") == 1, res.stderr
    sae = _copy(trained, tmp_path / "c")
    (sae / "manifest.json").unlink()
    (sae / "cfg.json").write_text("{not json")
    res = _inspect(sae, store_dir)
    assert res.exit_code == 1 and res.stderr.startswith(f"error: '{sae / 'cfg.json'}' is not readable JSON (")
    assert res.stderr.count("\n") == 1, res.stderr
    (sae / "cfg.json").unlink()
    _one_line_error(_inspect(sae, store_dir),
                    f"'{sae}' is not a saved SAE: expected cfg.json + sae.safetensors (repscope, "
                    "sparsify), cfg.json + sae_weights.safetensors (SAELens) or config.json + ae.pt "
                    "(dictionary_learning) inside it.")
    _one_line_error(_inspect(tmp_path / "nowhere", store_dir),
                    f"'{tmp_path / 'nowhere'}' is not a saved SAE: no such directory.")
    manifest = _copy(trained, tmp_path / "d") / "manifest.json"
    manifest.write_text("[]")
    _one_line_error(_inspect(manifest.parent, store_dir),
                    f"'{manifest}' is not a valid SAE manifest (TypeError).")


def test_inspect_unknown_layer_lists_the_layers(trained, store_dir):
    _one_line_error(_inspect(trained, store_dir, "--layer", "nosuch"),
                    f"--layer 'nosuch' is not a layer of the store '{store_dir}'; its layers: ['{LAYER}'].")


def test_batch_larger_than_the_rows_is_refused(store_dir, tmp_path):
    res = CliRunner().invoke(app, ["sae", "train", "--store", str(store_dir), "--layer", LAYER,
                                   "--out", str(tmp_path / "x"), "--batch-size", "1024", "--no-progress"])
    # 300 rows, one 64-row segment held out
    _one_line_error(res, "The 'batch_size' parameter of train_sae must be an int in [1, training "
                         "rows=236]. Got 1024 instead.")


# --- full disk and read-only directory, in real subprocesses ---------------------------------
FAULTY = textwrap.dedent("""
    import errno, os, sys
    import repscope._io as _io
    mode, limit = sys.argv[1], int(sys.argv[2])
    real = _io.atomic_write
    calls = [0]
    def atomic_write(path, write):
        calls[0] += 1
        if mode == "enospc" and calls[0] > limit:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, write)
    _io.atomic_write = atomic_write
    if mode == "erofs":  # as root a chmod'ed directory stays writable: fail every open in it
        import builtins
        real_open, out = builtins.open, os.path.abspath(sys.argv[3])  # the read-only directory
        def ro_open(file, *a, **k):
            if isinstance(file, (str, os.PathLike)) and os.path.abspath(file).startswith(out):
                raise OSError(errno.EROFS, "Read-only file system", str(file))
            return real_open(file, *a, **k)
        builtins.open = ro_open
    from repscope.cli import main
    main(sys.argv[4:])
""")


def _train_cli(script, store_dir, out, mode, limit=10**9):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = ["sae", "train", "--store", str(store_dir), "--layer", LAYER, "--out", str(out), *TRAIN]
    return subprocess.run([sys.executable, str(script), mode, str(limit), str(out), *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_full_disk_during_training_is_one_line_and_resumes_identically(store_dir, tmp_path):
    script = tmp_path / "faulty.py"
    script.write_text(FAULTY)
    out = tmp_path / "sae"
    # writes per checkpoint: state, weights, cfg, manifest; the 5th (state at step 20) fails
    res = _train_cli(script, store_dir, out, "enospc", limit=4)
    assert res.returncode == 1, res.stderr
    assert res.stderr.splitlines()[-1] == (
        f"error: cannot write '{out / 'state.safetensors'}': No space left on device (errno "
        f"{errno.ENOSPC}). Nothing written is corrupt: fix it and rerun the same command to resume "
        f"from the last checkpoint in '{out}'.")
    assert "Traceback" not in res.stderr
    from safetensors import safe_open

    with safe_open(str(out / "state.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["repscope_state"])["step"] == 10  # the last good checkpoint
    assert _train_cli(script, store_dir, out, "enospc").returncode == 0  # space again: resume
    ref = tmp_path / "ref"
    assert _train_cli(script, store_dir, ref, "enospc").returncode == 0  # uninterrupted
    a, b = load_file(str(out / "sae.safetensors")), load_file(str(ref / "sae.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_read_only_output_directory_is_one_line(store_dir, tmp_path):
    script = tmp_path / "faulty.py"
    script.write_text(FAULTY)
    out = tmp_path / "ro"
    out.mkdir()
    res = _train_cli(script, store_dir, out, "erofs")
    assert res.returncode == 1, res.stderr
    assert res.stderr.splitlines()[-1] == (
        f"error: cannot write '{out}': Read-only file system (errno {errno.EROFS}). Nothing written "
        f"is corrupt: fix it and rerun the same command to resume from the last checkpoint in '{out}'.")
    assert "Traceback" not in res.stderr and list(out.iterdir()) == []


# --- resuming never unpickles ----------------------------------------------------------------
class _Payload:
    """Unpickling this would create a marker file (code execution)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def test_resume_reads_no_pickle(tmp_path, monkeypatch):
    X = np.random.default_rng(0).standard_normal((400, 6)).astype(np.float32)
    cfg = TrainConfig(d_sae=12, k=2, batch_size=40, steps=20, checkpoint_every=10)
    train_sae(X, TrainConfig(**{**cfg.__dict__, "steps": 10}), out_dir=tmp_path / "a")
    assert not (tmp_path / "a" / "state.pt").exists() and (tmp_path / "a" / "state.safetensors").exists()

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load called while resuming")

    monkeypatch.setattr(torch, "load", no_torch_load)
    with pytest.raises(ValueError, match=r"differs in \['steps'\]"):  # read, then refused
        train_sae(X, cfg, out_dir=tmp_path / "a")
    monkeypatch.undo()
    # a legacy state.pt that someone else wrote, with code in it: refused, never executed
    legacy = tmp_path / "b"
    legacy.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"step": 1, "x": _Payload(str(marker))}, legacy / "state.pt")
    with pytest.raises(ValueError, match=r"Cannot resume from '.*state.pt': not a readable repscope "
                                         r"training state \(UnpicklingError\); delete it or use --no-resume."):
        train_sae(X, cfg, out_dir=legacy)
    assert not marker.exists()
