"""Counters kept as plain ints on the hot path and read by the metrics collector (pure).

Incrementing an attribute costs a few tens of nanoseconds; prometheus-client objects cost
microseconds with their locks, which the hit path cannot afford.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field

# request duration histogram buckets (seconds), CoreDNS-like
DURATION_BUCKETS: tuple[float, ...] = (
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.512,
    1.024,
    2.048,
    4.096,
    8.192,
)


RCODE_SLOTS = 24
ENGINE_COUNTERS = 6


@dataclass(slots=True)
class Stats:
    requests_udp: int = 0  # seen by Python (the compiled path counts into ``fast``): see udp_requests
    requests_tcp: int = 0
    cache_hits: int = 0  # hits answered on the slow path (TCP, truncation)
    fast_hits: int = 0  # answered by the Python hit path; fast_answers adds the compiled one's
    cache_misses: int = 0
    served_stale: int = 0
    prefetches: int = 0
    coalesced: int = 0
    hedges: int = 0  # second queries sent because the first upstream was slow
    dropped: int = 0  # queries not answered at all (garbage, responses, overload); see drops
    scrubbed_records: int = 0
    spoofed_replies: int = 0  # upstream replies that did not match the query
    tcp_connections: int = 0
    rcodes: list[int] = field(default_factory=lambda: [0] * RCODE_SLOTS)  # index: rcode (last slot: above)
    # what the compiled hit path counts, in C, into these arrays: the rcodes of its answers, and
    # datagrams received, answered and answered but not sent (a full send buffer)
    fast_rcodes: array[int] = field(default_factory=lambda: array("Q", bytes(8 * RCODE_SLOTS)))
    fast: array[int] = field(default_factory=lambda: array("Q", bytes(8 * 3)))
    # what the compiled miss path counts (dnscache/_upstream.c): misses it took, coalesced,
    # spoofed replies, answers not sent, upstream queries started, answers sent; and its
    # request durations: counts per bucket (+Inf), then the sum as a float's bits
    engine: array[int] = field(default_factory=lambda: array("Q", bytes(8 * ENGINE_COUNTERS)))
    engine_durations: array[int] = field(
        default_factory=lambda: array("Q", bytes(8 * (len(DURATION_BUCKETS) + 2)))
    )
    # histogram: counts per bucket (+Inf last), sum; hits are counted in the first bucket
    duration_counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0

    def observe(self, seconds: float) -> None:
        i = 0
        buckets = DURATION_BUCKETS
        while i < len(buckets) and seconds > buckets[i]:
            i += 1
        self.duration_counts[i] += 1
        self.duration_sum += seconds

    def count_rcode(self, rcode: int) -> None:
        self.rcodes[min(rcode, RCODE_SLOTS - 1)] += 1

    @property
    def udp_requests(self) -> int:
        """UDP queries received, by either hit path."""
        return self.requests_udp + self.fast[0]

    @property
    def fast_answers(self) -> int:
        """Hits answered on a fast path (compiled or Python)."""
        return self.fast_hits + self.fast[1] - self.fast[2]

    @property
    def drops(self) -> int:
        """Queries not answered at all, and compiled-path answers the kernel did not take."""
        return self.dropped + self.fast[2] + self.engine[3]

    @property
    def misses(self) -> int:
        """Cache misses, on either miss path."""
        return self.cache_misses + self.engine[0]

    @property
    def coalesced_queries(self) -> int:
        """Misses that waited on a flight already under way, on either miss path."""
        return self.coalesced + self.engine[1]

    @property
    def spoofed(self) -> int:
        """Upstream datagrams that were not the reply to our query, on either miss path."""
        return self.spoofed_replies + self.engine[2]

    def durations(self) -> tuple[list[int], float]:
        """The request duration histogram (counts, sum) of every path."""
        compiled = self.engine_durations
        counts = [a + b for a, b in zip(self.duration_counts, compiled[:-1], strict=True)]
        counts[0] += self.fast_answers  # hits are counted in the first bucket
        (compiled_sum,) = struct.unpack("=d", struct.pack("=Q", compiled[-1]))
        return counts, self.duration_sum + compiled_sum

    def snapshot(self) -> dict[str, object]:
        durations = self.durations()
        return {
            "requests_udp": self.udp_requests,
            "requests_tcp": self.requests_tcp,
            "cache_hits": self.cache_hits + self.fast_answers,
            "cache_misses": self.misses,
            "compiled_misses": self.engine[0],
            "compiled_miss_answers": self.engine[5],
            "served_stale": self.served_stale,
            "prefetches": self.prefetches,
            "coalesced": self.coalesced_queries,
            "hedges": self.hedges,
            "dropped": self.drops,
            "scrubbed_records": self.scrubbed_records,
            "spoofed_replies": self.spoofed,
            "tcp_connections": self.tcp_connections,
            "rcodes": [a + b for a, b in zip(self.rcodes, self.fast_rcodes, strict=True)],
            "duration_counts": durations[0],
            "duration_sum": durations[1],
        }
