"""Checks of the node-local DNS cache: answering, its upstreams, serve-stale in use, its address
on its interface, and whether kubelet and pods point at it."""

from __future__ import annotations

import glob
import ipaddress
import os
import secrets
import signal
import socket
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from netkit.base.addr import HostPort
from netkit.base.netns import in_netns
from netkit.doctor.check import Check, RepairError
from netkit.doctor.core import dns as decide
from netkit.doctor.core.model import Finding, unknown

__all__ = [
    "DnsAddressCheck",
    "DnsAnsweringCheck",
    "DnsClientsCheck",
    "DnsStaleCheck",
    "DnsTarget",
    "DnsUpstreamsCheck",
    "query",
]


@dataclass
class DnsTarget:
    """The node's cache as the checks see it. ``pid()``: the cache process netkit started (None:
    not known or not ours; only then is a repair on it offered)."""

    listen: Callable[[], Sequence[HostPort]]  # read at each run: the agent's cache may change
    netns: str | None = None
    metrics: HostPort | None = None
    interface: str | None = None  # where the listen addresses live (NodeLocal DNSCache's)
    pid: Callable[[], int | None] = field(default=lambda: None)
    kubelet_config: str | None = "/var/lib/kubelet/config.yaml"
    resolv_confs: Sequence[str] = ()  # globs of pods' resolv.conf files
    probe_name: str = "kubernetes.default.svc.cluster.local."  # dns-answering asks it
    probe_zone: str = "cluster.local."  # dns-upstreams asks a fresh name in it (a miss)

    @property
    def addresses(self) -> list[str]:
        return sorted({hp.host for hp in self.listen()})

    def scrape(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        if self.metrics is None:
            raise RuntimeError("the cache's metrics address is not configured")
        host = f"[{self.metrics.host}]" if ":" in self.metrics.host else self.metrics.host
        url = f"http://{host}:{self.metrics.port}/metrics"

        def fetch() -> str:
            with urllib.request.urlopen(url, timeout=2) as r:  # an address we were given
                return str(r.read().decode())

        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for fam in text_string_to_metric_families(in_netns(self.netns, fetch)):
            for s in fam.samples:
                out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
        return out


def _question(name: str, qid: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".") if p)
    return (
        qid.to_bytes(2, "big")
        + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        + labels
        + b"\x00\x00\x01\x00\x01"
    )


def query(netns: str | None, target: HostPort, name: str, timeout: float) -> bool:
    """One UDP query; True when a reply with its ID arrives within ``timeout`` (any RCODE)."""

    def ask() -> bool:
        family = socket.AF_INET6 if ipaddress.ip_address(target.host).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            qid = secrets.randbelow(65536)
            s.settimeout(timeout)
            s.sendto(_question(name, qid), (target.host, target.port))
            deadline = time.monotonic() + timeout
            while True:
                s.settimeout(max(0.001, deadline - time.monotonic()))
                try:
                    data = s.recv(4096)
                except (TimeoutError, ConnectionRefusedError):
                    return False
                if len(data) >= 3 and int.from_bytes(data[:2], "big") == qid and data[2] & 0x80:
                    return True

    return in_netns(netns, ask)


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


@dataclass(frozen=True)
class Answering:
    target: str
    answered: int
    sent: int
    pid: int | None
    state: str | None
    error: str | None = None  # the query could not even be sent


class DnsAnsweringCheck(Check):
    name = "dns-answering"
    condition = "NetkitDNSCacheNotAnswering"
    interval = 5.0
    summary = "the node-local cache answers no query on its listen address (any RCODE counts)"

    def __init__(self, target: DnsTarget, attempts: int = 3, timeout: float = 0.5) -> None:
        self.target, self.attempts, self.timeout = target, attempts, timeout

    def gather(self) -> Answering | None:
        listen = self.target.listen()
        if not listen:
            return None
        hp = listen[0]
        answered, error = 0, None
        for _ in range(self.attempts):
            try:
                if query(self.target.netns, hp, self.target.probe_name, self.timeout):
                    answered += 1
                    break
            except OSError as exc:  # no route to the address (gone from its interface)
                error = exc.strerror or str(exc)
                break
        pid = self.target.pid()
        state = _proc_state(pid) if pid is not None else None
        return Answering(str(hp), answered, answered or self.attempts, pid, state, error)

    def decide(self, facts: Answering | None) -> Finding:
        if facts is None:
            return unknown("NoListenAddress", "no DNS cache configured on this node")
        return decide.decide_answering(
            facts.target, facts.answered, facts.sent, facts.pid, facts.state, facts.error
        )

    def repair(self, finding: Finding) -> str:
        assert finding.repair is not None
        pid = int(finding.repair.payload)
        if pid != self.target.pid() or _proc_state(pid) not in ("T", "t"):
            raise RepairError(f"pid {pid} is no longer the stopped cache: nothing sent")
        os.kill(pid, signal.SIGCONT)
        return f"SIGCONT sent to pid {pid}"


def _exchanges(scrape: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, tuple[float, float]]:
    """upstream -> (exchanges, successes) from ``netkit_dns_upstream_requests_total``."""
    out: dict[str, tuple[float, float]] = {}
    for labels, value in scrape.get("netkit_dns_upstream_requests_total", []):
        up = labels.get("upstream", "?")
        total, good = out.get(up, (0.0, 0.0))
        out[up] = (total + value, good + (value if labels.get("result") == "success" else 0.0))
    return out


