"""Running ``netkit dns serve`` in one process: event loop, signals, metrics (effects)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dnscache import handover
from dnscache.bind import Listeners
from dnscache.core.config import ServeConfig
from dnscache.metrics import MetricsServer
from dnscache.server import DnsServer
from netkit.base.fields import ConfigError

log = logging.getLogger("netkit.dns")


def event_loop_policy() -> str:
    """Install uvloop when it is there; returns the name of the loop in use."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on Linux
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


Handler = Callable[
    [dict[str, Any], asyncio.StreamReader, asyncio.StreamWriter], Awaitable[dict[str, Any] | None]
]


@dataclass
class Supervised:
    """What a worker gets from the supervisor that holds its sockets (``dnscache.workers``)."""

    report_fd: int  # JSON lines to the supervisor: counter snapshots and events
    control: socket.socket | None  # the control socket, held by the supervisor
    metrics: socket.socket | None  # the supervisor's metrics socket, lent on a takeover
    inherited: handover.Inherited | None  # the first worker after a takeover or a re-exec
    workers: int

    def send(self, event: dict[str, Any]) -> None:
        """Tell the supervisor; a supervisor that is gone (re-executed) is not an error."""
        with contextlib.suppress(OSError):
            os.write(self.report_fd, json.dumps(event).encode() + b"\n")


class Control:
    """The ``--control`` unix socket: one JSON request per connection, one JSON reply (a handler
    that returns None has answered on the connection itself: a takeover passes descriptors)."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.server: asyncio.Server | None = None
        self.sock: socket.socket | None = None

    async def start(self, path: str | None, inherited: socket.socket | None) -> None:
        if inherited is not None:
            self.sock = inherited
        elif path is not None:
            self.sock = self.bind(path)
        else:
            return
        self.server = await asyncio.start_unix_server(self._handle, sock=self.sock.dup())

    @staticmethod
    def bind(path: str) -> socket.socket:
        """Listen on ``path``; EADDRINUSE while a running server answers there."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except FileNotFoundError:
            pass
        except ConnectionRefusedError:
            os.unlink(path)  # left behind by a process that is gone
        else:
            raise OSError(errno.EADDRINUSE, f"control socket {path} is in use by a running server")
        finally:
            probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(16)
        return sock

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reply: dict[str, Any] | None
        try:
            async with asyncio.timeout(5):
                line = await reader.readline()
            request = json.loads(line)
            handler = self.handlers.get(str(request.get("cmd"))) if isinstance(request, dict) else None
            if handler is None:
                reply = {"error": f"unknown command; try one of {sorted(self.handlers)}"}
            else:
                reply = await handler(request, reader, writer)
        except (TimeoutError, ValueError) as exc:
            reply = {"error": f"bad request: {exc}"}
        with contextlib.suppress(OSError):
            if reply is not None:
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        writer.close()

    def close(self, unlink: str | None) -> None:
        if self.server is not None:
            self.server.close()
        if self.sock is not None:
            self.sock.close()
        if unlink is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(unlink)


