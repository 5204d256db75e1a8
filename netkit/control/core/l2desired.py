"""L2Network objects and Node objects -> what every node should run (pure).

Each object becomes, per selected node, a ``netkit.l2.core.model.L2Network`` resolved for that
node: VXLAN members are the selected nodes with their InternalIP as VTEP, the underlay is the
node's entry of ``underlay.perNode`` (first match) or ``underlay.interface``. What the schema
cannot see is found here and reported per object, naming the other object:

- two objects with one VNI, or one VLAN id on one node's underlay, or deriving one interface
  name: the older object (creation time, then name) keeps it, the other is **Conflict**: nothing
  of it is applied anywhere; the rest is;
- a VXLAN node without an InternalIP: that node is left out (**NodeUnusable**), the others run.

Pods attached by ``netkit-cni`` (each node's agent publishes them: ``attachments``, node -> its
``NodeState.status.endpoints``) join a VXLAN network's endpoints on every node that runs it,
beside ``spec.endpoints``: the other nodes then hold a static FDB entry and an ARP/ND
suppression entry for each. An attachment on a node the network does not select is ignored.

An object being deleted (deletionTimestamp) is desired nowhere, so every agent removes it; its
finalizer goes once every node reports it removed (``removal_done``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netkit.control.core.conditions import Problem
from netkit.control.core.selectors import matches
from netkit.l2.core.model import VXLAN_PORT, Endpoint, L2Network, Member, Port

__all__ = ["Desired", "NetworkObject", "Node", "Problem", "desired_l2", "removal_done"]


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    internal_ip: str | None = None  # status.addresses[type=InternalIP]


@dataclass(frozen=True, slots=True)
class NetworkObject:
    """An L2Network as read from the API (spec already defaulted and validated by the server)."""

    name: str
    generation: int
    created: str  # metadata.creationTimestamp, RFC 3339
    spec: Mapping[str, Any]
    deleting: bool = False


@dataclass(frozen=True, slots=True)
class Desired:
    per_node: dict[str, tuple[L2Network, ...]]  # node -> its networks, by name
    selected: dict[str, tuple[str, ...]]  # object -> the nodes that run it
    problems: dict[str, tuple[Problem, ...]]  # object -> what keeps it (or a node) out
    generations: dict[str, int]  # object -> the generation this describes


def _underlay(spec: Mapping[str, Any], node: Node) -> str | None:
    underlay = spec.get("underlay") or {}
    for entry in underlay.get("perNode") or ():
        if matches(entry.get("nodeSelector"), node.labels):
            return str(entry["interface"])
    value = underlay.get("interface")
    return str(value) if value else None


def _discovered(
    obj: NetworkObject, selected: set[str], attachments: Mapping[str, Sequence[Mapping[str, Any]]]
) -> tuple[Endpoint, ...]:
    """The pods attached to ``obj`` on its selected nodes, one endpoint per MAC (with its first
    IPv4 address, else its first address), as spec.endpoints would list them."""
    out: dict[str, Endpoint] = {}
    for node in sorted(attachments):
        if node not in selected:
            continue
        for a in attachments[node]:
            if a.get("network") != obj.name or not a.get("mac"):
                continue
            ips = [str(ip).split("/")[0] for ip in a.get("ips") or ()]
            v4 = [ip for ip in ips if ":" not in ip]
            mac = str(a["mac"]).lower()
            first = (v4 or ips)[0] if (v4 or ips) else None
            out.setdefault(mac, Endpoint(mac=mac, node=node, ip=first))
    return tuple(out[m] for m in sorted(out))


def _resolve(
    obj: NetworkObject, node: Node, members: tuple[Member, ...], discovered: tuple[Endpoint, ...] = ()
) -> L2Network:
    spec = obj.spec
    vxlan = spec.get("type", "vxlan") == "vxlan"
    declared = tuple(
        Endpoint(mac=str(e["mac"]).lower(), node=str(e["node"]), ip=e.get("ip"))
        for e in spec.get("endpoints") or ()
        if vxlan
    )
    known = {e.mac for e in declared}
    return L2Network(
        name=obj.name,
        kind="vxlan" if vxlan else "vlan",
        vni=spec.get("vni") if vxlan else None,
        vlan_id=None if vxlan else spec.get("vlan"),
        underlay=_underlay(spec, node),
        port=int(spec.get("port", VXLAN_PORT)),
        mtu=spec.get("mtu"),
        members=members,
        endpoints=declared + tuple(e for e in discovered if vxlan and e.mac not in known),
        ports=tuple(
            Port(str(p["interface"]))  # resolved for this node: on it
            for p in spec.get("ports") or ()
            if p.get("node") in (None, "", node.name)
        ),
    )


def desired_l2(
    nodes: Iterable[Node],
    objects: Iterable[NetworkObject],
    attachments: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Desired:
    node_list = sorted(nodes, key=lambda n: n.name)
    live = sorted((o for o in objects if not o.deleting), key=lambda o: (o.created, o.name))
    problems: dict[str, list[Problem]] = {o.name: [] for o in live}
    selected: dict[str, tuple[str, ...]] = {}
    resolved: dict[str, dict[str, L2Network]] = {}
    for obj in live:
        picked = [n for n in node_list if matches(obj.spec.get("nodeSelector"), n.labels)]
        if obj.spec.get("type", "vxlan") == "vxlan":
            usable = []
            for n in picked:
                if n.internal_ip is None:
                    problems[obj.name].append(
                        Problem("NodeUnusable", f"node {n.name} has no InternalIP for a VTEP")
                    )
                else:
                    usable.append(n)
            families = {ipaddress.ip_address(n.internal_ip).version for n in usable if n.internal_ip}
            if len(families) > 1:  # VTEPs of one network are all IPv4 or all IPv6: keep the first's
                first = ipaddress.ip_address(usable[0].internal_ip or "").version
                for n in usable:
                    if ipaddress.ip_address(n.internal_ip or "").version != first:
                        problems[obj.name].append(
                            Problem(
                                "NodeUnusable",
                                f"node {n.name}: its InternalIP is not IPv{first} as the others",
                            )
                        )
                usable = [n for n in usable if ipaddress.ip_address(n.internal_ip or "").version == first]
            picked = usable
            members = tuple(Member(n.name, n.internal_ip) for n in picked)
        else:
            members = tuple(Member(n.name) for n in picked)
        selected[obj.name] = tuple(n.name for n in picked)
        found = _discovered(obj, set(selected[obj.name]), attachments or {})
        resolved[obj.name] = {n.name: _resolve(obj, n, members, found) for n in picked}
    _conflicts(live, resolved, problems)
    per_node: dict[str, list[L2Network]] = {n.name: [] for n in node_list}
    for obj in live:
        if any(p.reason == "Conflict" for p in problems[obj.name]):
            selected[obj.name] = ()
            continue
        for node_name, net in resolved[obj.name].items():
            per_node[node_name].append(net)
    return Desired(
        per_node={k: tuple(sorted(v, key=lambda n: n.name)) for k, v in per_node.items()},
        selected=selected,
        problems={k: tuple(v) for k, v in problems.items()},
        generations={o.name: o.generation for o in live},
    )


def _conflicts(
    live: Sequence[NetworkObject],
    resolved: Mapping[str, Mapping[str, L2Network]],
    problems: dict[str, list[Problem]],
) -> None:
    """Older objects first: each claims its VNI, its (node, underlay, VLAN) and its interface
    names; a later object that meets a claim is a Conflict naming the holder."""
    vnis: dict[int, str] = {}
    vlans: dict[tuple[str, str | None, int], str] = {}
    links: dict[tuple[str, str], str] = {}
    for obj in live:
        found: list[str] = []
        nets = resolved[obj.name]
        if obj.spec.get("type", "vxlan") == "vxlan":
            vni = int(obj.spec["vni"])
            if vni in vnis:
                found.append(f"VNI {vni} is already used by L2Network {vnis[vni]}")
        for node, net in nets.items():
            if net.kind == "vlan":
                key = (node, net.underlay, net.segment)
                if key in vlans:
                    found.append(
                        f"VLAN {net.segment} on {net.underlay or 'the default underlay'} of node {node} "
                        f"is already used by L2Network {vlans[key]}"
                    )
            for link in (net.bridge, net.uplink):
                if (node, link) in links and links[(node, link)] != obj.name:
                    found.append(
                        f"interface {link} on node {node} is already L2Network {links[(node, link)]}'s"
                    )
        if found:
            problems[obj.name].append(Problem("Conflict", "; ".join(dict.fromkeys(found))))
            continue
        if obj.spec.get("type", "vxlan") == "vxlan":
            vnis[int(obj.spec["vni"])] = obj.name
        for node, net in nets.items():
            if net.kind == "vlan":
                vlans[(node, net.underlay, net.segment)] = obj.name
            for link in (net.bridge, net.uplink):
                links[(node, link)] = obj.name


def removal_done(name: str, reports: Mapping[str, Mapping[str, str]]) -> bool:
    """Every node's report (node -> object -> state) says ``name`` is gone from it: the finalizer
    may be removed. A node that reports nothing of it has nothing of it."""
    return all(objects.get(name, "Removed") == "Removed" for objects in reports.values())
