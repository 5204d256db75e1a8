"""Behaviour 8: malformed, truncated, oversized and garbage queries get FORMERR or are dropped,
never a crash or a stuck task; a fuzz storm over UDP and TCP leaves the server resolving."""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import struct
import time

import dns.message
import dns.opcode
import dns.rcode
import pytest

from netkit.lab.dnspeers import NsdServer, Zone
from tests.conftest import hp
from tests.dnshelpers import ServerThread, answers, running_server, wait_for

pytestmark = pytest.mark.peers


def exchange(srv: ServerThread, wire: bytes) -> dns.message.Message | None:
    raw = srv.query_wire(wire, timeout=1.0)
    return None if raw is None else dns.message.from_wire(raw, ignore_trailing=True)


def header(
    qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QUESTION = b"\x02h1\x07example\x04test\x00\x00\x01\x00\x01"


def test_specific_bad_queries(nsd: NsdServer) -> None:
    with running_server(upstream=[hp(nsd)]) as srv:
        assert exchange(srv, b"\x12") is None  # shorter than a header: dropped
        assert exchange(srv, header(flags=0x8100) + QUESTION) is None  # a response: never answered
        r = exchange(srv, header(qd=2) + QUESTION + QUESTION)
        assert r is not None and r.rcode() == dns.rcode.FORMERR and r.id == 0x1234
        r = exchange(srv, header() + QUESTION[:-2])  # truncated question
        assert r is not None and r.rcode() == dns.rcode.FORMERR
        r = exchange(srv, header(an=1) + QUESTION)  # claims an answer it does not carry
        assert r is not None and r.rcode() == dns.rcode.FORMERR
        raw = srv.query_wire(header(flags=0x2900) + QUESTION)  # opcode UPDATE
        assert (
            raw is not None and raw[3] & 0xF == dns.rcode.NOTIMP and (raw[2] >> 3) & 0xF == dns.opcode.UPDATE
        )
        r = exchange(srv, header() + b"\x02h1\x07example\x04test\x00\x00\xfc\x00\x01")  # AXFR over UDP
        assert r is not None and r.rcode() == dns.rcode.REFUSED
        r = exchange(srv, header() + QUESTION + b"trailing junk")
        assert r is not None and r.rcode() == dns.rcode.FORMERR
        r = exchange(srv, header() + b"\x02h1\xc0\x0c\x00\x01\x00\x01")  # pointer loop in the question
        assert r is not None and r.rcode() == dns.rcode.FORMERR
        big = header() + QUESTION + b"\x00" * 60000  # oversized
        assert exchange(srv, big) is not None
        assert srv.stats.dropped == 2
        assert answers(srv.query("h1.example.test"))


def valid_queries(rng: random.Random, n: int) -> list[bytes]:
    out = []
    for _i in range(n):
        q = dns.message.make_query(
            f"h{rng.randrange(200)}.example.test",
            rng.choice(["A", "AAAA", "TXT", "MX", "ANY"]),
            use_edns=rng.choice([None, 0]),
            want_dnssec=rng.random() < 0.2,
        )
        out.append(q.to_wire())
    return out


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(5)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif op == 2 and len(b) > 1:
            del b[rng.randrange(len(b)) :]
        elif op == 3:
            b += rng.randbytes(rng.randrange(1, 40))
        elif op == 4 and len(b) > 4:
            i = rng.randrange(len(b) - 2)
            b[i : i + 2] = rng.choice([b"\xc0\x0c", b"\xff\xff", b"\x00\x00", b"\x3f\x3f"])
    return bytes(b)


def scapy_fuzz(n: int) -> list[bytes]:
    from scapy.all import fuzz, raw
    from scapy.layers.dns import DNS, DNSQR, DNSRR

    out: list[bytes] = []
    while len(out) < n:
        try:
            layer = fuzz(DNS(qd=DNSQR(), an=DNSRR())) if len(out) % 2 else fuzz(DNS(qd=DNSQR()))
            out.append(raw(layer))
        except Exception:  # scapy cannot build some of its own random combinations
            continue
    return out


def test_fuzz_storm_udp_and_tcp(
    nsd: NsdServer, lab_zone_data: Zone, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(20261125)
    base = valid_queries(rng, 300)
    udp_packets = scapy_fuzz(5000) + [mutate(rng, rng.choice(base)) for _ in range(5000)]
    udp_packets += [rng.randbytes(rng.randrange(0, 600)) for _ in range(1000)]
    rng.shuffle(udp_packets)
    tcp_messages = [mutate(rng, rng.choice(base)) for _ in range(2000)] + scapy_fuzz(500)
    caplog.set_level(logging.ERROR)
    with running_server(upstream=[hp(nsd)], deadline=0.5, attempt_timeout=0.4) as srv:
        srv.query("h7.example.test")  # something in the cache before the storm
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            for i, pkt in enumerate(udp_packets):
                try:
                    s.sendto(pkt, ("127.0.0.1", srv.port))
                except BlockingIOError:
                    time.sleep(0.001)
                if i % 200 == 0:
                    time.sleep(0.005)  # let the server breathe so the kernel queue does not just drop
                    while True:  # drain our answers
                        try:
                            s.recv(65535)
                        except BlockingIOError:
                            break
                if i % 1000 == 0:  # valid queries keep resolving during the storm
                    assert answers(srv.query("h7.example.test")) == lab_zone_data.rdata("h7")

        # TCP: fuzzed messages with honest framing, then lying length prefixes and slowloris
        # (the server may close a connection after a message it cannot frame: reconnect then)
        c = socket.create_connection(("127.0.0.1", srv.port), timeout=2)
        try:
            for msg in tcp_messages:
                try:
                    c.sendall(struct.pack("!H", len(msg)) + msg)
                except OSError:
                    c.close()
                    c = socket.create_connection(("127.0.0.1", srv.port), timeout=2)
        finally:
            c.close()
        liars = []
        for length in (0, 5, 11, 4000, 65535):
            c = socket.create_connection(("127.0.0.1", srv.port), timeout=2)
            c.sendall(struct.pack("!H", length) + base[0][: min(length, 20)])
            liars.append(c)
        slow = socket.create_connection(("127.0.0.1", srv.port), timeout=2)
        slow.sendall(b"\x00")  # half a length prefix, then nothing
        try:
            # while those hang, others are served over UDP and TCP
            assert answers(srv.query("h9.example.test", tcp=True)) == lab_zone_data.rdata("h9")
            assert answers(srv.query("h9.example.test")) == lab_zone_data.rdata("h9")
            # the lying connections are closed by the server within the message timeout
            for c in liars[1:]:
                c.settimeout(4)
                with contextlib.suppress(ConnectionResetError):
                    assert c.recv(65535) in (b"",)
        finally:
            for c in [*liars, slow]:
                c.close()

        assert wait_for(lambda: srv.server._slow == 0, timeout=5), "tasks stuck after the storm"
        assert answers(srv.query(f"h{rng.randrange(200)}.example.test"))
        total = srv.stats.requests_udp + srv.stats.requests_tcp
        assert total >= 10000
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[:3]
