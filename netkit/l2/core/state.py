"""Kernel objects as plain values (pure): what the L2 agent observes and what it wants.

``kernel`` reads a namespace into these values and turns them into netlink requests; ``plan``
compares them. Whether something "is already so" is a comparison of two values.

Ownership
---------
Links the agent creates carry the interface alias (``IFLA_IFALIAS``, ``ip link set X alias``)
``netkit:l2:<network>``. The alias lives in the kernel next to the link, survives agent
restarts and needs no state file that could disagree with the kernel; ``ip -d link`` shows it to
an operator; and it names the network, so a link can be garbage-collected when its network is no
longer desired. kubernetes-nmstate tracks what it manages in the NodeNetworkState the same way:
by reading it back from the node, not from a private record. A link without that alias is never
changed or deleted, even when its name is one the agent would use: it is reported as a conflict.

What the agent owns besides its links:

- FDB entries on its uplinks (the VXLAN device or the VLAN sub-interface of a network): the
  device's own entries (``bridge fdb ... self``: head-end replication and known MACs) except
  dynamic ones, and the bridge's ``static`` entries for that port (``... master static``). The
  bridge's ``permanent`` entry for the port's own MAC is the kernel's, learned entries are the
  bridge's.
- ``permanent`` neighbour entries on its bridges (ARP/ND suppression).
- The enslavement of a port to one of its bridges: declared ports are attached, ports attached
  to an owned bridge but not declared are detached. A pod veth that ``netkit-cni`` attached
  carries the alias ``netkit:cni:<network>``, which declares it a port of that network's bridge.
  The port links themselves (a pod's veth) are not owned: nothing else about them is changed.

The alias is a convention, not a lock: anyone can set or clear it (``ip link set X alias ...``).
The kernel ignores ``IFLA_IFALIAS`` in the request that creates a link, so the alias is set by a
second request right after the create; a crash between the two leaves a link with the agent's
name and no alias, which the agent then reports as a conflict rather than adopting it.

Names (at most 15 bytes, ``IFNAMSIZ`` - 1), derived deterministically:

- bridge of a network: ``nkbr-`` + the first 10 hex digits of SHA-256(network name);
- VXLAN device: ``nkvx-<vni>`` (VNIs are unique among the declared networks, so these never
  collide with each other; the VNI shows in ``ip link``);
- VLAN sub-interface: ``nkvl<vid>-`` + as many hex digits of SHA-256(network name) as fit.

Hashed names can collide in principle (40 bits for bridges): ``model.load_networks`` rejects a
file in which two networks derive the same name, and a collision with a link the agent does not
own is a conflict, never an overwrite. The prefixes ``nkbr``/``nkvx``/``nkvl`` cannot be confused
with the lab's per-run prefix ``nk`` + 4 hex digits (``r`` and ``v`` are not hex digits).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

OWNER_PREFIX = "netkit:l2:"
ATTACHMENT_PREFIX = "netkit:cni:"
ZERO_MAC = "00:00:00:00:00:00"
IFNAMSIZ = 15

FdbState = Literal["permanent", "static", "dynamic"]
NeighState = Literal["permanent", "noarp", "reachable", "stale", "other"]

# ------------------------------------------------------------------------------------------
# Naming and ownership
# ------------------------------------------------------------------------------------------


def _hash(text: str, digits: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:digits]


def bridge_name(network: str) -> str:
    """The bridge of ``network`` on every node: ``nkbr-`` + 10 hex digits (15 bytes)."""
    return "nkbr-" + _hash(network, 10)


def vxlan_name(vni: int) -> str:
    """The VXLAN device of the network with ``vni``: ``nkvx-<vni>`` (at most 13 bytes)."""
    return f"nkvx-{vni}"


def vlan_name(network: str, vlan_id: int) -> str:
    """The 802.1Q sub-interface of ``network``: ``nkvl<vid>-`` + hex digits up to 15 bytes."""
    head = f"nkvl{vlan_id}-"
    return head + _hash(network, IFNAMSIZ - len(head))


def bridge_mac(network: str, node: str) -> str:
    """A fixed, locally administered MAC for the bridge of ``network`` on ``node``.

    A bridge without an address of its own takes the lowest MAC of its ports, and every change
    of it flushes the bridge's neighbour table, permanent entries included: the ARP/ND
    suppression entries would vanish whenever a pod's veth is attached. A set address stays.
    """
    digits = _hash(f"{network}/{node}", 10)
    return "02:" + ":".join(digits[i : i + 2] for i in range(0, 10, 2))


def owner_alias(network: str) -> str:
    return OWNER_PREFIX + network


def attachment_alias(network: str) -> str:
    """The alias of a pod's host-side veth that ``netkit-cni`` attached to ``network``'s bridge:
    a declared port of that bridge (never detached), not a link the agent owns."""
    return ATTACHMENT_PREFIX + network


def ifname_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Linux interface name, or None if it can."""
    if not name:
        return "is empty"
    if len(name.encode()) > IFNAMSIZ:
        return f"is {len(name.encode())} bytes long (at most {IFNAMSIZ})"
    if name in (".", "..") or any(c in name for c in "/: \t\n") or not name.isprintable():
        return "contains a character not allowed in an interface name ('/', ':', whitespace)"
    return None


