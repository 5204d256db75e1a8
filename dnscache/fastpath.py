"""The compiled paths (``dnscache/_fastpath.c``, ``dnscache/_upstream.c``) on the loop, effects.

``CompiledUdpListener``: the event loop calls the C part (``_fastpath.Reader``) itself when the
socket has datagrams; each call receives up to 64 of them with recvmmsg(2), answers the fresh
cache hits with one sendmmsg(2), gives the common misses to the miss engine and hands the rest to
``rest``, which passes them to the server exactly as the pure-Python listener
(``dnscache.server._UdpProtocol``) hands them over.

``CompiledMisses``: the miss engine (``_fastpath.Engine``) resolves the common miss with one
upstream exchange in C. Python keeps every decision: which upstream (the route it sets from its
health ranking, refreshed after every batch of outcomes), health, the retry budget, and every case
out of the ordinary, which the engine hands back (``on_done``) to the resolver's own flights.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import mmap
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dnscache import _fastpath
from dnscache.core.cache import CacheEntry
from dnscache.core.stats import DURATION_BUCKETS
from dnscache.core.upstreams import Outcome
from dnscache.core.wire import name_to_wire
from dnscache.resolver import VARIANT_FROM_BYTE
from dnscache.transport import check_reply
from netkit.base.addr import HostPort

if TYPE_CHECKING:
    from dnscache.core.upstreams import UpstreamPool
    from dnscache.server import DnsServer

Address = Any  # what the socket module uses: (host, port) or (host, port, flowinfo, scope_id)
MAX_QUEUED_REPLIES = 4096  # slow-path replies waiting for send buffer space before we drop


class CompiledUdpListener:
    """One listening UDP socket; ``pause`` stops reading (a drain), ``close`` releases it."""

    def __init__(
        self,
        server: DnsServer,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        misses: CompiledMisses | None = None,
    ) -> None:
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
            self.fd,
            self.workspace,
            entries,
            self.stats.fast_rcodes,
            self.stats.fast,
            self.rest,
            clock,
            misses.engine if misses is not None else None,
        )
        if misses is not None:
            misses.replies[self.fd] = self.reply
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


# what the engine reports (dnscache/_upstream.c): kinds, and its counters
DONE_OK, DONE_REPLY, DONE_ERROR, DONE_HANDOVER, DONE_LATE = range(5)
ROUTE_REFRESH = 0.1  # seconds: the route follows health changes made outside the engine
Waiter = tuple[bytes, Address, int, int, int, float]  # datagram, address, fd, question end, limit, arrival
Result = tuple[int, int, float, bytes, Any, list[Waiter] | None, bytes]  # see _fastpath.Engine


class CompiledMisses:
    """The miss engine of one server, shared by its compiled listeners."""

    def __init__(self, server: DnsServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.resolver = server.resolver
        self.loop = loop
        self.stats = server.stats
        self.replies: dict[int, Callable[..., None]] = {}  # listening fd -> its listener's reply
        self._routes: list[HostPort] = []
        self._route_ids: dict[HostPort, int] = {}
        self._deposited = 0
        self.engine = _fastpath.Engine(
            self.resolver._inflight,
            CacheEntry,
            self.on_done,
            self.stats.engine,
            self.stats.engine_durations,
            self.stats.fast_rcodes,
            DURATION_BUCKETS,
            self._policy(),
            server.cfg.dns0x20,
        )
        self.fd = self.engine.fileno()
        loop.add_reader(self.fd, self.engine)
        self.refresh_route()
        self._ticker = loop.call_later(ROUTE_REFRESH, self._tick)

    def _tick(self) -> None:
        self.refresh_route()
        self._ticker = self.loop.call_later(ROUTE_REFRESH, self._tick)

    def _policy(self) -> _fastpath.Policy:
        p = self.resolver.policy
        return (
            float(p.min_ttl), float(p.max_ttl), float(p.neg_max_ttl), p.stale_window, p.prefetch_fraction,
            p.minimal_responses,
        )  # fmt: skip

    def _default_pool(self) -> UpstreamPool:
        return next(pool for zone, pool in self.resolver.pools if not zone)

    def refresh_route(self) -> None:
        """Point new flights at the upstream the health ranking puts first, with its RTO; none
        (Python resolves every miss) when that one is down or losing queries, so that Python's
        flights hedge across servers as they should."""
        r = self.resolver
        pool = self._default_pool()
        first = pool.ranked(r.rng)[0]
        state = pool.state(first)
        p = r.attempt_policy
        if state.down or (len(pool.states) > 1 and state.loss >= p.parallel_loss):
            self.engine.clear_route()
            return
        route = self._route_ids.get(first)
        if route is None:
            route = self._route_ids[first] = len(self._routes)
            self._routes.append(first)
        timeout = min(p.attempt_timeout, p.deadline)
        rto = pool.retry_interval(first, p.min_retry_interval, p.max_retry_interval) if p.hedge else timeout
        zones = tuple(name_to_wire(zone) for zone, _ in r.pools if zone)
        self.engine.set_route(route, first.host, first.port, rto, timeout, zones, self._policy())

    def on_done(self, results: list[Result]) -> None:
        """What the engine's latest wake-up left for Python: health, the cache, clients to answer
        or to carry on resolving."""
        r = self.resolver
        now = r.clock()
        pool = self._default_pool()
        started = self.stats.engine[4]
        r.budget.deposit(now, started - self._deposited)
        self._deposited = started
        for kind, route, rtt, key, payload, waiters, query in results:
            address = self._routes[route]
            known = address in pool._by_address  # not when a reload removed it meanwhile
            if kind == DONE_OK:
                r.cache.put(key, payload, now)
                pool.probe_question = key[:-1]
                if known:
                    pool.record(address, Outcome.SUCCESS, rtt, now)
                for w in waiters or ():
                    self._answer(w, key, payload, now)
                continue
            if isinstance(payload, bytes):  # a reply for Python to judge
                verdict = self._verdict(payload, query, key)
                if verdict is None:
                    self.stats.spoofed_replies += 1
                elif known:
                    pool.record(address, verdict.outcome, rtt, now)
                if (
                    kind == DONE_REPLY
                    and verdict is not None
                    and verdict.outcome is Outcome.SUCCESS
                    and not verdict.truncated
                ):
                    entry = r.store(key, (), VARIANT_FROM_BYTE[key[-1]], pool, verdict, now)
                    for w in waiters or ():
                        self._answer(w, key, entry, now)
                    continue
            elif isinstance(payload, str) and known:  # "timeout", "network_error"
                pool.record(address, Outcome(payload), rtt, now)
            elif kind == DONE_HANDOVER and r.attempt_policy.hedge:
                self.stats.hedges += 1  # at the RTO: the Python flight's query goes out beside this one
            for w in waiters or ():
                data, addr, fd, qend, limit, arrived = w
                self.server.await_flight(data, self._reply(fd, addr), (key, qend, limit), arrived, address)
        self.refresh_route()

    def _verdict(self, reply: bytes, query: bytes, key: bytes) -> Any:
        """Python's judgement of a reply to ``query`` (the engine's, whose question is ``key``'s
        name, possibly in 0x20 case, then type and class)."""
        qid = int.from_bytes(query[0:2], "big")
        end = 12 + len(key) - 5
        qtype, qclass = (
            int.from_bytes(query[end : end + 2], "big"),
            int.from_bytes(query[end + 2 : end + 4], "big"),
        )
        return check_reply(reply, qid, query[12:end], qtype, qclass, self.server.cfg.dns0x20)

    def _reply(self, fd: int, addr: Address) -> Callable[[bytes], None]:
        return functools.partial(self.replies[fd], addr=addr)

    def _answer(self, w: Waiter, key: bytes, entry: CacheEntry | None, now: float) -> None:
        data, addr, fd, qend, limit, arrived = w
        self.server.answer_waiter(data, self._reply(fd, addr), (key, qend, limit), entry, arrived)

    async def wait_idle(self, timeout: float) -> None:
        """Until no client waits on a compiled flight (a drain), at most ``timeout``."""
        deadline = self.loop.time() + timeout
        while self.engine.waiting() and self.loop.time() < deadline:
            await asyncio.sleep(0.005)

    def close(self) -> None:
        self._ticker.cancel()
        self.loop.remove_reader(self.fd)
        self.stats.dropped += self.engine.close()
