"""The compiled hit path (``dnscache/_fastpath.c``) against the pure-Python one it replaces.

- its question walker agrees with ``dnscache.server.read_question`` on every input: hypothesis
  over arbitrary bytes and over real queries with one octet changed or cut short;
- the entry layout it reads is the one ``dnscache.core.cache`` writes;
- ``serve`` on a real loopback socket: a hit answered with the client's ID, RD bit and question
  case and TTLs aged; misses, expired entries, answers too big for the client and garbage
  handed back untouched; prefetch candidates reported; rcodes counted; a bad workspace refused.
"""

from __future__ import annotations

import contextlib
import mmap
import socket
import time
from array import array
from collections.abc import Iterator

import dns.message
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnscache import _fastpath  # type: ignore[attr-defined]
from dnscache.core.cache import _META, HITS, REFERENCED, CacheEntry, cache_key, variant_byte
from dnscache.core.response import CachePolicy, Variant, build_entry
from dnscache.core.stats import RCODE_SLOTS
from dnscache.core.wire import EDNS_UDP_SIZE, parse_message
from dnscache.server import read_question

PLAIN = Variant(edns=False, do=False, cd=False)
EDNS = Variant(edns=True, do=False, cd=False)
POLICY = CachePolicy(min_ttl=0, max_ttl=86400, neg_max_ttl=3600, stale_window=600.0, prefetch_fraction=0.1)


def test_the_layout_it_reads_is_the_one_the_cache_writes() -> None:
    assert _META.size == _fastpath.META_SIZE
    assert _fastpath.OUT_SIZE == EDNS_UDP_SIZE
    assert _fastpath.RCODE_SLOTS == RCODE_SLOTS
    assert (HITS, REFERENCED) == (28, 29)


def queries() -> st.SearchStrategy[bytes]:
    label = st.text("abcXYZ09-", min_size=1, max_size=20)
    name = st.lists(label, min_size=1, max_size=4).map(".".join)
    return st.builds(
        lambda n, t, edns, do: dns.message.make_query(
            n, t, use_edns=edns, want_dnssec=do and edns is not None
        ).to_wire(),
        name,
        st.sampled_from(["A", "AAAA", "MX", "TXT"]),
        st.sampled_from([None, 0, 1]),
        st.booleans(),
    )


@settings(max_examples=3000, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_it_reads_arbitrary_bytes_as_python_does(data: bytes) -> None:
    assert _fastpath.read_question(data) == read_question(data)


@settings(max_examples=3000, deadline=None)
@given(queries(), st.integers(0, 400), st.integers(0, 255), st.booleans())
def test_it_reads_damaged_queries_as_python_does(wire: bytes, at: int, octet: int, cut: bool) -> None:
    data = bytearray(wire)
    if cut:
        data = data[: at % (len(data) + 1)]
    else:
        data[at % len(data)] = octet
    assert _fastpath.read_question(bytes(data)) == read_question(bytes(data))


def reply_to(query: bytes, *answers: str, rcode: int = 0) -> bytes:
    r = dns.message.make_response(dns.message.from_wire(query))
    r.set_rcode(rcode)
    for text in answers:
        name, ttl, cls, rtype, *rdata = text.split()
        r.answer.append(dns.rrset.from_text(name, int(ttl), cls, rtype, " ".join(rdata)))
    return r.to_wire()


def entry_for(query: bytes, variant: Variant, *answers: str, now: float = 1000.0) -> tuple[bytes, CacheEntry]:
    buf = reply_to(query, *answers)
    entry, keep = build_entry(buf, parse_message(buf), variant, POLICY, now)
    assert keep
    q = read_question(query)
    assert q is not None
    return q[0], entry


class Wire:
    """A server socket and a client socket on loopback, and serve() called as the listener does."""

    def __init__(self) -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.setblocking(False)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))
        self.client.settimeout(2)
        self.workspace = mmap.mmap(-1, _fastpath.WORKSPACE_SIZE)
        self.rcodes = array("Q", bytes(8 * RCODE_SLOTS))
        self.entries: dict[bytes, CacheEntry] = {}

    def send(self, *datagrams: bytes) -> None:
        for d in datagrams:
            self.client.sendto(d, self.server.getsockname())

    def serve(self, now: float) -> tuple[tuple[int, int, int], list, list]:
        misses: list = []
        prefetch: list = []
        got = _fastpath.serve(
            self.server.fileno(), self.workspace, self.entries, now, self.rcodes, misses, prefetch
        )
        return got, misses, prefetch

    def close(self) -> None:
        self.server.close()
        self.client.close()
        with contextlib.suppress(ValueError, BufferError):
            self.workspace.close()


