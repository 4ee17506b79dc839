"""Model sources: .gguf files converted once (cached by content hash), hub ids from the local
cache only, local directories, causal LMs with their LM head; analyze threads capture options."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from capture_support import documents, tiny_model, word_tokenizer
from repscope.capture.hf import default_layers
from repscope.data import models


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("REPSCOPE_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama causal LM + word tokenizer saved as a Hugging Face directory."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tok = word_tokenizer("llama", documents())
    tiny_model("llama", len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_gguf_is_converted_once_per_content(cache: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake_convert(gguf: Path, target: Path) -> None:
        calls.append(gguf)
        (target / "config.json").write_text("{}")
        (target / "model.safetensors").write_bytes(gguf.read_bytes())

    monkeypatch.setattr(models, "_convert", fake_convert)
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    a.write_bytes(b"weights one")
    b.write_bytes(b"weights one")  # same content, other name: the same cache entry
    c.write_bytes(b"weights two")
    first = models.resolve(a)
    assert len(calls) == 1 and (first.path / "config.json").is_file()
    assert first.model_id == "gguf:a.gguf"
    assert first.weights_sha256 == hashlib.sha256(b"weights one").hexdigest()
    assert first.path == cache / "models" / f"gguf-{first.weights_sha256[:16]}"
    mtime = (first.path / "config.json").stat().st_mtime_ns
    again = models.resolve(str(a))
    assert len(calls) == 1 and again.path == first.path  # no second conversion
    assert (first.path / "config.json").stat().st_mtime_ns == mtime
    assert models.resolve(b).path == first.path and len(calls) == 1
    assert models.resolve(c).path != first.path and len(calls) == 2
    assert json.loads((first.path / "repscope-source.json").read_text())["sha256"] == \
        first.weights_sha256
    # the hash itself is remembered per (path, size, mtime): a.gguf is not read again
    index = json.loads((cache / "hashes.json").read_text())
    assert sum(k.startswith(str(a.resolve())) for k in index) == 1


def test_a_failed_conversion_leaves_nothing(cache: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(gguf: Path, target: Path) -> None:
        (target / "config.json").write_text("{}")
        raise RuntimeError("killed half-way")

    monkeypatch.setattr(models, "_convert", broken)
    f = tmp_path / "x.gguf"
    f.write_bytes(b"abc")
    with pytest.raises(RuntimeError, match="killed half-way"):
        models.resolve(f)
    assert list((cache / "models").iterdir()) == []
    with pytest.raises(FileNotFoundError, match=r"GGUF file '.*missing.gguf' does not exist; "
                                                r"repscope loads models from local files only"):
        models.resolve(tmp_path / "missing.gguf")


def test_causal_lm_loads_with_its_head_and_block_names(llama_dir: Path) -> None:
    model, tok, model_id, digest = models.load_model(llama_dir)
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert default_layers(model) == ["model.embed_tokens", "model.layers.0", "model.layers.1"]
    assert model_id == str(llama_dir.resolve()) and digest == models.weights_hash(llama_dir)
    assert tok("the")["input_ids"][0] == tok.convert_tokens_to_ids("<s>")


def test_hub_ids_come_from_the_local_cache_only(llama_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    repo = hub / "models--someone--tiny-llama"
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for f in llama_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    assert models.resolve_model_path("someone/tiny-llama") == (snap, "someone/tiny-llama")
    model, _, model_id, _ = models.load_model("someone/tiny-llama")
    assert model_id == "someone/tiny-llama" and type(model).__name__ == "LlamaForCausalLM"
    with pytest.raises(FileNotFoundError, match=r"^Model 'someone/absent' is neither .* nor a hub "
                                                r"id in the local Hugging Face cache \(.*hub\); "
                                                r"repscope loads models from local files only and "
                                                r"never downloads \(fetch it first, e\.g\. "
                                                r"`huggingface-cli download someone/absent`\)\.$"):
        models.resolve("someone/absent")
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        models.resolve(empty)


def test_analyze_threads_capture_options(tmp_path: Path) -> None:
    from repscope.analysis.plan import AnalyzeConfig
    from repscope.capture.run import capture_config

    cfg = AnalyzeConfig(model="smollm2", layers=("model.layers.*",), exclude_positions=(0,),
                        exclude_special_tokens=True, long_documents="window", overlap=8,
                        max_docs=40, max_length=64, out=tmp_path)
    ccfg = capture_config(cfg, out=tmp_path / "store")
    assert (ccfg.model, ccfg.layers, ccfg.exclude_positions, ccfg.exclude_special_tokens,
            ccfg.long_documents, ccfg.overlap, ccfg.max_docs, ccfg.max_length) == \
        ("smollm2", ("model.layers.*",), (0,), True, "window", 8, 40, 64)
    assert ccfg.out == tmp_path / "store"


def test_cli_options_reach_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from repscope.cli import app

    seen = {}

    def fake_run_capture(cfg, **kw):
        seen["cfg"] = cfg
        raise ValueError("stop here")

    monkeypatch.setattr("repscope.capture.run_capture", fake_run_capture)
    result = CliRunner().invoke(app, ["analyze", "--model", "x", "--exclude-positions", "0",
                                      "--exclude-positions", "3", "--exclude-special-tokens",
                                      "--long-documents", "window", "--overlap", "5",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2 and "stop here" in result.output
    cfg = seen["cfg"]
    assert cfg.exclude_positions == (0, 3) and cfg.exclude_special_tokens is True
    assert cfg.long_documents == "window" and cfg.overlap == 5
    result = CliRunner().invoke(app, ["capture", "--exclude-positions", "0", "--overlap", "4",
                                      "--long-documents", "window", "--out", str(tmp_path / "c")])
    assert seen["cfg"].exclude_positions == (0,) and seen["cfg"].overlap == 4
