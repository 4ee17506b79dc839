"""Starting or joining a Ray cluster: the one place where repscope calls ``ray.init``.

* **A Ray that repscope starts** (no ``address``) binds every service (GCS, raylet, object
  manager, workers) to the loopback interface unless told otherwise (``bind="network"``):
  a cluster on a shared machine is then reachable only from that machine. Ray binds to the
  node's network address by default; repscope starts it in Ray's single-host mode instead.
  Start-up that times out (Ray waits 30 s for its raylet, which a loaded machine can exceed)
  is retried once, after the processes of the failed attempt are stopped.
* **Joining a cluster** (``address="auto"``, ``"host:port"`` or ``"ray://host:10001"``): a
  connection attempt runs first in a short-lived subprocess with a deadline, so a cluster that
  does not answer, or one that refuses the connection for want of an authentication token,
  ends in a one-line error instead of a ``ray.init`` that retries forever.
* A Ray already initialised in this process is used as it is and never shut down.

Ray is optional (``pip install 'repscope[ray]'``) and imported on use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from typing import Any

from repscope.errors import UserError

log = logging.getLogger(__name__)

BINDS = ("loopback", "network")
"Where a Ray started by repscope listens: the loopback interface, or Ray's default."
CONNECT_TIMEOUT = 60.0
"Seconds a connection to an existing cluster may take before it is refused with an error."
_SINGLE_HOST = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-host (loopback) mode


class RayConnectionError(UserError, RuntimeError):
    """A Ray cluster could not be started or joined (the message is one line; the CLI prints
    it as its one ``error:`` line, exit code 1)."""


def import_ray(what: str = "This feature") -> Any:
    """``ray``, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"{what} needs Ray: pip install 'repscope[ray]'.") from exc
    return ray


class RaySession:
    """A connection to Ray; :meth:`close` shuts Ray down only if this session started it."""

    def __init__(self, ray: Any, owns: bool) -> None:
        self.ray = ray
        self.owns = owns

    def cpus(self) -> int:
        return int(self.ray.cluster_resources().get("CPU", 1))

    def close(self) -> None:
        if self.owns and self.ray.is_initialized():
            self.ray.shutdown()
        self.owns = False

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(address: str | None = None, *, num_cpus: int | None = None, bind: str = "loopback",
            connect_timeout: float = CONNECT_TIMEOUT, what: str = "The ray executor",
            start_attempts: int = 2, **init_kwargs: Any) -> RaySession:
    """Join the cluster at ``address``, start a local Ray (``address=None``), or reuse the Ray
    this process already runs. ``bind``: where a Ray started here listens (``"loopback"``, the
    default, or ``"network"``); ``connect_timeout``: seconds allowed to reach ``address``;
    ``start_attempts``: tries to start a local Ray. ``init_kwargs`` go to ``ray.init``
    (``runtime_env``, ``object_store_memory``, ...)."""
    from repscope._validate import check_choice, check_float

    check_choice(bind, "bind", "connect", BINDS)
    connect_timeout = check_float(connect_timeout, "connect_timeout", "connect", low=0.0,
                                  low_inclusive=False)
    ray = import_ray(what)
    if ray.is_initialized():
        if address is not None or init_kwargs:
            log.info("Ray is already initialised; reusing it and ignoring address/init options")
        return RaySession(ray, owns=False)
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    kwargs.update(init_kwargs)
    if address is not None:
        _reachable(address, connect_timeout)
        local = _loopback(address)  # a loopback-bound cluster: join it in single-host mode too
        _probe(address, connect_timeout, local)
        with _single_host(ray, local):
            ray.init(address=address, **kwargs)
        return RaySession(ray, owns=True)
    if num_cpus is not None:
        kwargs.setdefault("num_cpus", num_cpus)
    for attempt in range(1, start_attempts + 1):
        before = _children()
        try:
            with _single_host(ray, bind == "loopback"):
                ray.init(**kwargs)
            return RaySession(ray, owns=True)
        except Exception as exc:  # start-up timed out, or a port was taken meanwhile
            with contextlib.suppress(Exception):
                ray.shutdown()
            _stop_new_children(before)
            if attempt == start_attempts:
                raise RayConnectionError(
                    f"Could not start a local Ray ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); tried {attempt} time(s)."
                ) from None
            log.warning("starting a local Ray failed (%s); trying once more", exc)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _single_host(ray: Any, on: bool):
    """Ray's single-host mode for the processes started inside (they inherit the variable):
    every service binds to and advertises the loopback address."""
    if not on:
        yield
        return
    from ray._private import ray_constants  # read at call time by services.get_node_ip_address

    old_env, old_flag = os.environ.get(_SINGLE_HOST), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_HOST] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(_SINGLE_HOST, None)
        else:
            os.environ[_SINGLE_HOST] = old_env


