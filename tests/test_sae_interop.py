"""SAE files shared with the real SAELens and sparsify, in both directions, and
dictionary_learning's layout.

The foreign libraries run in the test-only venv ``.venv-interop`` (``scripts/ensure_interop.sh``,
pinned in ``tests/interop/requirements.txt``; ``make test`` and CI set it up) through
``tests/interop/foreign.py``, one subprocess for every case (importing them costs ~40 s).
Every comparison: codes and reconstructions of the same inputs agree to 1e-5 (relative to the
largest value, at least 1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from repscope.dictionaries.io import SAEFileError, load_sae, read_cfg, save_sae
from repscope.dictionaries.sae import build_sae

ROOT = Path(__file__).resolve().parents[1]
FOREIGN = ROOT / "tests" / "interop" / "foreign.py"
TOL = 1e-5
D_IN, D_SAE, K = 16, 48, 4


def _interop_python() -> Path | None:
    env = os.environ.get("REPSCOPE_INTEROP_PYTHON")
    path = Path(env) if env else ROOT / ".venv-interop" / "bin" / "python"
    return path if path.is_file() else None


def _close(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference relative to max(1, largest |b|)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def _inputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (3.0 * rng.standard_normal((64, D_IN)) + 1.0).astype(np.float32)  # (n, d_in)


def _repscope_sae(arch: str, seed: int):
    """A repscope SAE with random weights, a non-trivial input scale and thresholds."""
    hyper = {"k": K} if arch in ("topk", "batchtopk", "matryoshka") else {}
    if arch == "matryoshka":
        hyper["widths"] = [12, 24, 48]
    sae = build_sae(arch, D_IN, D_SAE, seed=seed, **hyper)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(D_IN, D_SAE, generator=gen))
        sae.b_enc.copy_(0.3 * torch.randn(D_SAE, generator=gen))
        sae.b_dec.copy_(torch.randn(D_IN, generator=gen))
        sae.input_scale.fill_(0.37)
        if arch == "jumprelu":
            sae.threshold.copy_(torch.rand(D_SAE, generator=gen) * 2)
        if arch in ("batchtopk", "matryoshka"):
            sae.threshold.fill_(1.1)
    return sae.eval()


def _outputs(sae, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        z = sae.encode(torch.from_numpy(X))
        return z.double().numpy(), sae.decode(z).double().numpy()


EXPORTS = [("saelens", a) for a in ("relu", "topk", "batchtopk", "jumprelu", "matryoshka")] + [
    ("sparsify", "topk")]
# SAELens SAEs built by SAELens itself: (name, architecture, config options)
SAELENS_MADE = [
    ("standard", "standard", {}),
    ("standard-no-bdec", "standard", {"apply_b_dec_to_input": False}),
    ("topk", "topk", {}),
    ("topk-rescaled", "topk", {"rescale_acts_by_decoder_norm": True, "apply_b_dec_to_input": False}),
    ("jumprelu", "jumprelu", {"apply_b_dec_to_input": False}),
]


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """Run every foreign-library case in one subprocess; returns (tmp dir, versions)."""
    python = _interop_python()
    if python is None:
        reason = ("the SAELens/sparsify test venv .venv-interop is not installed (run "
                  "scripts/ensure_interop.sh; it needs PyPI)")
        if os.environ.get("REPSCOPE_REQUIRE_INTEROP") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("interop")
    X = _inputs()
    np.save(tmp / "X.npy", X)
    tasks = []
    for i, (fmt, arch) in enumerate(EXPORTS):
        sae = _repscope_sae(arch, seed=i)
        save_sae(sae, tmp / f"export-{fmt}-{arch}", format=fmt, hook_name="blocks.0")
        tasks.append({"do": "load", "lib": fmt, "dir": str(tmp / f"export-{fmt}-{arch}"),
                      "out": str(tmp / f"export-{fmt}-{arch}")})
    for i, (name, arch, options) in enumerate(SAELENS_MADE):
        tasks.append({"do": "make", "lib": "saelens", "arch": arch, "d_sae": D_SAE, "k": K, "seed": 100 + i,
                      "options": options, "dir": str(tmp / f"saelens-{name}"), "out": str(tmp / f"saelens-{name}")})
    tasks.append({"do": "make", "lib": "sparsify", "arch": "topk", "d_sae": D_SAE, "k": K, "seed": 200,
                  "dir": str(tmp / "sparsify-topk"), "out": str(tmp / "sparsify-topk")})
    (tmp / "job.json").write_text(json.dumps({"x": str(tmp / "X.npy"), "tasks": tasks}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # the foreign venv must not see repscope's source tree
    run = subprocess.run([str(python), str(FOREIGN), str(tmp / "job.json")], env=env, cwd=tmp,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    versions = json.loads(run.stdout.strip().splitlines()[-1])
    return tmp, versions


@pytest.mark.slow
def test_pinned_versions_are_the_ones_tested(foreign):
    _, versions = foreign
    pins = dict(line.split("==") for line in (ROOT / "tests/interop/requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert versions["sae-lens"] == pins["sae-lens"] and versions["eai-sparsify"] == pins["eai-sparsify"]
    assert versions["torch"].startswith("2.13.0")


@pytest.mark.slow
@pytest.mark.parametrize("fmt,arch", EXPORTS)
def test_foreign_library_reproduces_repscope_export(foreign, fmt, arch):
    """repscope -> SAELens / sparsify: the real library loads the directory and gives
    repscope's codes and reconstructions (input scale folded into the weights)."""
    tmp, _ = foreign
    i = EXPORTS.index((fmt, arch))
    z, recon = _outputs(_repscope_sae(arch, seed=i), _inputs())
    assert (z > 0).sum(1).mean() > 1  # a non-trivial code
    assert _close(np.load(tmp / f"export-{fmt}-{arch}.codes.npy"), z) < TOL
    assert _close(np.load(tmp / f"export-{fmt}-{arch}.recon.npy"), recon) < TOL
    back = load_sae(tmp / f"export-{fmt}-{arch}")  # and repscope reads its own export
    z2, recon2 = _outputs(back, _inputs())
    assert _close(z2, z) < TOL and _close(recon2, recon) < TOL
    assert read_cfg(tmp / f"export-{fmt}-{arch}")["format"] == fmt


