"""Which checks run on a node: those whose part is configured (a node without a BGP speaker
runs no BGP check, rather than reporting an Unknown condition forever)."""

from __future__ import annotations

from dataclasses import dataclass

from netkit.doctor.check import Check
from netkit.doctor.checks import bgp, dns, l2, node

__all__ = ["CHECKS", "NodeParts", "checks_for"]

# every check, in the order a table lists them (docs/doctor.md lists the same)
CHECKS: tuple[type[Check], ...] = (
    l2.L2DriftCheck,
    l2.BridgeArpCheck,
    l2.UnderlayFilterCheck,
    l2.OverlayMtuCheck,
    bgp.BgpSessionsCheck,
    bgp.BgpFibCheck,
    dns.DnsAddressCheck,
    dns.DnsAnsweringCheck,
    dns.DnsUpstreamsCheck,
    dns.DnsStaleCheck,
    dns.DnsClientsCheck,
    node.ConntrackCheck,
    node.ApiServerCheck,
)


@dataclass
class NodeParts:
    netns: str | None = None
    l2: l2.L2Desired | None = None
    speaker: bgp.SpeakerSource | None = None
    dns: dns.DnsTarget | None = None
    conntrack_threshold: float = 0.9
    api_server: str | None = None
    api_probe: node.ApiProbe | None = None
    mtu_timeout: float = 0.5
    session_grace: float | None = None  # long-running: seconds a BGP session may take to come up


def checks_for(parts: NodeParts) -> list[Check]:
    out: list[Check] = []
    if parts.l2 is not None:
        out += [
            l2.L2DriftCheck(parts.l2),
            l2.BridgeArpCheck(parts.l2),
            l2.UnderlayFilterCheck(parts.l2),
            l2.OverlayMtuCheck(parts.l2, parts.mtu_timeout),
        ]
    if parts.speaker is not None:
        out += [
            bgp.BgpSessionsCheck(parts.speaker, grace=parts.session_grace),
            bgp.BgpFibCheck(parts.speaker, parts.netns),
        ]
    if parts.dns is not None:
        t = parts.dns
        if t.interface is not None:  # first: without its address the cache cannot answer
            out.append(dns.DnsAddressCheck(t))
        out.append(dns.DnsAnsweringCheck(t))
        if t.metrics is not None:
            out += [dns.DnsUpstreamsCheck(t), dns.DnsStaleCheck(t)]
        out.append(dns.DnsClientsCheck(t))
    out.append(node.ConntrackCheck(parts.netns, parts.conntrack_threshold))
    if parts.api_probe is not None:
        out.append(node.ApiServerCheck(parts.api_server or "the API server", parts.api_probe))
    return out
