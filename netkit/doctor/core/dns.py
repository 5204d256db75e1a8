"""The node-local DNS cache's checks (pure): not answering, every upstream down, serving stale,
its link-local address missing from its interface, kubelet and pods not pointing at it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from netkit.doctor.core.model import Finding, Repair, ok, problem, unknown

__all__ = [
    "UpstreamFacts",
    "decide_address",
    "decide_answering",
    "decide_clients",
    "decide_stale",
    "decide_upstreams",
]

_STOPPED = {"T": "stopped by a signal", "t": "stopped by a debugger"}


def decide_answering(
    target: str,
    answered: int,
    sent: int,
    pid: int | None = None,
    proc_state: str | None = None,
    error: str | None = None,
) -> Finding:
    """Any reply (even SERVFAIL) means the cache serves; none to ``sent`` queries means it does
    not. A cache process stopped by a signal is repaired by SIGCONT (it is the cache netkit
    started: the caller gives ``pid`` only then)."""
    if answered:
        return ok(f"{target} answered {answered} of {sent} probe(s)", answered=answered)
    evidence = [f"0 of {sent} queries to {target} answered" + (f" ({error})" if error else "")]
    repair = None
    if pid is not None and proc_state is not None:
        evidence.append(f"pid {pid} state {proc_state}")
        if proc_state in _STOPPED:
            repair = Repair(f"SIGCONT to pid {pid} ({_STOPPED[proc_state]})", pid)
    return problem(
        "CacheNotAnswering",
        f"the node-local cache at {target} does not answer",
        evidence,
        repair=repair,
        suggestion="" if repair else "restart the cache (its pod, or netkit dns restart)",
    )


@dataclass(frozen=True)
class UpstreamFacts:
    """One upstream: in service by the cache's health (a pool's only upstream always is), and
    its exchanges and successes while the check's probe query (a fresh name) was resolved."""

    healthy: bool
    exchanges: int = 0
    successes: int = 0

    @property
    def down(self) -> bool:
        return not self.healthy or (self.exchanges > 0 and self.successes == 0)

    def describe(self) -> str:
        if not self.healthy:
            return "out of service"
        return f"{self.exchanges} exchange(s), {self.successes} answered"


def decide_upstreams(upstreams: Mapping[str, UpstreamFacts]) -> Finding:
    if not upstreams:
        return unknown("NoUpstreamMetrics", "the cache reports no upstream")
    down = sorted(u for u, f in upstreams.items() if f.down)
    evidence = [f"{u}: {upstreams[u].describe()}" for u in sorted(upstreams)]
    if len(down) == len(upstreams):
        return problem(
            "AllUpstreamsDown",
            f"every upstream of the cache is down ({len(down)}): misses fail, hits are served stale",
            evidence,
            suggestion="check the cluster DNS Service and the path to it",
        )
    return ok(
        f"{len(upstreams) - len(down)} of {len(upstreams)} upstream(s) answer", *evidence, down=len(down)
    )


def decide_stale(served_stale: float, seconds: float) -> Finding:
    """``served_stale``: stale answers since the previous run, ``seconds`` ago."""
    if served_stale > 0:
        return problem(
            "ServingStale",
            f"{served_stale:.0f} stale answer(s) in the last {seconds:.0f} s: upstreams do not refresh",
            suggestion="see the upstream check; stale answers are served for serve_stale seconds",
            stale=served_stale,
        )
    return ok(f"no stale answer in the last {seconds:.0f} s")


def decide_address(
    addresses: Sequence[str], interface: str | None, on_interface: Sequence[str] | None
) -> Finding:
    """The cache's listen addresses must be on ``interface`` (NodeLocal DNSCache's link-local
    address on its own interface). ``on_interface`` None: the interface does not exist."""
    if not addresses:
        return unknown("NoListenAddress", "no listen address configured")
    if interface is None:
        return unknown("NoInterface", "the cache's interface is not configured")
    if on_interface is None:
        return problem(
            "InterfaceMissing",
            f"interface {interface} of the cache's address does not exist",
            suggestion=f"recreate {interface} (the cache's DaemonSet creates it at start)",
        )
    missing = [a for a in addresses if a not in on_interface]
    if missing:
        return problem(
            "AddressMissing",
            f"{', '.join(missing)} missing from {interface}: pods' queries to it go nowhere",
            [f"{interface} has {', '.join(on_interface) or 'no address'}"],
            repair=Repair(f"add {', '.join(missing)} to {interface}", (interface, tuple(missing))),
        )
    return ok(f"{', '.join(addresses)} on {interface}")


def decide_clients(
    addresses: Sequence[str],
    cluster_dns: Sequence[str] | None,
    resolv_confs: Mapping[str, Sequence[str]],
) -> Finding:
    """kubelet's ``clusterDNS`` (None: its config not readable) and pods' resolv.conf
    nameservers must include a cache address; otherwise pods bypass the cache."""
    if not addresses:
        return unknown("NoListenAddress", "no listen address configured")
    if cluster_dns is None and not resolv_confs:
        return unknown("NoClientConfig", "neither the kubelet config nor a pod resolv.conf was found")
    evidence: list[str] = []
    wanted = set(addresses)
    if cluster_dns is not None and not wanted & set(cluster_dns):
        evidence.append(f"kubelet clusterDNS {list(cluster_dns)}")
    bypass = {p: ns for p, ns in resolv_confs.items() if not wanted & set(ns)}
    evidence += [f"{p}: nameserver {', '.join(ns) or '(none)'}" for p, ns in sorted(bypass.items())[:10]]
    if evidence:
        reason = "KubeletBypassesCache" if evidence[0].startswith("kubelet") else "PodsBypassCache"
        return problem(
            reason,
            f"clients do not point at the cache ({', '.join(addresses)})",
            evidence,
            suggestion="set kubelet's clusterDNS to the cache's address and restart the pods",
        )
    return ok(f"kubelet and {len(resolv_confs)} pod resolv.conf(s) point at the cache")
