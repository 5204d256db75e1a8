"""The asyncio driver around the pure pieces: cache lookups, single-flight refreshes, serve-stale,
prefetch and active health probes (effects).

Decisions live in ``Resolution`` (which upstream, hedging, TCP fallback), ``UpstreamPool`` (health)
and ``response`` (what to cache for how long); this module only moves bytes and time between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import struct
import time
from collections.abc import Callable

from dnscache.core.cache import (
    Cache,
    CacheEntry,
    entry_hits,
    expires_at,
    hit,
    prefetch_at,
    recheck_at,
    set_recheck_at,
    stale_until,
)
from dnscache.core.config import ServeConfig
from dnscache.core.resolution import Resolution, Send
from dnscache.core.response import Variant, build_entry
from dnscache.core.scrub import scrub
from dnscache.core.stats import Stats
from dnscache.core.upstreams import Outcome, RetryBudget, UpstreamPool
from dnscache.core.wire import (
    T_NS,
    T_SOA,
    Name,
    WireError,
    build_query,
    is_subdomain,
    name_to_text,
    name_to_wire,
    read_name,
)
from dnscache.transport import Exchange, Handle, SocketTransport, Transport, exchange
from netkit.base.addr import HostPort

log = logging.getLogger("netkit.dns")

VARIANT_FROM_BYTE = {b: Variant(bool(b & 1), bool(b & 2), bool(b & 4)) for b in range(8)}


def randomise_case(qname_wire: bytes, rng: random.Random) -> bytes:
    """DNS 0x20: flip the case of letters at random; the reply must echo it exactly."""
    out = bytearray(qname_wire)
    bits = rng.getrandbits(len(out))
    for i, c in enumerate(out):
        if 0x61 <= c <= 0x7A and (bits >> i) & 1:
            out[i] = c - 0x20
    return bytes(out)


class Flight:
    """One upstream resolution of one cache key, driven by callbacks: exchanges report through
    ``_on_result``, the hedge and deadline through a loop timer; waiters await ``future``. Losing
    exchanges (a hedge's slower half) run on to their timeout so their outcome still teaches the
    upstream's health."""

    def __init__(self, resolver: Resolver, key: bytes, asked: HostPort | None = None) -> None:
        self.resolver = resolver
        self.key = key
        self.question, self.variant = key[:-1], VARIANT_FROM_BYTE[key[-1]]
        self.qname_wire = self.question[:-4]
        self.qtype, self.qclass = struct.unpack("!HH", self.question[-4:])
        self.qname, _ = read_name(self.qname_wire, 0)
        self.zone, self.pool = resolver.route(self.qname)
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[CacheEntry | None] = self.loop.create_future()
        self.res = Resolution(
            self.pool, resolver.attempt_policy, resolver.budget, resolver.rng, resolver.clock()
        )
        order = self.res.order
        if asked is not None and asked in order and len(order) > 1:
            # carrying on from an exchange the compiled path had with it: the others come first,
            # as the next attempt of one resolution would
            order.remove(asked)
            order.append(asked)
        self.answer: Exchange | None = None
        self.exchanges: dict[int, Handle] = {}  # by attempt
        self.timer: asyncio.TimerHandle | None = None
        self.started_at = resolver.clock()

    def start(self) -> None:
        self._send(self.res.start())
        self._arm()

    def _send(self, sends: list[Send]) -> None:
        r = self.resolver
        for send in sends:
            r.stats.hedges += send.hedge
            wire_name = randomise_case(self.qname_wire, r.rng) if r.cfg.dns0x20 else self.qname_wire
            query = build_query(
                r.rng.getrandbits(16),
                wire_name,
                self.qtype,
                self.qclass,
                cd=self.variant.cd,
                do=self.variant.do,
            )
            r.flights.add(self)
            self.exchanges[send.attempt] = r.transport.send(
                send.upstream,
                query,
                wire_name,
                self.qtype,
                self.qclass,
                send.timeout,
                tcp=send.tcp,
                case_exact=r.cfg.dns0x20,
                on_done=functools.partial(self._on_result, send),
            )

    def _on_result(self, send: Send, ex: Exchange) -> None:
        self.exchanges.pop(send.attempt, None)
        if not self.exchanges:
            self.resolver.flights.discard(self)
        was_done = self.res.done
        sends = self.res.on_reply(send, ex.outcome, ex.truncated, self.resolver.clock())
        if was_done:
            return  # a late reply: it only fed the health records
        if ex.outcome is Outcome.SUCCESS and self.res.answered_by is not None:
            self.answer = ex
        self._send(sends)
        self._after()

    def _on_timer(self) -> None:
        self.timer = None
        if not self.res.done:
            self._send(self.res.on_timer(self.resolver.clock()))
        self._after()

    def _after(self) -> None:
        if self.res.done:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if not self.future.done():
                self.future.set_result(self.resolver.finish(self, self.answer))
        else:
            self._arm()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        delay = max(0.0, self.res.next_wakeup() - self.resolver.clock())
        self.timer = self.loop.call_later(delay, self._on_timer)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        for ex in list(self.exchanges.values()):
            ex.cancel()
        self.exchanges.clear()
        if not self.future.done():
            self.future.cancel()


class Resolver:
    def __init__(
        self,
        cfg: ServeConfig,
        stats: Stats,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.cfg = cfg
        self.stats = stats
        self.transport: Transport = transport or SocketTransport(stats)
        self.clock = clock
        self.rng = rng or random.SystemRandom()
        self.cache = Cache(cfg.cache_size, cfg.cache_bytes)
        self.policy = cfg.cache_policy
        self.budget = RetryBudget()
        self._inflight: dict[bytes, Flight] = {}
        self.flights: set[Flight] = set()  # with exchanges still out
        self._background: set[asyncio.Task[object]] = set()
        self.pools: list[tuple[Name, UpstreamPool]] = []
        self.configure(cfg)

    # -- configuration -----------------------------------------------------------------------
    def configure(self, cfg: ServeConfig) -> None:
        """(Re)build upstream pools, keeping the health of servers that stay; resize the cache."""
        old = {(zone, s.address): s for zone, pool in self.pools for s in pool.states}
        pools: list[tuple[Name, UpstreamPool]] = [((), UpstreamPool(list(cfg.upstream), cfg.health_policy))]
        pools += [(z.zone, UpstreamPool(list(z.upstreams), cfg.health_policy)) for z in cfg.zone]
        pools.sort(key=lambda zp: len(zp[0]), reverse=True)  # longest suffix first
        for zone, pool in pools:
            for i, s in enumerate(pool.states):
                prev = old.get((zone, s.address))
                if prev is not None:
                    pool.states[i] = prev
            pool._by_address = {s.address: s for s in pool.states}
        self.pools = pools
        self.cfg = cfg
        self.policy = cfg.cache_policy
        self.attempt_policy = cfg.attempt_policy
        self.cache.resize(cfg.cache_size, cfg.cache_bytes, self.clock())

    @property
    def transport_is_sockets(self) -> bool:
        """Upstreams are reached through real sockets (not a test's transport)."""
        return type(self.transport) is SocketTransport

    def route(self, qname: Name) -> tuple[Name, UpstreamPool]:
        for zone, pool in self.pools:
            if is_subdomain(qname, zone):
                return zone, pool
        raise AssertionError("the default pool matches every name")

    # -- lookups -----------------------------------------------------------------------------
    async def lookup(self, key: bytes) -> tuple[CacheEntry | None, bool]:
        """The entry to answer from and whether it is stale; (None, False) means SERVFAIL."""
        now = self.clock()
        entry = self.cache.get(key)
        if entry is not None and now < expires_at(entry):
            self.stats.cache_hits += 1
            hit(entry)
            if now >= prefetch_at(entry):
                self.maybe_prefetch(key, entry)
            return entry, False
        stale = entry if entry is not None and now < stale_until(entry) else None
        if stale is not None and now < recheck_at(stale):
            return stale, True  # a refresh failed recently: do not hammer the upstreams (RFC 8767)
        self.stats.cache_misses += 1
        task = self.refresh(key)
        if stale is None:
            fresh = await asyncio.shield(task)
            return fresh, False
        done, _ = await asyncio.wait({task}, timeout=self.cfg.stale_answer_timeout)
        if done and task.result() is not None:
            return task.result(), False
        return stale, True

    def refresh(self, key: bytes, asked: HostPort | None = None) -> asyncio.Future[CacheEntry | None]:
        """Resolve ``key`` upstream, at most once at a time (single-flight); ``asked`` is an
        upstream already asked (and failed or slow) on the compiled path."""
        flight = self._inflight.get(key)
        if flight is not None and self.clock() - flight.started_at < self.cfg.attempt_timeout / 2:
            self.stats.coalesced += 1
            return flight.future
        # none in flight, or an old one whose attempts may all be lost (begun during an outage
        # that has ended since): start afresh rather than inherit its failure
        flight = Flight(self, key, asked)
        self._inflight[key] = flight
        flight.future.add_done_callback(functools.partial(self._landed, flight))
        flight.start()
        return flight.future

    def _landed(self, flight: Flight, _future: object) -> None:
        if self._inflight.get(flight.key) is flight:
            del self._inflight[flight.key]

    def maybe_prefetch(self, key: bytes, entry: CacheEntry) -> None:
        """Called from the hit path once an entry is in the last part of its TTL."""
        if (
            self.cfg.prefetch
            and entry_hits(entry) >= self.cfg.prefetch_min_hits
            and key not in self._inflight
        ):
            self.stats.prefetches += 1
            self.refresh(key)

    def finish(self, flight: Flight, answer: Exchange | None) -> CacheEntry | None:
        """Turn a flight's winning reply into a cache entry (or note the failure for serve-stale)."""
        now = self.clock()
        if answer is None or answer.reply is None or answer.message is None:
            entry = self.cache.get(flight.key)
            if entry is not None:
                set_recheck_at(entry, now + self.cfg.failure_recheck)
            log.debug(
                "resolution failed",
                extra={"qname": name_to_text(flight.qname), "failures": len(flight.res.failures)},
            )
            return None
        return self.store(flight.key, flight.zone, flight.variant, flight.pool, answer, now)

    def store(
        self, key: bytes, zone: Name, variant: Variant, pool: UpstreamPool, answer: Exchange, now: float
    ) -> CacheEntry | None:
        """Scrub a good reply, build its entry and cache it when the rules allow; None when it
        cannot be used (the client gets SERVFAIL)."""
        assert answer.reply is not None and answer.message is not None
        try:
            scrubbed = scrub(answer.reply, answer.message, zone)
            entry, cacheable = build_entry(scrubbed.wire, scrubbed.message, variant, self.policy, now)
        except WireError:
            return None
        self.stats.scrubbed_records += scrubbed.dropped
        pool.probe_question = key[:-1]
        if cacheable:
            self.cache.put(key, entry, now)
        return entry

    # -- active health probes ----------------------------------------------------------------
    async def probe_forever(self) -> None:
        """Probe down upstreams with backoff (the zone's SOA, or ``. NS`` for the default set)."""
        was_down: dict[tuple[Name, HostPort], bool] = {}  # the same server may serve two zones
        while True:
            now = self.clock()
            for zone, pool in self.pools:
                for state in pool.states:
                    if was_down.get((zone, state.address), False) != state.down:
                        was_down[(zone, state.address)] = state.down
                        log.log(
                            logging.WARNING if state.down else logging.INFO,
                            "upstream marked down" if state.down else "upstream in service",
                            extra={
                                "upstream": str(state.address),
                                "zone": name_to_text(zone),
                                "last_result": state.last_outcome.value if state.last_outcome else None,
                            },
                        )
                for upstream in pool.due_probes(now):
                    self._spawn(self._probe(zone, pool, upstream))
            times = [t for _, p in self.pools if (t := p.next_probe_time()) is not None]
            delay = min(times) - self.clock() if times else 0.25
            await asyncio.sleep(min(max(delay, 0.02), 0.25))

    async def _probe(self, zone: Name, pool: UpstreamPool, upstream: HostPort) -> None:
        """Ask a down server a question its pool answered well lately (so an authoritative-only
        or stub upstream is judged on what it serves); before any: the zone's SOA, or ``. NS``
        for the default set. Only NOERROR/NXDOMAIN brings it back."""
        question = pool.probe_question or name_to_wire(zone) + struct.pack("!HH", T_SOA if zone else T_NS, 1)
        qname_wire, (qtype, qclass) = question[:-4], struct.unpack("!HH", question[-4:])
        query = build_query(self.rng.getrandbits(16), qname_wire, qtype, qclass)
        start = self.clock()
        ex = await exchange(
            self.transport, upstream, query, qname_wire, qtype, qclass, self.cfg.attempt_timeout
        )
        pool.probe_done(upstream, ex.outcome, self.clock() - start, self.clock())

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for flight in list(self.flights):
            flight.close()
        for flight in list(self._inflight.values()):
            flight.future.cancel()
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await task
