"""Stores under faults: every file verified by ``repscope info`` (old stores as far as they can
be), a SIGKILL at every step of store creation, mid-shard and at completion resumed to the same
bytes, a dead writer's debris recognised by its lock, capture errors as one line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from faults_support import (
    assert_killed,
    cli,
    error_line,
    fork,
    kill_when,
    run_in_read_only,
    tiny_model,
    tree_bytes,
    write_toy_store,
)
from repscope.capture import ActivationStore, StoreError
from repscope.capture.format import MANIFEST_DIGEST
from repscope.cli import app


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> ActivationStore:
    return write_toy_store(tmp_path_factory.mktemp("ref") / "store")


@pytest.fixture
def copy(reference, tmp_path) -> Path:
    path = tmp_path / "store"
    shutil.copytree(reference.path, path)
    return path


def _info(path: Path):
    return CliRunner().invoke(app, ["info", str(path)])


def _edit_manifest(path: Path, change) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _make_old(path: Path) -> None:
    """What a store written before manifests carried checksums looks like."""
    _edit_manifest(path, lambda m: (m.pop(MANIFEST_DIGEST), m.pop("files")))


def test_info_checks_every_file_of_a_store(copy):
    res = _info(copy)
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert ("integrity: OK (18 files; checked: manifest checksum, documents and vocabulary, "
            "shard checksums, headers and metadata references, row total)") in text
    assert "not checked" not in text


def _flip(file: Path, offset: int = -2) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x01
    file.write_bytes(bytes(data))


CORRUPTIONS = {
    "shard rows edited in the manifest": (
        lambda p: _edit_manifest(p, lambda m: m["shards"][0].update(rows=9)),
        "Manifest '{p}/manifest.json' was modified after it was written: its content does not "
        "match its recorded checksum "),
    "documents.json not JSON": (
        lambda p: (p / "documents.json").write_text(  # the same size, not JSON
            "[not json".ljust((p / "documents.json").stat().st_size)),
        "integrity check FAILED: Store file '{p}/documents.json' is corrupt: its size or sha256 "
        "does not match the manifest (84 bytes, recorded 84)."),
    "vocab.json one flipped byte": (
        lambda p: _flip(p / "vocab.json"),
        "integrity check FAILED: Store file '{p}/vocab.json' is corrupt: its size or sha256 does "
        "not match the manifest ({n} bytes, recorded {n})."),
    "vocab.json truncated": (
        lambda p: (p / "vocab.json").write_text("[]"),
        "Store file '{p}/vocab.json' is truncated or corrupt: it has 2 bytes, the manifest "
        "records {n}. Re-run the capture into a fresh directory."),
    "shard file one flipped byte": (
        lambda p: _flip(p / "shards" / "000002" / "emb.npy"),
        "integrity check FAILED: Shard file '{p}/shards/000002/emb.npy' is corrupt: its sha256 "),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_info_refuses_a_damaged_store_in_one_line(copy, case):
    damage, message = CORRUPTIONS[case]
    n = (copy / "vocab.json").stat().st_size
    damage(copy)
    res = _info(copy)
    assert res.exit_code == 1, res.output
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: " + message.format(p=copy, n=n)), res.stderr


def test_an_older_store_is_verified_as_far_as_it_can_be(copy):
    _make_old(copy)
    res = _info(copy)
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert ("integrity: OK (15 files; checked: documents and vocabulary, shard checksums, headers "
            "and metadata references, row total)") in text
    assert ("not checked: the manifest's own checksum (written by repscope "
            f"{json.loads((copy / 'manifest.json').read_text())['repscope_version']}, before "
            "manifests carried one)") in text
    assert ("not checked: documents.json checksum (not recorded by this older store; the file "
            "parses)") in text
    assert "not checked: vocab.json checksum" in text
    # what no checksum of an old store covers is still caught
    _edit_manifest(copy, lambda m: m["shards"][1].update(rows=9))
    res = _info(copy)
    assert res.exit_code == 1 and res.stderr.startswith(
        f"error: integrity check FAILED: Shard file '{copy}/shards/000001/emb.npy' holds shape "
        f"(10, 4); the manifest records 9 rows."), res.output
    _edit_manifest(copy, lambda m: m["shards"][1].update(rows=10))
    (copy / "documents.json").write_text("[not json")
    res = _info(copy)
    assert res.exit_code == 1 and res.stderr.startswith(
        f"error: integrity check FAILED: Store file '{copy}/documents.json' is not valid JSON: "
        "Expecting value: line 1 column 2 (char 1)."), res.output


def test_reading_documents_checks_them(copy):
    (copy / "documents.json").write_text(json.dumps([f"document {c}" for c in range(5)] + ["x" * 10]))
    store = ActivationStore.open(copy)  # same size: open passes
    assert store.read("emb", rows=[0]).shape == (1, 4)
    with pytest.raises(StoreError, match=r"documents.json' is corrupt: its size or sha256"):
        _ = store.documents


# -- kills --------------------------------------------------------------------------------------


def _replacing(suffix: str, nth: int = 1):
    """Arm a SIGKILL at the ``nth`` atomic rename onto a file named ``suffix`` (the temporary
    file is written and fsynced, the rename not done)."""
    seen = []

    def arm() -> None:
        kill_when(os, "replace", lambda src, dst: str(dst).endswith(suffix)
                  and (seen.append(1) or len(seen) == nth))

    return arm


def _mid_shard() -> None:
    import repscope.capture.writer as w

    calls = []  # 3 files a shard: the 8th write is inside shard 2
    kill_when(w, "_write_npy", lambda path, arr: calls.append(1) or len(calls) == 8)


#: kill point -> (arms the SIGKILL in the child, what the kill leaves behind)
KILLS = {
    "writing documents.json": (
        _replacing("documents.json"),
        lambda p: list(p.glob(".documents.json.*.tmp")) and not (p / "documents.json").exists()),
    "writing vocab.json": (
        _replacing("vocab.json"),
        lambda p: (p / "documents.json").exists() and list(p.glob(".vocab.json.*.tmp"))),
    "writing the first manifest": (
        _replacing("manifest.json"),
        lambda p: (p / "vocab.json").exists() and list(p.glob(".manifest.json.*.tmp"))
        and not (p / "manifest.json").exists()),
    "mid-shard": (
        _mid_shard,
        lambda p: (p / "shards" / ".tmp-000002").is_dir() and (p / "shards" / "000001").is_dir()),
    "completing the manifest": (
        _replacing("manifest.json", nth=2),
        lambda p: json.loads((p / "manifest.json").read_text())["status"] == "in_progress"
        and list(p.glob(".manifest.json.*.tmp"))),
}


@pytest.mark.parametrize("point", list(KILLS))
def test_a_writer_killed_at_any_step_resumes_to_the_same_bytes(reference, tmp_path, point):
    arm, debris = KILLS[point]
    path = tmp_path / "store"
    assert_killed(fork(lambda: (arm(), write_toy_store(path))))
    assert debris(path), sorted(q.name for q in path.rglob("*"))
    store = write_toy_store(path)  # the same capture again
    skip = (".lock", "manifest.json")
    assert tree_bytes(path, skip) == tree_bytes(reference.path, skip)
    got, want = store.manifest, reference.manifest
    for m in (got, want):
        for key in ("created", "completed", MANIFEST_DIGEST):
            m.pop(key)
    assert got == want
    assert not list(path.rglob("*.tmp")) and not list((path / "shards").glob(".tmp-*"))
    assert store.verify().unchecked == []


def test_debris_is_only_cleaned_where_a_writer_held_the_lock(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / ".documents.json.abcd1234.tmp").write_text("my file")
    for _ in range(2):  # a refusal leaves no lock behind that would mark the directory
        with pytest.raises(StoreError, match=r"is not empty and holds no ActivationStore "
                                             r"\(found \['.documents.json.abcd1234.tmp'\]\)"):
            write_toy_store(foreign)
        assert not (foreign / ".lock").exists()
    assert (foreign / ".documents.json.abcd1234.tmp").read_text() == "my file"


@pytest.mark.slow
def test_capture_command_killed_during_store_creation_resumes(tmp_path):
    """The issue's case: `repscope capture` killed while it writes documents.json; the same
    command again completes the store, equal to an uninterrupted capture."""
    model = tiny_model(tmp_path / "tiny")
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"line {i} of the corpus, some words\n" for i in range(9)))
    args = ["capture", "--model", str(model), "--corpus", str(corpus), "--shard-rows", "16",
            "--batch-size", "2", "--max-length", "16", "--no-progress"]
    ref = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ref")])
    assert ref.exit_code == 0, ref.output
    out = tmp_path / "killed"
    arm = _replacing("documents.json")
    assert_killed(fork(lambda: (arm(), cli(*args, "--out", str(out))())))
    assert list(out.glob(".documents.json.*.tmp")) and not (out / "manifest.json").exists()
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    skip = (".lock", "manifest.json")
    assert tree_bytes(out, skip) == tree_bytes(tmp_path / "ref", skip)
    assert len(list((out / "shards").iterdir())) > 2


# -- one-line capture errors --------------------------------------------------------------------


def test_capture_errors_are_one_line(tmp_path):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes("first line\nzweite Zeile mit \u00fc\n".encode("latin-1"))
    (tmp_path / "file").write_text("x")
    cases = [
        (["--corpus", str(corpus), "--out", str(tmp_path / "s")], 1,
         f"Corpus file '{corpus}' is not valid UTF-8: line 2 (byte 18 of the line) holds the "
         "byte(s) fc. Convert it to UTF-8 first (e.g. iconv -f latin1 -t utf-8)."),
        (["--seed", "-1", "--max-docs", "3"], 2,
         "The 'seed' parameter of CaptureConfig must be an int in [0, inf). Got -1 instead."),
        (["--out", str(tmp_path / "file")], 2,
         f"The 'out' parameter of CaptureConfig must be a directory (existing or to create). "
         f"Got '{tmp_path / 'file'}', which is an existing file."),
        (["--out", str(tmp_path / "file" / "store")], 2,
         f"The 'out' parameter of CaptureConfig must be a directory (existing or to create). "
         f"Got '{tmp_path / 'file' / 'store'}', which lies under '{tmp_path / 'file'}', a file."),
    ]
    for args, code, message in cases:
        res = CliRunner().invoke(app, ["capture", "--no-progress", *args])
        assert res.exit_code == code, (args, res.output)
        assert res.stderr == f"error: {message}\n", res.stderr


def test_capture_into_a_read_only_directory_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    corpus = tmp_path / "c.txt"
    corpus.write_text("one\ntwo\n")
    child, why = run_in_read_only(ro, cli("capture", "--corpus", str(corpus), "--out",
                                          str(ro / "store"), "--no-progress"))
    assert child.code == 1, child.stderr
    assert error_line(child) == (f"Cannot write the output directory '{ro / 'store'}': '{ro}' "
                                 f"{why}. Choose a writable directory with --out.")
