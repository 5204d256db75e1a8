"""One exchange with one upstream over UDP or TCP (effects).

Every UDP query gets a fresh connected socket, so the kernel picks a random source port and drops
datagrams from any other address or port; the reply must also carry our random ID and exactly our
question (case-exact when 0x20 randomisation is on). Anything else is counted and ignored while we
keep waiting for the real reply, as a resolver under a spoofing attack must.
"""

from __future__ import annotations

import _socket
import asyncio
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dnscache.core.stats import Stats
from dnscache.core.upstreams import Outcome
from dnscache.core.wire import (
    FORMERR,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    QR,
    REFUSED,
    TC,
    Message,
    WireError,
    parse_message,
)
from netkit.base.addr import HostPort

YXDOMAIN = 6


@dataclass(slots=True)
class Exchange:
    outcome: Outcome
    reply: bytes | None = None
    message: Message | None = None

    @property
    def truncated(self) -> bool:
        return self.message is not None and bool(self.message.flags & TC)


def classify(msg: Message) -> Outcome:
    rcode = msg.rcode
    if rcode in (NOERROR, NXDOMAIN, YXDOMAIN):
        return Outcome.SUCCESS
    if rcode in (REFUSED, NOTIMP):
        return Outcome.REFUSED
    return Outcome.SERVFAIL


def check_reply(
    data: bytes, qid: int, qname_wire: bytes, qtype: int, qclass: int, case_exact: bool
) -> Exchange | None:
    """None when the datagram is not the reply to our query (spoofed or stale); else the verdict."""
    if len(data) < 12 or struct.unpack_from("!H", data, 0)[0] != qid or not data[2] & (QR >> 8):
        return None
    try:
        msg = parse_message(data)
    except WireError:
        if data[4:6] == b"\x00\x00" and data[3] & 0xF in (FORMERR, NOTIMP, REFUSED):
            return Exchange(Outcome.REFUSED)  # a well-formed refusal without the question: not garbage
        return Exchange(Outcome.MALFORMED)
    if msg.qtype != qtype or msg.qclass != qclass:
        return None
    if (msg.qname_wire != qname_wire) if case_exact else (msg.qname_wire.lower() != qname_wire.lower()):
        return None
    return Exchange(classify(msg), data, msg)


def _family(upstream: HostPort) -> socket.AddressFamily:
    return socket.AF_INET6 if upstream.family_is_v6 else socket.AF_INET