@pytest.fixture
def wire() -> Iterator[Wire]:
    w = Wire()
    yield w
    w.close()


def test_a_hit_is_answered_as_the_python_path_answers_it(wire: Wire) -> None:
    stored = dns.message.make_query("www.example.test", "A", use_edns=0).to_wire()
    key, entry = entry_for(stored, EDNS, "www.example.test. 300 IN A 192.0.2.1")
    wire.entries[key] = entry
    q = dns.message.make_query("WwW.ExAmple.TEST", "A", use_edns=0, id=4242)
    q.flags &= ~dns.flags.RD
    wire.send(q.to_wire())
    (got, answered, unsent), misses, prefetch = wire.serve(1010.4)
    assert (got, answered, unsent, misses, prefetch) == (1, 1, 0, [], [])
    out = dns.message.from_wire(wire.client.recv(2048))
    assert out.id == 4242 and not out.flags & dns.flags.RD and out.flags & dns.flags.QR
    assert out.question[0].name.to_text() == "WwW.ExAmple.TEST."  # the client's case
    assert out.answer[0].ttl == 290  # aged by the whole seconds since it was stored
    assert entry[HITS] == 1 and entry[REFERENCED] == 1
    assert wire.rcodes[0] == 1


def test_what_it_cannot_answer_goes_to_python_untouched(wire: Wire) -> None:
    plain = dns.message.make_query("big.example.test", "TXT", use_edns=None).to_wire()
    key, entry = entry_for(plain, PLAIN, *[f"big.example.test. 300 IN TXT {'x' * 200}{i}" for i in range(4)])
    wire.entries[key] = entry  # 800+ octets: more than a client without EDNS takes (512)
    stale_q = dns.message.make_query("old.example.test", "A", use_edns=0).to_wire()
    skey, stale = entry_for(stale_q, EDNS, "old.example.test. 5 IN A 192.0.2.2", now=900.0)
    wire.entries[skey] = stale  # expired at 905
    cold = dns.message.make_query("cold.example.test", "A", use_edns=0).to_wire()
    garbage = b"\x00\x01garbage that is no query"
    wire.send(plain, stale_q, cold, garbage)
    (got, answered, _), misses, _ = wire.serve(1000.0)
    assert (got, answered) == (4, 0)
    client = wire.client.getsockname()
    assert [(m[0], m[1]) for m in misses] == [(d, client) for d in (plain, stale_q, cold, garbage)]
    assert [m[2] for m in misses] == [read_question(d) for d in (plain, stale_q, cold, garbage)]
    assert misses[3][2] is None


def test_an_entry_past_its_prefetch_point_is_reported(wire: Wire) -> None:
    q = dns.message.make_query("hot.example.test", "A", use_edns=0).to_wire()
    key, entry = entry_for(q, EDNS, "hot.example.test. 100 IN A 192.0.2.3")
    wire.entries[key] = entry
    wire.send(q)
    (_, answered, _), _, prefetch = wire.serve(1095.0)  # 90 % of 100 s: the last tenth
    assert answered == 1 and prefetch == [(key, entry)]
    assert dns.message.from_wire(wire.client.recv(2048)).answer[0].ttl == 5


def test_a_batch_mixes_hits_and_misses_and_an_empty_socket_is_nothing(wire: Wire) -> None:
    q = dns.message.make_query("www.example.test", "A", use_edns=0).to_wire()
    key, entry = entry_for(q, EDNS, "www.example.test. 300 IN A 192.0.2.1")
    wire.entries[key] = entry
    nx = dns.message.make_query("nx.example.test", "A", use_edns=0).to_wire()
    wire.send(*([q] * 70), nx)
    (got, answered, _), misses, _ = wire.serve(1001.0)
    assert (got, answered, misses) == (64, 64, [])  # one batch is at most 64 datagrams
    (got, answered, _), misses, _ = wire.serve(1001.0)
    assert (got, answered, len(misses)) == (7, 6, 1)
    assert wire.serve(1001.0)[0] == (0, 0, 0)
    assert wire.rcodes[0] == 70


def test_bad_arguments_are_refused(wire: Wire) -> None:
    small = bytearray(100)
    with pytest.raises(ValueError, match="WORKSPACE_SIZE"):
        _fastpath.serve(wire.server.fileno(), small, {}, 0.0, wire.rcodes, [], [])
    with pytest.raises(ValueError, match="24 counters"):
        _fastpath.serve(wire.server.fileno(), wire.workspace, {}, 0.0, array("Q", [0]), [], [])
    with pytest.raises(OSError):
        _fastpath.serve(-1, wire.workspace, {}, 0.0, wire.rcodes, [], [])


