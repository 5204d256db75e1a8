"""A UDP listener served by the compiled hit path (``dnscache/_fastpath.c``), effects.

The event loop calls ``readable`` when the socket has datagrams; one call to the C part
receives up to 64 of them with recvmmsg(2), answers the fresh cache hits with one sendmmsg(2),
and returns the rest, which go to the server's slow path exactly as the pure-Python listener
(``dnscache.server._UdpProtocol``) hands them over. Only the hot loop is compiled: what the
cache holds, misses, prefetch, policy and metrics stay in Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import mmap
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

from dnscache import _fastpath

if TYPE_CHECKING:
    from dnscache.server import DnsServer

Address = Any  # what the socket module uses: (host, port) or (host, port, flowinfo, scope_id)
MAX_QUEUED_REPLIES = 4096  # slow-path replies waiting for send buffer space before we drop


class CompiledUdpListener:
    """One listening UDP socket; ``pause`` stops reading (a drain), ``close`` releases it."""

    def __init__(self, server: DnsServer, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.stats = server.stats
        self.entries = server.resolver.cache.entries
        self.clock = server.clock
        self.sock = sock
        self.loop = loop
        self.draining = False
        # an anonymous mapping: the 4 MiB of receive slots only cost the pages datagrams touch
        self.workspace = mmap.mmap(-1, _fastpath.WORKSPACE_SIZE)
        self._queued: deque[tuple[bytes, Address]] = deque()
        sock.setblocking(False)
        self.fd = sock.fileno()
        loop.add_reader(self.fd, self.readable)

    def readable(self) -> None:
        misses: list[tuple[bytes, Address, Any]] = []
        prefetch: list[tuple[bytes, Any]] = []
        stats = self.stats
        try:
            got, answered, unsent = _fastpath.serve(
                self.fd, self.workspace, self.entries, self.clock(), stats.fast_rcodes, misses, prefetch
            )
        except OSError:
            return  # the socket went away under us (stop); nothing was received
        stats.requests_udp += got
        stats.fast_hits += answered - unsent
        stats.dropped += unsent
        if prefetch:
            maybe = self.server.resolver.maybe_prefetch
            for key, entry in prefetch:
                maybe(key, entry)
        resolve = self.server.resolve
        for data, addr, question in misses:
            resolve(data, functools.partial(self.reply, addr=addr), question)

    def reply(self, out: bytes, addr: Address) -> None:
        """Send a slow-path answer; a full send buffer queues it until the socket is writable."""
        if self._queued:
            self._queue(out, addr)
            return
        try:
            self.sock.sendto(out, addr)
        except (BlockingIOError, InterruptedError):
            self._queue(out, addr)
        except OSError:
            pass  # a client address the kernel will not send to: nothing to answer

    def _queue(self, out: bytes, addr: Address) -> None:
        if len(self._queued) >= MAX_QUEUED_REPLIES:
            self.stats.dropped += 1
            return
        if not self._queued:
            self.loop.add_writer(self.fd, self._flush)
        self._queued.append((out, addr))

    def _flush(self) -> None:
        while self._queued:
            out, addr = self._queued[0]
            try:
                self.sock.sendto(out, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            self._queued.popleft()
        self.loop.remove_writer(self.fd)

    def pause(self) -> None:
        """Stop reading (what arrives is left to whoever else holds the socket); replies still go."""
        self.draining = True
        self.loop.remove_reader(self.fd)

    def close(self) -> None:
        self.pause()
        if self._queued:
            self.loop.remove_writer(self.fd)
            self._queued.clear()
        self.sock.close()
        with contextlib.suppress(BufferError):
            self.workspace.close()
