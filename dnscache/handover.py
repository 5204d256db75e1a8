"""Zero-gap restart and takeover: the running process hands its listening sockets to a new one
(effects).

The old process writes a cache snapshot, starts the new process with its listening sockets (DNS
UDP and TCP, metrics, control) as inherited descriptors, and waits until the new one says it is
serving. Only then does it stop reading and drain the queries it has in flight. Both processes
hold the same kernel sockets throughout, so a datagram that arrives at any moment is read by one
of them: nothing is dropped, nothing needs a retry, and the new process starts with a warm cache.
This is how nginx and HAProxy hand over; NodeLocal DNSCache drops queries for ~20 s instead
(kubernetes/dns#310).

Two ways to start the new process:

- restart (``netkit dns restart``, SIGUSR2): the old process starts it, with the sockets as
  inherited descriptors (``spawn_successor``);
- takeover (``takeover: true``): a process started on its own (a new pod beside the old one, as a
  DaemonSet rolls with ``maxSurge``) connects to the old one's ``control`` socket and asks; the
  old one passes the same sockets over it (SCM_RIGHTS, ``send_over``, as HAProxy's
  ``expose-fd listeners``), the new one says "ready" on that connection once it serves
  (``take_over``). Both ends check that the other runs as the same user (SO_PEERCRED), so no
  other user can join the listen sockets. Passing the sockets themselves, rather than binding new
  ones into the SO_REUSEPORT group, is what loses nothing: a socket leaving a reuseport group
  drops the datagrams queued on it, and the group hashes new ones to it until it is closed.

An accidental second instance (no ``takeover``) binds as usual and gets EADDRINUSE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dnscache.core import snapshot
from dnscache.core.cache import Cache
from netkit.base.addr import HostPort, parse_hostport

log = logging.getLogger("netkit.dns")

ENV = "NETKIT_DNS_HANDOVER"
TAKEOVER_TIMEOUT = 30.0  # seconds the new process may take from receiving the sockets to serving
MAX_FDS = 64


@dataclass
class Inherited:
    """What a new process got from the one before it."""

    listeners: dict[HostPort, tuple[socket.socket, socket.socket]]
    metrics: socket.socket | None
    control: socket.socket | None
    ready_fd: int
    cache_file: str | None
    cache_is_temporary: bool
    retire: tuple[int, ...] = ()  # a supervisor's re-exec: the old image's workers, still serving


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
        listeners,
        metrics,
        control,
        int(spec["ready"]),
        spec.get("cache"),
        bool(spec.get("cache_temp")),
        tuple(int(p) for p in spec.get("retire", ())),
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


class TakeoverError(OSError):
    """A takeover failed: the predecessor refused or could not hand over, or the successor
    never served."""


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def take_over(control: str, timeout: float = 10.0) -> Inherited | None:
    """Ask the instance serving ``control`` for its sockets and cache; None when nothing serves
    there (a first start, or the predecessor is gone: bind as usual). The returned ``ready_fd``
    is the connection: ``announce_ready`` tells the predecessor to stop reading."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        try:
            conn.connect(control)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        if peer_uid(conn) != os.getuid():
            raise TakeoverError(f"{control} is served by user {peer_uid(conn)}, not by us: not taken over")
        conn.sendall(json.dumps({"cmd": "takeover", "pid": os.getpid()}).encode() + b"\n")
        data, fds = b"", []
        while b"\n" not in data:
            chunk, got, _flags, _addr = socket.recv_fds(conn, 65536, MAX_FDS)
            fds += got
            if not chunk:
                break
            data += chunk
        try:
            reply = json.loads(data)
        except ValueError:
            reply = {"error": "no answer (is it a netkit dns serve of this version?)"}
        if "error" in reply:
            for fd in fds:
                os.close(fd)
            raise TakeoverError(f"{control}: {reply['error']}")
        pick = fds.__getitem__
        listeners = {
            parse_hostport(addr): (socket.socket(fileno=pick(u)), socket.socket(fileno=pick(t)))
            for addr, u, t in reply["listeners"]
        }
        metrics = socket.socket(fileno=pick(reply["metrics"])) if reply.get("metrics") is not None else None
        control_sock = socket.socket(fileno=pick(reply["control"]))
        log.info("taking over", extra={"from_pid": reply.get("pid"), "listen": list(map(str, listeners))})
        conn.settimeout(None)
        return Inherited(listeners, metrics, control_sock, conn.detach(), reply.get("cache"), True)
    except TakeoverError:
        raise
    except OSError as exc:
        raise TakeoverError(f"{control}: {exc.strerror or exc}") from None
    finally:
        conn.close()


async def send_over(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    listeners: list[tuple[HostPort, socket.socket, socket.socket]],
    metrics: socket.socket | None,
    control: socket.socket,
    cache_file: str,
    timeout: float = TAKEOVER_TIMEOUT,
) -> None:
    """The predecessor's side of ``take_over``: pass the sockets on the request's connection and
    wait for "ready". Raises (OSError, TakeoverError) when the successor is refused or never
    serves; the caller then keeps serving."""
    raw = writer.get_extra_info("socket")
    conn = socket.socket(fileno=os.dup(raw.fileno()))
    try:
        if peer_uid(conn) != os.getuid():
            raise TakeoverError(f"refused a takeover by user {peer_uid(conn)}")
        fds: list[int] = []

        def index(sock: socket.socket) -> int:
            fds.append(sock.fileno())
            return len(fds) - 1

        reply = {
            "pid": os.getpid(),
            "listeners": [[str(a), index(u), index(t)] for a, u, t in listeners],
            "metrics": index(metrics) if metrics is not None else None,
            "control": index(control),
            "cache": cache_file,
        }
        data = json.dumps(reply).encode() + b"\n"
        # one small message on a fresh connection: the socket buffer takes it whole, at once
        if socket.send_fds(conn, [data], fds) != len(data):
            raise TakeoverError("the reply did not fit the socket buffer")
    finally:
        conn.close()
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        line = b""
    if not line.startswith(b"ready"):
        raise TakeoverError(f"the new process did not become ready within {timeout} s")