async def serve(
    cfg: ServeConfig,
    reload_config: Callable[[], ServeConfig] | None = None,
    *,
    reuse_port: bool = False,
    with_metrics: bool = True,
    on_started: Callable[[DnsServer], None] | None = None,
    listeners: Listeners | None = None,
    supervised: Supervised | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (drain, snapshot the cache) or a restart (hand over, drain);
    SIGHUP re-reads the configuration without dropping a query or the cache. ``listeners``: sockets
    bound already (a worker's, from its supervisor); a handover's inherited ones come first.
    ``supervised``: a worker; its supervisor took over or inherited, and holds control."""
    loop = asyncio.get_running_loop()
    if supervised is not None:
        inherited = supervised.inherited
    else:
        inherited = handover.from_environment()
        if inherited is None and cfg.takeover and cfg.control is not None:
            inherited = await loop.run_in_executor(None, handover.take_over, cfg.control)
            if inherited is None:
                log.info("nothing to take over: binding", extra={"control": cfg.control})
    server = DnsServer(cfg, reuse_port=reuse_port)
    cache_source = inherited.cache_file if inherited is not None else cfg.cache_file
    if cache_source:
        warmed = handover.load_cache(server.resolver.cache, cache_source)
        log.info("cache warmed", extra={"entries": warmed, "path": cache_source})
        if inherited is not None and inherited.cache_is_temporary:
            with contextlib.suppress(OSError):
                os.unlink(cache_source)
    await server.start(inherited.listeners if inherited is not None else listeners)
    metrics = None
    if with_metrics and cfg.metrics is not None:
        metrics = MetricsServer(cfg.metrics, server.snapshot, lambda: server.ready)
        await metrics.start(inherited.metrics if inherited is not None else None)
    stop = asyncio.Event()
    terminated = asyncio.Event()  # SIGTERM/SIGINT: after a takeover, the old process waits for it
    handed_over = False
    taken_over = False
    restarting = asyncio.Lock()

    async def pass_sockets(
        path: str, remove_on_failure: bool, send: Callable[[socket.socket | None], Awaitable[Any]]
    ) -> tuple[Any, int] | str:
        """Snapshot the cache to ``path`` and let ``send`` pass every socket on (the metrics
        socket lent to it); (what it returned, entries saved), or why it failed: we serve on."""
        saved = handover.save_cache(server.resolver.cache, path)
        if metrics is not None:
            lent = metrics.listening_socket()
        elif supervised is not None and supervised.metrics is not None:
            lent = socket.socket(fileno=os.dup(supervised.metrics.fileno()))
        else:
            lent = None
        try:
            return await send(lent), saved
        except (OSError, RuntimeError) as exc:
            if remove_on_failure:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            return str(exc)
        finally:
            if lent is not None:
                lent.close()

    async def restart(request: dict[str, Any], *_conn: object) -> dict[str, Any]:
        nonlocal handed_over
        if restarting.locked() or handed_over:
            return {"error": "a restart is already under way"}
        async with restarting:
            timeout = float(request.get("timeout", 15.0))
            path, temporary = cfg.cache_file, False
            if path is None:
                fd, path = tempfile.mkstemp(prefix="netkit-dns-cache-")
                os.close(fd)
                temporary = True
            if supervised is not None:
                return await restart_supervised(path, temporary, timeout)
            result = await pass_sockets(
                path,
                temporary,
                lambda lent: handover.spawn_successor(
                    server.listeners, lent, control.sock, path, temporary, timeout
                ),
            )
            if isinstance(result, str):
                log.error("restart failed, still serving", extra={"error": result})
                return {"error": result}
            new_pid, saved = result
            log.info("handed over", extra={"new_pid": new_pid, "cache_entries": saved})
            handed_over = True
            stop.set()
            return {"old_pid": os.getpid(), "new_pid": new_pid}

    async def restart_supervised(path: str, temporary: bool, timeout: float) -> dict[str, Any]:
        """Under a supervisor the supervisor re-executes itself on the sockets it holds; this
        worker serves on until the new image's first worker serves and sends it SIGTERM."""
        nonlocal handed_over
        assert supervised is not None
        if supervised.workers > 1:
            return {"error": "restart works with workers: 1 (each worker has its own cache); stop and start"}
        saved = handover.save_cache(server.resolver.cache, path)
        supervised.send({"event": "reexec", "cache": path, "cache_temp": temporary})
        handed_over = True  # the SIGTERM that ends the wait comes from the new image
        try:
            await asyncio.wait_for(terminated.wait(), timeout)
        except TimeoutError:
            handed_over = False
            log.error("restart failed, still serving", extra={"error": "the new process did not serve"})
            return {"error": f"the supervisor's new image did not serve within {timeout:g} s"}
        log.info("handed over", extra={"new_pid": os.getppid(), "cache_entries": saved})
        return {"old_pid": os.getpid(), "new_pid": os.getppid()}

    async def takeover(
        request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, Any] | None:
        """A successor started on its own asks for our sockets (``handover.take_over``)."""
        nonlocal handed_over, taken_over
        if restarting.locked() or handed_over or control.sock is None or cfg.control is None:
            return {"error": "a restart is already under way"}
        async with restarting:
            new_pid = request.get("pid")
            path = f"{cfg.control}.cache-{int(new_pid) if isinstance(new_pid, int) else 'new'}"
            assert control.sock is not None
            sock = control.sock
            result = await pass_sockets(
                path,
                True,
                lambda lent: handover.send_over(reader, writer, server.listeners, lent, sock, path),
            )
            if isinstance(result, str):
                log.error("takeover failed, still serving", extra={"new_pid": new_pid, "error": result})
                return {"error": result}
            _, saved = result
            log.info("taken over", extra={"new_pid": new_pid, "cache_entries": saved})
            if supervised is not None:
                supervised.send({"event": "handed_over"})
            handed_over = taken_over = True
            stop.set()
            return None

    async def status(_request: dict[str, Any], *_conn: object) -> dict[str, Any]:
        snap = server.snapshot()
        return {
            "pid": os.getpid(),
            "supervisor": os.getppid() if supervised is not None else None,
            "ready": server.ready,
            "cache_entries": snap["cache_entries"],
        }

    control = Control({"restart": restart, "status": status, "takeover": takeover})
    if supervised is not None:  # the supervisor holds the control socket (and unlinks it)
        await control.start(None, supervised.control)
    else:
        await control.start(cfg.control, inherited.control if inherited is not None else None)
    ready_file = ReadyFile(cfg.ready_file)
    ready_file.create()  # first: a ready file it cannot write fails the successor before "ready"
    if inherited is not None:
        handover.announce_ready(inherited)
        for pid in inherited.retire:  # a keeper re-executed without keeper: its old worker stops
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def reload() -> None:
        if reload_config is None:
            return
        try:
            server.reload(reload_config())
            log.info("configuration reloaded", extra={"upstreams": [str(u) for u in server.cfg.upstream]})
        except (ConfigError, OSError) as exc:
            log.error("reload failed, keeping the running configuration", extra={"error": str(exc)})

    background: set[asyncio.Task[Any]] = set()

    def restart_on_signal() -> None:
        task = loop.create_task(restart({}))
        background.add(task)
        task.add_done_callback(background.discard)

    def terminate() -> None:
        terminated.set()
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    loop.add_signal_handler(signal.SIGINT, terminate)
    loop.add_signal_handler(signal.SIGHUP, reload)
    if cfg.control is not None or inherited is not None:
        loop.add_signal_handler(signal.SIGUSR2, restart_on_signal)
    log.info(
        "serving",
        extra={
            "listen": [str(a) for a in cfg.listen],
            "upstreams": [str(u) for u in cfg.upstream],
            "zones": [str(z) for z in cfg.zone],
            "metrics": str(cfg.metrics) if cfg.metrics else None,
            "inherited": inherited is not None,
        },
    )
    if on_started is not None:
        on_started(server)
    try:
        await stop.wait()
    finally:
        ready_file.remove()
        log.info("handing over: draining" if handed_over else "stopping: draining")
        control.close(unlink=None if handed_over or supervised is not None else cfg.control)
        if metrics is not None:
            await metrics.stop()
        await server.drain(cfg.deadline)
        if not handed_over and cfg.cache_file:
            log.info(
                "cache saved", extra={"entries": handover.save_cache(server.resolver.cache, cfg.cache_file)}
            )
    if taken_over and not terminated.is_set():
        # Exiting now would have the old pod's container restarted, and take the sockets back.
        log.info("handed over to a successor; waiting for SIGTERM")
        await terminated.wait()


class ReadyFile:
    """``ready_file``: exists while this process serves (an exec readiness probe tests for it: an
    HTTP probe on the shared metrics port may be answered by the predecessor)."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def create(self) -> None:
        if self.path is not None:
            with open(self.path, "w") as f:
                f.write(f"{os.getpid()}\n")

    def remove(self) -> None:
        """Only our own: after a re-exec the new worker's file has the same path."""
        if self.path is None:
            return
        with contextlib.suppress(OSError):
            with open(self.path) as f:
                if f.read().strip() != str(os.getpid()):
                    return
            os.unlink(self.path)
