"""Prometheus metrics of the cache, and its endpoints (on ``netkit.base.serving``).

Counters live as plain ints in ``Stats``; this collector turns snapshots of them into metric
families at scrape time, so counting costs the hot path nothing but an integer add. With
``--workers N`` the supervisor sums the snapshots its workers send it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from dnscache.core.stats import DURATION_BUCKETS
from dnscache.core.wire import RCODE_NAMES
from netkit.base.addr import HostPort
from netkit.base.serving import EndpointServer

Snapshot = dict[str, Any]
ALWAYS_EXPORTED_RCODES = (0, 1, 2, 3, 4, 5)  # NOERROR FORMERR SERVFAIL NXDOMAIN NOTIMP REFUSED


def merge_snapshots(snaps: list[Snapshot]) -> Snapshot:
    """Sum counters over workers; upstream gauges come from the worker that saw the most traffic."""
    if not snaps:
        return {}
    total: Snapshot = {}
    for snap in snaps:
        for key, value in snap.items():
            if key == "upstreams":
                continue
            if isinstance(value, list):
                acc = total.setdefault(key, [0] * len(value))
                total[key] = [a + b for a, b in zip(acc, value, strict=True)]
            elif isinstance(value, int | float):
                total[key] = total.get(key, 0) + value
    ups: dict[str, Any] = {}
    for snap in snaps:
        for u in snap.get("upstreams", []):
            cur = ups.get(u["upstream"])
            if cur is None:
                ups[u["upstream"]] = {**u, "results": dict(u["results"])}
            else:
                for r, c in u["results"].items():
                    cur["results"][r] = cur["results"].get(r, 0) + c
                cur["healthy"] = min(cur["healthy"], u["healthy"])
    total["upstreams"] = list(ups.values())
    return total


class DnsCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        s = self.snapshot()
        if not s:
            return
        req = CounterMetricFamily("netkit_dns_requests", "DNS queries received.", labels=["proto"])
        req.add_metric(["udp"], s["requests_udp"])
        req.add_metric(["tcp"], s["requests_tcp"])
        yield req
        resp = CounterMetricFamily("netkit_dns_responses", "DNS responses sent, by rcode.", labels=["rcode"])
        for rcode, count in enumerate(s["rcodes"]):
            # the common rcodes always exist, so rate() sees the first SERVFAIL of a new process
            if count or rcode in ALWAYS_EXPORTED_RCODES:
                resp.add_metric([RCODE_NAMES.get(rcode, str(rcode))], count)
        yield resp
        for name, key, doc in (
            ("netkit_dns_cache_hits", "cache_hits", "Queries answered from a fresh cache entry."),
            (
                "netkit_dns_cache_misses",
                "cache_misses",
                "Queries that needed an upstream (stale entries included).",
            ),
            (
                "netkit_dns_compiled_misses",
                "compiled_misses",
                "Cache misses the compiled miss engine took (of netkit_dns_cache_misses; Python's "
                "flights resolve the rest and what it hands back).",
            ),
            (
                "netkit_dns_compiled_miss_answers",
                "compiled_miss_answers",
                "Answers the compiled miss engine sent from its own upstream exchange.",
            ),
            ("netkit_dns_served_stale", "served_stale", "Answers served from expired entries (RFC 8767)."),
            ("netkit_dns_prefetches", "prefetches", "Refreshes started before a popular entry expired."),
            ("netkit_dns_coalesced", "coalesced", "Misses that joined an upstream query already in flight."),
            (
                "netkit_dns_hedges",
                "hedges",
                "Hedged queries sent to a second upstream while the first was slow.",
            ),
            (
                "netkit_dns_dropped",
                "dropped",
                "Queries dropped without an answer (garbage, responses, overload).",
            ),
            (
                "netkit_dns_scrubbed_records",
                "scrubbed_records",
                "Upstream records dropped as out of bailiwick.",
            ),
            (
                "netkit_dns_spoofed_replies",
                "spoofed_replies",
                "Upstream datagrams ignored: wrong ID or question.",
            ),
            ("netkit_dns_tcp_connections", "tcp_connections", "TCP connections accepted."),
            (
                "netkit_dns_cache_evictions",
                "cache_evictions",
                "Entries evicted to stay within the cache bounds.",
            ),
        ):
            yield CounterMetricFamily(name, doc, value=s.get(key, 0))
        yield GaugeMetricFamily(
            "netkit_dns_cache_entries", "Entries in the cache.", value=s.get("cache_entries", 0)
        )
        yield GaugeMetricFamily(
            "netkit_dns_cache_size_bytes", "Estimated bytes held by the cache.", value=s.get("cache_bytes", 0)
        )
        counts = s["duration_counts"]
        buckets = []
        acc = 0
        for bound, c in zip([*map(str, DURATION_BUCKETS), "+Inf"], counts, strict=True):
            acc += c
            buckets.append((bound, acc))
        yield HistogramMetricFamily(
            "netkit_dns_request_duration_seconds",
            "Time from query to answer. Fast-path cache hits are counted in the first bucket without timing.",
            buckets=buckets,
            sum_value=s["duration_sum"],
        )
        healthy = GaugeMetricFamily(
            "netkit_dns_upstream_healthy", "1 if the upstream is in service.", labels=["upstream"]
        )
        rtt = GaugeMetricFamily(
            "netkit_dns_upstream_rtt_seconds", "Smoothed RTT of the upstream.", labels=["upstream"]
        )
        reqs = CounterMetricFamily(
            "netkit_dns_upstream_requests",
            "Exchanges with an upstream, by result.",
            labels=["upstream", "result"],
        )
        for u in s.get("upstreams", []):
            healthy.add_metric([u["upstream"]], u["healthy"])
            rtt.add_metric([u["upstream"]], u["srtt"])
            for result, count in sorted(u["results"].items()):
                reqs.add_metric([u["upstream"], result], count)
        yield healthy
        yield rtt
        yield reqs


def endpoints(
    address: HostPort, snapshot: Callable[[], Snapshot], ready: Callable[[], bool]
) -> EndpointServer:
    """The cache's ``/metrics`` (``DnsCollector`` over ``snapshot``), ``/healthz`` and ``/readyz``
    (every listener bound and, with workers, every worker reported in)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DnsCollector(snapshot))
    return EndpointServer(address, registry, ready)
