"""The wire walker against dnspython-built messages, and its refusal of malformed input."""

from __future__ import annotations

import contextlib

import dns.message
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnscache.core import wire
from dnscache.core.wire import WireError, parse_message, question_end, read_name


def response(*answers: str, authority: tuple[str, ...] = (), use_edns: bool = True) -> bytes:
    q = dns.message.make_query("www.example.test", "A", use_edns=0 if use_edns else None, payload=1232)
    r = dns.message.make_response(q, our_payload=1232)
    for section, texts in ((r.answer, answers), (r.authority, authority)):
        for text in texts:
            name, ttl, cls, rtype, *rdata = text.split()
            section.append(dns.rrset.from_text(name, int(ttl), cls, rtype, " ".join(rdata)))
    return r.to_wire()


def test_parse_records_ttls_and_edns() -> None:
    buf = response(
        "www.example.test. 300 IN CNAME web.example.test.",
        "web.example.test. 60 IN A 198.18.0.1",
        authority=("example.test. 3600 IN NS ns.example.test.",),
    )
    msg = parse_message(buf)
    assert msg.qname == (b"www", b"example", b"test")
    assert [r.ttl for r in msg.records] == [300, 60, 3600]
    assert [r.section for r in msg.records] == [wire.ANSWER, wire.ANSWER, wire.AUTHORITY]
    assert msg.edns is not None and msg.edns.udp_size == 1232
    assert msg.records[-1].end == msg.opt_start
    # TTL offsets point at the TTLs
    for r in msg.records:
        assert int.from_bytes(buf[r.ttl_off : r.ttl_off + 4], "big") == r.ttl
    cname_target, _ = read_name(buf, msg.records[0].rdata_off)
    assert cname_target == (b"web", b"example", b"test")


def test_question_end_fast_walk_matches_parser() -> None:
    buf = dns.message.make_query("Some.Name.Example", "AAAA").to_wire()
    assert question_end(buf) == parse_message(buf).question_end == len(buf)


@pytest.mark.parametrize(
    ("buf", "why"),
    [
        (b"\x00" * 11, "shorter than a DNS header"),
        (b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00" + b"\x00\x00\x01\x00\x01" * 2, "one question"),
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", "pointer"),
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x09ab\x00\x00\x01\x00\x01", "past the end"),
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01", "truncated question"),
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01junk", "trailing"),
        (b"\x12\x34\x01\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x00\x01", "record"),
        (
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x41" + b"a" * 65 + b"\x00\x00\x01\x00\x01",
            "label",
        ),
    ],
)
def test_malformed_messages_raise(buf: bytes, why: str) -> None:
    with pytest.raises(WireError, match=why):
        parse_message(buf)


def test_name_longer_than_255_is_rejected() -> None:
    label = b"\x3f" + b"a" * 63
    buf = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + label * 5 + b"\x00\x00\x01\x00\x01"
    with pytest.raises(WireError, match="255"):
        parse_message(buf)
    assert question_end(buf) == -1


def test_build_query_is_understood_by_dnspython() -> None:
    q = wire.build_query(
        0xBEEF, wire.name_to_wire(wire.name_from_text("a.example.test")), 28, 1, do=True, cd=True
    )
    m = dns.message.from_wire(q)
    assert m.id == 0xBEEF and m.question[0].rdtype == 28
    assert m.ednsflags & dns.flags.DO and m.flags & dns.flags.CD and m.payload == 1232


def test_error_reply_echoes_question_and_edns() -> None:
    q = dns.message.make_query("x.example.test", "A", use_edns=0)
    buf = q.to_wire()
    msg = parse_message(buf)
    out = dns.message.from_wire(wire.error_reply(buf, wire.BADVERS, msg.question_end, msg.edns))
    assert out.id == q.id and out.rcode() == dns.rcode.BADVERS and out.question == q.question


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    with contextlib.suppress(WireError):
        parse_message(data)
    question_end(data) if len(data) >= 12 else None


@pytest.mark.parametrize(
    ("qtype", "qclass", "rcode"),
    [(1, 1, None), (28, 1, None), (255, 1, None), (0xC467, 1, None), (65, 1, None),
     (1, 3, wire.REFUSED), (1, 0x5713, wire.REFUSED), (252, 1, wire.REFUSED), (251, 1, wire.REFUSED),
     (250, 1, wire.NOTIMP), (0, 1, wire.FORMERR), (41, 1, wire.FORMERR)],
)  # fmt: skip
def test_questions_answered_locally(qtype: int, qclass: int, rcode: int | None) -> None:
    assert wire.local_rcode(qtype, qclass) == rcode