class UdpExchange:
    """One UDP query, driven by callbacks on the loop (no task, no future): the miss path runs
    thousands of these a second and a coroutine per query costs more than the query itself."""

    __slots__ = (
        "_done",
        "_loop",
        "_on_done",
        "_qclass",
        "_qid",
        "_qname",
        "_qtype",
        "_sock",
        "_stats",
        "_timer",
        "case_exact",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        upstream: HostPort,
        query: bytes,
        qname_wire: bytes,
        qtype: int,
        qclass: int,
        timeout: float,
        stats: Stats,
        on_done: Callable[[Exchange], None],
        case_exact: bool = False,
    ) -> None:
        self._loop = loop
        self._on_done = on_done
        self._stats = stats
        self._qid = struct.unpack_from("!H", query, 0)[0]
        self._qname, self._qtype, self._qclass = qname_wire, qtype, qclass
        self.case_exact = case_exact
        self._done = False
        self._timer: asyncio.TimerHandle | None = None
        # the C socket type (socket.socket's Python wrapper costs microseconds per miss, and
        # nothing here needs it), non-blocking from birth (a system call fewer than setblocking)
        self._sock = _socket.socket(_family(upstream), socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        try:
            self._sock.connect((upstream.host, upstream.port))
            self._sock.send(query)
        except OSError:
            self._sock.close()
            self._done = True
            loop.call_soon(on_done, Exchange(Outcome.NETWORK_ERROR))
            return
        loop.add_reader(self._sock.fileno(), self._readable)
        self._timer = loop.call_later(timeout, self._finish, Exchange(Outcome.TIMEOUT))

    def _readable(self) -> None:
        while not self._done:
            try:
                data = self._sock.recv(65535)
            except BlockingIOError:
                return
            except OSError:  # e.g. ICMP port unreachable from a dead upstream
                self._finish(Exchange(Outcome.NETWORK_ERROR))
                return
            verdict = check_reply(data, self._qid, self._qname, self._qtype, self._qclass, self.case_exact)
            if verdict is None:
                self._stats.spoofed_replies += 1
                continue
            self._finish(verdict)

    def _finish(self, result: Exchange) -> None:
        if self.close():
            self._on_done(result)

    def cancel(self) -> None:
        """Give up on it without a result (``Handle``)."""
        self.close()

    def close(self) -> bool:
        """Stop listening; True if this call ended the exchange."""
        if self._done:
            return False
        self._done = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        if self._timer is not None:
            self._timer.cancel()
        return True


async def exchange_tcp(
    upstream: HostPort,
    query: bytes,
    qname_wire: bytes,
    qtype: int,
    qclass: int,
    timeout: float,
    stats: Stats,
    case_exact: bool = False,
) -> Exchange:
    qid = struct.unpack_from("!H", query, 0)[0]
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
            writer.write(struct.pack("!H", len(query)) + query)
            await writer.drain()
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                data = await reader.readexactly(length)
                verdict = check_reply(data, qid, qname_wire, qtype, qclass, case_exact)
                if verdict is not None:
                    return verdict
                stats.spoofed_replies += 1
    except TimeoutError:
        return Exchange(Outcome.TIMEOUT)
    except (OSError, asyncio.IncompleteReadError):
        return Exchange(Outcome.NETWORK_ERROR)
    finally:
        if writer is not None:
            writer.close()


class Handle(Protocol):
    """An exchange under way: ``cancel`` ends it without calling back."""

    def cancel(self) -> object: ...


class Transport(Protocol):
    """How the resolver reaches upstreams (as httpx's ``transport=``): send one query over UDP or
    TCP; ``on_done`` is called on the loop with the ``Exchange`` once, unless cancelled. Tests
    give the resolver one that answers from memory; ``SocketTransport`` is the real one."""

    def send(
        self,
        upstream: HostPort,
        query: bytes,
        qname_wire: bytes,
        qtype: int,
        qclass: int,
        timeout: float,
        *,
        tcp: bool,
        case_exact: bool,
        on_done: Callable[[Exchange], None],
    ) -> Handle: ...


class SocketTransport:
    """UDP through ``UdpExchange`` (callbacks, no task), TCP through ``exchange_tcp`` (a task)."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def send(
        self,
        upstream: HostPort,
        query: bytes,
        qname_wire: bytes,
        qtype: int,
        qclass: int,
        timeout: float,
        *,
        tcp: bool,
        case_exact: bool,
        on_done: Callable[[Exchange], None],
    ) -> Handle:
        loop = asyncio.get_running_loop()
        if not tcp:
            return UdpExchange(
                loop, upstream, query, qname_wire, qtype, qclass, timeout, self.stats, on_done, case_exact
            )
        task = loop.create_task(
            exchange_tcp(upstream, query, qname_wire, qtype, qclass, timeout, self.stats, case_exact)
        )

        def done(t: asyncio.Task[Exchange]) -> None:
            if not t.cancelled():
                on_done(t.result())

        task.add_done_callback(done)
        return task


async def exchange(
    transport: Transport,
    upstream: HostPort,
    query: bytes,
    qname_wire: bytes,
    qtype: int,
    qclass: int,
    timeout: float,
    *,
    tcp: bool = False,
    case_exact: bool = False,
) -> Exchange:
    """One exchange over ``transport``, awaited (health probes)."""
    result: asyncio.Future[Exchange] = asyncio.get_running_loop().create_future()

    def deliver(ex: Exchange) -> None:
        if not result.done():
            result.set_result(ex)

    handle = transport.send(
        upstream, query, qname_wire, qtype, qclass, timeout, tcp=tcp, case_exact=case_exact, on_done=deliver
    )
    try:
        return await result
    finally:
        handle.cancel()
