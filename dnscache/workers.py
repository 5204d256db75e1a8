"""``--workers N``: N processes share the listen addresses with SO_REUSEPORT (effects).

The kernel spreads queries over the workers by flow hash; each worker has its own cache (as
separate CoreDNS replicas would). The supervisor binds every worker's sockets itself, first
making sure no other process serves those addresses (``bind.bind_exclusive``: an accidental
second instance gets EADDRINUSE, as one without workers does), and keeps them: a worker that
dies is restarted on the same sockets, so what the kernel queued for it waits instead of being
dropped. It serves the metrics (every worker sends it a snapshot of its counters once a second
over a pipe, and the supervisor sums them) and forwards SIGHUP and SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable

from dnscache.bind import Listeners, bind_exclusive
from dnscache.config import ServeConfig
from dnscache.metrics import MetricsServer, Snapshot, merge_snapshots
from dnscache.runner import event_loop_policy, serve
from dnscache.server import DnsServer

log = logging.getLogger("netkit.dns")

REPORT_INTERVAL = 1.0
MAX_RESTARTS = 5  # within RESTART_WINDOW seconds, then the supervisor gives up
RESTART_WINDOW = 30.0


def _worker_main(
    cfg: ServeConfig, reload_config: Callable[[], ServeConfig], report_fd: int, listeners: Listeners
) -> int:
    event_loop_policy()

    def on_started(server: DnsServer) -> None:
        async def report() -> None:
            while True:
                data = json.dumps(server.snapshot()).encode() + b"\n"
                os.write(report_fd, data)
                await asyncio.sleep(REPORT_INTERVAL)

        task = asyncio.get_running_loop().create_task(report())
        server._housekeeping.append(task)

    try:
        asyncio.run(
            serve(
                cfg,
                reload_config,
                reuse_port=True,
                with_metrics=False,
                on_started=on_started,
                listeners=listeners,
            )
        )
    except OSError as exc:
        log.error("worker cannot serve", extra={"error": str(exc)})
        return 1
    return 0


class Supervisor:
    def __init__(
        self, cfg: ServeConfig, reload_config: Callable[[], ServeConfig], sockets: list[Listeners]
    ) -> None:
        self.cfg = cfg
        self.reload_config = reload_config
        self.sockets = sockets  # per worker, held for the workers' whole life
        self.children: dict[int, tuple[int, int]] = {}  # pid -> (worker index, report fd)
        self.latest: dict[int, Snapshot] = {}
        self.buffers: dict[int, bytes] = {}
        self.restarts: list[float] = []
        self.stopping = False

    def spawn(self, index: int) -> int:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            # a respawn forks from inside the supervisor's running loop: forget it in the child
            asyncio.events._set_running_loop(None)
            os.close(r)
            code = 1
            try:
                for i, group in enumerate(self.sockets):
                    if i != index:  # the other workers' sockets are theirs
                        for udp, tcp in group.values():
                            udp.close()
                            tcp.close()
                code = _worker_main(self.cfg, self.reload_config, w, self.sockets[index])
            finally:
                os._exit(code)
        os.close(w)
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
        if lines:
            with contextlib.suppress(ValueError):
                self.latest[index] = json.loads(lines[-1])

    def snapshot(self) -> Snapshot:
        return merge_snapshots(list(self.latest.values()))

    def ready(self) -> bool:
        return not self.stopping and len(self.latest) >= self.cfg.workers

    async def run(self) -> int:
        """Serve the metrics, then start the workers (a metrics address in use is an error
        before any worker runs) and keep them running until SIGTERM/SIGINT."""
        loop = asyncio.get_running_loop()
        metrics = None
        if self.cfg.metrics is not None:
            metrics = MetricsServer(self.cfg.metrics, self.snapshot, self.ready)
            await metrics.start()
        for i in range(self.cfg.workers):
            self.spawn(i)
        for _, (index, fd) in self.children.items():
            loop.add_reader(fd, self._read, index, fd)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._signal_all(signal.SIGHUP))
        code = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
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
        if metrics is not None:
            await metrics.stop()
        return code

    def _reap(self, loop: asyncio.AbstractEventLoop, respawn: bool = True) -> bool:
        """Collect dead workers and restart them; False once they die too often."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0 or pid not in self.children:
                return True
            index, fd = self.children.pop(pid)
            loop.remove_reader(fd)
            os.close(fd)
            self.latest.pop(index, None)
            if not respawn:
                continue
            log.error("worker died", extra={"worker": index, "pid": pid, "status": status})
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
            if len(self.restarts) > MAX_RESTARTS:
                log.error("workers keep dying, giving up")
                return False
            new_fd = self.children[self.spawn(index)][1]
            loop.add_reader(new_fd, self._read, index, new_fd)
        return True

    def _signal_all(self, sig: signal.Signals) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def supervise(cfg: ServeConfig, reload_config: Callable[[], ServeConfig]) -> int:
    """Bind (or refuse with EADDRINUSE, before anything starts), then run the workers."""
    sockets = bind_exclusive(cfg.listen, cfg.workers)
    try:
        return asyncio.run(Supervisor(cfg, reload_config, sockets).run())
    finally:
        for group in sockets:
            for udp, tcp in group.values():
                udp.close()
                tcp.close()