@pytest.mark.slow
@pytest.mark.parametrize("name", [m[0] for m in SAELENS_MADE] + ["sparsify-topk"])
def test_repscope_reads_directories_written_by_the_library(foreign, name):
    """SAELens / sparsify -> repscope: directories written by the libraries' own save
    functions load here and give the libraries' codes and reconstructions."""
    tmp, _ = foreign
    prefix = tmp / (name if name.startswith("sparsify") else f"saelens-{name}")
    sae = load_sae(prefix)
    z, recon = _outputs(sae, _inputs())
    assert (z > 0).sum(1).mean() > 1
    assert _close(z, np.load(f"{prefix}.codes.npy")) < TOL
    assert _close(recon, np.load(f"{prefix}.recon.npy")) < TOL
    expected = {"standard": "relu", "standard-no-bdec": "relu", "topk": "topk", "topk-rescaled": "topk",
                "jumprelu": "jumprelu", "sparsify-topk": "topk"}[name]
    assert sae.architecture == expected


def test_unsupported_exports_and_imports_name_the_architecture(tmp_path):
    sae = build_sae("topafa", 4, 8)
    with pytest.raises(ValueError, match=r"save_sae cannot write a 'topafa' SAE in format 'saelens': "
                                         r"that library has no such architecture; it can hold \['relu', 'topk', "):
        save_sae(sae, tmp_path / "a", format="saelens")
    with pytest.raises(ValueError, match=r"cannot write a 'jumprelu' SAE in format 'sparsify'.*\['topk'\]"):
        save_sae(build_sae("jumprelu", 4, 8), tmp_path / "b", format="sparsify")
    save_sae(build_sae("relu", 4, 8), tmp_path / "c", format="saelens")
    cfg = json.loads((tmp_path / "c" / "cfg.json").read_text())
    cfg["architecture"] = "gated"
    (tmp_path / "c" / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "c" / "manifest.json").unlink()
    with pytest.raises(SAEFileError, match=r"SAELens architecture 'gated' has no repscope equivalent; "
                                           r"supported: \['standard', 'topk', 'jumprelu'\]"):
        load_sae(tmp_path / "c")


# --- dictionary_learning (Marks et al.): directories built following its code -------------
# (dictionary_learning/utils.py load_dictionary: config.json {"trainer": {"dict_class", "k", ...}}
# + ae.pt, a torch state dict; encoders as in dictionary_learning/dictionary.py and trainers/*.py)
def _dl_dir(tmp_path: Path, dict_class: str, state: dict, **trainer) -> Path:
    d = tmp_path / dict_class
    d.mkdir()
    torch.save(state, d / "ae.pt")
    (d / "config.json").write_text(json.dumps({"trainer": {"dict_class": dict_class, **trainer}}))
    return d


