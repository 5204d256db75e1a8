"""The supervisor: ``--workers N`` (N processes share the listen addresses with SO_REUSEPORT)
and ``--keeper`` (one worker under a process that keeps its sockets) (effects).

The kernel spreads queries over the workers by flow hash; each worker has its own cache (as
separate CoreDNS replicas would). The supervisor binds every worker's sockets itself, first
making sure no other process serves those addresses (``bind.bind_exclusive``: an accidental
second instance gets EADDRINUSE, as one without workers does), or takes them over from the
instance serving ``control`` (``takeover``), and keeps them, with the control socket: a worker
that dies (a crash, an OOM kill) is forked again at once on the same sockets, so what the kernel
queued while it was gone waits instead of being refused, as systemd socket activation keeps a
service's sockets. It serves the metrics (every worker sends it a snapshot of its counters once
a second over a pipe, and the supervisor sums them) and forwards SIGHUP and SIGTERM.

A restart (``netkit dns restart``) re-executes the supervisor on the sockets it holds (the new
code, as nginx upgrades its master): the new image's worker warms from the old worker's
snapshot, and once it serves the new image sends the old worker SIGTERM; both read the same
sockets until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from dnscache import handover
from dnscache.bind import Listeners, bind_exclusive
from dnscache.core.config import ServeConfig
from dnscache.metrics import Snapshot, endpoints, merge_snapshots
from dnscache.runner import Control, DnsService, Supervised, event_loop_policy, serve
from netkit.base.serving import EndpointServer

log = logging.getLogger("netkit.dns")

REPORT_INTERVAL = 1.0
MAX_RESTARTS = 5  # within RESTART_WINDOW seconds, then the supervisor gives up
RESTART_WINDOW = 30.0


def _worker_main(
    cfg: ServeConfig, reload_config: Callable[[], ServeConfig], link: Supervised, listeners: Listeners
) -> int:
    event_loop_policy()

    def on_started(service: DnsService) -> None:
        async def report() -> None:
            while True:
                link.send({"snapshot": service.server.snapshot()})
                await asyncio.sleep(REPORT_INTERVAL)

        service.server.run_alongside(report())

    try:
        asyncio.run(
            serve(
                cfg,
                reload_config,
                reuse_port=True,
                with_metrics=False,
                on_started=on_started,
                listeners=listeners,
                supervised=link,
            )
        )
    except OSError as exc:
        log.error("worker cannot serve", extra={"error": str(exc)})
        return 1
    return 0


class Supervisor:
    def __init__(
        self,
        cfg: ServeConfig,
        reload_config: Callable[[], ServeConfig],
        sockets: list[Listeners],
        control: socket.socket | None,
        inherited: handover.Inherited | None = None,
    ) -> None:
        self.cfg = cfg
        self.reload_config = reload_config
        self.sockets = sockets  # per worker, held for the workers' whole life
        self.control = control  # held too: a request sent while a worker restarts waits
        self.inherited = inherited  # for the first worker only
        # a re-exec: the previous image's workers, SIGTERM once ours serve
        self.retire = list(inherited.retire) if inherited is not None else []
        # a takeover: until a worker serves, its death ends us (the predecessor serves on) and
        # the control path is the predecessor's, not ours to remove
        self.taking_over = inherited is not None and not self.retire
        self.children: dict[int, tuple[int, int]] = {}  # pid -> (worker index, report fd)
        self.latest: dict[int, Snapshot] = {}
        self.buffers: dict[int, bytes] = {}
        self.restarts: list[float] = []
        self.stopping = False
        self.handed_over = False  # a successor serves these sockets: do not restart workers
        self.reexec: dict[str, Any] | None = None
        self.metrics: EndpointServer | None = None
        self.changed = asyncio.Event()

    def spawn(self, index: int) -> int:
        r, w = os.pipe()
        inherited, self.inherited = self.inherited, None
        lent = self.metrics.listening_socket() if self.metrics is not None else None
        pid = os.fork()
        if pid == 0:  # the worker (asyncio knows a running loop by its pid: the child has none)
            os.close(r)
            code = 1
            try:
                for i, group in enumerate(self.sockets):
                    if i != index:  # the other workers' sockets are theirs
                        for udp, tcp in group.values():
                            udp.close()
                            tcp.close()
                link = Supervised(w, self.control, lent, inherited, self.cfg.workers)
                code = _worker_main(self.cfg, self.reload_config, link, self.sockets[index])
            finally:
                os._exit(code)
        os.close(w)
        if lent is not None:
            lent.close()
        if inherited is not None:  # the worker says "ready"; if it dies first, the peer sees EOF
            with contextlib.suppress(OSError):
                os.close(inherited.ready_fd)
        os.set_blocking(r, False)
        self.children[pid] = (index, r)
        log.info("worker started", extra={"worker": index, "pid": pid})
        return pid

    def _read(self, index: int, fd: int) -> None:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        data = self.buffers.get(index, b"") + chunk
        *lines, rest = data.split(b"\n")
        self.buffers[index] = rest
        for line in lines:
            with contextlib.suppress(ValueError):
                self._event(index, json.loads(line))

    def _event(self, index: int, message: dict[str, Any]) -> None:
        if "snapshot" in message:
            self.taking_over = False
            first = index not in self.latest
            self.latest[index] = message["snapshot"]
            if first and self.retire and self.ready():
                for pid in self.retire:  # the previous image's workers: ours serve now
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                log.info("serving: the previous image's workers stop", extra={"pids": self.retire})
                self.retire = []
        elif message.get("event") == "handed_over":
            self.handed_over = True
        elif message.get("event") == "reexec":
            self.reexec = message
        self.changed.set()

    def snapshot(self) -> Snapshot:
        return merge_snapshots(list(self.latest.values()))

    def ready(self) -> bool:
        return not self.stopping and not self.handed_over and len(self.latest) >= self.cfg.workers

    async def run(self, metrics_socket: socket.socket | None = None) -> int:
        """Serve the metrics, then start the workers (a metrics address in use is an error
        before any worker runs) and keep them running until SIGTERM/SIGINT."""
        loop = asyncio.get_running_loop()
        if self.cfg.metrics is not None:
            self.metrics = endpoints(self.cfg.metrics, self.snapshot, self.ready)
            await self.metrics.start(metrics_socket)
        for i in range(self.cfg.workers):
            self.spawn(i)
        for _, (index, fd) in self.children.items():
            loop.add_reader(fd, self._read, index, fd)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._signal_all(signal.SIGHUP))
        loop.add_signal_handler(signal.SIGUSR2, lambda: self._signal_all(signal.SIGUSR2))
        loop.add_signal_handler(signal.SIGCHLD, self.changed.set)  # a worker died: at once
        code = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.2)
            self.changed.clear()
            if self.reexec is not None:
                self._reexec(self.reexec)  # returns only when exec failed
                self.reexec = None
            if not self._reap(loop):
                code = 1
                break
        self.stopping = True
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.deadline + 3
        while self.children and time.monotonic() < deadline:
            self._reap(loop, respawn=False)
            await asyncio.sleep(0.05)
        self._signal_all(signal.SIGKILL)
        if self.metrics is not None:
            await self.metrics.stop()
        return code

    def _reexec(self, request: dict[str, Any]) -> None:
        """Become the new image on the same sockets (``netkit dns restart`` under a supervisor)."""
        (listeners,) = self.sockets
        keep = [s for pair in listeners.values() for s in pair]
        lent = self.metrics.listening_socket() if self.metrics is not None else None
        keep += [s for s in (lent, self.control) if s is not None]
        spec = {
            "listeners": [[str(a), udp.fileno(), tcp.fileno()] for a, (udp, tcp) in listeners.items()],
            "metrics": lent.fileno() if lent is not None else None,
            "control": self.control.fileno() if self.control is not None else None,
            "ready": -1,
            "cache": request.get("cache"),
            "cache_temp": bool(request.get("cache_temp")),
            "retire": list(self.children),
        }
        for s in keep:
            s.set_inheritable(True)
        log.info("restart: re-executing on the same sockets", extra={"retire": list(self.children)})
        argv = [sys.executable, "-m", "netkit.cli", *sys.argv[1:]]
        try:
            os.execve(sys.executable, argv, {**os.environ, handover.ENV: json.dumps(spec)})
        except OSError as exc:
            log.error("restart failed: cannot re-execute, still serving", extra={"error": str(exc)})
            if lent is not None:
                lent.close()

    def _reap(self, loop: asyncio.AbstractEventLoop, respawn: bool = True) -> bool:
        """Collect dead workers and restart them; False once they die too often, or when the
        first worker after a takeover dies before it served (the predecessor serves on)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                return True
            if pid not in self.children:  # a previous image's worker, retired
                continue
            index, fd = self.children.pop(pid)
            loop.remove_reader(fd)
            os.close(fd)
            self.latest.pop(index, None)
            if not respawn or self.handed_over:
                continue
            log.error("worker died", extra={"worker": index, "pid": pid, "status": status})
            if self.taking_over:
                log.error("the worker died before it served: the takeover failed, the predecessor serves on")
                return False
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
            if len(self.restarts) > MAX_RESTARTS:
                log.error("workers keep dying, giving up")
                return False
            new_fd = self.children[self.spawn(index)][1]
            loop.add_reader(new_fd, self._read, index, new_fd)

    def _signal_all(self, sig: signal.Signals) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def supervise(
    cfg: ServeConfig, reload_config: Callable[[], ServeConfig], bound: list[Listeners] | None = None
) -> int:
    """Take the sockets over (a restart's re-exec, or ``takeover``), or bind them (or refuse
    with EADDRINUSE, before anything starts); then run the workers."""
    inherited = handover.from_environment()
    if inherited is None and cfg.takeover and cfg.control is not None:
        inherited = handover.take_over(cfg.control)
        if inherited is None:
            log.info("nothing to take over: binding", extra={"control": cfg.control})
    if inherited is not None:
        sockets = [inherited.listeners]
        control = inherited.control
    else:
        sockets = bound if bound is not None else bind_exclusive(cfg.listen, cfg.workers)
        control = Control.bind(cfg.control) if cfg.control is not None else None
    supervisor = Supervisor(cfg, reload_config, sockets, control, inherited)
    code = 1
    try:
        code = asyncio.run(supervisor.run(inherited.metrics if inherited is not None else None))
        return code
    finally:
        for group in sockets:
            for udp, tcp in group.values():
                udp.close()
                tcp.close()
        if control is not None:
            control.close()
            if not supervisor.handed_over and not supervisor.taking_over and cfg.control is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(cfg.control)
