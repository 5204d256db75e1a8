"""A UDP listener served by the compiled hit path (``dnscache/_fastpath.c``), effects.

The event loop calls the C part (``_fastpath.Reader``) itself when the socket has datagrams;
each call receives up to 64 of them with recvmmsg(2), answers the fresh cache hits with one sendmmsg(2),
and hands the rest to ``rest``, which passes them to the server exactly as the pure-Python listener
(``dnscache.server._UdpProtocol``) hands them over. Only the hot loop is compiled: what the
cache holds, misses, prefetch, policy and metrics stay in Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import mmap
import socket
import time
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
        self.sock = sock
        self.loop = loop
        # an anonymous mapping: the 4 MiB of receive slots only cost the pages datagrams touch
        self.workspace = mmap.mmap(-1, _fastpath.WORKSPACE_SIZE)
        self._queued: deque[tuple[bytes, Address]] = deque()
        sock.setblocking(False)
        self.fd = sock.fileno()
        # the loop calls the C reader itself: no Python frame per wake-up; it reads the clock
        # directly unless the server was given another one (tests)
        clock = None if server.clock is time.monotonic else server.clock
        entries = server.resolver.cache.entries
        self.reader = _fastpath.Reader(
            self.fd, self.workspace, entries, self.stats.fast_rcodes, self.stats.fast, self.rest, clock
        )
        loop.add_reader(self.fd, self.reader)

    def rest(self, misses: list[tuple[bytes, Address, Any]], prefetch: list[tuple[bytes, Any]]) -> None:
        """What a batch left for Python: misses to resolve, entries to prefetch."""
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
        self.loop.remove_reader(self.fd)

    def close(self) -> None:
        self.pause()
        if self._queued:
            self.loop.remove_writer(self.fd)
            self._queued.clear()
        self.reader.close()  # releases the workspace, so the mapping can go
        self.sock.close()
        with contextlib.suppress(BufferError):
            self.workspace.close()
