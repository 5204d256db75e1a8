"""Declared L2 networks (pure): frozen values, loaded from YAML with errors that name the field.

A file holds ``networks:``, a list of::

    - name: blue                 # DNS label, at most 63 characters; names the bridge, alias, logs
      kind: vxlan                # vxlan (default) or vlan
      vni: 100                   # vxlan: 1-16777215, unique in the file
      underlay: eth1             # vxlan: optional; an interface name or the local VTEP address;
                                 #   default: the interface holding this node's VTEP address
      port: 4789                 # vxlan: UDP port (default 4789)
      mtu: 1450                  # optional; default: underlay MTU - 50 (VXLAN over IPv4),
                                 #   - 70 (over IPv6), the underlay's MTU (VLAN)
      members:                   # vxlan: node name -> VTEP address (all IPv4 or all IPv6)
        n1: 198.18.0.1
        n2: 198.18.0.2
      ports:                     # host-side links to enslave: per node, or a list for all nodes
        n1: [veth-pod-a]
      endpoints:                 # optional: known remote MACs/IPs (static FDB + ARP/ND entries)
        - {mac: "02:00:00:00:01:02", ip: 198.19.1.2, node: n2}

    - name: green
      kind: vlan
      vlan: 200                  # vlan: 1-4094, unique per underlay
      underlay: eth1             # vlan: required (interface name or an address on it)
      members: [n1, n2]          # vlan: optional list of nodes (default: every node)

Beside ``networks:`` a file may list ``nodes:``, the nodes it is for. A node it names nowhere
(neither there nor as a member) is refused rather than read as "no networks here", which would
remove every network the node has; a node listed under ``nodes:`` and in no network has them all
removed, because the file says so. Members must then be among ``nodes:``.

Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from netkit.base.fields import ConfigError, Errors, int_in, unknown_keys
from netkit.l2.core.state import bridge_name, ifname_problem, vlan_name, vxlan_name

Kind = Literal["vxlan", "vlan"]

VXLAN_PORT = 4789
VNI_MAX = 16_777_215
VLAN_MAX = 4094
MTU_MIN = 68
MTU_MAX = 65535
VXLAN_OVERHEAD = {4: 50, 6: 70}  # outer Ethernet 14 + IPv4 20 / IPv6 40 + UDP 8 + VXLAN 8

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NODE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

NETWORK_KEYS = ("name", "kind", "vni", "vlan", "underlay", "port", "mtu", "members", "ports", "endpoints")
ENDPOINT_KEYS = ("mac", "ip", "node")


class MtuError(ValueError):
    """The MTU a network asks for cannot be carried by its underlay on this node."""


@dataclass(frozen=True, slots=True)
class Member:
    node: str
    vtep: str | None = None  # VXLAN: the node's VTEP address


@dataclass(frozen=True, slots=True)
class Port:
    name: str
    node: str | None = None  # None: on every node of the network


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A known endpoint (pod/VM) behind ``node``: its MAC and optionally its IP."""

    mac: str
    node: str
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class L2Network:
    name: str
    kind: Kind
    vni: int | None = None
    vlan_id: int | None = None
    underlay: str | None = None
    port: int = VXLAN_PORT
    mtu: int | None = None
    members: tuple[Member, ...] = ()
    ports: tuple[Port, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()

    # -- the per-node view --------------------------------------------------------------

    def applies_to(self, node: str) -> bool:
        """VXLAN: the node is a member. VLAN: the node is listed, or no node list is given."""
        if self.kind == "vlan" and not self.members:
            return True
        return any(m.node == node for m in self.members)

    def vtep(self, node: str) -> str | None:
        for m in self.members:
            if m.node == node:
                return m.vtep
        return None

    def remote_vteps(self, node: str) -> list[tuple[str, str]]:
        """(node, VTEP address) of every other member, in file order."""
        return [(m.node, m.vtep) for m in self.members if m.node != node and m.vtep]

    def ports_on(self, node: str) -> tuple[str, ...]:
        return tuple(p.name for p in self.ports if p.node in (None, node))

    def remote_endpoints(self, node: str) -> list[Endpoint]:
        return [e for e in self.endpoints if e.node != node]

    @property
    def segment(self) -> int:
        """The VNI or the VLAN id."""
        seg = self.vni if self.kind == "vxlan" else self.vlan_id
        assert seg is not None
        return seg

    @property
    def vtep_family(self) -> int:
        """4 or 6: the address family of the VTEPs (VLAN: 4, unused)."""
        for m in self.members:
            if m.vtep:
                return ipaddress.ip_address(m.vtep).version
        return 4

    @property
    def bridge(self) -> str:
        return bridge_name(self.name)

    @property
    def uplink(self) -> str:
        """The VXLAN device or VLAN sub-interface enslaved to the bridge."""
        if self.kind == "vxlan":
            return vxlan_name(self.segment)
        return vlan_name(self.name, self.segment)

    def describe(self) -> str:
        return f"{self.name} ({self.kind} {self.segment})"


def networks_for_node(networks: Iterable[L2Network], node: str) -> list[L2Network]:
    """The networks that apply to ``node``, in file order."""
    return [n for n in networks if n.applies_to(node)]


def overlay_mtu(network: L2Network, underlay_mtu: int) -> int:
    """The MTU of ``network``'s bridge and uplink over an underlay with ``underlay_mtu``.

    Default: the underlay MTU minus the encapsulation (VXLAN: 50 over IPv4, 70 over IPv6; VLAN:
    none, the tag rides in the frame). An explicit MTU larger than that is an error.
    """
    overhead = VXLAN_OVERHEAD[network.vtep_family] if network.kind == "vxlan" else 0
    ceiling = underlay_mtu - overhead
    over = f"VXLAN over IPv{network.vtep_family}" if network.kind == "vxlan" else "VLAN"
    if network.mtu is None:
        if ceiling < MTU_MIN:
            raise MtuError(
                f"mtu: the underlay's MTU {underlay_mtu} leaves {ceiling} for {over}, below {MTU_MIN}"
            )
        return ceiling
    if network.mtu > ceiling:
        raise MtuError(
            f"mtu: {network.mtu} cannot be carried by an underlay with MTU {underlay_mtu} "
            f"({over} adds {overhead}: at most {ceiling})"
        )
    return network.mtu


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


def _ip(v: Any, path: str, err: Errors) -> str | None:
    try:
        addr = ipaddress.ip_address(str(v)) if isinstance(v, str) else None
    except ValueError:
        addr = None
    if addr is None:
        err.add(path, f"{v!r} is not an IP address")
        return None
    return str(addr)


def _vtep(v: Any, path: str, err: Errors) -> str | None:
    ip = _ip(v, path, err)
    if ip is None:
        return None
    addr = ipaddress.ip_address(ip)
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback:
        err.add(path, f"{ip} cannot be a VTEP address (multicast, unspecified or loopback)")
        return None
    return ip


def _node(v: Any, path: str, err: Errors) -> str | None:
    if not isinstance(v, str) or not _NODE.match(v):
        err.add(path, f"{v!r} is not a node name")
        return None
    return v


def _ifname(v: Any, path: str, err: Errors) -> str | None:
    if not isinstance(v, str):
        err.add(path, f"{v!r} is not an interface name")
        return None
    problem = ifname_problem(v)
    if problem:
        err.add(path, f"{v!r} {problem}")
        return None
    return v


def _mac(v: Any, path: str, err: Errors) -> str | None:
    text = v.lower() if isinstance(v, str) else ""
    if not _MAC.match(text):
        err.add(path, f"{v!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
        return None
    if text == "00:00:00:00:00:00" or int(text[:2], 16) & 1:
        err.add(path, f"{text} is not a unicast MAC address")
        return None
    return text


def _members(raw: Any, kind: str, path: str, err: Errors) -> tuple[Member, ...]:
    if kind == "vlan":
        if raw is None:
            return ()
        if not isinstance(raw, list):
            err.add(path, "expected a list of node names")
            return ()
        out: list[Member] = []
        for i, item in enumerate(raw):
            node = _node(item, f"{path}[{i}]", err)
            if node is not None:
                if any(m.node == node for m in out):
                    err.add(f"{path}[{i}]", f"{node} is listed twice")
                else:
                    out.append(Member(node))
        return tuple(out)
    if raw is None:
        err.add(path, "is required for a vxlan network (node name -> VTEP address)")
        return ()
    if not isinstance(raw, Mapping) or not raw:
        err.add(path, "expected a non-empty mapping of node name -> VTEP address")
        return ()
    members: list[Member] = []
    seen: dict[str, str] = {}
    family: int | None = None
    for key, value in raw.items():
        node = _node(key, f"{path}.{key}", err)
        vtep = _vtep(value, f"{path}.{key}", err)
        if node is None or vtep is None:
            continue
        version = ipaddress.ip_address(vtep).version
        if family is None:
            family = version
        elif version != family:
            err.add(f"{path}.{node}", f"IPv{version} VTEP in a network whose VTEPs are IPv{family}")
            continue
        if vtep in seen:
            err.add(f"{path}.{node}", f"{vtep} is also the VTEP of {seen[vtep]}")
            continue
        seen[vtep] = node
        members.append(Member(node, vtep))
    return tuple(members)


def _ports(raw: Any, nodes: set[str] | None, path: str, err: Errors) -> tuple[Port, ...]:
    if raw is None:
        return ()
    out: list[Port] = []

    def names(items: Any, node: str | None, p: str) -> None:
        if not isinstance(items, list):
            err.add(p, "expected a list of interface names")
            return
        for i, item in enumerate(items):
            name = _ifname(item, f"{p}[{i}]", err)
            if name is None:
                continue
            if any(o.name == name and o.node in (None, node) for o in out) or (
                node is None and any(o.name == name for o in out)
            ):
                err.add(f"{p}[{i}]", f"{name} is listed twice")
                continue
            out.append(Port(name, node))

    if isinstance(raw, list):
        names(raw, None, path)
    elif isinstance(raw, Mapping):
        for key, items in raw.items():
            node = _node(key, f"{path}.{key}", err)
            if node is None:
                continue
            if nodes is not None and node not in nodes:
                err.add(f"{path}.{node}", f"{node} is not a member of this network")
                continue
            names(items, node, f"{path}.{node}")
    else:
        err.add(path, "expected a list of interface names or a mapping of node -> list")
    return tuple(out)


def _endpoints(raw: Any, nodes: set[str] | None, path: str, err: Errors) -> tuple[Endpoint, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        err.add(path, "expected a list of {mac, ip, node}")
        return ()
    out: list[Endpoint] = []
    for i, item in enumerate(raw):
        p = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            err.add(p, "expected a mapping with mac, node and optionally ip")
            continue
        unknown_keys(item, ENDPOINT_KEYS, p, err)
        mac = _mac(item.get("mac"), f"{p}.mac", err) if "mac" in item else None
        if "mac" not in item:
            err.add(f"{p}.mac", "is required")
        node = _node(item.get("node"), f"{p}.node", err) if "node" in item else None
        if "node" not in item:
            err.add(f"{p}.node", "is required")
        elif node is not None and nodes is not None and node not in nodes:
            err.add(f"{p}.node", f"{node} is not a member of this network")
            node = None
        ip = _ip(item["ip"], f"{p}.ip", err) if item.get("ip") is not None else None
        if mac is None or node is None:
            continue
        if any(e.mac == mac for e in out):
            err.add(f"{p}.mac", f"{mac} is listed twice")
            continue
        if ip is not None and any(e.ip == ip for e in out):
            err.add(f"{p}.ip", f"{ip} is listed twice")
            continue
        out.append(Endpoint(mac, node, ip))
    return tuple(out)


def _network(raw: Any, path: str, err: Errors) -> tuple[L2Network | None, bool]:
    """The network (None when not even its name and segment are valid) and whether it is free
    of errors. A network with errors still takes part in the checks across networks, so one
    run reports a duplicate VNI beside a duplicate VTEP."""
    if not isinstance(raw, Mapping):
        err.add(path, "expected a mapping (name, kind, vni or vlan, members, ...)")
        return None, False
    before = len(err.items)
    unknown_keys(raw, NETWORK_KEYS, path, err)
    name = raw.get("name")
    if name is None:
        err.add(f"{path}.name", "is required")
    elif not isinstance(name, str) or not _NAME.match(name):
        err.add(f"{path}.name", f"{name!r} is not a valid name (lower-case DNS label, at most 63 chars)")
    kind = raw.get("kind", "vxlan")
    if kind not in ("vxlan", "vlan"):
        err.add(f"{path}.kind", f"{kind!r} is not one of: vxlan, vlan")
        return None, False
    vni = vlan_id = None
    if kind == "vxlan":
        if "vni" not in raw:
            err.add(f"{path}.vni", "is required for a vxlan network")
        else:
            vni = int_in(raw["vni"], 1, VNI_MAX, f"{path}.vni", err)
        if "vlan" in raw:
            err.add(f"{path}.vlan", "is for vlan networks (this one is vxlan)")
    else:
        if "vlan" not in raw:
            err.add(f"{path}.vlan", "is required for a vlan network")
        else:
            vlan_id = int_in(raw["vlan"], 1, VLAN_MAX, f"{path}.vlan", err)
        for key in ("vni", "port"):
            if key in raw:
                err.add(f"{path}.{key}", "is for vxlan networks (this one is vlan)")
    port = VXLAN_PORT
    if "port" in raw and kind == "vxlan":
        port = int_in(raw["port"], 1, 65535, f"{path}.port", err) or VXLAN_PORT
    mtu = None
    if raw.get("mtu") is not None:
        mtu = int_in(raw["mtu"], MTU_MIN, MTU_MAX, f"{path}.mtu", err)
    underlay = raw.get("underlay")
    if underlay is not None:
        if not isinstance(underlay, str):
            err.add(f"{path}.underlay", f"{underlay!r} is neither an interface name nor an IP address")
            underlay = None
        else:
            try:
                underlay = str(ipaddress.ip_address(underlay))
            except ValueError:
                underlay = _ifname(underlay, f"{path}.underlay", err)
    elif kind == "vlan":
        err.add(f"{path}.underlay", "is required for a vlan network (the interface carrying the tag)")
    members = _members(raw.get("members"), kind, f"{path}.members", err)
    nodes = {m.node for m in members} if (members or kind == "vxlan") else None
    ports = _ports(raw.get("ports"), nodes, f"{path}.ports", err)
    endpoints = _endpoints(raw.get("endpoints"), nodes, f"{path}.endpoints", err)
    valid = len(err.items) == before
    if not isinstance(name, str) or not _NAME.match(name) or (vni is None and vlan_id is None):
        return None, False
    return L2Network(
        name=name,
        kind=kind,
        vni=vni,
        vlan_id=vlan_id,
        underlay=underlay,
        port=port,
        mtu=mtu,
        members=members,
        ports=ports,
        endpoints=endpoints,
    ), valid


def _cross_checks(nets: list[tuple[int, L2Network]], err: Errors) -> None:
    names: dict[str, int] = {}
    vnis: dict[int, tuple[int, str]] = {}
    vlans: dict[tuple[str | None, int], tuple[int, str]] = {}
    derived: dict[str, tuple[int, str]] = {}
    ports: list[tuple[str | None, str, int, str]] = []  # node, port, index, network
    for i, net in nets:
        path = f"networks[{i}]"
        if net.name in names:
            err.add(f"{path}.name", f"{net.name!r} is already used by networks[{names[net.name]}]")
            continue
        names[net.name] = i
        same_segment = False  # then the device name derived from it is the same too: said once
        if net.kind == "vxlan":
            if net.segment in vnis:
                j, other = vnis[net.segment]
                err.add(f"{path}.vni", f"{net.segment} is already used by networks[{j}] ({other})")
                same_segment = True
            vnis[net.segment] = (i, net.name)
        else:
            key = (net.underlay, net.segment)
            if key in vlans:
                j, other = vlans[key]
                err.add(
                    f"{path}.vlan",
                    f"{net.segment} on underlay {net.underlay} is already used by networks[{j}] ({other})",
                )
                same_segment = True
            vlans[key] = (i, net.name)
        for link in (net.bridge,) if same_segment else (net.bridge, net.uplink):
            if link in derived:
                j, other = derived[link]
                err.add(
                    f"{path}.name",
                    f"derives the interface name {link}, as does networks[{j}] ({other}); rename one",
                )
            derived[link] = (i, net.name)
        for p in net.ports:
            for node, name, j, other in ports:
                if name == p.name and (node is None or p.node is None or node == p.node):
                    where = f" on {p.node or node}" if (p.node or node) else ""
                    err.add(
                        f"{path}.ports",
                        f"{p.name}{where} is already a port of networks[{j}] ({other})",
                    )
                    break
            ports.append((p.node, p.name, i, net.name))


@dataclass(frozen=True, slots=True)
class NetworkFile:
    """A validated networks file: its networks and the nodes it names."""

    networks: tuple[L2Network, ...]
    declared_nodes: tuple[str, ...] | None = None  # the file's nodes: list, if it has one

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node the file names: under ``nodes:``, as a member, a port's or an endpoint's."""
        named = list(self.declared_nodes or ())
        for net in self.networks:
            named += [m.node for m in net.members]
            named += [p.node for p in net.ports if p.node is not None]
            named += [e.node for e in net.endpoints]
        return tuple(dict.fromkeys(named))

    def require_node(self, node: str, source: str = "the file") -> None:
        """Refuse a node the file does not name (a typo, a short hostname where the file has
        the FQDN): planning for it would read "no networks here" and remove every network it
        has. A file that names no node at all (VLAN networks for every node, or none) accepts
        every node."""
        named = self.nodes
        if not named or node in named:
            return
        close = [n for n in named if n.split(".")[0] == node.split(".")[0]]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise UnknownNodeError(
            [
                f"node {node!r} is not named in {source}{hint}, which names: {', '.join(named)}; "
                "nothing was planned (to remove every network from a node, list it under nodes:)"
            ]
        )


class UnknownNodeError(ConfigError):
    """The node is not one the networks file names."""


def parse_network_file(doc: Any) -> NetworkFile:
    """Validate an already-parsed document (``{"networks": [...], "nodes": [...]}`` or a bare
    list of networks); raise ``ConfigError`` listing every problem."""
    err = Errors()
    if doc is None:
        raise ConfigError(["networks: the file is empty (expected a 'networks' list; use [] for none)"])
    declared: tuple[str, ...] | None = None
    if isinstance(doc, Mapping):
        unknown_keys(doc, ("networks", "nodes"), "file", err)
        if "networks" not in doc:
            err.add("networks", "is required (a list of networks; [] for none)")
        items = doc.get("networks")
        if "nodes" in doc:
            declared = _declared_nodes(doc["nodes"], err)
    else:
        items = doc
    if items is not None and not isinstance(items, list):
        err.add("networks", "expected a list of networks")
        items = []
    checked: list[tuple[int, L2Network]] = []
    valid: list[L2Network] = []
    for i, raw in enumerate(items or []):
        net, ok = _network(raw, f"networks[{i}]", err)
        if net is not None:
            checked.append((i, net))
            if ok:
                valid.append(net)
    _cross_checks(checked, err)
    if declared is not None:
        _members_declared(checked, set(declared), err)
    err.raise_if_any()
    return NetworkFile(tuple(valid), declared)


def _declared_nodes(raw: Any, err: Errors) -> tuple[str, ...] | None:
    if not isinstance(raw, list):
        err.add("nodes", "expected a list of node names")
        return None
    out: list[str] = []
    for i, item in enumerate(raw):
        node = _node(item, f"nodes[{i}]", err)
        if node is not None:
            if node in out:
                err.add(f"nodes[{i}]", f"{node} is listed twice")
            else:
                out.append(node)
    return tuple(out)


def _members_declared(nets: list[tuple[int, L2Network]], declared: set[str], err: Errors) -> None:
    for i, net in nets:
        for m in net.members:
            if m.node not in declared:
                where = f"networks[{i}].members" + (f".{m.node}" if m.vtep else "")
                err.add(where, f"{m.node} is not listed under nodes:")


def parse_networks(doc: Any) -> list[L2Network]:
    """The networks of an already-parsed document (see ``parse_network_file``)."""
    return list(parse_network_file(doc).networks)


def load_networks(yaml_text: str) -> list[L2Network]:
    """Parse and validate a networks file; raise ``ConfigError`` listing every problem."""
    return list(load_network_file(yaml_text).networks)


def load_network_file(yaml_text: str) -> NetworkFile:
    """Parse and validate a networks file, with the nodes it names."""
    try:
        doc = yaml.safe_load(yaml_text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError([f"file: {where}not valid YAML ({getattr(exc, 'problem', None) or exc})"]) from None
    return parse_network_file(doc)
