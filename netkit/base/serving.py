"""One HTTP server for a daemon's ``/metrics``, ``/healthz`` and ``/readyz`` (every plane's).

One implementation, on asyncio streams. An asyncio daemon (the DNS cache) awaits ``start`` on
its own loop, so the snapshot behind a scrape is taken between two of its callbacks, never
during one; a threaded daemon (the L2 agent, the reflector's API process) calls
``start_in_thread``, which runs a private loop on a daemon thread. ``/health`` and ``/ready``
answer as well: they are the names the probes of earlier releases use.

A route that raises answers 500 and is logged: a scrape never takes the daemon down. An address
that cannot be listened on is an ``OSError`` reading "cannot serve metrics on ADDR: reason",
raised by ``start`` (a daemon without its health endpoint is not started) and, beforehand, by
``check_bindable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, generate_latest

from netkit.base.addr import HostPort

__all__ = ["EndpointServer", "Response", "Route", "cannot_serve", "check_bindable"]

log = logging.getLogger("netkit.serving")

Response = tuple[int, str, bytes]  # status, content type, body
Route = Callable[[], Response]

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
_REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


def cannot_serve(address: HostPort, exc: OSError, what: str = "metrics") -> OSError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's own words are longer
    return OSError(exc.errno, f"cannot serve {what} on {address}: {reason}")


def check_bindable(address: HostPort, what: str = "metrics") -> None:
    """Raise ``cannot_serve`` if ``address`` cannot be listened on now (for a daemon whose server
    starts later, in a process it does not control)."""
    family = socket.AF_INET6 if address.family_is_v6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((address.host, address.port))
            probe.listen()
        except OSError as exc:
            raise cannot_serve(address, exc, what) from None


class EndpointServer:
    """``/metrics`` from ``registry``, ``/healthz`` (the process runs), ``/readyz`` (``ready()``:
    200, else 503 with ``not_ready``) and any extra ``routes`` (path -> response).
    ``reuse_port``: a second process may serve the same address while both run (a DaemonSet's
    surge pod beside the old one, on the host network)."""

    def __init__(
        self,
        address: HostPort,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        *,
        not_ready: str = "not ready",
        routes: Mapping[str, Route] | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.reuse_port = reuse_port
        self.address = address
        self.registry = registry
        self.ready = ready
        self.not_ready = not_ready
        self.routes: dict[str, Route] = {
            "/metrics": lambda: (200, PROMETHEUS_TEXT, generate_latest(self.registry)),
            "/healthz": lambda: (200, "text/plain", b"OK\n"),
            "/readyz": self._readiness,
            **(routes or {}),
        }
        self.routes.setdefault("/health", self.routes["/healthz"])
        self.routes.setdefault("/ready", self.routes["/readyz"])
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- answers (no sockets) ---------------------------------------------------------------

    def respond(self, path: str) -> Response:
        route = self.routes.get(path.split("?", 1)[0])
        if route is None:
            return 404, "text/plain", f"try {', '.join(sorted(self.routes))}\n".encode()
        try:
            return route()
        except Exception:
            log.exception("endpoint failed", extra={"path": path})
            return 500, "text/plain", b"internal error\n"

    def _readiness(self) -> Response:
        if self.ready():
            return 200, "text/plain", b"OK\n"
        return 503, "text/plain", f"{self.not_ready}\n".encode()

    # -- on the caller's loop ---------------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on the address, or on ``sock`` (a listening socket handed over by a predecessor)."""
        if sock is not None:
            self._server = await asyncio.start_server(self._handle, sock=sock)
            return
        try:
            self._server = await asyncio.start_server(
                self._handle,
                self.address.host,
                self.address.port,
                reuse_address=True,
                reuse_port=self.reuse_port or None,
            )
        except OSError as exc:
            raise cannot_serve(self.address, exc) from None

    def listening_socket(self) -> socket.socket | None:
        """A second descriptor of the listening socket, to hand over."""
        if self._server is None or not self._server.sockets:
            return None
        return socket.socket(fileno=os.dup(self._server.sockets[0].fileno()))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readuntil(b"\r\n\r\n")
            parts = request.split(b" ", 2)
            path = parts[1].decode("latin-1") if len(parts) == 3 else ""
            status, ctype, body = self.respond(path)
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- on a thread of its own -------------------------------------------------------------

    def start_in_thread(self) -> None:
        """Serve from a daemon thread with a loop of its own; raises what ``start`` raises."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="metrics", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            raise
        self._loop, self._thread = loop, thread
        log.info("metrics endpoint listening", extra={"address": str(self.address)})

    def stop_thread(self) -> None:
        """Stop what ``start_in_thread`` started (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()

    async def _shutdown(self) -> None:
        await self.stop()
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not current:
                task.cancel()


def listen_unix(path: str, mode: int = 0o600) -> socket.socket:
    """A listening unix socket at ``path``, bound under a temporary name and renamed into place
    once it listens: a client that sees the path can connect (no refusal between bind and
    listen), and a server probing for a live one never mistakes ours for a stale file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(tmp)
        os.chmod(tmp, mode)
        sock.listen(16)
        os.rename(tmp, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return sock