def test_a_key_is_what_cache_key_makes() -> None:
    q = dns.message.make_query("MiXeD.Test", "AAAA", use_edns=0, want_dnssec=True).to_wire()
    got = _fastpath.read_question(q)
    assert got is not None
    assert got[0] == cache_key(q[12 : got[1]], variant_byte(True, True, False))


def test_trim_gives_free_heap_memory_back() -> None:
    _fastpath.trim()  # whatever was free before
    blocks = [bytes(100) * 1000 for _ in range(500)]  # 100 kB heap chunks (below mmap's threshold)
    del blocks[::2]  # every other one freed: whole free pages inside the heap
    assert _fastpath.trim() is True  # glibc released some of them
    assert all(b == bytes(100_000) for b in blocks)  # and nothing live was touched


def test_the_reader_counts_hands_over_the_rest_and_stops_when_closed(wire: Wire) -> None:
    q = dns.message.make_query("www.example.test", "A", use_edns=0).to_wire()
    key, entry = entry_for(q, EDNS, "www.example.test. 100 IN A 192.0.2.1")
    wire.entries[key] = entry
    counts = array("Q", bytes(8 * 3))
    handed: list[tuple[list, list]] = []
    now = [1001.0]
    reader = _fastpath.Reader(
        wire.server.fileno(), wire.workspace, wire.entries, wire.rcodes, counts,
        lambda misses, prefetch: handed.append((misses, prefetch)), lambda: now[0],
    )  # fmt: skip
    wire.send(q, q)
    reader()
    assert list(counts) == [2, 2, 0] and handed == []  # all answered: Python is not called
    cold = dns.message.make_query("cold.example.test", "A", use_edns=0).to_wire()
    now[0] = 1095.0  # past the prefetch point
    wire.send(q, cold)
    reader()
    assert list(counts) == [4, 3, 0]
    ((misses, prefetch),) = handed
    assert [m[0] for m in misses] == [cold] and prefetch == [(key, entry)]
    reader()  # nothing there: nothing counted, nothing handed over
    assert list(counts) == [4, 3, 0] and len(handed) == 1
    reader.close()
    wire.send(q)
    reader()  # closed (a wake-up still queued on the loop): a no-op
    assert list(counts) == [4, 3, 0]
    wire.workspace.close()  # the reader let go of the mapping


def test_a_reader_asks_for_one_datagram_while_the_load_is_light(wire: Wire) -> None:
    q = dns.message.make_query("www.example.test", "A", use_edns=0).to_wire()
    key, entry = entry_for(q, EDNS, "www.example.test. 100 IN A 192.0.2.1")
    wire.entries[key] = entry
    counts = array("Q", bytes(8 * 3))
    reader = _fastpath.Reader(
        wire.server.fileno(), wire.workspace, wire.entries, wire.rcodes, counts, print, lambda: 1001.0
    )
    assert reader.batch == _fastpath.BATCH
    wire.send(q)
    reader()
    assert reader.batch == 1  # a batch found one datagram: no second, failing, receive next time
    batches = []
    for _ in range(_fastpath.SINGLES):
        time.sleep(0.002)  # idle between wake-ups, each finding one datagram
        wire.send(q)
        reader()
        batches.append(reader.batch)
    assert batches == [1] * (_fastpath.SINGLES - 1) + [_fastpath.BATCH]  # then a batch probes again
    wire.send(q)
    reader()
    assert reader.batch == 1
    wire.send(*[q] * 140)  # a queue forms: singles give way to batches within SINGLES wake-ups
    received: list[int] = []
    while sum(received) < 140:
        before = counts[0]
        reader()
        received.append(counts[0] - before)
        assert len(received) <= _fastpath.SINGLES + 3
    assert max(received) == _fastpath.BATCH
    assert list(counts) == [158, 158, 0]
    for _ in range(158):
        assert dns.message.from_wire(wire.client.recv(2048)).answer[0].name.to_text() == "www.example.test."


def test_a_reader_refuses_bad_arguments(wire: Wire) -> None:
    with pytest.raises(TypeError, match="callable"):
        _fastpath.Reader(0, wire.workspace, {}, wire.rcodes, array("Q", bytes(24)), None)
    with pytest.raises(ValueError, match="3 counters"):
        _fastpath.Reader(0, wire.workspace, {}, wire.rcodes, array("Q", [0]), print)
