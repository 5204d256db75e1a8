"""What the demo watches the whole time (effects), for its proofs and its plots:

- ``PrefixMonitor``: every node's kernel FIB (``labs.fibwatch``, a sweep every 80 ms), with the
  prefixes each node must hold at this moment; a series of the required prefixes each node
  lacks (4 a second; a node with nothing required, say a killed one, is left out);
- ``DnsMonitor``: every node's node-local cache asked a hot name 10 times a second (one UDP
  socket made inside each node's namespace, a 1 s deadline): answered, failed (no answer or not
  NOERROR) per second.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import dns.message
import dns.rcode

from labs.fibwatch import FibReport, FibWatch
from netkit.base.netns import in_netns

__all__ = ["DnsMonitor", "PrefixMonitor"]


@dataclass
class PrefixMonitor:
    namespaces: Mapping[str, str]
    t0: float = field(default_factory=time.monotonic)
    series: list[tuple[float, dict[str, int]]] = field(default_factory=list)  # (t, node -> missing)

    def __post_init__(self) -> None:
        self.watch = FibWatch(self.namespaces, interval=0.08)
        self.required: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefixes", daemon=True)

    def start(self) -> PrefixMonitor:
        self.watch.start()
        self._thread.start()
        return self

    def require(self, required: Mapping[str, set[str]]) -> None:
        self.required = {n: set(p) for n, p in required.items()}
        self.watch.require_all(self.required)

    def window(self) -> FibReport:
        """The report since the last call (a phase's), a fresh one started."""
        return self.watch.reset()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            latest = dict(self.watch.latest)
            missing = {n: len(req - set(latest.get(n, set()))) for n, req in self.required.items()}
            self.series.append((time.monotonic() - self.t0, missing))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.watch.stop()


@dataclass
class DnsMonitor:
    namespaces: Mapping[str, str]
    server: str
    names: list[str]
    t0: float = field(default_factory=time.monotonic)
    per_second: dict[int, list[int]] = field(default_factory=dict)  # second -> [sent, answered, failed]

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dns-monitor", daemon=True)
        self.socks = {
            n: in_netns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            for n, ns in self.namespaces.items()
        }

    def start(self) -> DnsMonitor:
        self._thread.start()
        return self

    def counts(self, since: float, until: float) -> tuple[int, int, int]:
        """(sent, answered, failed) in [since, until) seconds after the start."""
        rows = [v for s, v in self.per_second.items() if since <= s < until]
        return sum(r[0] for r in rows), sum(r[1] for r in rows), sum(r[2] for r in rows)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _run(self) -> None:
        pending: dict[tuple[str, int], float] = {}
        i = 0
        for s in self.socks.values():
            s.setblocking(False)
        next_round = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_round:
                next_round += 0.1
                name = self.names[i % len(self.names)]
                i += 1
                for node, s in self.socks.items():
                    q = dns.message.make_query(name, "A")
                    while (node, q.id) in pending:
                        q.id = (q.id + 1) & 0xFFFF
                    try:
                        s.sendto(q.to_wire(), (self.server, 53))
                    except OSError:
                        self._count(now, 0, 1)
                        continue
                    pending[(node, q.id)] = now
                    self._count(now, 0, 0, sent=1)
            for node, s in self.socks.items():
                while True:
                    try:
                        data = s.recv(4096)
                    except (BlockingIOError, OSError):
                        break
                    try:
                        r = dns.message.from_wire(data)
                    except Exception:
                        continue
                    sent_at = pending.pop((node, r.id), None)
                    if sent_at is None:
                        continue
                    good = r.rcode() == dns.rcode.NOERROR and bool(r.answer)
                    self._count(sent_at, 1 if good else 0, 0 if good else 1)
            for key, sent_at in list(pending.items()):
                if now - sent_at > 1.0:
                    del pending[key]
                    self._count(sent_at, 0, 1)
            time.sleep(0.005)

    def _count(self, at: float, answered: int, failed: int, sent: int = 0) -> None:
        row = self.per_second.setdefault(int(at - self.t0), [0, 0, 0])
        row[0] += sent
        row[1] += answered
        row[2] += failed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self.socks.values():
            s.close()
