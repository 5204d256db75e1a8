"""Zero-gap restart: the running process hands its listening sockets to a new one (effects).

The old process writes a cache snapshot, starts the new process with its listening sockets (DNS
UDP and TCP, metrics, control) as inherited descriptors, and waits until the new one says it is
serving. Only then does it stop reading and drain the queries it has in flight. Both processes
hold the same kernel sockets throughout, so a datagram that arrives at any moment is read by one
of them: nothing is dropped, nothing needs a retry, and the new process starts with a warm cache.
This is how nginx and HAProxy hand over; NodeLocal DNSCache drops queries for ~20 s instead
(kubernetes/dns#310).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dnscache import snapshot
from dnscache.cache import Cache
from netkit.addr import HostPort, parse_hostport

log = logging.getLogger("netkit.dns")

ENV = "NETKIT_DNS_HANDOVER"


@dataclass
class Inherited:
    """What a new process got from the one before it."""

    listeners: dict[HostPort, tuple[socket.socket, socket.socket]]
    metrics: socket.socket | None
    control: socket.socket | None
    ready_fd: int
    cache_file: str | None
    cache_is_temporary: bool


def from_environment() -> Inherited | None:
    raw = os.environ.pop(ENV, None)
    if not raw:
        return None
    spec = json.loads(raw)
    listeners = {
        parse_hostport(addr): (socket.socket(fileno=udp), socket.socket(fileno=tcp))
        for addr, udp, tcp in spec["listeners"]
    }
    metrics = socket.socket(fileno=spec["metrics"]) if spec.get("metrics") is not None else None
    control = socket.socket(fileno=spec["control"]) if spec.get("control") is not None else None
    return Inherited(
        listeners, metrics, control, int(spec["ready"]), spec.get("cache"), bool(spec.get("cache_temp"))
    )


def announce_ready(inherited: Inherited) -> None:
    with contextlib.suppress(OSError):
        os.write(inherited.ready_fd, b"ready\n")
        os.close(inherited.ready_fd)


def save_cache(cache: Cache, path: str) -> int:
    """Write a snapshot atomically (temp file + rename); returns the number of entries."""
    data = snapshot.dump(cache, time.monotonic(), time.time())
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)
    return len(cache)


def load_cache(cache: Cache, path: str) -> int:
    """Warm ``cache`` from a snapshot; a missing or unreadable file is logged, never fatal."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("cache snapshot not read", extra={"path": path, "error": exc.strerror})
        return 0
    try:
        return snapshot.load(cache, data, time.monotonic(), time.time())
    except snapshot.SnapshotError as exc:
        log.warning("cache snapshot ignored", extra={"path": path, "error": str(exc)})
        return 0


async def spawn_successor(
    listeners: list[tuple[HostPort, socket.socket, socket.socket]],
    metrics: socket.socket | None,
    control: socket.socket | None,
    cache_file: str,
    cache_is_temporary: bool,
    timeout: float,
) -> int:
    """Start ``netkit`` again with the same arguments on our sockets; return its PID once it
    serves. On failure the successor is killed and the caller keeps serving."""
    read_fd, write_fd = os.pipe()
    fds = [fd for _, udp, tcp in listeners for fd in (udp.fileno(), tcp.fileno())]
    fds += [s.fileno() for s in (metrics, control) if s is not None]
    spec = {
        "listeners": [[str(addr), udp.fileno(), tcp.fileno()] for addr, udp, tcp in listeners],
        "metrics": metrics.fileno() if metrics is not None else None,
        "control": control.fileno() if control is not None else None,
        "ready": write_fd,
        "cache": cache_file,
        "cache_temp": cache_is_temporary,
    }
    env = {**os.environ, ENV: json.dumps(spec)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "netkit.cli", *sys.argv[1:]],
        env=env,
        pass_fds=[*fds, write_fd],
        start_new_session=True,  # it outlives us
    )
    os.close(write_fd)
    loop = asyncio.get_running_loop()
    try:
        line = await asyncio.wait_for(loop.run_in_executor(None, os.read, read_fd, 64), timeout)
    except TimeoutError:
        line = b""
    finally:
        os.close(read_fd)
    if line.startswith(b"ready"):
        return proc.pid
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await loop.run_in_executor(None, proc.wait)
    raise RuntimeError(f"the new process did not become ready within {timeout} s (exit status {proc.poll()})")
