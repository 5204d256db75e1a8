"""The listening side: UDP and TCP on every listen address, the cache-hit fast path, the slow path
for everything else (effects).

The fast path answers cache hits without parsing the message. By default it is compiled
(``dnscache.fastpath``: batches of recvmmsg/sendmmsg in C); ``fast_path: python`` runs the same
algorithm here, inside ``datagram_received``. Either walks the
question's labels, reads the OPT record in place if there is one, looks up the raw question bytes
(case-folded) plus a variant byte, and sends the cached bytes with the client's ID, RD bit and
question case patched in. Anything unusual (no entry, expired, too big for the client, odd
header) drops to the slow path, which parses fully and answers every case.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from dnscache.bind import kernel_sockets, make_socket, refuse_shared
from dnscache.core.cache import HITS, HOT, REFERENCED, cache_key, render_fresh, render_stale, variant_byte
from dnscache.core.config import ServeConfig
from dnscache.core.listeners import conflicts
from dnscache.core.response import finish
from dnscache.core.stats import Stats
from dnscache.core.wire import (
    BADVERS,
    CD,
    EDNS_UDP_SIZE,
    FORMERR,
    MAX_NAME_LEN,
    NOTIMP,
    OPCODE_MASK,
    QR,
    SERVFAIL,
    Edns,
    WireError,
    error_reply,
    local_rcode,
    parse_message,
    question_end,
)
from dnscache.resolver import Resolver
from dnscache.transport import Transport
from netkit.base.addr import HostPort
from netkit.base.fields import ConfigError

if TYPE_CHECKING:
    from dnscache.core.cache import CacheEntry
    from dnscache.fastpath import CompiledMisses, CompiledUdpListener

log = logging.getLogger("netkit.dns")

_QD1 = b"\x00\x01\x00\x00\x00\x00"
_VARIANTS = [bytes((v,)) for v in range(8)]
_U16 = struct.Struct("!H")
_U16_PAIR = struct.Struct("!HH")
MAX_SLOW_TASKS = 20000
TCP_MESSAGE_TIMEOUT = 2.0  # a started message must complete within this (slowloris)
TCP_MAX_PIPELINE = 64
TCP_MAX_WRITE_BUFFER = 1 << 20


Question = tuple[bytes, int, int]  # cache key, question end, UDP size limit


def read_question(data: bytes) -> Question | None:
    """The cache key, question end and UDP size limit of an ordinary query, without parsing it.

    Ordinary means: QR clear, opcode QUERY, one question with an uncompressed name, no answer or
    authority records, and either nothing after the question or exactly one OPT record of EDNS
    version 0. Anything else (None) takes the slow path, which parses and answers every case.
    """
    n = len(data)
    if n < 17 or data[2] & 0xF8 or data[4:10] != _QD1:
        return None
    i = 12
    while i < n:
        length = data[i]
        if length == 0 or length > 63:
            break
        i += length + 1
    qend = i + 5
    if i >= n or data[i] != 0 or qend > n or i > MAX_NAME_LEN + 11:
        return None
    if data[10] == 0 and data[11] == 0:
        if qend != n:
            return None
        variant, limit = 0, 512
    elif (
        data[10] == 0 and data[11] == 1 and n >= qend + 11 and data[qend] == 0 and data[qend + 1] == 0
        and data[qend + 2] == 41 and data[qend + 6] == 0
        and qend + 11 + ((data[qend + 9] << 8) | data[qend + 10]) == n
    ):  # fmt: skip
        size = (data[qend + 3] << 8) | data[qend + 4]
        limit = EDNS_UDP_SIZE if size > EDNS_UDP_SIZE else size if size > 512 else 512
        variant = 3 if data[qend + 7] & 0x80 else 1
    else:
        return None
    if data[3] & 0x10:
        variant |= 4
    return data[12 : qend - 4].lower() + data[qend - 4 : qend] + _VARIANTS[variant], qend, limit


def heap_trimmer() -> Callable[[], object]:
    """glibc's malloc_trim(0), from the compiled part; nothing where it was not built."""
    try:
        from dnscache._fastpath import trim
    except ImportError:
        return lambda: False
    return trim


