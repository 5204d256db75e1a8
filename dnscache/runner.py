"""``DnsService``: one DNS cache with its metrics, control socket and ready file; ``serve``: the
process around it (environment, signals) (effects)."""

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
from dnscache.metrics import endpoints
from dnscache.server import DnsServer
from netkit.base.fields import ConfigError
from netkit.base.serving import EndpointServer, listen_unix

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
        return listen_unix(path)

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


class DnsService:
    """One node-local DNS cache: its listeners, resolver, metrics, control socket and ready file,
    started and stopped by its owner. No signal handlers and no environment: a process entry
    point (``serve``) or the node agent owns those and calls ``reload``, ``restart_soon`` and
    ``terminate``. ``listeners``: sockets bound already (a worker's, from its supervisor);
    ``inherited``: what a predecessor handed over (they come first); ``supervised``: a worker,
    whose supervisor took over or inherited and holds the control socket."""

    def __init__(
        self,
        cfg: ServeConfig,
        reload_config: Callable[[], ServeConfig] | None = None,
        *,
        reuse_port: bool = False,
        with_metrics: bool = True,
        listeners: Listeners | None = None,
        inherited: handover.Inherited | None = None,
        supervised: Supervised | None = None,
    ) -> None:
        self.cfg = cfg
        self.reload_config = reload_config
        self.with_metrics = with_metrics
        self.listeners = listeners
        self.inherited = supervised.inherited if supervised is not None else inherited
        self.supervised = supervised
        self.server = DnsServer(cfg, reuse_port=reuse_port)
        self.metrics: EndpointServer | None = None
        self.control = Control({"restart": self.restart, "status": self.status, "takeover": self.takeover})
        self.ready_file = ReadyFile(cfg.ready_file)
        self.stopped = asyncio.Event()
        self.terminated = asyncio.Event()  # SIGTERM/SIGINT: after a takeover, the old one waits for it
        self.handed_over = False
        self.taken_over = False
        self.restarting = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Take over (``takeover``) or use what was inherited or bound, warm the cache, serve."""
        cfg, server = self.cfg, self.server
        if self.inherited is None and self.supervised is None and cfg.takeover and cfg.control is not None:
            loop = asyncio.get_running_loop()
            self.inherited = await loop.run_in_executor(None, handover.take_over, cfg.control)
            if self.inherited is None:
                log.info("nothing to take over: binding", extra={"control": cfg.control})
        inherited = self.inherited
        cache_source = inherited.cache_file if inherited is not None else cfg.cache_file
        if cache_source:
            warmed = handover.load_cache(server.resolver.cache, cache_source)
            log.info("cache warmed", extra={"entries": warmed, "path": cache_source})
            if inherited is not None and inherited.cache_is_temporary:
                with contextlib.suppress(OSError):
                    os.unlink(cache_source)
        await server.start(inherited.listeners if inherited is not None else self.listeners)
        if self.with_metrics and cfg.metrics is not None:
            self.metrics = endpoints(cfg.metrics, server.snapshot, lambda: server.ready)
            await self.metrics.start(inherited.metrics if inherited is not None else None)
        if self.supervised is not None:  # the supervisor holds the control socket (and unlinks it)
            await self.control.start(None, self.supervised.control)
        else:
            await self.control.start(cfg.control, inherited.control if inherited is not None else None)
        self.ready_file.create()  # first: a ready file it cannot write fails a successor before "ready"
        if inherited is not None:
            handover.announce_ready(inherited)
            for pid in inherited.retire:  # a keeper re-executed without keeper: its old worker stops
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        log.info(
            "serving",
            extra={
                "listen": [str(a) for a in cfg.listen],
                "upstreams": [str(u) for u in cfg.upstream],
                "zones": [str(z) for z in cfg.zone],
                "metrics": str(cfg.metrics) if cfg.metrics else None,
                "inherited": inherited is not None,
                "fast_path": cfg.fast_path,
            },
        )

    # -- what an owner calls -------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the configuration (SIGHUP) without dropping a query or the cache."""
        if self.reload_config is None:
            return
        try:
            self.server.reload(self.reload_config())
            log.info(
                "configuration reloaded", extra={"upstreams": [str(u) for u in self.server.cfg.upstream]}
            )
        except (ConfigError, OSError) as exc:
            log.error("reload failed, keeping the running configuration", extra={"error": str(exc)})

    def restart_soon(self) -> None:
        """A zero-gap restart in the background (SIGUSR2)."""
        task = asyncio.get_running_loop().create_task(self.restart({}))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def terminate(self) -> None:
        """Drain and stop (SIGTERM, SIGINT)."""
        self.terminated.set()
        self.stopped.set()

    async def wait(self) -> None:
        """Until stopped: then drain, snapshot the cache (unless handed over), and after a
        takeover wait for ``terminate`` (exiting would have the old pod's container restarted)."""
        cfg, server = self.cfg, self.server
        try:
            await self.stopped.wait()
        finally:
            self.ready_file.remove()
            log.info("handing over: draining" if self.handed_over else "stopping: draining")
            own_path = not self.handed_over and self.supervised is None
            self.control.close(unlink=cfg.control if own_path else None)
            if self.metrics is not None:
                await self.metrics.stop()
            await server.drain(cfg.deadline)
            if not self.handed_over and cfg.cache_file:
                saved = handover.save_cache(server.resolver.cache, cfg.cache_file)
                log.info("cache saved", extra={"entries": saved})
        if self.taken_over and not self.terminated.is_set():
            log.info("handed over to a successor; waiting for SIGTERM")
            await self.terminated.wait()

    # -- control socket handlers -----------------------------------------------------------------
    async def _pass_sockets(
        self, path: str, remove_on_failure: bool, send: Callable[[socket.socket | None], Awaitable[Any]]
    ) -> tuple[Any, int] | str:
        """Snapshot the cache to ``path`` and let ``send`` pass every socket on (the metrics
        socket lent to it); (what it returned, entries saved), or why it failed: we serve on."""
        saved = handover.save_cache(self.server.resolver.cache, path)
        if self.metrics is not None:
            lent = self.metrics.listening_socket()
        elif self.supervised is not None and self.supervised.metrics is not None:
            lent = socket.socket(fileno=os.dup(self.supervised.metrics.fileno()))
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

    async def restart(self, request: dict[str, Any], *_conn: object) -> dict[str, Any]:
        if self.restarting.locked() or self.handed_over:
            return {"error": "a restart is already under way"}
        if self.supervised is not None and self.supervised.workers > 1:
            return {"error": "restart works with workers: 1 (each worker has its own cache); stop and start"}
        async with self.restarting:
            timeout = float(request.get("timeout", 15.0))
            path, temporary = self.cfg.cache_file, False
            if path is None:
                fd, path = tempfile.mkstemp(prefix="netkit-dns-cache-")
                os.close(fd)
                temporary = True
            if self.supervised is not None:
                return await self._restart_supervised(path, temporary, timeout)
            control = self.control.sock
            result = await self._pass_sockets(
                path,
                temporary,
                lambda lent: handover.spawn_successor(
                    self.server.listeners, lent, control, path, temporary, timeout
                ),
            )
            if isinstance(result, str):
                log.error("restart failed, still serving", extra={"error": result})
                return {"error": result}
            new_pid, saved = result
            log.info("handed over", extra={"new_pid": new_pid, "cache_entries": saved})
            self.handed_over = True
            self.stopped.set()
            return {"old_pid": os.getpid(), "new_pid": new_pid}

    async def _restart_supervised(self, path: str, temporary: bool, timeout: float) -> dict[str, Any]:
        """Under a supervisor the supervisor re-executes itself on the sockets it holds; this
        worker serves on until the new image's first worker serves and sends it SIGTERM."""
        assert self.supervised is not None
        saved = handover.save_cache(self.server.resolver.cache, path)
        self.supervised.send({"event": "reexec", "cache": path, "cache_temp": temporary})
        self.handed_over = True  # the SIGTERM that ends the wait comes from the new image
        try:
            await asyncio.wait_for(self.terminated.wait(), timeout)
        except TimeoutError:
            self.handed_over = False
            log.error("restart failed, still serving", extra={"error": "the new process did not serve"})
            return {"error": f"the supervisor's new image did not serve within {timeout:g} s"}
        log.info("handed over", extra={"new_pid": os.getppid(), "cache_entries": saved})
        return {"old_pid": os.getpid(), "new_pid": os.getppid()}

    async def takeover(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, Any] | None:
        """A successor started on its own asks for our sockets (``handover.take_over``)."""
        sock = self.control.sock
        if self.restarting.locked() or self.handed_over or sock is None or self.cfg.control is None:
            return {"error": "a restart is already under way"}
        async with self.restarting:
            new_pid = request.get("pid")
            path = f"{self.cfg.control}.cache-{int(new_pid) if isinstance(new_pid, int) else 'new'}"
            listeners = self.server.listeners
            result = await self._pass_sockets(
                path, True, lambda lent: handover.send_over(reader, writer, listeners, lent, sock, path)
            )
            if isinstance(result, str):
                log.error("takeover failed, still serving", extra={"new_pid": new_pid, "error": result})
                return {"error": result}
            _, saved = result
            log.info("taken over", extra={"new_pid": new_pid, "cache_entries": saved})
            if self.supervised is not None:
                self.supervised.send({"event": "handed_over"})
            self.handed_over = self.taken_over = True
            self.stopped.set()
            return None

    async def status(self, _request: dict[str, Any], *_conn: object) -> dict[str, Any]:
        snap = self.server.snapshot()
        return {
            "pid": os.getpid(),
            "supervisor": os.getppid() if self.supervised is not None else None,
            "ready": self.server.ready,
            "cache_entries": snap["cache_entries"],
        }


async def serve(
    cfg: ServeConfig,
    reload_config: Callable[[], ServeConfig] | None = None,
    *,
    reuse_port: bool = False,
    with_metrics: bool = True,
    on_started: Callable[[DnsService], None] | None = None,
    listeners: Listeners | None = None,
    supervised: Supervised | None = None,
) -> None:
    """``netkit dns serve`` as a process: a ``DnsService`` with what a predecessor handed over
    in the environment, driven by signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads,
    SIGUSR2 restarts without a gap (with a control socket or inherited sockets)."""
    inherited = handover.from_environment() if supervised is None else None
    service = DnsService(
        cfg,
        reload_config,
        reuse_port=reuse_port,
        with_metrics=with_metrics,
        listeners=listeners,
        inherited=inherited,
        supervised=supervised,
    )
    await service.start()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, service.terminate)
    loop.add_signal_handler(signal.SIGINT, service.terminate)
    loop.add_signal_handler(signal.SIGHUP, service.reload)
    if cfg.control is not None or service.inherited is not None:
        loop.add_signal_handler(signal.SIGUSR2, service.restart_soon)
    if on_started is not None:
        on_started(service)
    await service.wait()


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
