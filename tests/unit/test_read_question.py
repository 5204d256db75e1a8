"""The fast path's question reader agrees with the full parser and declines anything unusual."""

from __future__ import annotations

import dns.message
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnscache.core.cache import cache_key, variant_byte
from dnscache.core.wire import WireError, parse_message
from dnscache.server import read_question


@pytest.mark.parametrize(
    ("edns", "payload", "do", "limit", "variant"),
    [
        (None, 0, False, 512, (False, False)),
        (0, 4096, False, 1232, (True, False)),
        (0, 100, True, 512, (True, True)),
    ],
)
def test_ordinary_queries(
    edns: int | None, payload: int, do: bool, limit: int, variant: tuple[bool, bool]
) -> None:
    q = dns.message.make_query(
        "Www.Example.TEST", "AAAA", use_edns=edns, payload=payload or None, want_dnssec=do
    )
    wire = q.to_wire()
    got = read_question(wire)
    msg = parse_message(wire)
    assert got == (
        cache_key(wire[12 : msg.question_end], variant_byte(*variant, False)),
        msg.question_end,
        limit,
    )


@pytest.mark.parametrize(
    "wire",
    [
        dns.message.make_query("a.test", "A", use_edns=1).to_wire(),  # EDNS 1: BADVERS on the slow path
        b"\x00\x01\x81\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01",  # a response
        b"\x00\x01\x29\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01",  # opcode UPDATE
        b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01x",  # trailing octet
        b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # compressed question
        b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x3f" + b"a" * 63 + (b"\x3f" + b"a" * 63) * 3
        + b"\x00\x00\x01\x00\x01",  # a 257-octet name
    ],
)  # fmt: skip
def test_unusual_queries_go_to_the_slow_path(wire: bytes) -> None:
    assert read_question(wire) is None


@settings(max_examples=3000, deadline=None)
@given(st.binary(min_size=12, max_size=300))
def test_whatever_it_accepts_the_parser_accepts_too(data: bytes) -> None:
    got = read_question(data)
    if got is None:
        return
    try:
        msg = parse_message(data)
    except WireError:
        pytest.fail(f"fast path accepted what the parser rejects: {data!r}")
    assert got[1] == msg.question_end