class DnsUpstreamsCheck(Check):
    name = "dns-upstreams"
    condition = "NetkitDNSUpstreamsDown"
    interval = 10.0
    summary = "every upstream of the cache out of service, or answering none of a probe's exchanges"

    def __init__(self, target: DnsTarget, timeout: float = 2.5) -> None:
        self.target, self.timeout = target, timeout

    def gather(self) -> dict[str, decide.UpstreamFacts] | None:
        """Two scrapes around a probe query for a fresh name (a miss: the cache must ask an
        upstream), so a one-shot run sees whether upstreams answer now."""
        listen = self.target.listen()
        if self.target.metrics is None or not listen:
            return None
        before = _exchanges(self.target.scrape())
        name = f"netkit-doctor-{secrets.token_hex(4)}.{self.target.probe_zone}"
        query(self.target.netns, listen[0], name, self.timeout)
        after = self.target.scrape()
        healthy = {lab.get("upstream", "?"): v > 0 for lab, v in after.get("netkit_dns_upstream_healthy", [])}
        now = _exchanges(after)
        out = {}
        for up, ok_ in healthy.items():
            total, good = now.get(up, (0, 0))
            total0, good0 = before.get(up, (0, 0))
            out[up] = decide.UpstreamFacts(ok_, int(total - total0), int(good - good0))
        return out

    def decide(self, facts: dict[str, decide.UpstreamFacts] | None) -> Finding:
        if facts is None:
            return unknown("NoMetrics", "the cache's metrics address is not configured")
        return decide.decide_upstreams(facts)


class DnsStaleCheck(Check):
    name = "dns-serve-stale"
    condition = "NetkitDNSServingStale"
    interval = 10.0
    summary = "the cache served expired answers since the previous run (netkit_dns_served_stale_total)"

    def __init__(self, target: DnsTarget, clock: Callable[[], float] = time.monotonic) -> None:
        self.target, self.clock = target, clock
        self.previous: tuple[float, float] | None = None  # (when, counter)

    def gather(self) -> tuple[float, float] | None:
        if self.target.metrics is None:
            return None
        samples = self.target.scrape().get("netkit_dns_served_stale_total", [])
        value = sum(v for _, v in samples)
        now = self.clock()
        before, self.previous = self.previous, (now, value)
        if before is None or value < before[1]:  # first run, or the cache restarted
            return (0.0, 0.0)
        return (value - before[1], now - before[0])

    def decide(self, facts: tuple[float, float] | None) -> Finding:
        if facts is None:
            return unknown("NoMetrics", "the cache's metrics address is not configured")
        return decide.decide_stale(*facts)


def _addresses(netns: str | None, interface: str) -> list[str] | None:
    from pyroute2 import IPRoute

    def read() -> list[str] | None:
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=interface)
            if not idx:
                return None
            return sorted(str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(index=idx[0]))

    return in_netns(netns, read)


class DnsAddressCheck(Check):
    name = "dns-address"
    condition = "NetkitDNSAddressMissing"
    interval = 5.0
    summary = "the cache's (link-local) listen address missing from its interface"

    def __init__(self, target: DnsTarget) -> None:
        self.target = target

    def gather(self) -> list[str] | None:
        if self.target.interface is None:
            return None
        return _addresses(self.target.netns, self.target.interface)

    def decide(self, facts: list[str] | None) -> Finding:
        wanted = [a for a in self.target.addresses if a not in ("0.0.0.0", "::")]
        return decide.decide_address(wanted, self.target.interface, facts)

    def repair(self, finding: Finding) -> str:
        assert finding.repair is not None
        interface, missing = finding.repair.payload
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        def add() -> None:
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=interface)
                if not idx:
                    raise RepairError(f"{interface} is gone")
                for a in missing:
                    plen = 128 if ipaddress.ip_address(a).version == 6 else 32
                    try:
                        ipr.addr("add", index=idx[0], address=a, prefixlen=plen)
                    except NetlinkError as exc:
                        if exc.code != 17:  # EEXIST: added meanwhile, as wanted
                            raise RepairError(f"{a} on {interface}: {exc}") from exc

        in_netns(self.target.netns, add)
        return f"added {', '.join(missing)} to {interface}"


def _nameservers(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            out.append(fields[1])
    return out


@dataclass(frozen=True)
class Clients:
    cluster_dns: list[str] | None
    resolv_confs: dict[str, list[str]]


class DnsClientsCheck(Check):
    name = "dns-clients"
    condition = "NetkitDNSClientsBypassCache"
    interval = 60.0
    summary = "kubelet's clusterDNS or pods' resolv.conf do not point at the cache"

    def __init__(self, target: DnsTarget) -> None:
        self.target = target

    def gather(self) -> Clients:
        cluster_dns: list[str] | None = None
        path = self.target.kubelet_config
        if path and os.path.exists(path):
            doc: Any = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(doc, dict):
                raise ValueError(f"{path}: not a KubeletConfiguration")
            cluster_dns = [str(a) for a in doc.get("clusterDNS") or []]
        confs: dict[str, list[str]] = {}
        for pattern in self.target.resolv_confs:
            for p in sorted(glob.glob(pattern))[:500]:
                try:
                    confs[p] = _nameservers(Path(p).read_text())
                except OSError:
                    continue  # a pod that went meanwhile
        return Clients(cluster_dns, confs)

    def decide(self, facts: Clients) -> Finding:
        return decide.decide_clients(self.target.addresses, facts.cluster_dns, facts.resolv_confs)
