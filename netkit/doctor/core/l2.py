"""The L2 checks' decisions (pure): drift of owned links, FDB and neighbour entries from the
desired state; tenant bridges whose sysctls let the node answer ARP; the underlay filter missing
or edited; overlay MTU larger than what the path between VTEPs carries."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from netkit.doctor.core.model import Finding, Repair, ok, problem, unknown
from netkit.l2.core.plan import AddFdb, AddNeigh, DelFdb, DelNeigh, Op, Plan, SetLink

__all__ = [
    "SYSCTLS",
    "MtuNeed",
    "PathMtu",
    "decide_bridge_arp",
    "decide_drift",
    "decide_filter",
    "decide_mtu",
    "filter_lines",
    "split_ops",
]

SYSCTLS = frozenset({"arp_ignore", "rp_filter"})
_FDB_OPS = (AddFdb, DelFdb, AddNeigh, DelNeigh)


def split_ops(ops: Iterable[Op]) -> tuple[list[Op], list[Op]]:
    """(drift, sysctls): the plan's operations, with the IPv4 sysctl changes of links apart (the
    bridge-ARP check owns those)."""
    drift: list[Op] = []
    sysctls: list[Op] = []
    for op in ops:
        if isinstance(op, SetLink):
            mine = tuple(c for c in op.changes if c.field in SYSCTLS)
            rest = tuple(c for c in op.changes if c.field not in SYSCTLS)
            if mine:
                sysctls.append(replace(op, changes=mine))
            if rest:
                drift.append(replace(op, changes=rest))
        else:
            drift.append(op)
    return drift, sysctls


def _lines(ops: Sequence[Op], limit: int = 20) -> list[str]:
    out = [f"{op.symbol} {op.network}: {op.render()}" for op in ops[:limit]]
    if len(ops) > limit:
        out.append(f"... and {len(ops) - limit} more")
    return out


def decide_drift(pl: Plan) -> Finding:
    """Owned objects differ from the desired state: the repair applies the operations (only on
    objects netkit owns: the plan never touches anything else). Conflicts are not repaired."""
    drift, _ = split_ops(pl.ops)
    conflicts = [p for p in pl.problems if p.kind != "waiting"]
    if not drift and not conflicts:
        return ok(f"{len(pl.networks)} network(s) match the kernel", networks=len(pl.networks))
    if not drift:
        return problem(
            "NetworkConflict",
            "; ".join(f"{p.network}: {p.render()}" for p in conflicts),
            [f"{p.network}: {p.render()}" for p in conflicts],
            suggestion="an object netkit does not own is in the way: `netkit l2 status` names it",
        )
    fdb_only = all(isinstance(op, _FDB_OPS) for op in drift)
    reason = "FdbDrift" if fdb_only else "LinkDrift"
    what = "FDB/neighbour entries" if fdb_only else "links"
    nets = sorted({op.network for op in drift})
    return problem(
        reason,
        f"{len(drift)} change(s) to owned {what} pending on {', '.join(nets)}",
        _lines(drift),
        repair=Repair(f"apply {len(drift)} operation(s) to owned objects", tuple(drift)),
        operations=len(drift),
    )


def decide_bridge_arp(pl: Plan) -> Finding:
    """A tenant bridge (or VTEP) whose arp_ignore/rp_filter were reset: the node would answer
    ARP for its own addresses on a tenant segment, or accept IPv4 from it."""
    _, sysctls = split_ops(pl.ops)
    if not sysctls:
        return ok("every owned bridge ignores ARP (arp_ignore 8) and filters IPv4 (rp_filter 1)")
    names = sorted({op.name for op in sysctls if isinstance(op, SetLink)})
    return problem(
        "BridgeAnswersARP",
        f"{', '.join(names)}: arp_ignore/rp_filter reset (the node speaks on a tenant segment)",
        _lines(sysctls),
        repair=Repair(f"set arp_ignore/rp_filter back on {', '.join(names)}", tuple(sysctls)),
    )


_SINGLE_SET = re.compile(r"\{ ([^,{}\s]+) \}")


def filter_lines(text: str) -> list[str]:
    """A ruleset as comparable lines: stripped, no blank lines, ``{ x }`` as ``x`` (nft lists a
    one-element set without braces)."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line:
            out.append(_SINGLE_SET.sub(r"\1", line))
    return out


def decide_filter(expected: str | None, listed: str | None, owner_comment: str) -> Finding:
    """The underlay filter as rendered for the desired networks against ``nft list table``."""
    if listed is not None and owner_comment not in listed:
        return problem(
            "FilterNotOwned",
            "a table of the filter's name exists and is not netkit's: left alone",
            suggestion="remove or rename that nftables table",
        )
    if expected is None and listed is None:
        return ok("no VXLAN network on the node: no underlay filter needed")
    if expected is None:
        return problem(
            "FilterStale",
            "the underlay filter is there but no VXLAN network is desired",
            repair=Repair("remove the underlay filter", None),
        )
    if listed is None:
        return problem(
            "FilterMissing",
            "the underlay filter table is missing: any host can inject VXLAN into tenant networks",
            repair=Repair("load the underlay filter", expected),
        )
    want, have = filter_lines(expected), filter_lines(listed)
    missing = [line for line in want if line not in have]
    extra = [line for line in have if line not in want]
    if not missing and not extra:
        return ok("the underlay filter is as rendered", rules=len(want))
    return problem(
        "FilterEdited",
        f"the underlay filter was edited: {len(missing)} line(s) missing, {len(extra)} extra",
        [f"- {line}" for line in missing] + [f"+ {line}" for line in extra],
        repair=Repair("load the underlay filter again", expected),
    )


@dataclass(frozen=True)
class MtuNeed:
    """A remote VTEP of ``network`` must carry underlay packets of ``size`` bytes (the overlay
    MTU plus the VXLAN overhead: 50 over IPv4, 70 over IPv6)."""

    network: str
    vtep: str
    size: int


@dataclass(frozen=True)
class PathMtu:
    """What DF-set probes to a VTEP found: ``largest`` the largest packet that got through (None:
    none did)."""

    vtep: str
    largest: int | None
    probes: int = 0


def decide_mtu(needs: Sequence[MtuNeed], measured: Mapping[str, PathMtu]) -> Finding:
    if not needs:
        return unknown("NoRemoteVTEP", "no VXLAN network with a remote member on this node")
    bad: list[str] = []
    unreachable: list[str] = []
    for need in needs:
        got = measured.get(need.vtep)
        if got is None or got.largest is None:
            unreachable.append(f"{need.network}: VTEP {need.vtep} answers no probe")
        elif got.largest < need.size:
            bad.append(
                f"{need.network}: path to {need.vtep} carries {got.largest} bytes, the overlay needs "
                f"{need.size} (lower the L2Network's mtu by {need.size - got.largest})"
            )
    if bad:
        return problem(
            "PathMTUTooSmall",
            f"{len(bad)} VTEP path(s) drop full-size overlay frames",
            bad + unreachable,
            suggestion="lower spec.mtu of the network, or raise the MTU along the underlay path",
        )
    if unreachable:
        return problem(
            "VTEPUnreachable",
            f"{len(unreachable)} remote VTEP(s) unreachable over the underlay",
            unreachable,
            suggestion="check the underlay link and routes to those nodes",
        )
    sizes = sorted({n.size for n in needs})
    return ok(f"{len(measured)} VTEP path(s) carry {', '.join(map(str, sizes))}-byte packets with DF set")
