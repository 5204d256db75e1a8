"""What the L2 controller writes (pure): each node's ``NodeState.spec.l2Networks`` from the
desired state and the rollouts; and the agent's way back from a published entry to the
``netkit.l2`` model it reconciles.

A node the rollout has not reached keeps the entry it was published before (the old generation,
resolved as it was); a node that never had the network gets it only when the rollout reaches it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from netkit.control.core.l2desired import Desired
from netkit.control.core.rollout import Rollout
from netkit.l2.core.model import VXLAN_PORT, Endpoint, L2Network, Member, Port

__all__ = ["entry_of", "network_of", "node_networks"]

Obj = dict[str, Any]


def entry_of(net: L2Network, generation: int, probes: Sequence[Mapping[str, Any]] = ()) -> Obj:
    """A resolved network as a ``NodeState.spec.l2Networks`` entry (with the object's probes)."""
    entry: Obj = {"name": net.name, "generation": generation, "type": net.kind}
    if net.kind == "vxlan":
        entry["vni"] = net.vni
        entry["port"] = net.port
    else:
        entry["vlan"] = net.vlan_id
    if net.underlay:
        entry["underlay"] = net.underlay
    if net.mtu is not None:
        entry["mtu"] = net.mtu
    entry["members"] = [{"node": m.node, **({"vtep": m.vtep} if m.vtep else {})} for m in net.members]
    if net.endpoints:
        entry["endpoints"] = [
            {"mac": e.mac, "node": e.node, **({"ip": e.ip} if e.ip else {})} for e in net.endpoints
        ]
    if net.ports:
        entry["ports"] = [p.name for p in net.ports]
    if probes:
        entry["probes"] = [
            {"address": str(p["address"]), "timeoutSeconds": int(p.get("timeoutSeconds", 5))} for p in probes
        ]
    return entry


def network_of(entry: Mapping[str, Any]) -> L2Network:
    """The agent's side: a published entry as the model the L2 reconcile takes."""
    vxlan = entry["type"] == "vxlan"
    return L2Network(
        name=str(entry["name"]),
        kind="vxlan" if vxlan else "vlan",
        vni=entry.get("vni") if vxlan else None,
        vlan_id=None if vxlan else entry.get("vlan"),
        underlay=entry.get("underlay"),
        port=int(entry.get("port", VXLAN_PORT)),
        mtu=entry.get("mtu"),
        members=tuple(Member(str(m["node"]), m.get("vtep")) for m in entry.get("members", ())),
        endpoints=tuple(
            Endpoint(str(e["mac"]), str(e["node"]), e.get("ip")) for e in entry.get("endpoints", ())
        ),
        ports=tuple(Port(str(p)) for p in entry.get("ports", ())),
    )


def node_networks(
    node: str,
    desired: Desired,
    rollouts: Mapping[str, Rollout],
    previous: Sequence[Mapping[str, Any]],
    probes: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> list[Obj]:
    """``node``'s entries: the target generation where its rollout reached it, else what it had."""
    had = {str(e["name"]): dict(e) for e in previous}
    target = {net.name: net for net in desired.per_node.get(node, ())}
    out: list[Obj] = []
    for name in sorted(set(target) | set(had)):
        rollout = rollouts.get(name)
        told = rollout.publish.get(node) if rollout is not None else None
        if name in target and told == desired.generations.get(name):
            out.append(entry_of(target[name], desired.generations[name], (probes or {}).get(name, ())))
        elif name in target and name in had and told is not None and had[name].get("generation") == told:
            out.append(had[name])  # not reached yet: the generation it runs, as it was
        # else: not selected any more, being deleted, in conflict, or not reached and never had it
    return out