_PROBE = """
import sys, ray
try:
    ray.init(address=sys.argv[1], include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
except Exception as exc:
    print("REPSCOPE-PROBE-ERROR", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "",
          file=sys.stderr)
    sys.exit(3)
ray.shutdown()
"""


def _loopback(address: str) -> bool:
    """Whether ``host:port`` names this machine's loopback interface. A Ray client resolves
    such an address to the node's network address (where a loopback-bound cluster does not
    listen) unless it runs in single-host mode as well."""
    host = address.split("://", 1)[-1].rstrip("/").rpartition(":")[0].strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _reachable(address: str, timeout: float) -> None:
    """Fail at once when nothing accepts a TCP connection at ``host:port`` (``ray://`` too);
    ``"auto"`` and other forms are left to the probe."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=min(timeout, 10.0)).close()
    except OSError as exc:
        raise RayConnectionError(
            f"The Ray cluster at address={address!r} did not answer: nothing accepts "
            f"connections at {hostport} ({exc.strerror or type(exc).__name__}). Check that it is "
            f"running and reachable (for a remote cluster: 'ray://HOST:10001').") from None


def _probe(address: str, timeout: float, single_host: bool = False) -> None:
    """Connect to ``address`` once in a subprocess, within ``timeout`` seconds; a one-line
    :class:`RayConnectionError` if the cluster does not answer or refuses authentication (seen
    on the probe's stderr as soon as Ray reports it, without waiting for the deadline)."""
    import threading
    import time

    env = {**os.environ, _SINGLE_HOST: "0"} if single_host else None
    proc = subprocess.Popen([sys.executable, "-c", _PROBE, address], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, errors="replace", env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")),
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if _auth_refused("".join(lines)):
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5.0)
    if proc.returncode != 0:
        raise RayConnectionError(_refusal(address, "".join(lines), timeout))


def _auth_refused(stderr: str) -> bool:
    text = stderr.lower()
    return "unauthenticated" in text or "authentication" in text or "auth token" in text


def _refusal(address: str, stderr: str, timeout: float) -> str:
    if _auth_refused(stderr):
        return (f"The Ray cluster at address={address!r} refused the connection: it requires an "
                f"authentication token (Ray token auth). Set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH "
                f"to the cluster's token and try again.")
    line = next((ln.split("REPSCOPE-PROBE-ERROR", 1)[1].strip() for ln in stderr.splitlines()
                 if "REPSCOPE-PROBE-ERROR" in ln), "")
    if line:
        return f"Could not connect to the Ray cluster at address={address!r}: {line}"
    return (f"The Ray cluster at address={address!r} did not answer within {timeout:g} s. Check "
            f"that it is running and reachable (for a remote cluster: 'ray://HOST:10001').")


def _children() -> set[int]:
    try:
        import psutil
    except ImportError:
        return set()
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _stop_new_children(before: set[int]) -> None:
    """Stop the processes this process started since ``before`` (a failed Ray start-up)."""
    try:
        import psutil
    except ImportError:
        return
    for p in psutil.Process().children(recursive=True):
        if p.pid not in before:
            with contextlib.suppress(Exception):
                p.kill()
