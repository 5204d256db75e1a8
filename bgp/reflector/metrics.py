"""Prometheus metrics of the reflector and its HTTP endpoints (effects).

Counters live as plain ints in the ``Reflector`` and the API process; the collector turns a
snapshot of them into metric families at scrape time, so counting costs the hot path an integer
add. Endpoints: ``/metrics``, ``/health`` (the process is alive), ``/ready`` (at least one session
Established), ``/status`` (JSON: every peer, its state and prefix counts).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from netkit.base.addr import HostPort

__all__ = ["LATENCY_BUCKETS", "MetricsServer", "ReflectorCollector", "check_bindable"]

log = logging.getLogger("netkit.bgp.reflector")

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


def _cannot_serve(address: HostPort, exc: OSError) -> OSError:
    return OSError(exc.errno, f"cannot serve metrics on {address}: {exc.strerror or exc}")


def check_bindable(address: HostPort) -> None:
    """Raise OSError ("cannot serve metrics on ADDR: ...") if ``address`` cannot be listened on.

    The launcher asks before it starts ExaBGP: the server itself lives in the API process, which
    ExaBGP starts later and whose failure to start it would only see as respawns."""
    family = socket.AF_INET6 if address.family_is_v6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server binds
        try:
            probe.bind((address.host, address.port))
            probe.listen()
        except OSError as exc:
            raise _cannot_serve(address, exc) from None


class MetricsServer:
    """A threaded HTTP server for the endpoints above; ``start`` raises OSError ("cannot serve
    metrics on ADDR: ...") when it cannot listen: a reflector without /health is not started."""

    def __init__(
        self, address: HostPort, snapshot: Callable[[], Snapshot], ready: Callable[[], bool]
    ) -> None:
        self.address = address
        self.snapshot = snapshot
        self.ready = ready
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ReflectorCollector(snapshot))
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                try:
                    if path == "/metrics":
                        self._send(
                            200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(outer.registry)
                        )
                    elif path == "/health":
                        self._send(200, "text/plain", b"OK\n")
                    elif path == "/ready":
                        ok = outer.ready()
                        self._send(
                            200 if ok else 503, "text/plain", b"OK\n" if ok else b"no session established\n"
                        )
                    elif path == "/status":
                        body = json.dumps(outer.snapshot(), indent=1, sort_keys=True, default=str).encode()
                        self._send(200, "application/json", body + b"\n")
                    else:
                        self._send(404, "text/plain", b"try /metrics, /health, /ready or /status\n")
                except Exception:  # a scrape must never take the reflector down
                    log.exception("metrics request failed")
                    self._send(500, "text/plain", b"internal error\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        try:
            family = socket.AF_INET6 if self.address.family_is_v6 else socket.AF_INET
            server_cls = type("Server", (ThreadingHTTPServer,), {"address_family": family})
            self._server = server_cls((self.address.host, self.address.port), Handler)
        except OSError as exc:
            raise _cannot_serve(self.address, exc) from None
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()
        log.info("metrics endpoint listening", extra={"address": str(self.address)})

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