def compiled_paths() -> tuple[type[CompiledUdpListener], type[CompiledMisses]]:
    """The compiled listener and miss engine classes; an error naming the way out when they
    were not built."""
    try:
        from dnscache.fastpath import CompiledMisses, CompiledUdpListener
    except ImportError as exc:
        raise ConfigError(
            f"fast_path: compiled is not built here ({exc}): reinstall the project with pip (it "
            "compiles dnscache/_fastpath.c), or serve with --fast-path python"
        ) from None
    return CompiledUdpListener, CompiledMisses


class DnsServer:
    def __init__(
        self,
        cfg: ServeConfig,
        stats: Stats | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        reuse_port: bool = False,
        upstream_transport: Transport | None = None,
    ) -> None:
        self.cfg = cfg
        self.stats = stats or Stats()
        self.clock = clock
        self.resolver = Resolver(cfg, self.stats, clock=clock, rng=rng, transport=upstream_transport)
        self.reuse_port = reuse_port
        self.ready = False
        self._transports: list[asyncio.DatagramTransport] = []
        self._protocols: list[_UdpProtocol] = []
        self._compiled: list[CompiledUdpListener] = []
        self._engine: CompiledMisses | None = None  # the compiled miss path, with the listener
        self.listeners: list[tuple[HostPort, socket.socket, socket.socket]] = []
        self._tcp_handlers: set[asyncio.Task[None]] = set()
        self._tcp_servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._misses: set[asyncio.Future[Any]] = set()  # flights UDP misses wait on (resolve)
        self._slow = 0
        self._tcp_conns = 0
        self._housekeeping: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(
        self, inherited: dict[HostPort, tuple[socket.socket, socket.socket]] | None = None
    ) -> None:
        """Listen on every configured address: on inherited (udp, tcp) sockets where a previous
        process handed them over, on new ones elsewhere."""
        loop = asyncio.get_running_loop()
        listener = None
        if self.cfg.fast_path == "compiled":
            listener, engine = compiled_paths()
            # the engine talks to upstreams itself, on the real clock: not with a test's own
            # transport or clock
            if self.clock is time.monotonic and self.resolver.transport_is_sockets:
                self._engine = engine(self, loop)
        inherited = dict(inherited or {})
        fresh = [a for a in self.cfg.listen if a not in inherited]
        if fresh:  # the kernel would refuse too; this names who holds the address
            refuse_shared(conflicts(kernel_sockets(), fresh))
        for address in self.cfg.listen:
            udp, tcp = (
                inherited.pop(address)
                if address in inherited
                else (
                    make_socket(address, socket.SOCK_DGRAM, self.reuse_port),
                    make_socket(address, socket.SOCK_STREAM, self.reuse_port),
                )
            )
            # a second descriptor of each socket: to hand over, and to answer from while draining
            self.listeners.append((address, udp.dup(), tcp.dup()))
            spare = self.listeners[-1][1]
            if listener is not None:
                self._compiled.append(listener(self, udp, loop, self._engine))
            else:
                transport, protocol = await loop.create_datagram_endpoint(
                    functools.partial(_UdpProtocol, self, spare), sock=udp
                )
                self._transports.append(transport)
                self._protocols.append(protocol)
            self._tcp_servers.append(await asyncio.start_server(self._serve_tcp, sock=tcp))
        for udp, tcp in inherited.values():  # addresses no longer configured
            udp.close()
            tcp.close()
        self._housekeeping = [
            loop.create_task(self.resolver.probe_forever()),
            loop.create_task(self._sweep_forever()),
        ]
        self.ready = True

    def run_alongside(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` while the server serves; it is cancelled when the server stops."""
        self._housekeeping.append(asyncio.get_running_loop().create_task(coro))

    async def drain(self, timeout: float) -> None:
        """Stop taking queries, answer the ones in flight (up to ``timeout``), then stop.

        Closing our descriptors does not close the sockets while another process holds them
        (a handover): what arrives from now on is theirs, and nothing queued is lost.
        """
        self.ready = False
        for protocol in self._protocols:
            protocol.draining = True
        for t in self._transports:
            t.close()
        for compiled in self._compiled:
            compiled.pause()  # replies in flight still go out through it
        for srv in self._tcp_servers:
            srv.close()
        started = self.clock()
        if self._engine is not None:
            await self._engine.wait_idle(timeout)
        pending = [*self._tasks, *self._misses, *self._tcp_handlers]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, timeout - (self.clock() - started)))
        await self.stop()

    async def stop(self) -> None:
        self.ready = False
        for t in self._transports:
            t.close()
        for srv in self._tcp_servers:
            srv.close()
        for task in [*self._housekeeping, *self._tasks, *self._tcp_handlers]:
            task.cancel()
        for task in [*self._housekeeping, *self._tasks, *self._tcp_handlers]:
            with contextlib.suppress(BaseException):
                await task
        if self._engine is not None:
            self._engine.close()
        await self.resolver.close()
        for compiled in self._compiled:
            compiled.close()
        for _, udp, tcp in self.listeners:
            udp.close()
            tcp.close()

    def snapshot(self) -> dict[str, object]:
        """Counters and gauges for the metrics collector (and for the supervisor of workers)."""
        snap = self.stats.snapshot()
        cache = self.resolver.cache
        snap.update(cache_entries=len(cache), cache_bytes=cache.bytes, cache_evictions=cache.stats.evictions)
        snap["upstreams"] = [
            {
                "upstream": str(s.address),
                "healthy": 0 if s.down else 1,
                "srtt": s.srtt,
                "results": {o.value: c for o, c in s.results.items()},
            }
            for _, pool in self.resolver.pools
            for s in pool.states
        ]
        return snap

    def reload(self, cfg: ServeConfig) -> None:
        """Apply new upstreams, zones and cache limits; listeners and cache contents stay."""
        self.resolver.configure(cfg)
        self.cfg = cfg
        self.upstreams_changed()

    def upstreams_changed(self) -> None:
        """Health or preferences changed outside the resolver's own flow (tests, operators): the
        compiled miss path picks its upstream again now rather than within its refresh interval."""
        if self._engine is not None:
            self._engine.refresh_route()

    async def _sweep_forever(self) -> None:
        """Each second: drop entries past their stale window, and when the cache changed, give
        the heap's free memory back (a burst of misses and the cache table's resizes leave
        free chunks inside the heap that glibc keeps otherwise: ~1 MiB at 100k names)."""
        trim = heap_trimmer()
        seen = (0, 0)
        while True:
            await asyncio.sleep(1.0)
            cache = self.resolver.cache
            cache.sweep(self.clock())
            if (len(cache), cache.bytes) != seen:
                seen = (len(cache), cache.bytes)
                trim()

    # -- misses ------------------------------------------------------------------------------
    def resolve(self, data: bytes, reply: Callable[[bytes], None], question: Question | None) -> None:
        """A UDP query the hit path did not answer. The common miss (an ordinary question with
        nothing cached under it) waits on the resolver's flight through a callback: no task and
        no coroutine per miss. Everything else takes the slow path, which answers every case."""
        if question is None or question[0] in self.resolver.cache.entries:
            self.spawn_slow(data, reply, False, question)
            return
        qend = question[1]
        if local_rcode(*_U16_PAIR.unpack_from(data, qend - 4)) is not None:
            self.spawn_slow(data, reply, False, question)
            return
        self.stats.cache_misses += 1
        self.await_flight(data, reply, question, self.clock())

    def await_flight(
        self,
        data: bytes,
        reply: Callable[[bytes], None],
        question: Question,
        start: float,
        asked: HostPort | None = None,
    ) -> None:
        """Answer an ordinary UDP query from the resolver's flight for its key (also for the
        clients the compiled miss path hands back, after it asked ``asked``)."""
        if self._slow >= MAX_SLOW_TASKS:
            self.stats.dropped += 1
            return
        self._slow += 1
        flight = self.resolver.refresh(question[0], asked)
        self._misses.add(flight)
        flight.add_done_callback(functools.partial(self._resolved, data, reply, question, start))

    def _resolved(
        self,
        data: bytes,
        reply: Callable[[bytes], None],
        question: Question,
        start: float,
        flight: asyncio.Future[Any],
    ) -> None:
        self._slow -= 1
        self._misses.discard(flight)
        if flight.cancelled():  # stopping
            self.stats.dropped += 1
            return
        self.answer_waiter(data, reply, question, flight.result(), start)

    def answer_waiter(
        self,
        data: bytes,
        reply: Callable[[bytes], None],
        question: Question,
        entry: CacheEntry | None,
        start: float,
    ) -> None:
        """Send a resolved miss its answer: from ``entry``, or SERVFAIL when there is none."""
        key, qend, limit = question
        if entry is None:
            variant = key[-1]
            edns = Edns(EDNS_UDP_SIZE, 0, 0, bool(variant & 2)) if variant & 1 else None
            out = error_reply(data, SERVFAIL, qend, edns)
        else:
            out = finish(render_fresh(entry, self.clock()), entry, data, limit)
        self.stats.count_rcode(out[3] & 0xF)
        reply(out)
        self.stats.observe(self.clock() - start)

    # -- the slow path -----------------------------------------------------------------------
    def spawn_slow(
        self, data: bytes, reply: Callable[[bytes], None], tcp: bool, question: Question | None = None
    ) -> None:
        if self._slow >= MAX_SLOW_TASKS:
            self.stats.dropped += 1
            return
        self._slow += 1
        task = asyncio.get_running_loop().create_task(self._slow_path(data, reply, tcp, question))
        self._tasks.add(task)
        task.add_done_callback(self._slow_done)

    def _slow_done(self, task: asyncio.Task[None]) -> None:
        self._slow -= 1
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("query handling failed", exc_info=task.exception())

    async def _slow_path(
        self, data: bytes, reply: Callable[[bytes], None], tcp: bool, question: Question | None = None
    ) -> None:
        start = self.clock()
        out = await self.answer(data, tcp, question)
        if out is None:
            self.stats.dropped += 1
            return
        self.stats.count_rcode(out[3] & 0xF)
        reply(out)
        self.stats.observe(self.clock() - start)

    async def answer(self, data: bytes, tcp: bool, question: Question | None = None) -> bytes | None:
        """Answer one query message; None means drop it (not a query, or hopelessly garbled).

        ``question`` is what ``read_question`` found when the UDP fast path already looked; an
        ordinary query is then not parsed again.
        """
        q = question or read_question(data)
        if q is not None:
            key, qend, limit = q
            variant = key[-1]
            edns = Edns(EDNS_UDP_SIZE, 0, 0, bool(variant & 2)) if variant & 1 else None
        else:
            if len(data) < 12 or data[2] & (QR >> 8):
                return None  # never answer a response: that is how reflection loops start
            flags = _U16.unpack_from(data, 2)[0]
            qend = question_end(data)
            if flags & OPCODE_MASK:
                return error_reply(
                    data, NOTIMP, qend if qend > 0 and data[4:6] == b"\x00\x01" else None, None
                )
            try:
                msg = parse_message(data)
            except WireError:
                return error_reply(data, FORMERR, None, None)
            qend, edns = msg.question_end, msg.edns
            if data[6:10] != b"\x00\x00\x00\x00":
                return error_reply(data, FORMERR, qend, edns)
            if edns is not None and edns.version != 0:
                return error_reply(data, BADVERS, qend, edns)
            limit = min(max(edns.udp_size, 512), EDNS_UDP_SIZE) if edns is not None else 512
            key = cache_key(
                data[12:qend], variant_byte(edns is not None, bool(edns and edns.do), bool(flags & CD))
            )
        refuse = local_rcode(*_U16_PAIR.unpack_from(data, qend - 4))
        if refuse is not None:  # never forwarded: it would only teach the upstreams' health lies
            return error_reply(data, refuse, qend, edns)
        entry, stale = await self.resolver.lookup(key)
        if entry is None:
            return error_reply(data, SERVFAIL, qend, edns)
        if stale:
            self.stats.served_stale += 1
            wire = render_stale(entry, self.cfg.stale_ttl)
        else:
            wire = render_fresh(entry, self.clock())
        return finish(wire, entry, data, 65535 if tcp else limit)

    # -- TCP ---------------------------------------------------------------------------------
    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_conns >= self.cfg.max_tcp_connections:
            writer.close()
            return
        self._tcp_conns += 1
        self.stats.tcp_connections += 1
        me = asyncio.current_task()
        if me is not None:
            self._tcp_handlers.add(me)
        inflight: set[asyncio.Task[None]] = set()

        def send(out: bytes) -> None:
            if writer.is_closing():
                return
            if writer.transport.get_write_buffer_size() > TCP_MAX_WRITE_BUFFER:
                writer.close()  # the client does not read its answers
                return
            writer.write(_U16.pack(len(out)) + out)

        try:
            while True:
                async with asyncio.timeout(self.cfg.tcp_idle_timeout):
                    head = await reader.readexactly(2)
                (length,) = _U16.unpack(head)
                if length < 12:
                    break
                async with asyncio.timeout(TCP_MESSAGE_TIMEOUT):
                    data = await reader.readexactly(length)
                self.stats.requests_tcp += 1
                while len(inflight) >= TCP_MAX_PIPELINE:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.get_running_loop().create_task(self._slow_path(data, send, True))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            if inflight:
                await asyncio.wait(inflight, timeout=self.cfg.deadline)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if inflight:  # answer what was asked before the client went quiet, within the deadline
                await asyncio.wait(inflight, timeout=self.cfg.deadline)
            for task in inflight:
                task.cancel()
            self._tcp_conns -= 1
            self._tcp_handlers.discard(me)
            writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer, spare: socket.socket) -> None:
        self.server = server
        self.stats = server.stats
        self.entries = server.resolver.cache.entries
        self.clock = server.clock
        self.transport: asyncio.DatagramTransport | None = None
        self.draining = False
        self.spare = spare  # our second descriptor of the socket

    def reply(self, out: bytes, addr: tuple[str, int]) -> None:
        """Send a slow-path answer; while draining the transport is closed, so use the spare."""
        if not self.draining:
            self.transport.sendto(out, addr)  # type: ignore[union-attr]
            return
        with contextlib.suppress(OSError):
            self.spare.sendto(out, addr)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors for clients that went away

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        stats = self.stats
        stats.requests_udp += 1
        q = read_question(data)
        if q is not None:
            key, qend, limit = q
            entry = self.entries.get(key)
            if entry is not None:
                now = self.clock()
                stored, expires_ms, prefetch_ms, age, start = HOT.unpack_from(entry)
                if now < stored + expires_ms / 1000.0:
                    if int(now - stored) != age:
                        render_fresh(entry, now)
                    if len(entry) - start <= limit:
                        out = entry[start:]
                        out[0:2] = data[0:2]
                        out[2] = (out[2] & 0xFE) | (data[2] & 0x01)
                        out[12 : qend - 4] = data[12 : qend - 4]
                        self.transport.sendto(out, addr)  # type: ignore[union-attr]
                        hits = entry[HITS]
                        if hits < 255:
                            entry[HITS] = hits + 1
                        entry[REFERENCED] = 1
                        stats.fast_hits += 1
                        stats.rcodes[out[3] & 0xF] += 1
                        if now >= stored + prefetch_ms / 1000.0:
                            self.server.resolver.maybe_prefetch(key, entry)
                        return
        self.server.resolve(data, functools.partial(self.reply, addr=addr), q)
