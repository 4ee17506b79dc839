"""Joining and starting Ray: a cluster that does not answer or refuses authentication is a
one-line error within the connection deadline (never a ``ray.init`` that retries forever), and
a Ray that repscope starts listens on loopback only.

Clusters here are started by the tests themselves and stopped by their own handles (a process
group this test created); ``ray stop`` is never used.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from repscope._ray import RayConnectionError, _refusal, connect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refusal_messages_name_the_address_and_the_cause():
    auth = _refusal("10.0.0.1:6379", "... Unauthenticated: Invalid or missing authentication "
                    "token ...", 30)
    assert auth.startswith("The Ray cluster at address='10.0.0.1:6379' refused the connection: "
                           "it requires an authentication token")
    silent = _refusal("10.0.0.1:6379", "", 30)
    assert silent == ("The Ray cluster at address='10.0.0.1:6379' did not answer within 30 s. "
                      "Check that it is running and reachable (for a remote cluster: "
                      "'ray://HOST:10001').")
    failed = _refusal("x:1", "noise\nREPSCOPE-PROBE-ERROR ConnectionError Could not reach\n", 30)
    assert failed == "Could not connect to the Ray cluster at address='x:1': ConnectionError " \
                     "Could not reach"
    assert all("\n" not in m for m in (auth, silent, failed))


def test_bad_bind_and_timeout_are_one_line_errors():
    with pytest.raises(ValueError, match=r"The 'bind' parameter of connect must be one of"):
        connect(bind="everywhere")
    with pytest.raises(ValueError, match=r"The 'connect_timeout' parameter of connect must be "
                                         r"a float in \(0"):
        connect(address="auto", connect_timeout=0)


def test_a_cluster_that_does_not_answer_is_refused_within_the_deadline():
    pytest.importorskip("ray")
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(RayConnectionError) as err:
        connect(address=address, connect_timeout=20)
    assert time.monotonic() - t0 < 60
    msg = str(err.value)
    assert "\n" not in msg and f"address='{address}'" in msg


def test_analyze_reports_an_unreachable_cluster_in_one_line(tmp_path):
    pytest.importorskip("ray")
    from repscope.cli import app

    address = f"127.0.0.1:{free_port()}"
    store = _tiny_store(tmp_path / "store")
    result = CliRunner().invoke(app, ["analyze", "--store", str(store), "--out",
                                      str(tmp_path / "out"), "--executor", "ray", "--address",
                                      address, "--measures", "participation_ratio",
                                      "--no-report"])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"address='{address}'" in last
    assert "Traceback" not in result.output


def test_ray_bind_needs_the_ray_executor():
    from repscope.analysis.plan import AnalyzeConfig, PlanError, check_config

    with pytest.raises(PlanError, match=r"^The 'ray_bind' option needs executor 'ray': it says "
                                        r"where a Ray that repscope starts listens\. Got "
                                        r"ray_bind='network' with executor 'local'\.$"):
        check_config(AnalyzeConfig(ray_bind="network"))


@pytest.mark.slow
def test_a_token_auth_cluster_refuses_a_client_without_the_token(tmp_path, monkeypatch):
    """A head started with Ray token authentication; a client without the token gets the
    one-line refusal as soon as Ray reports it, not after retrying forever."""
    pytest.importorskip("ray")
    port = free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "s3cret-" + "x" * 24,
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    # Ray's socket paths must stay under 107 bytes: pytest's tmp_path can be longer
    ray_tmp = tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp")
    log = open(tmp_path / "head.log", "wb")  # noqa: SIM115 (closed below)
    head = subprocess.Popen([str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=1",
                             "--include-dashboard=false", "--block",
                             f"--temp-dir={ray_tmp}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(port, head, 240)
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the client has no token
        monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
        t0 = time.monotonic()
        with pytest.raises(RayConnectionError) as err:
            connect(address=f"127.0.0.1:{port}", connect_timeout=120)
        msg = str(err.value)
        assert msg.startswith(f"The Ray cluster at address='127.0.0.1:{port}' refused the "
                              f"connection: it requires an authentication token"), msg
        assert "\n" not in msg and time.monotonic() - t0 < 120
    finally:
        _stop_group(head)
        log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the Ray head exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(3.0)  # the GCS answers; give the raylet a moment
                return
        time.sleep(0.5)
    pytest.fail("the Ray head did not start listening in time")


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the head and every process it started (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children that outlived the head
    except ProcessLookupError:
        pass


def _tiny_store(path: Path) -> Path:
    import numpy as np

    from repscope.capture import ActivationStore

    writer = ActivationStore.create(path, layers={"h": 4}, shard_rows=50,
                                    identity={"model": "toy"},
                                    info={"model": {"id": "toy", "weights_sha256": "ab" * 8},
                                          "data": {"id": "toy", "sha256": "cd" * 8},
                                          "pooling": "none"})
    rng = np.random.default_rng(0)
    writer.append({"h": rng.standard_normal((80, 4)).astype(np.float32)},
                  {"doc_id": np.zeros(80, np.int64), "position": np.arange(80, dtype=np.int32),
                   "token_id": np.zeros(80, np.int32)}, chunk=0)
    writer.finish()
    return path
