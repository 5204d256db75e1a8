"""The node inventory and the reflector policy (pure): frozen values, loaded from YAML with
errors that name the field. One file holds both::

    asn: 64512                     # default AS of every node (iBGP: reflection needs one AS)
    nodes:
      - name: node-a               # unique
        address: 198.18.0.1        # session address, unique
        alt_address: 198.18.1.1    # optional second address: a hitless migration builds each
                                   #   new session beside the old one on these, never flips one
        router_id: 198.18.0.1      # optional for IPv4 addresses (defaults to the address), unique
        asn: 64512                 # optional, default: the top-level asn
        labels: {zone: a, rack: r1}
        reflector: true            # optional "may be reflector" mark: true = candidate,
                                   #   false = never; when any node says true, only those are
        prefixes: [198.19.1.0/24]  # optional: what the node originates (its pod CIDR)
    policy:
      failure_domain: zone         # label naming a node's failure domain (default: zone)
      redundancy: 2                # reflectors per client, each in a distinct failure domain
      reflectors_per_domain: 1     # reflectors chosen in every domain that has candidates
      mode: in-node                # in-node (any node may reflect) | dedicated (only marked
                                   #   nodes; they carry no workload and install no routes)
      cluster_id: per-reflector    # per-reflector (its router id) | shared (groups of
                                   #   `redundancy` reflectors share one; a client uses a group)
      levels: 1                    # 1, or 2: clients -> leaf reflectors -> top reflectors
      top:                         # levels: 2 only: how the top level is chosen
        failure_domain: zone
        reflectors_per_domain: 1
      asn_scope: single            # single (mixed AS is an error) | per-as (plan each AS alone)

Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from netkit.base.fields import ConfigError, Errors, int_in, unknown_keys

__all__ = ["Inventory", "InventoryError", "Node", "Policy", "TopPolicy", "load_inventory", "parse_inventory"]

Mode = Literal["in-node", "dedicated"]
ClusterIdScheme = Literal["per-reflector", "shared"]
AsnScope = Literal["single", "per-as"]

ASN_MAX = 4_294_967_295
NODE_KEYS = ("name", "address", "alt_address", "router_id", "asn", "labels", "reflector", "prefixes")
POLICY_KEYS = (
    "failure_domain",
    "redundancy",
    "reflectors_per_domain",
    "mode",
    "cluster_id",
    "levels",
    "top",
    "asn_scope",
)
TOP_KEYS = ("failure_domain", "reflectors_per_domain")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")  # a Kubernetes node name
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")


class InventoryError(ConfigError):
    """Invalid inventory or policy; ``errors`` lists every problem, each naming its field."""


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    router_id: str
    asn: int
    labels: Mapping[str, str] = field(default_factory=dict)
    reflector: bool | None = None  # the "may be reflector" mark
    prefixes: tuple[str, ...] = ()
    alt_address: str | None = None

    def domain(self, label: str) -> str:
        return self.labels.get(label, "")


@dataclass(frozen=True)
class TopPolicy:
    failure_domain: str = "zone"
    reflectors_per_domain: int = 1


@dataclass(frozen=True)
class Policy:
    failure_domain: str = "zone"
    redundancy: int = 2
    reflectors_per_domain: int = 1
    mode: Mode = "in-node"
    cluster_id: ClusterIdScheme = "per-reflector"
    levels: int = 1
    top: TopPolicy = field(default_factory=TopPolicy)
    asn_scope: AsnScope = "single"


@dataclass(frozen=True)
class Inventory:
    nodes: tuple[Node, ...]
    policy: Policy = field(default_factory=Policy)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    def with_nodes(self, nodes: Sequence[Node]) -> Inventory:
        """The same policy over another node list (validated again)."""
        inv = Inventory(tuple(nodes), self.policy)
        check_inventory(inv)
        return inv


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


def _choice(v: Any, choices: Sequence[str], path: str, err: Errors) -> str | None:
    if v not in choices:
        err.add(path, f"{v!r} is not one of {', '.join(choices)}")
        return None
    return str(v)


def _label(v: Any, path: str, err: Errors) -> str | None:
    if not isinstance(v, str) or not v:
        err.add(path, f"{v!r} is not a label key")
        return None
    return v


def _parse_top(raw: Any, err: Errors) -> TopPolicy:
    if raw is None:
        return TopPolicy()
    if not isinstance(raw, Mapping):
        err.add("policy.top", "must be a mapping")
        return TopPolicy()
    unknown_keys(raw, TOP_KEYS, "policy.top", err)
    fd = _label(raw.get("failure_domain", "zone"), "policy.top.failure_domain", err) or "zone"
    rpd = int_in(raw.get("reflectors_per_domain", 1), 1, 64, "policy.top.reflectors_per_domain", err) or 1
    return TopPolicy(fd, rpd)


def _parse_policy(raw: Any, err: Errors) -> Policy:
    if raw is None:
        return Policy()
    if not isinstance(raw, Mapping):
        err.add("policy", "must be a mapping")
        return Policy()
    unknown_keys(raw, POLICY_KEYS, "policy", err)
    d = Policy()
    fd = _label(raw.get("failure_domain", d.failure_domain), "policy.failure_domain", err)
    redundancy = int_in(raw.get("redundancy", d.redundancy), 1, 8, "policy.redundancy", err)
    rpd = int_in(
        raw.get("reflectors_per_domain", d.reflectors_per_domain), 1, 64, "policy.reflectors_per_domain", err
    )
    mode = _choice(raw.get("mode", d.mode), ("in-node", "dedicated"), "policy.mode", err)
    cid = _choice(raw.get("cluster_id", d.cluster_id), ("per-reflector", "shared"), "policy.cluster_id", err)
    levels = int_in(raw.get("levels", d.levels), 1, 2, "policy.levels", err)
    scope = _choice(raw.get("asn_scope", d.asn_scope), ("single", "per-as"), "policy.asn_scope", err)
    top = _parse_top(raw.get("top"), err)
    if "top" in raw and levels == 1:
        err.add("policy.top", "only meaningful with levels: 2")
    return Policy(
        failure_domain=fd or d.failure_domain,
        redundancy=redundancy or d.redundancy,
        reflectors_per_domain=rpd or d.reflectors_per_domain,
        mode=mode or d.mode,  # type: ignore[arg-type]
        cluster_id=cid or d.cluster_id,  # type: ignore[arg-type]
        levels=levels or d.levels,
        top=top,
        asn_scope=scope or d.asn_scope,  # type: ignore[arg-type]
    )


def _parse_node(raw: Any, default_asn: int | None, path: str, err: Errors) -> Node | None:
    if not isinstance(raw, Mapping):
        err.add(path, "must be a mapping with at least name and address")
        return None
    unknown_keys(raw, NODE_KEYS, path, err)
    before = len(err.items)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        err.add(f"{path}.name", f"{name!r} is not a node name (lower-case DNS subdomain)")
    try:
        address = str(ipaddress.ip_address(str(raw.get("address"))))
    except ValueError:
        err.add(f"{path}.address", f"{raw.get('address')!r} is not an IP address")
        address = ""
    alt_address = None
    if raw.get("alt_address") is not None:
        try:
            alt_address = str(ipaddress.ip_address(str(raw["alt_address"])))
        except ValueError:
            err.add(f"{path}.alt_address", f"{raw['alt_address']!r} is not an IP address")
        if alt_address == address:
            err.add(f"{path}.alt_address", "must differ from address")
    rid_raw = raw.get("router_id")
    router_id = ""
    if rid_raw is None:
        if address and ipaddress.ip_address(address).version == 4:
            router_id = address
        elif address:
            err.add(f"{path}.router_id", "required when the address is IPv6 (a router id is 32-bit)")
    else:
        try:
            router_id = str(ipaddress.IPv4Address(str(rid_raw)))
        except ValueError:
            err.add(f"{path}.router_id", f"{rid_raw!r} is not a dotted-quad router id")
        if router_id == "0.0.0.0":
            err.add(f"{path}.router_id", "0.0.0.0 is not a valid router id")
    asn_raw = raw.get("asn", default_asn)
    if asn_raw is None:
        err.add(f"{path}.asn", "missing, and the file has no top-level asn")
        asn = 0
    else:
        asn = int_in(asn_raw, 1, ASN_MAX, f"{path}.asn", err) or 0
    labels_raw = raw.get("labels", {}) or {}
    labels: dict[str, str] = {}
    if not isinstance(labels_raw, Mapping):
        err.add(f"{path}.labels", "must be a mapping of label -> value")
    else:
        for k, v in labels_raw.items():
            value = str(v)
            if not isinstance(k, str) or not _LABEL_VALUE.match(value):
                err.add(f"{path}.labels.{k}", f"{v!r} is not a valid label value")
            labels[str(k)] = value
    mark = raw.get("reflector")
    if mark is not None and not isinstance(mark, bool):
        err.add(f"{path}.reflector", f"{mark!r} is not true or false")
        mark = None
    prefixes: list[str] = []
    raw_prefixes = raw.get("prefixes", []) or []
    if not isinstance(raw_prefixes, list):
        err.add(f"{path}.prefixes", "must be a list of CIDRs")
        raw_prefixes = []
    for i, p in enumerate(raw_prefixes):
        try:
            prefixes.append(str(ipaddress.ip_network(str(p), strict=True)))
        except ValueError as exc:
            err.add(f"{path}.prefixes[{i}]", f"{p!r} is not a network: {exc}")
    if len(err.items) > before:
        return None
    assert isinstance(name, str)
    return Node(name, address, router_id, asn, labels, mark, tuple(prefixes), alt_address)


def reflector_candidates(nodes: Sequence[Node], policy: Policy) -> list[Node]:
    """The nodes that may reflect: those marked ``reflector: true`` (all that ``dedicated`` mode
    takes), else every node not marked ``false``."""
    marked = [n for n in nodes if n.reflector is True]
    if policy.mode == "dedicated":
        return marked
    return marked or [n for n in nodes if n.reflector is not False]


def candidate_problems(nodes: Sequence[Node], policy: Policy) -> list[str]:
    """What keeps ``nodes`` (one AS) from being planned, short of planning: no candidate in
    dedicated mode, candidates without their failure-domain label (every one of them)."""
    cands = reflector_candidates(nodes, policy)
    if policy.mode == "dedicated" and not cands:
        return ["policy.mode: dedicated needs nodes marked reflector: true"]
    label = policy.failure_domain
    return [
        f"nodes[{n.name}].labels.{label}: missing; reflector candidates need their failure domain"
        for n in cands
        if label not in n.labels
    ]


def inventory_problems(inv: Inventory) -> list[str]:
    """Cross-node rules: unique names, addresses, router ids; one AS unless ``asn_scope: per-as``;
    every reflector candidate labelled with its failure domain. All of them, not the first."""
    errors: list[str] = []
    addresses: dict[str, str] = {}
    for n in inv.nodes:
        for value in (n.address, n.alt_address):
            if value is None:
                continue
            if value in addresses and addresses[value] != n.name:
                errors.append(f"nodes[{n.name}]: duplicate address {value} (also {addresses[value]})")
            addresses.setdefault(value, n.name)
    for attr, what in (("name", "name"), ("router_id", "router id")):
        seen: dict[str, str] = {}
        for n in inv.nodes:
            value = getattr(n, attr)
            if value in seen:
                errors.append(f"nodes[{n.name}].{attr}: duplicate {what} {value} (also {seen[value]})")
            else:
                seen[value] = n.name
    asns = sorted({n.asn for n in inv.nodes})
    if len(asns) > 1 and inv.policy.asn_scope == "single":
        errors.append(
            f"nodes: mixed AS numbers {', '.join(map(str, asns))}; route reflection is iBGP within one AS "
            "- set policy.asn_scope: per-as to plan each AS on its own"
        )
    if not inv.nodes:
        errors.append("nodes: the inventory has no nodes")
    for asn in asns:
        group = [n for n in inv.nodes if n.asn == asn]
        prefix = f"AS {asn}: " if len(asns) > 1 and inv.policy.asn_scope == "per-as" else ""
        errors += [prefix + e for e in candidate_problems(group, inv.policy)]
    return errors


def check_inventory(inv: Inventory) -> None:
    """``inventory_problems`` as an ``InventoryError``."""
    errors = inventory_problems(inv)
    if errors:
        raise InventoryError(errors)


def parse_inventory(raw: Any) -> Inventory:
    """Build an ``Inventory`` from parsed YAML; raises ``InventoryError`` listing every problem."""
    err = Errors()
    if not isinstance(raw, Mapping):
        raise InventoryError(["<file>: must be a mapping with nodes: and optionally asn: and policy:"])
    unknown_keys(raw, ("asn", "nodes", "policy"), "<file>", err)
    default_asn = None
    if "asn" in raw:
        default_asn = int_in(raw["asn"], 1, ASN_MAX, "asn", err)
    policy = _parse_policy(raw.get("policy"), err)
    raw_nodes = raw.get("nodes")
    nodes: list[Node] = []
    if not isinstance(raw_nodes, list):
        err.add("nodes", "must be a list of nodes")
    else:
        for i, rn in enumerate(raw_nodes):
            label = rn.get("name", i) if isinstance(rn, Mapping) else i
            node = _parse_node(rn, default_asn, f"nodes[{label}]", err)
            if node is not None:
                nodes.append(node)
    inv = Inventory(tuple(nodes), policy)
    # the rules across nodes run on the nodes that parsed, so one run reports everything
    problems = [*err.items, *(inventory_problems(inv) if nodes or not err.items else [])]
    if problems:
        raise InventoryError(problems)
    return inv


def load_inventory(text: str, source: str = "<inventory>") -> Inventory:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InventoryError([f"{source}: not valid YAML: {exc}"]) from exc
    return parse_inventory(raw)
