"""L2 checks: owned links and FDB entries drifted from the desired state, tenant bridges that
answer ARP, the underlay filter missing or edited, and the real path MTU between VTEPs."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from netkit.base.netns import netns_exec
from netkit.doctor.check import Check, RepairError
from netkit.doctor.core import l2 as decide
from netkit.doctor.core.model import Finding, unknown
from netkit.l2 import filter as underlay
from netkit.l2.agent import filter_text
from netkit.l2.core.model import VXLAN_OVERHEAD, L2Network
from netkit.l2.core.plan import Plan, plan
from netkit.l2.kernel import Kernel

__all__ = [
    "BridgeArpCheck",
    "L2Desired",
    "L2DriftCheck",
    "OverlayMtuCheck",
    "UnderlayFilterCheck",
    "path_mtu",
]


@dataclass
class L2Desired:
    """Where the L2 checks get the desired state: ``networks()`` returns None when it is not
    known (no NodeState read yet, an unreadable file): the checks then decide nothing and
    repair nothing."""

    node: str
    networks: Callable[[], Sequence[L2Network] | None]
    netns: str | None = None
    underlay_filter: bool = True
    # how owned objects are put right (None: the operations applied here); inside the agent,
    # its L2 reconcile is asked to run instead, so that one writer changes the kernel
    reconcile: Callable[[Sequence[Any]], str] | None = None

    def plan(self) -> tuple[Sequence[L2Network], Plan, Any] | None:
        nets = self.networks()
        if nets is None:
            return None
        with Kernel(self.netns) as kernel:
            observed = kernel.read(full=True)
        return nets, plan(nets, self.node, observed), observed

    def apply(self, ops: Sequence[Any]) -> str:
        if self.reconcile is not None:
            return self.reconcile(ops)
        with Kernel(self.netns) as kernel:
            result = kernel.apply(ops)
        return f"applied {len(ops)} operation(s), {result.writes} netlink write(s)"


_NO_STATE = unknown("NoDesiredState", "the node's desired L2 state is not known: nothing checked")


class L2DriftCheck(Check):
    name = "l2-drift"
    condition = "NetkitL2Drift"
    interval = 10.0
    summary = "owned bridges, VTEPs, FDB and neighbour entries differ from the desired state"

    def __init__(self, desired: L2Desired) -> None:
        self.desired = desired

    def gather(self) -> Plan | None:
        got = self.desired.plan()
        return None if got is None else got[1]

    def decide(self, facts: Plan | None) -> Finding:
        return _NO_STATE if facts is None else decide.decide_drift(facts)

    def repair(self, finding: Finding) -> str:
        assert finding.repair is not None
        return self.desired.apply(finding.repair.payload)


class BridgeArpCheck(L2DriftCheck):
    name = "l2-bridge-arp"
    condition = "NetkitBridgeAnswersARP"
    summary = "a tenant bridge's arp_ignore/rp_filter reset: the node would answer ARP on a tenant segment"

    def decide(self, facts: Plan | None) -> Finding:
        return _NO_STATE if facts is None else decide.decide_bridge_arp(facts)


@dataclass(frozen=True)
class FilterFacts:
    expected: str | None
    listed: str | None


class UnderlayFilterCheck(Check):
    name = "l2-underlay-filter"
    condition = "NetkitUnderlayFilter"
    interval = 10.0
    summary = "the nftables underlay filter (table inet netkit_l2) missing or edited"

    def __init__(self, desired: L2Desired) -> None:
        self.desired = desired

    def gather(self) -> FilterFacts | None:
        if not self.desired.underlay_filter:
            return None
        got = self.desired.plan()
        if got is None:
            return None
        nets, pl, _ = got
        try:
            listed = underlay.current(self.desired.netns)
        except underlay.FilterError as exc:
            raise RuntimeError(str(exc)) from exc
        return FilterFacts(filter_text(nets, self.desired.node, pl), listed)

    def decide(self, facts: FilterFacts | None) -> Finding:
        if facts is None:
            if not self.desired.underlay_filter:
                return unknown("FilterDisabled", "the underlay filter is turned off (--no-underlay-filter)")
            return _NO_STATE
        return decide.decide_filter(facts.expected, facts.listed, f'comment "{underlay.COMMENT}"')

    def repair(self, finding: Finding) -> str:
        assert finding.repair is not None
        try:
            underlay.restore(self.desired.netns, finding.repair.payload)
        except underlay.FilterError as exc:
            raise RepairError(str(exc)) from exc
        return "underlay filter " + ("removed" if finding.repair.payload is None else "loaded")


def _ping(netns: str | None, vtep: str, size: int, timeout: float) -> bool:
    """One DF-set echo of a ``size``-byte IP packet to ``vtep``; True when answered."""
    v6 = ipaddress.ip_address(vtep).version == 6
    payload = size - (48 if v6 else 28)
    argv = ["ping", *(["-6"] if v6 else []), "-n", "-q", "-M", "do", "-c", "1"]
    argv += ["-W", f"{timeout:g}", "-s", str(payload), vtep]
    try:
        r = subprocess.run(netns_exec(netns, argv), capture_output=True, timeout=timeout + 5, check=False)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def path_mtu(
    netns: str | None, vtep: str, needed: int, *, floor: int = 576, timeout: float = 0.5
) -> decide.PathMtu:
    """The largest packet that reaches ``vtep`` with DF set, found by bisection between ``floor``
    and ``needed`` (one probe when ``needed`` gets through; a lost probe reads as too big, so
    a lossy path is probed again at the size that failed)."""
    if _ping(netns, vtep, needed, timeout) or _ping(netns, vtep, needed, timeout):
        return decide.PathMtu(vtep, needed, 2)
    probes = 2
    if not _ping(netns, vtep, floor, timeout):
        return decide.PathMtu(vtep, None, probes + 1)
    lo, hi = floor, needed  # lo passes, hi fails
    probes += 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        probes += 1
        if _ping(netns, vtep, mid, timeout):
            lo = mid
        else:
            hi = mid
    return decide.PathMtu(vtep, lo, probes)


@dataclass(frozen=True)
class MtuFacts:
    needs: tuple[decide.MtuNeed, ...]
    measured: dict[str, decide.PathMtu]


class OverlayMtuCheck(Check):
    name = "l2-overlay-mtu"
    condition = "NetkitOverlayMTU"
    interval = 60.0
    summary = "DF-set probes between VTEPs find a path MTU below the overlay's MTU plus VXLAN overhead"

    def __init__(self, desired: L2Desired, timeout: float = 0.5) -> None:
        self.desired, self.timeout = desired, timeout

    def gather(self) -> MtuFacts | None:
        got = self.desired.plan()
        if got is None:
            return None
        nets, _, observed = got
        needs: list[decide.MtuNeed] = []
        for net in nets:
            if net.kind != "vxlan" or not net.applies_to(self.desired.node):
                continue
            link = observed.links.get(net.uplink)
            mtu = link.mtu if link is not None and link.mtu else net.mtu
            if not mtu:
                continue  # not built yet: the drift check reports it
            size = mtu + VXLAN_OVERHEAD[net.vtep_family]
            needs += [decide.MtuNeed(net.name, vtep, size) for _, vtep in net.remote_vteps(self.desired.node)]
        biggest: dict[str, int] = {}
        for n in needs:
            biggest[n.vtep] = max(biggest.get(n.vtep, 0), n.size)
        with ThreadPoolExecutor(max_workers=8) as pool:
            found = pool.map(
                lambda kv: path_mtu(self.desired.netns, kv[0], kv[1], timeout=self.timeout), biggest.items()
            )
            measured = {m.vtep: m for m in found}
        return MtuFacts(tuple(needs), measured)

    def decide(self, facts: MtuFacts | None) -> Finding:
        return _NO_STATE if facts is None else decide.decide_mtu(facts.needs, facts.measured)
