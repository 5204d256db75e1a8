"""Prometheus metrics of the reflector and its HTTP endpoints (effects).

Counters live as plain ints in the ``Reflector`` and the API process; the collector turns a
snapshot of them into metric families at scrape time, so counting costs the hot path an integer
add. Endpoints (on ``netkit.base.serving``): ``/metrics``, ``/healthz`` (the process is alive),
``/readyz`` (at least one session Established), ``/status`` (JSON: every peer, its state and
prefix counts).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from netkit.base.addr import HostPort
from netkit.base.serving import EndpointServer, Response

__all__ = ["LATENCY_BUCKETS", "ReflectorCollector", "endpoints"]

Snapshot = dict[str, Any]
# update processing latency: from ExaBGP's line read to the resulting commands written
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SESSION_STATES = ("established", "down", "idle", "blocked")


class ReflectorCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        s = self.snapshot()
        peers = s["peers"]
        states = GaugeMetricFamily("netkit_bgp_sessions", "BGP sessions by state.", labels=["state"])
        for state in SESSION_STATES:
            states.add_metric([state], sum(1 for p in peers if p["state"] == state))
        yield states
        up = GaugeMetricFamily(
            "netkit_bgp_session_established", "1 if the session is Established.", labels=["peer", "name"]
        )
        trans = CounterMetricFamily(
            "netkit_bgp_session_transitions",
            "Sessions coming up and going down.",
            labels=["peer", "direction"],
        )
        rec = GaugeMetricFamily(
            "netkit_bgp_prefixes_received", "Prefixes the peer currently announces.", labels=["peer"]
        )
        acc = GaugeMetricFamily(
            "netkit_bgp_prefixes_accepted",
            "Prefixes accepted from the peer (policy passed).",
            labels=["peer"],
        )
        adv = GaugeMetricFamily(
            "netkit_bgp_prefixes_advertised", "Prefixes advertised to the peer.", labels=["peer"]
        )
        rej = CounterMetricFamily(
            "netkit_bgp_prefixes_rejected",
            "Announced prefixes not accepted, by reason (filters, max-prefix, loops, families).",
            labels=["peer", "reason"],
        )
        breaches = CounterMetricFamily(
            "netkit_bgp_max_prefix_breaches", "Times a peer went over its max-prefix limit.", labels=["peer"]
        )
        upd = CounterMetricFamily(
            "netkit_bgp_updates_received", "UPDATE messages from the peer.", labels=["peer"]
        )
        sent = CounterMetricFamily(
            "netkit_bgp_prefixes_sent", "Prefix announcements and withdrawals sent.", labels=["peer", "kind"]
        )
        for p in peers:
            up.add_metric([p["address"], p["name"]], 1 if p["state"] == "established" else 0)
            for direction in ("up", "down"):
                trans.add_metric([p["address"], direction], p["transitions"].get(direction, 0))
            rec.add_metric([p["address"]], p["received"])
            acc.add_metric([p["address"]], p["accepted"])
            adv.add_metric([p["address"]], p["advertised"])
            for reason, count in sorted(p["rejected"].items()):
                rej.add_metric([p["address"], str(reason)], count)
            breaches.add_metric([p["address"]], p["max_prefix_breaches"])
            upd.add_metric([p["address"]], p["updates"])
            sent.add_metric([p["address"], "announce"], p["announced_total"])
            sent.add_metric([p["address"], "withdraw"], p["withdrawn_total"])
        yield from (up, trans, rec, acc, adv, rej, breaches, upd, sent)
        routes = GaugeMetricFamily(
            "netkit_bgp_routes", "Prefixes with a best path (Loc-RIB).", labels=["family"]
        )
        for fam, n in sorted(s["routes"].items()):
            routes.add_metric([fam], n)
        yield routes
        yield CounterMetricFamily(
            "netkit_bgp_updates_processed", "UPDATE messages processed.", value=s["updates_processed"]
        )
        bad = CounterMetricFamily(
            "netkit_bgp_bad_messages",
            "Lines from ExaBGP that could not be used (logged, then ignored), by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(s.get("bad_messages", {}).items()):
            bad.add_metric([reason], count)
        bad.add_metric(["unknown_peer"], s["unknown_peer_messages"])
        yield bad
        yield CounterMetricFamily(
            "netkit_bgp_speaker_command_errors",
            "Commands ExaBGP answered with an error.",
            value=s["command_errors"],
        )
        yield CounterMetricFamily(
            "netkit_bgp_api_commands", "Command lines written to ExaBGP.", value=s.get("commands_written", 0)
        )
        counts = s.get("latency_counts", [0] * (len(LATENCY_BUCKETS) + 1))
        acc_count = 0
        buckets = []
        for bound, c in zip([*map(str, LATENCY_BUCKETS), "+Inf"], counts, strict=True):
            acc_count += c
            buckets.append((bound, acc_count))
        yield HistogramMetricFamily(
            "netkit_bgp_update_processing_seconds",
            "Time from an UPDATE read from ExaBGP to the commands it caused written back.",
            buckets=buckets,
            sum_value=s.get("latency_sum", 0.0),
        )


def endpoints(
    address: HostPort, snapshot: Callable[[], Snapshot], ready: Callable[[], bool]
) -> EndpointServer:
    """The reflector's ``/metrics``, ``/healthz``, ``/readyz`` (a session Established) and
    ``/status`` (JSON: every peer, its state and prefix counts); served from a thread of the API
    process (``start_in_thread``), whose loop is ExaBGP's pipe."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReflectorCollector(snapshot))

    def status() -> Response:
        body = json.dumps(snapshot(), indent=1, sort_keys=True, default=str).encode()
        return 200, "application/json", body + b"\n"

    return EndpointServer(
        address, registry, ready, not_ready="no session established", routes={"/status": status}
    )
