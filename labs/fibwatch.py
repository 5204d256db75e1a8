"""Sample the kernel FIB of many namespaces every ``interval`` and record every required prefix
that is missing at any sample (effects: netlink route dumps).

One netlink socket per namespace (made there, used from the sampling thread), a dump of the IPv4
and IPv6 main tables per sweep. Requirements can change while it runs (a migration step that adds
a node adds its prefix), and the report says how long the longest gap between two samples of the
same namespace was, so "sampled every 100 ms" is a measured claim, not an assumption.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from netkit.l2.netlink import Channel, attrs, open_socket

__all__ = ["FibReport", "FibWatch", "Miss", "routes_of"]

RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTA_DST, RTA_TABLE = 1, 15
RT_TABLE_MAIN = 254
_RTMSG = struct.Struct("BBBBBBBBI")


@dataclass(frozen=True)
class Miss:
    at: float  # seconds since the report started (a sweep under way at a reset: just below 0)
    node: str
    prefix: str


@dataclass
class FibReport:
    samples: int = 0  # sweeps over all namespaces
    duration_s: float = 0.0
    max_gap_ms: float = 0.0  # longest time between two samples of one namespace
    misses: list[Miss] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def missing_prefix_samples(self) -> int:
        return len(self.misses)

    def summary(self) -> str:
        nodes = sorted({m.node for m in self.misses})
        return (
            f"{self.samples} samples over {self.duration_s:.1f} s (longest gap {self.max_gap_ms:.0f} ms): "
            f"{len(self.misses)} missing prefix-samples" + (f" on {', '.join(nodes)}" if nodes else "")
        )


def routes_of(chan: Channel) -> set[str]:
    """Prefixes (``a.b.c.d/n``) in the main IPv4 and IPv6 tables of the channel's namespace."""
    out: set[str] = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        for data, kind, off, end in chan.dump(RTM_GETROUTE, family):
            if kind != RTM_NEWROUTE or end - off < _RTMSG.size:
                continue
            fam, dst_len, _src, _tos, table, _proto, _scope, _type, _flags = _RTMSG.unpack_from(data, off)
            a = attrs(data, off + _RTMSG.size, end)
            if RTA_TABLE in a:
                s, _e = a[RTA_TABLE]
                table = struct.unpack_from("I", data, s)[0]
            if table != RT_TABLE_MAIN:
                continue
            if RTA_DST in a:
                s, e = a[RTA_DST]
                addr = ipaddress.ip_address(data[s:e])
            else:
                addr = ipaddress.ip_address(0 if fam == socket.AF_INET else "::")
            out.add(f"{addr}/{dst_len}")
    return out


class FibWatch:
    """``with FibWatch({"n1": "nk12ab-n1", ...}) as w: w.require("n1", {...}); ...; w.report``."""

    def __init__(self, namespaces: Mapping[str, str], interval: float = 0.1) -> None:
        self.namespaces = dict(namespaces)
        self.interval = interval
        self.report = FibReport()
        self._required: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._chans: dict[str, Channel] = {}
        self._last: dict[str, float] = {}
        self._t0 = time.monotonic()
        self.latest: dict[str, set[str]] = {}  # the last sample of each namespace

    def require(self, node: str, prefixes: set[str] | frozenset[str]) -> None:
        with self._lock:
            self._required[node] = frozenset(prefixes)

    def require_all(self, required: Mapping[str, set[str]]) -> None:
        with self._lock:
            self._required = {n: frozenset(p) for n, p in required.items()}

    def missing_now(self) -> dict[str, set[str]]:
        """Required prefixes absent from the last sample of each namespace (unsampled: all)."""
        with self._lock:
            required = dict(self._required)
            latest = dict(self.latest)
        out = {n: set(req) - latest.get(n, set()) for n, req in required.items()}
        return {n: m for n, m in out.items() if m}

    def reset(self) -> FibReport:
        """Close the current report (returned) and start a fresh one, e.g. per phase."""
        with self._lock:
            old, self.report = self.report, FibReport()
            now = time.monotonic()
            old.duration_s = now - self._t0
            self._t0 = now
            self._last.clear()
        return old

    def start(self) -> FibWatch:
        for node, ns in self.namespaces.items():
            self._chans[node] = Channel(open_socket(ns))
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="fibwatch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            with self._lock:
                required = dict(self._required)
            sweep: list[tuple[str, float, set[str] | None, str]] = []
            for node, chan in self._chans.items():  # the netlink dumps, outside the lock
                try:
                    sweep.append((node, time.monotonic(), routes_of(chan), ""))
                except OSError as exc:
                    sweep.append((node, time.monotonic(), None, f"{node}: {exc}"))
            with self._lock:  # into the report in force now: one ``reset`` returned stays closed
                self._record(sweep, required)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - start)))

    def _record(
        self, sweep: list[tuple[str, float, set[str] | None, str]], required: Mapping[str, frozenset[str]]
    ) -> None:
        report = self.report
        for node, now, have, error in sweep:
            if have is None:
                report.errors.append(error)
                continue
            last = self._last.get(node)
            if last is not None:
                report.max_gap_ms = max(report.max_gap_ms, (now - last) * 1000)
            self._last[node] = now
            self.latest[node] = have
            for prefix in sorted(required.get(node, frozenset()) - have):
                report.misses.append(Miss(round(now - self._t0, 3), node, prefix))
        report.samples += 1

    def stop(self) -> FibReport:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self.report.duration_s = time.monotonic() - self._t0
        for chan in self._chans.values():
            chan.close()
        self._chans.clear()
        return self.report

    def __enter__(self) -> FibWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
