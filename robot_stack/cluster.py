"""Ray for jobs that spread over processes or machines (`--engine ray [--address ADDR]`): labeling shards, training
sweeps. One place for the rules every such job follows:

- without an address, Ray is started for the job on this machine, bound to 127.0.0.1 only, with no dashboard and
  no usage reports, and shut down at the job's end;
- with an address (HOST:PORT of a running cluster's head, ray://HOST:PORT for Ray Client, or auto), the job
  connects to it; a loopback address keeps Ray on loopback too;
- a process that already has Ray keeps it (the job neither starts nor stops it).

Errors are the caller's exception type (LabelError for a label job, LearnError for a sweep), one line each.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

from robot_stack.errors import RobotStackError

CONNECT_TIMEOUT_S = 5.0
RAY_INSTALL = "pip install 'robot_stack[ray]'"
# Ray resolves 127.0.0.1 to the machine's network address and listens on every interface unless told
# that this is no cluster; a local job's Ray must be reachable from this machine only.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def import_ray(error: type[RobotStackError], without: str) -> Any:
    """The ray module, or `error` saying how to install it (`without`: how to do the job without Ray)."""
    try:
        import ray
    except ImportError:
        raise error(f"--engine ray needs Ray, which is not installed: {RAY_INSTALL} (or {without})") from None
    return ray


def check_address(address: str, error: type[RobotStackError]) -> None:
    """A Ray cluster address: 'auto' (the cluster `ray start` runs on this machine), HOST:PORT of its head
    (GCS) or ray://HOST:PORT (Ray Client). HOST:PORT forms must accept a TCP connection within CONNECT_TIMEOUT_S;
    `error` (one line) otherwise."""
    if address == "auto":
        return
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit():
        raise error(f"--address {address!r}: give the Ray head's HOST:PORT (printed by ray start --head, e.g. "
                    "10.0.0.5:6379), ray://HOST:PORT for Ray Client, or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as problem:
        reason = problem.strerror or type(problem).__name__
        raise error(f"cannot reach the Ray cluster at {address} ({reason}): is it running (ray start --head on "
                    "its head node) and reachable from this machine?") from None


def is_loopback(address: str) -> bool:
    """Whether a Ray address's host is this machine's loopback (then Ray must not swap it for a network address)."""
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextmanager
def loopback_only() -> Iterator[None]:
    """While a local Ray (or a connection to one on 127.0.0.1) starts and runs: it binds 127.0.0.1 only and sends
    no usage reports (LOOPBACK_ENV, which the processes it starts inherit); this process's settings are restored
    afterwards."""
    from ray._private import ray_constants

    before = {key: os.environ.get(key) for key in LOOPBACK_ENV}
    cluster = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False  # read when Ray was imported, possibly before this job
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def ray_session(ray: Any, address: str, workers: int | None, error: type[RobotStackError]) -> Iterator[None]:
    """Ray for a job: this process's when it already has one (left running), else the cluster at `address` or a
    local one on 127.0.0.1 with `workers` CPUs (default all) and no dashboard; this job's connection or Ray is shut
    down at the end. `error` (one line) when Ray cannot start or connect."""
    if ray.is_initialized():
        yield
        return
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}  # the job's own lines and bars only
    if address:
        settings = loopback_only() if is_loopback(address) else nullcontext()
        start = partial(ray.init, address=address, **quiet)
        where = f"connect to the Ray cluster at {address}"
        hint = ("is the cluster running, on this Ray version, and if it uses token authentication, is "
                "RAY_AUTH_MODE=token set here (with its token in ~/.ray/auth_token)?")
    else:
        settings = loopback_only()
        # address="local": a new Ray for this job, never one that happens to run on this machine.
        start = partial(ray.init, address="local", num_cpus=workers or os.cpu_count(),
                        _node_ip_address="127.0.0.1", include_dashboard=False, **quiet)
        where = "start Ray on this machine"
        hint = "Ray's own logs are in /tmp/ray/session_latest/logs"
    with settings:
        try:
            start()
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as problem:
            first = str(problem).strip().splitlines()[0] if str(problem).strip() else ""
            raise error(f"cannot {where} ({type(problem).__name__}: {first}): {hint}") from None
        try:
            yield
        finally:
            ray.shutdown()
