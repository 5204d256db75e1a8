"""Desired networks + observed kernel state -> an ordered list of operations (pure).

``plan(desired, node, observed)`` first compiles each network that applies to ``node`` into the
kernel objects it needs (``DesiredNetwork``: bridge, uplink, FDB and neighbour entries, ports),
then ``diff`` compares those with what is observed. ``plan_restore(checkpoint, current)`` diffs
against a checkpoint instead (rollback). ``simulate(observed, plan)`` applies a plan to a value
the way the kernel would (including its side effects: deleting a link drops its FDB entries and
frees its ports, moving a port flushes the bridge's entries for it), which is what makes the
idempotence property checkable without a kernel.

Rules:

- Only owned objects (``state`` module docstring) are changed or deleted. A desired link whose
  name is taken by a link the agent does not own is a *conflict*: the network is left alone
  entirely and reported. So is a VXLAN device or VLAN sub-interface that would clash with an
  unowned one in the kernel (same VNI and port; same VLAN id on the same underlay).
- A network that cannot be compiled (missing underlay, MTU the underlay cannot carry) is an
  *error*: nothing of it is created, changed or garbage-collected.
- Owned links of networks that are no longer desired on the node are deleted (their FDB and
  neighbour entries go with them). An owned link whose identity changed (kind, VNI, local
  address, UDP port, underlay, VLAN id, owning network) is replaced: deleted, then created.
- Order: detach ports, delete links (uplinks before bridges), delete FDB/neighbour entries,
  create bridges, create uplinks (enslaved at creation), set link attributes, add FDB/neighbour
  entries, attach ports. Each phase is computed against the simulated result of the previous
  ones, so, e.g., FDB entries flushed by a re-enslavement are added back in the same plan.
- A plan for a node that already matches is empty: zero operations, zero netlink writes.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from netkit.l2.core.model import L2Network, MtuError, overlay_mtu
from netkit.l2.core.state import (
    ZERO_MAC,
    DesiredNetwork,
    FdbEntry,
    Link,
    Neighbour,
    ObservedState,
    VlanInfo,
    VxlanInfo,
    bridge_mac,
    owner_alias,
)

Value = int | str | bool | None
ProblemKind = Literal["conflict", "error", "waiting"]

# Link fields a SetLink may change; everything else about an owned link is its identity.
SETTABLE = ("mtu", "up", "alias", "master", "neigh_suppress", "address", "addrgen", "arp_ignore", "rp_filter")
# managed only when desired: a link read from the kernel always has a value
OPTIONAL = ("addrgen", "arp_ignore", "rp_filter")
# the node stays off tenant segments: no ARP answers, no IPv4 accepted from the bridge
ARP_IGNORE_NEVER = 8
RP_FILTER_STRICT = 1


# ------------------------------------------------------------------------------------------
# Operations
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    field: str
    old: Value
    new: Value

    def render(self) -> str:
        return f"{self.field} {_show(self.old)} -> {_show(self.new)}"


def _show(v: Value) -> str:
    if v is None:
        return "(none)"
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)


@dataclass(frozen=True, slots=True)
class CreateLink:
    network: str
    link: Link
    symbol = "+"

    def render(self) -> str:
        return f"link {self.link.name}  {describe_link(self.link)}"


@dataclass(frozen=True, slots=True)
class SetLink:
    network: str
    name: str
    changes: tuple[Change, ...]
    symbol = "~"

    def render(self) -> str:
        return f"link {self.name}  " + ", ".join(c.render() for c in self.changes)


@dataclass(frozen=True, slots=True)
class DeleteLink:
    network: str
    link: Link
    reason: str = "no longer desired"
    symbol = "-"

    def render(self) -> str:
        return f"link {self.link.name}  {self.link.kind} ({self.reason})"


@dataclass(frozen=True, slots=True)
class AttachPort:
    network: str
    port: str
    bridge: str
    symbol = "+"

    def render(self) -> str:
        return f"port {self.port} master {self.bridge}"


@dataclass(frozen=True, slots=True)
class DetachPort:
    network: str
    port: str
    bridge: str
    symbol = "-"

    def render(self) -> str:
        return f"port {self.port} nomaster (was {self.bridge}; not declared)"


@dataclass(frozen=True, slots=True)
class AddFdb:
    network: str
    entry: FdbEntry
    symbol = "+"

    def render(self) -> str:
        return f"fdb {self.entry.render()}"


@dataclass(frozen=True, slots=True)
class DelFdb:
    network: str
    entry: FdbEntry
    symbol = "-"

    def render(self) -> str:
        return f"fdb {self.entry.render()}"


@dataclass(frozen=True, slots=True)
class AddNeigh:
    network: str
    entry: Neighbour
    symbol = "+"

    def render(self) -> str:
        return f"neigh {self.entry.render()}"


@dataclass(frozen=True, slots=True)
class DelNeigh:
    network: str
    entry: Neighbour
    symbol = "-"

    def render(self) -> str:
        return f"neigh {self.entry.render()}"


Op = CreateLink | SetLink | DeleteLink | AttachPort | DetachPort | AddFdb | DelFdb | AddNeigh | DelNeigh


@dataclass(frozen=True, slots=True)
class Problem:
    """Why (part of) a network is not applied: ``conflict`` (an unowned object is in the way),
    ``error`` (the network cannot be built on this node), ``waiting`` (a port does not exist yet)."""

    network: str
    kind: ProblemKind
    message: str

    def render(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(frozen=True)
class Plan:
    node: str
    ops: tuple[Op, ...] = ()
    problems: tuple[Problem, ...] = ()
    networks: tuple[str, ...] = ()  # networks desired on the node (file order)

    @property
    def empty(self) -> bool:
        return not self.ops

    @property
    def failed(self) -> bool:
        """True if some network is in conflict or in error (``waiting`` is not a failure)."""
        return any(p.kind != "waiting" for p in self.problems)

    def for_network(self, network: str) -> list[Op]:
        return [op for op in self.ops if op.network == network]

    def counts(self) -> dict[str, int]:
        out = {"add": 0, "change": 0, "destroy": 0}
        for op in self.ops:
            out[{"+": "add", "~": "change", "-": "destroy"}[op.symbol]] += 1
        return out

    def render(self) -> str:
        """A ``terraform plan``-like text: operations grouped by network, problems, a summary."""
        lines: list[str] = []
        order = list(self.networks)
        for op in self.ops:
            if op.network not in order:
                order.append(op.network)
        for p in self.problems:
            if p.network not in order:
                order.append(p.network)
        for net in order:
            ops = self.for_network(net)
            problems = [p for p in self.problems if p.network == net]
            if not ops and not problems:
                continue
            title = f"network {net}" + ("" if net in self.networks else " (not desired on this node)")
            lines.append(title)
            lines.extend(f"  {op.symbol} {op.render()}" for op in ops)
            lines.extend(f"  ! {p.render()}" for p in problems)
            lines.append("")
        c = self.counts()
        if self.empty:
            lines.append(f"No changes: node {self.node} matches the desired networks.")
        else:
            lines.append(f"Plan: {c['add']} to add, {c['change']} to change, {c['destroy']} to destroy.")
        kinds = sorted({p.kind for p in self.problems})
        if kinds:
            n = {k: sum(1 for p in self.problems if p.kind == k) for k in kinds}
            lines.append("Problems: " + ", ".join(f"{n[k]} {k}" for k in kinds) + ".")
        return "\n".join(lines)


def describe_link(link: Link) -> str:
    parts = [link.kind]
    if link.vxlan:
        v = link.vxlan
        parts.append(f"id {v.vni} local {v.local} dstport {v.port}")
        if v.underlay:
            parts.append(f"dev {v.underlay}")
        parts.append("learning" if v.learning else "nolearning")
    if link.vlan:
        parts.append(f"id {link.vlan.vlan_id} link {link.vlan.underlay}")
    parts.append(f"mtu {link.mtu}")
    if link.master:
        parts.append(f"master {link.master}")
    if link.neigh_suppress:
        parts.append("neigh_suppress on")
    if link.address:
        parts.append(f"address {link.address}")
    if link.addrgen is False:
        parts.append("addrgenmode none")
    if link.arp_ignore is not None:
        parts.append(f"arp_ignore {link.arp_ignore}")
    if link.rp_filter is not None:
        parts.append(f"rp_filter {link.rp_filter}")
    parts.append("up" if link.up else "down")
    if link.alias:
        parts.append(f'alias "{link.alias}"')
    return " ".join(parts)


# ------------------------------------------------------------------------------------------
# Compile: one network on one node -> kernel objects
# ------------------------------------------------------------------------------------------


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _resolve_underlay(net: L2Network, node: str, observed: ObservedState) -> Link | Problem:
    spec = net.underlay
    if spec is None:
        vtep = net.vtep(node)
        assert vtep is not None
        found = observed.link_with_address(vtep)
        if found is None:
            return Problem(
                net.name, "error", f"underlay: no interface on node {node} has its VTEP address {vtep}"
            )
        return found
    if _is_ip(spec):
        found = observed.link_with_address(spec)
        if found is None:
            return Problem(net.name, "error", f"underlay: no interface on node {node} has address {spec}")
        return found
    link = observed.links.get(spec)
    if link is None:
        return Problem(net.name, "error", f"underlay: interface {spec} not found on node {node}")
    return link


@functools.lru_cache(maxsize=8192)
def _network_objects(
    net: L2Network, node: str, underlay_name: str, mtu: int
) -> tuple[Link, Link, frozenset[FdbEntry], frozenset[Neighbour]]:
    """The bridge, the uplink and the FDB/neighbour entries of ``net`` on ``node`` (memoised:
    they depend on nothing else, and 1,000 networks x 50 VTEPs are 50,000 values a round)."""
    alias = owner_alias(net.name)
    bridge = net.bridge
    remote = net.remote_endpoints(node)
    suppress = bool(remote)
    bridge_link = Link(
        bridge,
        "bridge",
        mtu,
        True,
        alias,
        address=bridge_mac(net.name, node),
        addrgen=False,
        arp_ignore=ARP_IGNORE_NEVER,
        rp_filter=RP_FILTER_STRICT,
    )
    fdb: set[FdbEntry] = set()
    neighbours: set[Neighbour] = set()
    if net.kind == "vxlan":
        local = net.vtep(node)
        uplink = Link(
            net.uplink,
            "vxlan",
            mtu,
            True,
            alias,
            bridge,
            vxlan=VxlanInfo(net.segment, local, net.port, False, underlay_name),
            neigh_suppress=suppress,
            addrgen=False,
        )
        for _, vtep in net.remote_vteps(node):
            fdb.add(FdbEntry(uplink.name, ZERO_MAC, vtep))
        for ep in remote:
            dst = net.vtep(ep.node)
            fdb.add(FdbEntry(uplink.name, ep.mac, dst))
    else:
        uplink = Link(
            net.uplink,
            "vlan",
            mtu,
            True,
            alias,
            bridge,
            vlan=VlanInfo(net.segment, underlay_name),
            neigh_suppress=suppress,
            addrgen=False,
        )
    for ep in remote:
        fdb.add(FdbEntry(uplink.name, ep.mac, None, master=True, state="static"))
        if ep.ip:
            neighbours.add(Neighbour(bridge, ep.ip, ep.mac, "permanent"))
    return bridge_link, uplink, frozenset(fdb), frozenset(neighbours)


def compile_network(
    net: L2Network, node: str, observed: ObservedState
) -> tuple[DesiredNetwork | None, list[Problem]]:
    """The kernel objects ``net`` needs on ``node``, or None and the problems that prevent it.

    Port problems (a declared port missing, or enslaved to a bridge the agent does not own) are
    returned alongside a compiled network: the rest of the network is still applied.
    """
    underlay = _resolve_underlay(net, node, observed)
    if isinstance(underlay, Problem):
        return None, [underlay]
    try:
        mtu = overlay_mtu(net, underlay.mtu)
    except MtuError as exc:
        return None, [Problem(net.name, "error", f"{exc} (underlay {underlay.name} on node {node})")]
    alias = owner_alias(net.name)
    bridge = net.bridge
    bridge_link, uplink, fdb, neighbours = _network_objects(net, node, underlay.name, mtu)

    problems: list[Problem] = []
    for want in (bridge_link, uplink):
        have = observed.links.get(want.name)
        if have is not None and have.owner is None:
            problems.append(
                Problem(
                    net.name,
                    "conflict",
                    f"link {want.name} exists and is not managed by netkit "
                    f"(kind {have.kind}, no alias {alias}): left untouched",
                )
            )
    for have in observed.unowned_uplinks():
        if have.name == uplink.name:
            continue
        if uplink.vxlan and have.vxlan and (have.vxlan.vni, have.vxlan.port) == (net.segment, net.port):
            problems.append(
                Problem(
                    net.name,
                    "conflict",
                    f"VNI {net.segment} (port {net.port}) is already used by {have.name}, "
                    "which netkit does not manage",
                )
            )
        if uplink.vlan and have.vlan and have.vlan == uplink.vlan:
            problems.append(
                Problem(
                    net.name,
                    "conflict",
                    f"VLAN {net.segment} on {underlay.name} is already used by {have.name}, "
                    "which netkit does not manage",
                )
            )
    if problems:
        return None, problems

    ports: list[str] = []
    for name in net.ports_on(node):
        port = observed.links.get(name)
        if port is None:
            problems.append(Problem(net.name, "waiting", f"port {name} does not exist (yet)"))
        elif port.owner is not None:
            problems.append(
                Problem(net.name, "conflict", f"port {name} is a netkit link ({port.alias}): not attached")
            )
        elif port.master and port.master != bridge and not observed.is_owned_bridge(port.master):
            problems.append(
                Problem(
                    net.name,
                    "conflict",
                    f"port {name} is enslaved to {port.master}, which netkit does not manage: not attached",
                )
            )
        else:
            ports.append(name)
    desired = DesiredNetwork(net.name, bridge, (bridge_link, uplink), fdb, neighbours, tuple(ports))
    return desired, problems


# ------------------------------------------------------------------------------------------
# Diff
# ------------------------------------------------------------------------------------------


def _needs_replace(have: Link, want: Link, want_network: str) -> str | None:
    if have.owner != want_network:
        return f"replace: owned by network {have.owner}"
    if have.kind != want.kind:
        return f"replace: kind {have.kind} -> {want.kind}"
    if have.vxlan != want.vxlan:
        return f"replace: vxlan {_vx(have.vxlan)} -> {_vx(want.vxlan)}"
    if have.vlan != want.vlan:
        return "replace: vlan attributes changed"
    return None


def _vx(v: VxlanInfo | None) -> str:
    if v is None:
        return "(none)"
    learning = "learning" if v.learning else "nolearning"
    return f"id {v.vni} local {v.local} dstport {v.port} dev {v.underlay} {learning}"


def _link_changes(have: Link, want: Link) -> tuple[Change, ...]:
    changes = [
        Change(f, getattr(have, f), getattr(want, f))
        for f in SETTABLE
        if f != "neigh_suppress"
        and getattr(have, f) != getattr(want, f)
        and not (f == "address" and want.address is None)
        and not (f in OPTIONAL and (getattr(want, f) is None or getattr(have, f) is None))
    ]
    # A new master resets the bridge-port flags (the kernel makes a new port): compare the
    # flag with what it will be after the move.
    if want.master is not None:
        after = False if have.master != want.master else have.neigh_suppress
        if after != want.neigh_suppress:
            changes.append(Change("neigh_suppress", have.neigh_suppress, want.neigh_suppress))
    return tuple(changes)


def diff(
    targets: Sequence[DesiredNetwork],
    observed: ObservedState,
    keep: Iterable[str] = (),
) -> tuple[Op, ...]:
    """Operations that turn ``observed`` into ``targets`` without touching unowned objects.

    Owned objects of networks in ``keep`` (desired but not compilable right now) are left as
    they are; other owned links that no target wants are deleted.
    """
    held = set(keep)
    wanted: dict[str, tuple[str, Link]] = {}
    for t in targets:
        for lk in t.links:
            wanted[lk.name] = (t.network, lk)
    declared = {p: t.bridge for t in targets for p in t.ports}

    # Phase 1: detach undeclared ports from owned bridges that stay; delete links.
    ops1: list[Op] = []
    deletes: list[DeleteLink] = []
    for lk in sorted(observed.links.values(), key=lambda x: x.name):
        owner = lk.owner
        if owner is None or owner in held:
            continue
        if lk.name not in wanted:
            deletes.append(DeleteLink(owner, lk))
            continue
        net, want = wanted[lk.name]
        reason = _needs_replace(lk, want, net)
        if reason:
            deletes.append(DeleteLink(owner, lk, reason))
    deleted = {d.link.name for d in deletes}
    for lk in sorted(observed.links.values(), key=lambda x: x.name):
        if lk.owner is not None or lk.master is None or lk.master in deleted:
            continue
        if not observed.is_owned_bridge(lk.master):
            continue
        bridge_owner = observed.links[lk.master].owner
        if bridge_owner in held or declared.get(lk.name) is not None:
            continue
        if lk.attached_to is not None and lk.attached_to == bridge_owner:
            continue  # a pod's veth netkit-cni attached: a declared port of this bridge
        ops1.append(DetachPort(bridge_owner or "", lk.name, lk.master))
    deletes.sort(key=lambda d: (d.link.kind == "bridge", d.link.name))
    ops1.extend(deletes)
    state1 = simulate(observed, ops1)

    # Phase 2: remove owned FDB/neighbour entries nobody wants (on links that stay).
    want_fdb = {e: t.network for t in targets for e in t.fdb}
    want_neigh = {n: t.network for t in targets for n in t.neighbours}
    ops2: list[Op] = []
    # (filter, then sort: tens of thousands of entries are normal, stale ones are few)
    for e in sorted((e for e in state1.owned_fdb() if e not in want_fdb), key=lambda x: x.sort_key):
        owner = state1.links[e.ifname].owner
        if owner in held:
            continue
        ops2.append(DelFdb(owner or "", e))
    for n in sorted((n for n in state1.owned_neighbours() if n not in want_neigh), key=lambda x: x.sort_key):
        owner = state1.links[n.ifname].owner
        if owner in held:
            continue
        ops2.append(DelNeigh(owner or "", n))
    state2 = simulate(state1, ops2)

    # Phase 3: create missing links (bridges first), set attributes of existing ones.
    creates: list[CreateLink] = []
    sets: list[SetLink] = []
    for t in targets:
        for want in t.links:
            have = state2.links.get(want.name)
            if have is None:
                creates.append(CreateLink(t.network, want))
            elif have.owner == t.network:
                changes = _link_changes(have, want)
                if changes:
                    sets.append(SetLink(t.network, want.name, changes))
    creates.sort(key=lambda c: c.link.kind != "bridge")
    ops3: list[Op] = [*creates, *sets]
    state3 = simulate(state2, ops3)

    # Phase 4: add missing FDB/neighbour entries, attach declared ports.
    ops4: list[Op] = []
    missing_fdb = [(e, net) for e, net in want_fdb.items() if e not in state3.fdb]
    for e, net in sorted(missing_fdb, key=lambda x: x[0].sort_key):
        if e.ifname in state3.links:
            ops4.append(AddFdb(net, e))
    missing_neigh = [(n, net) for n, net in want_neigh.items() if n not in state3.neighbours]
    for n, net in sorted(missing_neigh, key=lambda x: x[0].sort_key):
        if n.ifname in state3.links:
            ops4.append(AddNeigh(net, n))
    for t in targets:
        if t.bridge not in state3.links:
            continue
        for p in t.ports:
            port = state3.links.get(p)
            if port is None or port.owner is not None or port.master == t.bridge:
                continue
            if port.master is not None and not state3.is_owned_bridge(port.master):
                continue
            ops4.append(AttachPort(t.network, p, t.bridge))
    return (*ops1, *ops2, *ops3, *ops4)


def plan(desired: Sequence[L2Network], node: str, observed: ObservedState) -> Plan:
    """The operations that make ``observed`` match the networks of ``desired`` on ``node``."""
    targets: list[DesiredNetwork] = []
    problems: list[Problem] = []
    held: set[str] = set()
    names: list[str] = []
    for net in desired:
        if not net.applies_to(node):
            continue
        names.append(net.name)
        compiled, found = compile_network(net, node, observed)
        problems.extend(found)
        if compiled is None:
            held.add(net.name)
        else:
            targets.append(compiled)
    ops = diff(targets, observed, held)
    return Plan(node, ops, tuple(problems), tuple(names))


def checkpoint_targets(checkpoint: ObservedState) -> list[DesiredNetwork]:
    """The owned objects of a checkpoint, grouped by network, as targets for ``diff``."""
    by_net: dict[str, list[Link]] = {}
    for lk in checkpoint.owned_links():
        assert lk.owner is not None
        by_net.setdefault(lk.owner, []).append(lk)
    out: list[DesiredNetwork] = []
    fdb = checkpoint.owned_fdb()
    neigh = checkpoint.owned_neighbours()
    for net, links in sorted(by_net.items()):
        links.sort(key=lambda x: (x.kind != "bridge", x.name))
        names = {lk.name for lk in links}
        bridges = [lk.name for lk in links if lk.kind == "bridge"]
        ports = tuple(
            sorted(
                lk.name
                for lk in checkpoint.links.values()
                if lk.owner is None and lk.master is not None and lk.master in bridges
            )
        )
        out.append(
            DesiredNetwork(
                net,
                bridges[0] if bridges else "",
                tuple(links),
                frozenset(e for e in fdb if e.ifname in names),
                frozenset(n for n in neigh if n.ifname in names),
                ports,
            )
        )
    return out


def plan_restore(checkpoint: ObservedState, current: ObservedState, node: str = "") -> Plan:
    """The operations that bring the owned objects of ``current`` back to ``checkpoint``.

    What the agent does not own is not part of a checkpoint and is never touched; ports that
    were attached by the failed apply are detached again (or freed when their bridge goes).
    """
    targets = checkpoint_targets(checkpoint)
    ops = diff(targets, current)
    return Plan(node, ops, (), tuple(t.network for t in targets))


# ------------------------------------------------------------------------------------------
# Simulation: what the kernel does with a plan
# ------------------------------------------------------------------------------------------


def _set_master(links: dict[str, Link], fdb: set[FdbEntry], name: str, master: str | None) -> None:
    lk = links[name]
    if lk.master == master:
        return
    links[name] = replace(lk, master=master, neigh_suppress=False if master else None)
    # leaving (or changing) a bridge flushes the bridge's entries for the port
    for e in [e for e in fdb if e.master and e.ifname == name]:
        fdb.discard(e)


def _delete(links: dict[str, Link], fdb: set[FdbEntry], neigh: set[Neighbour], name: str) -> None:
    if name not in links:
        return
    del links[name]
    for e in [e for e in fdb if e.ifname == name]:
        fdb.discard(e)
    for n in [n for n in neigh if n.ifname == name]:
        neigh.discard(n)
    for other in list(links.values()):
        if other.name not in links:
            continue
        if other.master == name:
            _set_master(links, fdb, other.name, None)
        lower = other.vxlan.underlay if other.vxlan else other.vlan.underlay if other.vlan else None
        if lower == name:  # the kernel deletes VXLAN/VLAN devices on top of a deleted device
            _delete(links, fdb, neigh, other.name)


def simulate(observed: ObservedState, ops: Iterable[Op] | Plan) -> ObservedState:
    """``observed`` after ``ops``, with the kernel's side effects. Pure; for tests and planning.

    No operations: ``observed`` itself (values are immutable; its cached sets stay valid)."""
    ops = list(ops.ops if isinstance(ops, Plan) else ops)
    if not ops:
        return observed
    links = dict(observed.links)
    fdb = set(observed.fdb)
    neigh = set(observed.neighbours)
    addresses = set(observed.addresses)
    # built on first use; may hold entries removed since (checked against the sets on use)
    self_index: dict[tuple[str, str, str | None], set[FdbEntry]] | None = None
    neigh_index: dict[tuple[str, str], set[Neighbour]] | None = None
    for op in ops:
        if isinstance(op, CreateLink):
            links[op.link.name] = op.link
        elif isinstance(op, SetLink):
            for c in op.changes:
                if c.field == "master":
                    assert c.new is None or isinstance(c.new, str)
                    _set_master(links, fdb, op.name, c.new)
            values: dict[str, Value] = {c.field: c.new for c in op.changes if c.field != "master"}
            if values:
                links[op.name] = replace(links[op.name], **values)  # type: ignore[arg-type]
        elif isinstance(op, DeleteLink):
            _delete(links, fdb, neigh, op.link.name)
            addresses = {a for a in addresses if a[0] in links}
        elif isinstance(op, AttachPort):
            _set_master(links, fdb, op.port, op.bridge)
        elif isinstance(op, DetachPort):
            _set_master(links, fdb, op.port, None)
        elif isinstance(op, AddFdb):
            e = op.entry
            if e.master:
                bridge = links[e.ifname].master
                ports = {n for n, lk in links.items() if lk.master == bridge}
                fdb -= {x for x in fdb if x.master and x.mac == e.mac and x.ifname in ports}
            else:
                # the entries an append replaces: same device, MAC and VTEP (any port/VNI/state)
                if self_index is None:
                    self_index = {}
                    for x in fdb:
                        if not x.master:
                            self_index.setdefault((x.ifname, x.mac, x.dst), set()).add(x)
                key = (e.ifname, e.mac, e.dst)
                same = self_index.setdefault(key, set())
                fdb -= {x for x in same if x in fdb}
                same.clear()
                same.add(e)
            fdb.add(e)
        elif isinstance(op, DelFdb):
            fdb.discard(op.entry)
        elif isinstance(op, AddNeigh):
            n = op.entry
            if neigh_index is None:
                neigh_index = {}
                for y in neigh:
                    neigh_index.setdefault((y.ifname, y.ip), set()).add(y)
            same_n = neigh_index.setdefault((n.ifname, n.ip), set())
            neigh -= {y for y in same_n if y in neigh}
            same_n.clear()
            same_n.add(n)
            neigh.add(n)
        elif isinstance(op, DelNeigh):
            neigh.discard(op.entry)
    return ObservedState(links, frozenset(fdb), frozenset(neigh), frozenset(addresses))


# ------------------------------------------------------------------------------------------
# Status
# ------------------------------------------------------------------------------------------

Status = Literal["ok", "missing", "drifted", "conflict", "error", "orphaned"]


@dataclass(frozen=True, slots=True)
class NetworkStatus:
    network: str
    status: Status
    detail: str = ""


def network_status(pl: Plan, observed: ObservedState) -> list[NetworkStatus]:
    """Each desired network's state on the node, then owned networks no longer desired.

    ``ok``: nothing to do. ``missing``: none of its links exist. ``drifted``: some operations
    pending. ``conflict``/``error``: see the problems. ``orphaned``: owned but not desired.
    """
    owners: dict[str, int] = {}
    for lk in observed.owned_links():
        assert lk.owner is not None
        owners[lk.owner] = owners.get(lk.owner, 0) + 1
    out: list[NetworkStatus] = []
    for net in pl.networks:
        problems = [p for p in pl.problems if p.network == net]
        ops = pl.for_network(net)
        hard = [p for p in problems if p.kind != "waiting"]
        notes = "; ".join(p.message for p in problems)
        if any(p.kind == "error" for p in hard):
            out.append(NetworkStatus(net, "error", notes))
        elif hard:
            out.append(NetworkStatus(net, "conflict", notes))
        elif not owners.get(net):
            out.append(NetworkStatus(net, "missing", notes))
        elif ops:
            detail = f"{len(ops)} change(s) pending" + (f"; {notes}" if notes else "")
            out.append(NetworkStatus(net, "drifted", detail))
        else:
            out.append(NetworkStatus(net, "ok", notes))
    for net in sorted(set(owners) - set(pl.networks)):
        out.append(NetworkStatus(net, "orphaned", "owned links of a network no longer desired here"))
    return out


def summarize(statuses: Mapping[str, str] | Sequence[NetworkStatus]) -> dict[str, int]:
    counts: dict[str, int] = {}
    items = statuses.values() if isinstance(statuses, Mapping) else [s.status for s in statuses]
    for s in items:
        counts[s] = counts.get(s, 0) + 1
    return counts