# ------------------------------------------------------------------------------------------
# Values
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VxlanInfo:
    """The VXLAN attributes the agent manages (``ip -d link``: id, local, dstport, dev, learning)."""

    vni: int
    local: str | None
    port: int = 4789
    learning: bool = False
    underlay: str | None = None  # name of the lower device (IFLA_VXLAN_LINK)


@dataclass(frozen=True, slots=True)
class VlanInfo:
    vlan_id: int
    underlay: str | None  # name of the lower device (IFLA_LINK)


@dataclass(frozen=True, slots=True)
class Link:
    """A network interface as the agent sees it.

    ``kind`` is the rtnetlink link kind (``bridge``, ``vxlan``, ``vlan``, ``veth``...), or
    ``device`` for links without one (loopback, physical NICs). ``neigh_suppress`` is the bridge
    port flag (``bridge link set dev X neigh_suppress on``): None when the link is no bridge port.
    ``address`` is the MAC; in a desired link None means "whatever the kernel picks".
    ``addrgen``: whether the kernel generates IPv6 addresses for the link (``ip link set X
    addrgenmode none`` turns it off); None when the link has no IPv6 or it is not managed. The
    agent's links have it off, so the node does not speak on tenant segments: no link-local
    address, no router solicitations or duplicate address detection from the node.
    ``arp_ignore``/``rp_filter``: the link's IPv4 settings (``net.ipv4.conf.<link>.*``); None
    when not managed. The agent's bridges have ``arp_ignore`` 8 (never answer ARP) and
    ``rp_filter`` 1 (strict): a frame from a tenant that reaches the node's own stack through
    the bridge gets no ARP reply for the node's addresses (by default Linux answers ARP for any
    of its addresses on any interface) and no IPv4 packet from the segment is accepted by the
    node (it has no route back through the bridge).
    """

    name: str
    kind: str
    mtu: int
    up: bool = True
    alias: str | None = None
    master: str | None = None
    vxlan: VxlanInfo | None = None
    vlan: VlanInfo | None = None
    neigh_suppress: bool | None = None
    address: str | None = None
    addrgen: bool | None = None
    arp_ignore: int | None = None
    rp_filter: int | None = None

    @property
    def owner(self) -> str | None:
        """The network that owns this link (from its alias), or None if the agent does not."""
        if self.alias and self.alias.startswith(OWNER_PREFIX):
            return self.alias[len(OWNER_PREFIX) :] or None
        return None

    @property
    def attached_to(self) -> str | None:
        """The network whose bridge ``netkit-cni`` attached this pod veth to (from its alias)."""
        if self.alias and self.alias.startswith(ATTACHMENT_PREFIX):
            return self.alias[len(ATTACHMENT_PREFIX) :] or None
        return None


@dataclass(frozen=True, slots=True)
class FdbEntry:
    """A forwarding-database entry, ``bridge fdb`` style.

    ``master=False``: the device's own table (``self``; for VXLAN: MAC -> remote VTEP ``dst``,
    the all-zero MAC is the head-end replication list for broadcast, unknown unicast and
    multicast). ``master=True``: the bridge's table, the entry points at port ``ifname``.
    ``port``/``vni``: only when they differ from the device's (the kernel reports them then).
    """

    ifname: str
    mac: str
    dst: str | None = None
    master: bool = False
    state: FdbState = "permanent"
    port: int | None = None
    vni: int | None = None

    @property
    def sort_key(self) -> tuple[str, bool, str, str, int, int, str]:
        return (self.ifname, self.master, self.mac, self.dst or "", self.port or 0, self.vni or 0, self.state)

    def render(self) -> str:
        out = f"{self.mac} dev {self.ifname}"
        if self.dst:
            out += f" dst {self.dst}"
        if self.port is not None:
            out += f" port {self.port}"
        if self.vni is not None:
            out += f" vni {self.vni}"
        return out + (" master" if self.master else " self") + f" {self.state}"


