"""Calico resources (``projectcalico.org/v3``) that make calico/node run a plan's exact sessions.

What is emitted, for ``render_calico(configs, asn)``:

- ``BGPConfiguration`` ``default``: ``nodeToNodeMeshEnabled: false`` and the cluster's AS number;
- one ``Node`` patch per node: its ``netkit.io/`` labels and ``spec.bgp.routeReflectorClusterID``
  (the cluster id on reflectors, ``""`` on every other node, so that a former reflector stops);
  ``spec.bgp.asNumber`` where the node's AS differs from ``asn``;
- ``BGPPeer`` resources selecting nodes by those labels (below);
- a ``Secret`` with the session passwords, when the plan has any (Calico reads BGP passwords
  from Secrets; calico-node needs RBAC to read it, which is the installation's business).

Label scheme (on Calico ``Node`` resources; ``<R>``/``<N>`` are node names):

- ``netkit.io/reflector: <R>`` on every reflector R (a node with clients): its identity;
- ``netkit.io/rr-<R>: client`` on every client of R, one label per reflector the client uses, so
  each client peers with its own reflectors only (not every client with every reflector);
- ``netkit.io/mesh: <group>`` on the members of a group of nodes with plain iBGP sessions between
  all of them (the reflector mesh; every node in a full-mesh plan); ``<group>`` is derived from the
  members, so a stale label from an earlier plan selects nobody;
- ``netkit.io/node: <N>`` only where plain sessions do not form complete groups: identity labels
  for one ``BGPPeer`` per such session.

A name or value that is not a valid Kubernetes label part (63 characters) is replaced by ``h-``
and 16 hex digits of its SHA-256. BGPPeers:

- ``netkit-rr-<R>``: ``nodeSelector: netkit.io/rr-<R> == 'client'``,
  ``peerSelector: netkit.io/reflector == '<R>'``;
- ``netkit-mesh-<group>``: node and peer selector ``netkit.io/mesh == '<group>'``;
- ``netkit-peer-<a>-<b>``: ``netkit.io/node == '<a>'`` / ``netkit.io/node == '<b>'``.

calico/node configures a selector peering on both ends (confd adds the reverse peering, and skips
a node peering with itself), so a BGPPeer yields the sessions {a, b} for a matching its
nodeSelector and b matching its peerSelector, a != b. Together they give exactly the plan's
session set.

Session kinds are Calico's to decide: a node with a cluster id treats every same-AS peer whose
cluster id differs from its own as an ``rr client``. Reflector -> client sessions come out as
planned, and so do plain sessions between nodes without a cluster id or between reflectors that
share one; but two reflectors with *different* cluster ids (the planner's per-reflector ids, and
leaf reflectors under top ones) become clients of each other, and a plain session between a
reflector and a node without a cluster id becomes reflector -> client. Every path the plan
delivers is still delivered (CLUSTER_LIST stops the loops); there are more UPDATEs and some
nodes hold extra paths. ``calico_kind_changes`` lists these sessions for a plan. Calico has no
alternate session addresses (a session with ``Neighbor.local_address`` raises ValueError), sets
no BGP timers per peer, and wants IPv4 cluster ids.

Pass ``previous`` (the configs in force) to also remove, with ``null`` in the Node patches, the
``netkit.io/`` labels the previous plan set and this one does not.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from bgp.core.model import Role, SpeakerConfig

__all__ = [
    "LABEL_PREFIX",
    "PASSWORD_SECRET",
    "calico_kind_changes",
    "calico_yaml",
    "plan_sessions",
    "render_calico",
]

API = "projectcalico.org/v3"
LABEL_PREFIX = "netkit.io/"
PASSWORD_SECRET = "netkit-bgp-passwords"
_LABEL_PART = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

# A session as Calico sees it: an unordered node pair, and for RR sessions which end reflects.
Pair = frozenset[str]


def _hashed(text: str) -> str:
    return "h-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def label_part(text: str, room: int = 63) -> str:
    """``text`` if it can stand in a label name or value of ``room`` characters, else a hash."""
    return text if len(text) <= room and _LABEL_PART.match(text) else _hashed(text)


def _resource_name(text: str) -> str:
    """A DNS-1123 subdomain for a resource name (lower case, 253 characters)."""
    return text if len(text) <= 253 and _NAME.match(text) else _hashed(text)


def plan_sessions(
    configs: Mapping[str, SpeakerConfig],
) -> tuple[dict[Pair, str | None], dict[Pair, str | None]]:
    """The plan's sessions read back from its configs: ({pair: reflector}, {pair: password}),
    the reflector being None for a plain session. Raises ValueError on alternate-address sessions
    and on configs that disagree about a session."""
    kinds: dict[Pair, str | None] = {}
    passwords: dict[Pair, str | None] = {}
    for name, cfg in configs.items():
        for n in cfg.neighbors:
            if n.local_address is not None:
                raise ValueError(f"{name} -> {n.name}: Calico has no sessions on alternate addresses")
            pair = frozenset((name, n.name))
            reflector = {Role.CLIENT: name, Role.REFLECTOR: n.name, Role.PEER: None}[n.role]
            if (
                kinds.setdefault(pair, reflector) != reflector
                or passwords.setdefault(pair, n.password) != n.password
            ):
                raise ValueError(f"{name} and {n.name} disagree about their session")
    return kinds, passwords


def _cluster_ids(configs: Mapping[str, SpeakerConfig]) -> dict[str, str]:
    return {n: c.cluster_id or c.router_id for n, c in configs.items() if c.is_reflector}


def _calico_reflector(a: str, b: str, cids: Mapping[str, str]) -> str | None:
    """Which end Calico makes reflect ("both", or None for plain iBGP), from the cluster ids."""
    ca, cb = cids.get(a), cids.get(b)
    if ca and cb:
        return None if ca == cb else "both"
    return a if ca else b if cb else None


def calico_kind_changes(configs: Mapping[str, SpeakerConfig]) -> list[str]:
    """The planned sessions whose kind calico/node will not keep (see the module docstring):
    a plain session with a reflector at one end only becomes reflector -> client, and two
    reflectors with different cluster ids reflect to each other. Empty when Calico runs the plan
    exactly."""
    cids = _cluster_ids(configs)
    out = []
    for pair, reflector in sorted(plan_sessions(configs)[0].items(), key=lambda kv: sorted(kv[0])):
        a, b = sorted(pair)
        calico = _calico_reflector(a, b, cids)
        if calico != reflector:
            did = "plain" if reflector is None else f"{reflector} reflects"
            does = {None: "plain", "both": "each reflects to the other"}.get(calico, f"{calico} reflects")
            out.append(f"{a} -- {b}: planned {did}, Calico: {does}")
    return out


def _mesh_groups(plain: Sequence[Pair]) -> tuple[list[list[str]], list[Pair]]:
    """Split plain sessions into complete groups (every pair present) and leftover pairs."""
    adjacent: dict[str, set[str]] = {}
    for pair in plain:
        a, b = sorted(pair)
        adjacent.setdefault(a, set()).add(b)
        adjacent.setdefault(b, set()).add(a)
    groups, leftovers, seen = [], [], set()
    for start in sorted(adjacent):
        if start in seen:
            continue
        component, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node not in component:
                component.add(node)
                todo += adjacent[node] - component
        seen |= component
        if all(adjacent[m] == component - {m} for m in component):
            groups.append(sorted(component))
        else:
            leftovers += [p for p in plain if p <= component]
    return groups, sorted(leftovers, key=sorted)


def _selector(key: str, value: str) -> str:
    return f"{LABEL_PREFIX}{key} == '{value}'"


def _peer(name: str, node_selector: str, peer_selector: str, password_key: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeSelector": node_selector, "peerSelector": peer_selector}
    if password_key is not None:
        spec["password"] = {"secretKeyRef": {"name": PASSWORD_SECRET, "key": password_key}}
    return {"apiVersion": API, "kind": "BGPPeer", "metadata": {"name": _resource_name(name)}, "spec": spec}


def _one_password(pairs: Sequence[Pair], passwords: Mapping[Pair, str | None], what: str) -> str | None:
    found = {passwords.get(p) for p in pairs}
    if len(found) > 1:
        raise ValueError(f"{what}: one BGPPeer covers sessions with different passwords")
    return found.pop() if found else None


def _node_labels(
    configs: Mapping[str, SpeakerConfig],
) -> tuple[dict[str, dict[str, str]], list[dict[str, Any]], dict[str, str]]:
    """(labels by node, BGPPeers, secret data) for the plan."""
    kinds, passwords = plan_sessions(configs)
    labels: dict[str, dict[str, str]] = {name: {} for name in configs}
    peers: list[dict[str, Any]] = []
    secret: dict[str, str] = {}

    def add_peer(name: str, node_sel: str, peer_sel: str, pairs: Sequence[Pair]) -> None:
        pw = _one_password(pairs, passwords, name)
        key = label_part(name, 253) if pw is not None else None
        if pw is not None and key is not None:
            secret[key] = pw
        peers.append(_peer(name, node_sel, peer_sel, key))

    reflectors = sorted({r for r in kinds.values() if r is not None})
    for r in reflectors:
        ident = label_part(r)
        labels[r][LABEL_PREFIX + "reflector"] = ident
        clients = sorted(next(iter(p - {r})) for p, k in kinds.items() if k == r)
        key = "rr-" + label_part(r, 63 - len("rr-"))
        for c in clients:
            labels[c][LABEL_PREFIX + key] = "client"
        pairs = [frozenset((r, c)) for c in clients]
        add_peer(f"netkit-rr-{r}", _selector(key, "client"), _selector("reflector", ident), pairs)
    plain = sorted((p for p, k in kinds.items() if k is None), key=sorted)
    groups, leftovers = _mesh_groups(plain)
    for members in groups:
        group = hashlib.sha256("\0".join(members).encode()).hexdigest()[:12]
        for m in members:
            labels[m][LABEL_PREFIX + "mesh"] = group
        pairs = [p for p in plain if p <= set(members)]
        add_peer(f"netkit-mesh-{group}", _selector("mesh", group), _selector("mesh", group), pairs)
    for pair in leftovers:
        a, b = sorted(pair)
        for m in (a, b):
            labels[m][LABEL_PREFIX + "node"] = label_part(m)
        add_peer(
            f"netkit-peer-{a}-{b}", _selector("node", label_part(a)), _selector("node", label_part(b)), [pair]
        )
    return labels, peers, secret


def render_calico(
    configs: Mapping[str, SpeakerConfig],
    asn: int,
    previous: Mapping[str, SpeakerConfig] | None = None,
    secret_namespace: str = "calico-system",
) -> list[dict[str, Any]]:
    """The Calico resources for the plan whose per-node configs are ``configs``; see the module
    docstring for what they are and what Calico can and cannot express."""
    labels, peers, secret = _node_labels(configs)
    cids = _cluster_ids(configs)
    old_labels = _node_labels(previous)[0] if previous is not None else {}
    out: list[dict[str, Any]] = [
        {
            "apiVersion": API,
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"nodeToNodeMeshEnabled": False, "asNumber": asn},
        }
    ]
    for name in sorted(configs):
        cfg = configs[name]
        bgp: dict[str, Any] = {"routeReflectorClusterID": ""}
        if name in cids:
            cid = cids[name]
            try:
                ipaddress.IPv4Address(cid)
            except ValueError:
                raise ValueError(f"{name}: Calico wants an IPv4 cluster id, not {cid!r}") from None
            bgp["routeReflectorClusterID"] = cid
        if cfg.asn != asn:
            bgp["asNumber"] = cfg.asn
        node_labels: dict[str, str | None] = dict(sorted(labels[name].items()))
        for key in sorted(set(old_labels.get(name, {})) - set(node_labels)):
            node_labels[key] = None  # JSON merge patch: remove
        meta: dict[str, Any] = {"name": name}
        if node_labels:
            meta["labels"] = node_labels
        out.append({"apiVersion": API, "kind": "Node", "metadata": meta, "spec": {"bgp": bgp}})
    out += sorted(peers, key=lambda p: str(p["metadata"]["name"]))
    if secret:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": PASSWORD_SECRET, "namespace": secret_namespace},
                "type": "Opaque",
                "stringData": dict(sorted(secret.items())),
            }
        )
    return out


def calico_yaml(resources: Sequence[Mapping[str, Any]]) -> str:
    """The resources as one multi-document YAML stream (``kubectl``/``calicoctl apply -f``)."""
    return yaml.safe_dump_all([dict(r) for r in resources], sort_keys=False, explicit_start=True)
