"""Drive a build of ``dnscache/_fastpath.c`` with fuzz datagrams over loopback and damaged upstream
replies (run as a script).

    python tests/fastpath_harness.py MODULE.so PACKETS SEED

Loads the extension from MODULE.so (the sanitizer build of tests/integration/
test_fastpath_sanitizers.py), fills a cache with real entries (fresh, about to expire, expired,
larger than 512 octets), and sends PACKETS datagrams from ``labs.dnsfuzz.udp_fuzz`` plus valid
queries for the cached names through a real UDP socket into ``serve()``, at clocks that move
across the entries' TTLs. Every datagram is also given to ``read_question`` and compared with the
pure-Python walker. Prints one JSON line of counts; exit status 1 on any disagreement.
"""

from __future__ import annotations

import importlib.util
import json
import mmap
import random
import socket
import sys
from array import array
from dataclasses import replace

import dns.message
import dns.rrset

from dnscache.core.cache import CacheEntry
from dnscache.core.response import CachePolicy, Variant, build_entry
from dnscache.core.stats import RCODE_SLOTS
from dnscache.core.wire import parse_message
from dnscache.server import read_question
from labs import dnsfuzz

NAMES = [f"h{i}.example.test." for i in range(50)] + ["big.example.test.", "example.test."]
POLICY = CachePolicy(min_ttl=0, max_ttl=86400, neg_max_ttl=3600, stale_window=600.0, prefetch_fraction=0.1)


def load(path: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("dnscache._fastpath", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cache(rng: random.Random) -> dict[bytes, CacheEntry]:
    entries: dict[bytes, CacheEntry] = {}
    for i, name in enumerate(NAMES):
        for edns, variant in ((None, Variant(False, False, False)), (0, Variant(True, False, False))):
            q = dns.message.make_query(name, "A", use_edns=edns)
            r = dns.message.make_response(q)
            count = 40 if name.startswith("big") else 1 + i % 3  # 40 A records: over 512 octets
            ttl = rng.choice((1, 5, 60, 3600))
            r.answer.append(
                dns.rrset.from_text(name, ttl, "IN", "A", *(f"192.0.2.{k + 1}" for k in range(count)))
            )
            wire = r.to_wire()
            entry, _ = build_entry(wire, parse_message(wire), variant, POLICY, 1000.0)
            key = read_question(q.to_wire())
            assert key is not None
            entries[key[0]] = entry
    return entries


def replies(fast, rng: random.Random, count: int, counts: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    """The miss engine's reply walker and entry builder on damaged upstream replies: whatever
    it builds must be what the Python pipeline builds."""
    policies = [replace(POLICY, minimal_responses=m) for m in (True, False)]  # both builders' paths
    as_tuple = {
        p: (p.min_ttl, p.max_ttl, p.neg_max_ttl, p.stale_window, p.prefetch_fraction, p.minimal_responses)
        for p in policies
    }
    originals = []
    for name in NAMES:
        q = dns.message.make_query(name, "A", use_edns=0)
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.1", "192.0.2.2"))
        r.authority.append(dns.rrset.from_text("example.test.", 60, "IN", "NS", "ns.example.test."))
        originals.append((r.to_wire(), read_question(q.to_wire())))
    counts["replies_built"] = counts["replies_damaged"] = 0
    for _ in range(count):
        wire, question = rng.choice(originals)
        assert question is not None
        damaged = bytearray(wire)
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.2 and damaged:
                del damaged[rng.randrange(len(damaged)) :]
            elif damaged:
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        counts["replies_damaged"] += 1
        key = question[0]
        policy = rng.choice(policies)
        built = fast.entry_from_reply(bytes(damaged), key, as_tuple[policy], 1000.0, CacheEntry)
        if built is None:
            continue
        counts["replies_built"] += 1
        try:
            msg = parse_message(bytes(damaged))
            expected, cacheable = build_entry(
                bytes(damaged), msg, Variant(True, False, False), policy, 1000.0
            )
        except ValueError:
            expected, cacheable = None, False
        if not cacheable or expected is None or bytes(expected) != bytes(built):
            counts["mismatches"] += 1


def main() -> int:
    path, packets, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    fast = load(path)
    rng = random.Random(seed)
    entries = cache(rng)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    workspace = mmap.mmap(-1, fast.WORKSPACE_SIZE)
    rcodes = array("Q", bytes(8 * RCODE_SLOTS))
    valid = [
        dns.message.make_query(
            "".join(c.upper() if rng.random() < 0.3 else c for c in name), "A", use_edns=edns
        ).to_wire()
        for name in NAMES
        for edns in (None, 0)
    ]
    counts = dict.fromkeys(("sent", "received", "answered", "misses", "prefetch", "replies", "mismatches"), 0)
    examples: list[str] = []
    batch: list[bytes] = []
    totals = array("Q", bytes(8 * 3))
    rest: list[tuple[list, list]] = []
    clock = [1000.0]
    reader = fast.Reader(
        server.fileno(),
        workspace,
        entries,
        rcodes,
        totals,
        lambda m, p: rest.append((m, p)),
        lambda: clock[0],
    )
    use_reader = [False]

    def flush(now: float) -> None:
        for d in batch:
            try:
                client.sendto(d, server.getsockname())
                counts["sent"] += 1
            except OSError:
                pass  # EMSGSIZE for an oversize blob: nothing sent
        batch.clear()
        clock[0] = now
        while True:
            misses: list = []
            prefetch: list = []
            if use_reader[0]:  # every other batch through the loop's callback object
                before = list(totals)
                rest.clear()
                reader()
                got, answered = totals[0] - before[0], totals[1] - before[1]
                for m, p in rest:
                    misses += m
                    prefetch += p
            else:
                got, answered, _ = fast.serve(
                    server.fileno(), workspace, entries, now, rcodes, misses, prefetch
                )
            counts["received"] += got
            counts["answered"] += answered
            counts["misses"] += len(misses)
            counts["prefetch"] += len(prefetch)
            for data, _addr, question in misses:
                if question != read_question(data):
                    counts["mismatches"] += 1
                    examples.append(data.hex())
            if got == 0:
                break
        use_reader[0] = not use_reader[0]
        while True:
            try:
                client.recv(65535)
                counts["replies"] += 1
            except BlockingIOError:
                break

    for i, packet in enumerate(dnsfuzz.udp_fuzz(seed, packets, NAMES)):
        data = packet.data
        if fast.read_question(data) != read_question(data):
            counts["mismatches"] += 1
            examples.append(data.hex())
        batch.append(data)
        if i % 3 == 0:
            batch.append(rng.choice(valid))
        if len(batch) >= 48:
            flush(1000.0 + (i % 5000) * 0.002 + rng.choice((0.0, 0.0, 4.5, 59.5, 700.0)))
    flush(1001.0)
    reader.close()
    replies(fast, rng, packets // 4, counts)
    counts["rcodes_counted"] = sum(rcodes)
    counts["examples"] = examples[:3]  # type: ignore[assignment]
    print(json.dumps(counts))
    return 1 if counts["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