@dataclass(frozen=True, slots=True)
class Neighbour:
    """An ARP/ND entry (``ip neigh``): ``ip`` is at ``mac`` behind ``ifname``."""

    ifname: str
    ip: str
    mac: str | None
    state: NeighState = "permanent"

    @property
    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.ifname, self.ip, self.mac or "", self.state)

    def render(self) -> str:
        return f"{self.ip} lladdr {self.mac or '-'} dev {self.ifname} {self.state}"


@dataclass(frozen=True)
class ObservedState:
    """What a namespace holds: links by name, FDB and neighbour entries, addresses by link."""

    links: Mapping[str, Link] = field(default_factory=dict)
    fdb: frozenset[FdbEntry] = frozenset()
    neighbours: frozenset[Neighbour] = frozenset()
    addresses: frozenset[tuple[str, str]] = frozenset()  # (ifname, ip)

    @classmethod
    def of(
        cls,
        links: Iterable[Link] = (),
        fdb: Iterable[FdbEntry] = (),
        neighbours: Iterable[Neighbour] = (),
        addresses: Iterable[tuple[str, str]] = (),
    ) -> ObservedState:
        return cls({lk.name: lk for lk in links}, frozenset(fdb), frozenset(neighbours), frozenset(addresses))

    def with_links(self, links: Mapping[str, Link]) -> ObservedState:
        return replace(self, links=dict(links))

    def link_with_address(self, ip: str) -> Link | None:
        for ifname, addr in sorted(self.addresses):
            if addr == ip and ifname in self.links:
                return self.links[ifname]
        return None

    def owned_links(self) -> list[Link]:
        return [lk for lk in self.links.values() if lk.owner is not None]

    def unowned_uplinks(self) -> tuple[Link, ...]:
        """VXLAN devices and VLAN sub-interfaces the agent does not own (computed once: the
        planner checks every network against them)."""
        cached: tuple[Link, ...] | None = self.__dict__.get("_unowned_uplinks")
        if cached is None:
            cached = tuple(lk for lk in self.links.values() if lk.owner is None and (lk.vxlan or lk.vlan))
            object.__setattr__(self, "_unowned_uplinks", cached)
        return cached

    def is_owned_uplink(self, ifname: str) -> bool:
        lk = self.links.get(ifname)
        return lk is not None and lk.owner is not None and lk.kind in ("vxlan", "vlan")

    def is_owned_bridge(self, ifname: str | None) -> bool:
        lk = self.links.get(ifname) if ifname else None
        return lk is not None and lk.owner is not None and lk.kind == "bridge"

    def owns_fdb(self, entry: FdbEntry) -> bool:
        """Whether ``entry`` is one the agent manages (see the module docstring)."""
        if not self.is_owned_uplink(entry.ifname):
            return False
        if entry.master:
            return entry.state == "static"
        return entry.state != "dynamic" and self.links[entry.ifname].kind == "vxlan"

    def owns_neighbour(self, entry: Neighbour) -> bool:
        return entry.state == "permanent" and self.is_owned_bridge(entry.ifname)

    def owned_fdb(self) -> frozenset[FdbEntry]:
        cached: frozenset[FdbEntry] | None = self.__dict__.get("_owned_fdb")
        if cached is None:
            cached = frozenset(e for e in self.fdb if self.owns_fdb(e))
            object.__setattr__(self, "_owned_fdb", cached)
        return cached

    def owned_neighbours(self) -> frozenset[Neighbour]:
        cached: frozenset[Neighbour] | None = self.__dict__.get("_owned_neighbours")
        if cached is None:
            cached = frozenset(n for n in self.neighbours if self.owns_neighbour(n))
            object.__setattr__(self, "_owned_neighbours", cached)
        return cached


@dataclass(frozen=True)
class DesiredNetwork:
    """Everything one network needs on one node, as kernel objects.

    ``links`` holds the bridge first, then the uplink (VXLAN device or VLAN sub-interface);
    ``ports`` are the names to enslave to the bridge.
    """

    network: str
    bridge: str
    links: tuple[Link, ...]
    fdb: frozenset[FdbEntry] = frozenset()
    neighbours: frozenset[Neighbour] = frozenset()
    ports: tuple[str, ...] = ()
