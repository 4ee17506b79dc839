"""ActivationStores on object storage, against an S3-compatible server (moto's server mode) on
loopback: ``repscope capture --out s3://...`` then ``repscope analyze --store s3://...`` give the
same results as the local store; an upload killed half way (SIGKILL) leaves nothing a reader
opens and resumes; a corrupt object is refused."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

BUCKET = "repscope-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 (its own port), the AWS variables pointing at it, a bucket
    and a private repscope cache directory; everything restored afterwards."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
           "REPSCOPE_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    saved = {k: os.environ.get(k) for k in [*env, "AWS_PROFILE", "AWS_SESSION_TOKEN"]}
    os.environ.update(env)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)
    try:
        assert host == "127.0.0.1"
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield env
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _objects(prefix: str) -> dict[str, int]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


@pytest.mark.slow
def test_capture_to_s3_then_analyze_equals_local_disk(s3, tmp_path):
    from click.testing import CliRunner

    from repscope.analysis.db import load_results
    from repscope.capture import ActivationStore
    from repscope.cli import app

    common = ["--max-docs", "3", "--max-length", "32", "--layers", "embeddings",
              "--layers", "encoder.layer.5", "--shard-rows", "40", "--no-progress"]
    runner = CliRunner()
    for out in (str(tmp_path / "local"), f"s3://{BUCKET}/runs/minilm"):
        res = runner.invoke(app, ["capture", "--out", out, *common])
        assert res.exit_code == 0, res.output
    keys = _objects("runs/minilm/")
    assert "runs/minilm/manifest.json" in keys and sum(k.endswith("shard.json") for k in keys) >= 2
    local = ActivationStore.open(tmp_path / "local", verify="full")
    remote = ActivationStore.open(f"s3://{BUCKET}/runs/minilm", verify="full")
    assert remote.n_rows == local.n_rows and remote.layers == local.layers
    for layer in local.layers:
        np.testing.assert_array_equal(remote.read(layer), local.read(layer))
    analysed = {}
    for name, store in (("local", str(tmp_path / "local")), ("s3", f"s3://{BUCKET}/runs/minilm")):
        res = runner.invoke(app, ["analyze", "--store", store, "--out", str(tmp_path / f"a-{name}"),
                                  "--measures", "twonn", "--measures", "participation_ratio",
                                  "--measures", "cka_linear", "--max-rows", "60", "--no-report"])
        assert res.exit_code == 0, res.output
        df = load_results(tmp_path / f"a-{name}").sort_values(["measure", "layer", "layer_b"])
        analysed[name] = df.reset_index(drop=True)
    a, b = analysed["local"], analysed["s3"]
    assert len(a) == 2 + 2 + 3 and (a.status == "ok").all()
    cols = ["measure", "layer", "layer_b", "value", "ci_low", "ci_high", "n", "params", "model",
            "model_hash", "data"]
    for col in cols:  # equal, NaN where NaN (a measure without an interval)
        assert a[col].equals(b[col]), (col, a[col].tolist(), b[col].tolist())


KILLER = textwrap.dedent("""
    import os, signal, sys
    import fsspec.spec
    from repscope.capture.remote import push_store
    sent = [0]
    real = None
    def put_file(self, lpath, rpath, *a, **kw):
        if sent[0] == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)  # killed between two objects
        sent[0] += 1
        return real(self, lpath, rpath, *a, **kw)
    import s3fs
    real = s3fs.S3FileSystem.put_file
    s3fs.S3FileSystem.put_file = put_file
    push_store(sys.argv[1], sys.argv[2])
""")


def test_a_kill_during_upload_resumes(s3, tmp_path):
    from repscope.capture import ActivationStore, StoreError
    from repscope.capture.remote import push_store

    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 16)).astype(np.float32)
    with ActivationStore.create(tmp_path / "local", layers={"h": 16}, shard_rows=100) as writer:
        for c in range(5):
            writer.append({"h": X[100 * c:100 * (c + 1)]},
                          {"doc_id": np.full(100, c), "position": np.arange(100),
                           "token_id": np.zeros(100, dtype=np.int64)}, chunk=c)
        local = writer.finish()
    url = f"s3://{BUCKET}/kill/store"
    # 5 shards x (h.npy, meta.npy, shard.json) + documents/vocab + manifest: killed after 7
    proc = subprocess.run([sys.executable, "-c", KILLER, str(local.path), url, "7"],
                          env=os.environ, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    keys = _objects("kill/store/")
    assert len(keys) == 7 and "kill/store/manifest.json" not in keys
    with pytest.raises(StoreError, match=r"^'s3://repscope-test/kill/store' is not an "
                                         r"ActivationStore: it has no manifest\.json .*resume it\)\.$"):
        ActivationStore.open(url)
    sent = push_store(local.path, url)  # resumes: the two finished shards are not sent again
    total = len(_objects("kill/store/"))
    assert sent == total - 6
    remote = ActivationStore.open(url, verify="full")
    np.testing.assert_array_equal(remote.read("h"), X)
    np.testing.assert_array_equal(remote.metadata()["doc_id"], np.repeat(np.arange(5), 100))
    assert push_store(local.path, url) == 1 + (total - 1 - 15)  # nothing but the small files


def test_a_corrupt_object_is_refused(s3, tmp_path):
    import boto3

    from repscope.capture import ActivationStore, StoreError
    from repscope.capture.remote import cache_dir_for

    X = np.arange(64, dtype=np.float32).reshape(16, 4)
    url = f"s3://{BUCKET}/corrupt/store"
    with ActivationStore.create(url, layers={"h": 4}, shard_rows=8) as writer:
        writer.append({"h": X}, {"doc_id": np.zeros(16, dtype=np.int64), "position": np.arange(16),
                                 "token_id": np.zeros(16, dtype=np.int64)}, chunk=0)
        writer.finish()
    client = boto3.client("s3")
    key = "corrupt/store/shards/000001/h.npy"
    body = bytearray(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    body[-1] ^= 0xFF
    client.put_object(Bucket=BUCKET, Key=key, Body=bytes(body))
    client.put_object(Bucket=BUCKET, Key="corrupt/store/manifest.json",  # a new commit
                      Body=client.get_object(Bucket=BUCKET, Key="corrupt/store/manifest.json")[
                          "Body"].read() + b" ")
    (cache_dir_for(url) / "shards" / "000001" / "h.npy").unlink()  # as on another machine
    with pytest.raises(StoreError, match=r"^Object '.*shards/000001/h\.npy' of store "
                                         r"'s3://repscope-test/corrupt/store' is corrupt"):
        ActivationStore.open(url)