def _dl_reference(dict_class: str, s: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dictionary_learning's own encode/decode formulas, written out for each class."""
    relu = torch.relu
    if dict_class == "AutoEncoder":
        f = relu((x - s["bias"]) @ s["encoder.weight"].T + s["encoder.bias"])
        return f, f @ s["decoder.weight"].T + s["bias"]
    if dict_class == "AutoEncoderTopK":
        post = relu((x - s["b_dec"]) @ s["encoder.weight"].T + s["encoder.bias"])
        top = post.topk(int(s["k"]), dim=-1)
        f = torch.zeros_like(post).scatter_(-1, top.indices, top.values)
        return f, f @ s["decoder.weight"].T + s["b_dec"]
    if dict_class == "BatchTopKSAE":  # use_threshold=True, the default
        post = relu((x - s["b_dec"]) @ s["encoder.weight"].T + s["encoder.bias"])
        f = post * (post > s["threshold"])
        return f, f @ s["decoder.weight"].T + s["b_dec"]
    if dict_class == "MatryoshkaBatchTopKSAE":
        post = relu((x - s["b_dec"]) @ s["W_enc"] + s["b_enc"])
        f = post * (post > s["threshold"])
        return f, f @ s["W_dec"] + s["b_dec"]
    assert dict_class == "JumpReluAutoEncoder"  # apply_b_dec_to_input = False
    pre = x @ s["W_enc"] + s["b_enc"]
    f = relu(pre * (pre > s["threshold"]))
    return f, f @ s["W_dec"] + s["b_dec"]


def _dl_state(dict_class: str, gen: torch.Generator) -> dict:
    r = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    if dict_class == "AutoEncoder":
        return {"bias": r(D_IN), "encoder.weight": r(D_SAE, D_IN), "encoder.bias": 0.1 * r(D_SAE),
                "decoder.weight": r(D_IN, D_SAE)}
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        return {"k": torch.tensor(K, dtype=torch.int), "threshold": torch.tensor(1.3),
                "decoder.weight": r(D_IN, D_SAE), "encoder.weight": r(D_SAE, D_IN),
                "encoder.bias": 0.1 * r(D_SAE), "b_dec": r(D_IN)}
    state = {"W_enc": r(D_IN, D_SAE), "b_enc": 0.1 * r(D_SAE), "W_dec": r(D_SAE, D_IN), "b_dec": r(D_IN)}
    if dict_class == "MatryoshkaBatchTopKSAE":
        state.update(k=torch.tensor(K, dtype=torch.int), threshold=torch.tensor(1.3),
                     group_sizes=torch.tensor([8, 16, 24]))
    else:
        state["threshold"] = torch.rand(D_SAE, generator=gen) * 2
    return state


@pytest.mark.parametrize("dict_class,arch", [
    ("AutoEncoder", "relu"), ("AutoEncoderTopK", "topk"), ("BatchTopKSAE", "batchtopk"),
    ("MatryoshkaBatchTopKSAE", "matryoshka"), ("JumpReluAutoEncoder", "jumprelu")])
def test_reads_dictionary_learning_directories(tmp_path, dict_class, arch):
    state = _dl_state(dict_class, torch.Generator().manual_seed(7))
    d = _dl_dir(tmp_path, dict_class, state, k=K, submodule_name="resid_post_layer_3")
    x = torch.from_numpy(_inputs())
    f, x_hat = _dl_reference(dict_class, state, x)
    sae = load_sae(d)
    assert sae.architecture == arch and read_cfg(d)["hook_name"] == "resid_post_layer_3"
    z, recon = _outputs(sae, _inputs())
    assert (z > 0).sum(1).mean() > 1
    assert _close(z, f.double().numpy()) < TOL and _close(recon, x_hat.double().numpy()) < TOL
    if arch == "matryoshka":
        assert sae.widths == [8, 24, 48]


def test_dictionary_learning_unsupported_class_and_pickles(tmp_path):
    d = _dl_dir(tmp_path, "GatedAutoEncoder", {"decoder_bias": torch.zeros(3)})
    with pytest.raises(SAEFileError, match=r"dictionary_learning class 'GatedAutoEncoder' has no repscope "
                                           r"equivalent; supported: \['AutoEncoder', "):
        load_sae(d)
    d = tmp_path / "evil"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoder"}}))
    torch.save({"x": _Pickled()}, d / "ae.pt")  # not a plain state dict: weights_only refuses it
    with pytest.raises(SAEFileError, match=r"Cannot read '.*ae.pt': UnpicklingError"):
        load_sae(d)


class _Pickled:
    pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
