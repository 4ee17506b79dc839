"""The bundled corpus, local corpora, document selection and offline model resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from repscope.capture.run import select_documents
from repscope.data.corpus import MIN_CHARS, load_corpus
from repscope.data.models import resolve_model_path, weights_hash


def test_pydoc_corpus_is_real_deterministic_text() -> None:
    a, b = load_corpus("pydoc"), load_corpus()
    assert a.id == "pydoc" and a.hash == b.hash and a.documents == b.documents
    assert len(a) > 500
    assert all(d.strip() and not d.startswith("\n") for d in a.documents)
    assert sum(len(d) >= MIN_CHARS for d in a.documents) > 0.9 * len(a)
    assert any("assert" in d for d in a.documents[:20])  # topics in sorted order
    assert sum(len(d) for d in a.documents) > 400_000


def test_local_corpora(tmp_path: Path) -> None:
    txt = tmp_path / "a.txt"
    txt.write_text("first doc\n\n  second doc  \n")
    c = load_corpus(txt)
    assert c.id == "file:a.txt" and c.documents == ["first doc", "second doc"]
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"text": "one"}\n"two"\n\n{"text": "  "}\n')
    assert load_corpus(jsonl).documents == ["one", "two"]
    assert load_corpus(jsonl).hash != load_corpus(txt).hash
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(ValueError, match=r"Corpus file '.*c.jsonl', line 2: invalid JSON"):
        load_corpus(bad)
    bad.write_text('{"body": "no text field"}\n')
    with pytest.raises(ValueError, match="line 1: expected a JSON string or an object with a 'text'"):
        load_corpus(bad)
    (tmp_path / "d.csv").write_text("x\n")
    with pytest.raises(ValueError, match=r"must end in \.txt .* or \.jsonl"):
        load_corpus(tmp_path / "d.csv")
    with pytest.raises(FileNotFoundError, match="neither the bundled 'pydoc' corpus nor an existing"):
        load_corpus(tmp_path / "missing.txt")
    (tmp_path / "e.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="is empty: it holds no non-empty document"):
        load_corpus(tmp_path / "e.txt")


def test_select_documents_is_a_seeded_ordered_subset() -> None:
    docs = [f"d{i}" for i in range(50)]
    a = select_documents(docs, 10, seed=0)
    assert a == select_documents(docs, 10, seed=0) != select_documents(docs, 10, seed=1)
    assert len(a) == 10 and a == sorted(a, key=docs.index)
    assert select_documents(docs, None, 0) == docs == select_documents(docs, 99, 0)


def test_models_load_from_local_files_only(tmp_path: Path) -> None:
    path, model_id = resolve_model_path("minilm")
    assert (path / "config.json").is_file() and model_id.endswith("all-MiniLM-L6-v2")
    with pytest.raises(FileNotFoundError, match="loads models from local files only and never downloads"):
        resolve_model_path("bert-base-uncased")  # a hub id is not a local directory
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="holds no weight file"):
        weights_hash(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    h = weights_hash(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"abd")
    assert len(h) == 64 and weights_hash(tmp_path) != h


def test_cli_errors_are_clear_without_a_model(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from repscope.cli import app

    cfg = tmp_path / "capture.yaml"
    cfg.write_text("modle: minilm\n")
    result = CliRunner().invoke(app, ["capture", "--config", str(cfg)])
    assert result.exit_code == 1
    assert "Unknown key(s) ['modle'] for CaptureConfig" in result.output
    result = CliRunner().invoke(app, ["capture", "--pooling", "max"])
    assert result.exit_code == 2 and "'max' is not one of" in result.output
    result = CliRunner().invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 1 and "is not an ActivationStore: it has no manifest.json" in result.output
