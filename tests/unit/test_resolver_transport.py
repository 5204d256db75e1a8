"""The resolver through its transport seam: upstreams answered from memory, the socket transport
never used."""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.message
import dns.rrset
import pytest

from dnscache import transport
from dnscache.core.cache import cache_key, variant_byte
from dnscache.core.config import load
from dnscache.core.stats import Stats
from dnscache.core.upstreams import Outcome
from dnscache.core.wire import name_to_wire
from dnscache.resolver import Resolver
from dnscache.transport import Exchange, check_reply
from netkit.base.addr import HostPort

LIVE, DEAD = "192.0.2.1", "192.0.2.2"  # never reached: nothing here opens a socket


@dataclass
class Sent:
    upstream: str
    tcp: bool


@dataclass
class MemoryTransport:
    """``LIVE`` answers at once with an A record; ``DEAD`` lets every query time out."""

    sent: list[Sent] = field(default_factory=list)

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
    ) -> asyncio.Handle | asyncio.TimerHandle:
        self.sent.append(Sent(upstream.host, tcp))
        loop = asyncio.get_running_loop()
        if upstream.host == DEAD:
            return loop.call_later(timeout, on_done, Exchange(Outcome.TIMEOUT))
        reply = dns.message.make_response(dns.message.from_wire(query))
        reply.answer.append(dns.rrset.from_text(reply.question[0].name, 300, "IN", "A", "198.51.100.7"))
        qid = struct.unpack_from("!H", query)[0]
        verdict = check_reply(reply.to_wire(), qid, qname_wire, qtype, qclass, case_exact)
        assert verdict is not None
        return loop.call_soon(on_done, verdict)


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the resolver went to the socket transport")

    monkeypatch.setattr(transport.SocketTransport, "send", refuse)
    monkeypatch.setattr(transport, "exchange_tcp", refuse)
    monkeypatch.setattr(transport, "UdpExchange", refuse)


def key(name: str) -> bytes:
    return cache_key(
        name_to_wire(tuple(name.encode().split(b"."))) + struct.pack("!HH", 1, 1),
        variant_byte(False, False, False),
    )


def resolver(transport: MemoryTransport, *upstreams: str) -> Resolver:
    cfg = load(
        {"listen": ["127.0.0.1:5399"], "upstream": [f"{u}:53" for u in upstreams], "attempt_timeout": 0.2}
    )
    return Resolver(cfg, Stats(), transport=transport)


def test_a_miss_is_answered_through_the_transport(no_sockets: None) -> None:
    async def run() -> tuple[bool, bool, int]:
        t = MemoryTransport()
        r = resolver(t, LIVE)
        entry, stale = await r.lookup(key("www.example.test"))
        again, _ = await r.lookup(key("www.example.test"))  # a hit: no second send
        await r.close()
        return entry is not None and again is entry, stale, len(t.sent)

    assert asyncio.run(run()) == (True, False, 1)


def test_a_dead_upstream_is_left_for_the_live_one(no_sockets: None) -> None:
    async def run() -> tuple[bool, list[Sent]]:
        t = MemoryTransport()
        r = resolver(t, DEAD, LIVE)
        for _, pool in r.pools:  # the dead one first, and no exploring: the order is the test's
            pool.policy = dataclasses.replace(pool.policy, explore_probability=0.0)
            for state in pool.states:
                state.srtt = 0.2 if state.address.host == LIVE else 0.01
        found = 0
        for i in range(20):
            entry, _ = await r.lookup(key(f"n{i}.example.test"))
            found += entry is not None
        await r.close()
        return found == 20, t.sent

    answered, sent = asyncio.run(run())
    assert answered
    assert sent[0].upstream == DEAD and not any(s.tcp for s in sent)
    assert [s.upstream for s in sent[-5:]] == [LIVE] * 5  # the dead one no longer comes first
