"""What the BGP controller writes in Calico mode (pure): a migration step's sessions as the
resources calico/node runs, on the Kubernetes API datastore (KDD), and what reverts them.

``bgp.core.render.calico`` gives the step as Calico v3 resources; on KDD they live as:

- ``BGPConfiguration`` and ``BGPPeer``: the ``crd.projectcalico.org/v1`` custom resources (the
  spec is the v3 one; calicoctl writes them the same way). Ours carry the label
  ``app.kubernetes.io/managed-by: netkit`` and the topology's name, so a peer of ours that the
  step no longer has is deleted and nobody else's is ever touched;
- Calico's ``Node``: the Kubernetes Node itself. Its labels are the Node's labels, its
  ``spec.bgp.routeReflectorClusterID`` the annotation ``projectcalico.org/RouteReflectorClusterID``
  and its AS number ``projectcalico.org/ASNumber`` (as ``kubectl annotate node`` sets them in
  Calico's route-reflector guide).

The labels of the scheme (``netkit.io/reflector``, ``netkit.io/rr-*``, ``netkit.io/mesh``,
``netkit.io/node``) are compared with what the Node carries now, not with what an earlier plan
set: one a restarted controller never saw is removed too. Nothing else of a Node is written.

A step that is a full mesh of plain sessions (the first plan of a mesh topology, the end of a
return to the mesh) is Calico's own node-to-node mesh (``nodeToNodeMeshEnabled: true``, no peer
of ours): adopting a cluster that runs Calico's mesh changes no session.

Reverting (the BGPTopology deleted) hands the nodes back to Calico's own node-to-node mesh:
``nodeToNodeMeshEnabled: true`` first (the mesh sessions come up beside the reflector ones), then
our peers, labels and annotations go.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bgp.core.model import Role, SpeakerConfig
from bgp.core.render.calico import LABEL_PREFIX, render_calico

__all__ = [
    "ASN_ANNOTATION",
    "CALICO_GROUP",
    "CALICO_VERSION",
    "CID_ANNOTATION",
    "MANAGED_BY",
    "TOPOLOGY_LABEL",
    "CalicoWrites",
    "calico_revert",
    "calico_writes",
    "scheme_label",
]

CALICO_GROUP = "crd.projectcalico.org"
CALICO_VERSION = "v1"
CID_ANNOTATION = "projectcalico.org/RouteReflectorClusterID"
ASN_ANNOTATION = "projectcalico.org/ASNumber"
MANAGED_BY = ("app.kubernetes.io/managed-by", "netkit")
TOPOLOGY_LABEL = "netkit.io/bgp-topology"
Obj = dict[str, Any]


def scheme_label(key: str) -> bool:
    """A label of the selector scheme the Calico rendering uses (ours to set and remove)."""
    if not key.startswith(LABEL_PREFIX):
        return False
    rest = key[len(LABEL_PREFIX) :]
    return rest in ("reflector", "mesh", "node") or rest.startswith("rr-")


@dataclass(frozen=True)
class CalicoWrites:
    """The writes that make the API hold one step (each empty when nothing differs)."""

    configuration: Obj | None = None  # spec of BGPConfiguration "default" (merged), or None
    create_configuration: bool = False  # it does not exist yet
    peers: dict[str, Obj] = field(default_factory=dict)  # name -> the whole BGPPeer to put
    delete_peers: tuple[str, ...] = ()
    nodes: dict[str, Obj] = field(default_factory=dict)  # node -> a merge patch of its metadata
    secret: Obj | None = None  # session passwords (a Secret to put), if the step has any

    @property
    def configuration_last(self) -> bool:
        """The configuration turns Calico's mesh off: written after the peers that replace it
        (and before the stale ones go); one that turns it on goes first."""
        return self.configuration is not None and self.configuration.get("nodeToNodeMeshEnabled") is False

    @property
    def empty(self) -> bool:
        return not (self.configuration or self.peers or self.delete_peers or self.nodes or self.secret)


def _meta_patch(
    node: Mapping[str, Any], labels: Mapping[str, str | None], annotations: Mapping[str, str | None]
) -> Obj:
    """A merge patch of ``node``'s metadata with only what differs (empty: nothing)."""
    meta = node.get("metadata") or {}
    have_l, have_a = meta.get("labels") or {}, meta.get("annotations") or {}
    patch: Obj = {}
    l_diff = {k: v for k, v in labels.items() if have_l.get(k) != v and not (v is None and k not in have_l)}
    a_diff = {
        k: v for k, v in annotations.items() if have_a.get(k) != v and not (v is None and k not in have_a)
    }
    if l_diff:
        patch["labels"] = l_diff
    if a_diff:
        patch["annotations"] = a_diff
    return patch


def _peer_object(topology: str, rendered: Mapping[str, Any]) -> Obj:
    labels = {MANAGED_BY[0]: MANAGED_BY[1], TOPOLOGY_LABEL: topology}
    return {
        "apiVersion": f"{CALICO_GROUP}/{CALICO_VERSION}",
        "kind": "BGPPeer",
        "metadata": {"name": rendered["metadata"]["name"], "labels": labels},
        "spec": dict(rendered["spec"]),
    }


def _ours(peer: Mapping[str, Any], topology: str) -> bool:
    labels = (peer.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY[0]) == MANAGED_BY[1] and labels.get(TOPOLOGY_LABEL) == topology


def calico_writes(
    topology: str,
    configs: Mapping[str, SpeakerConfig],
    asn: int,
    configuration: Mapping[str, Any] | None,
    peers: Mapping[str, Mapping[str, Any]],
    nodes: Mapping[str, Mapping[str, Any]],
    secret_namespace: str = "calico-system",
) -> CalicoWrites:
    """The writes from what the API holds (``configuration``: BGPConfiguration "default" or
    None; ``peers`` by name; Kubernetes ``nodes`` by name) to the step whose per-node configs are
    ``configs``. Raises ValueError where Calico cannot express the step (see the renderer)."""
    if _full_mesh(configs):
        return _calico_mesh(topology, asn, configuration, peers, nodes, set(configs))
    resources = render_calico(configs, asn, secret_namespace=secret_namespace)
    out_cfg: Obj | None = None
    want_peers: dict[str, Obj] = {}
    node_patches: dict[str, Obj] = {}
    secret: Obj | None = None
    for r in resources:
        kind = r["kind"]
        if kind == "BGPConfiguration":
            have = (configuration or {}).get("spec") or {}
            if configuration is None or any(have.get(k) != v for k, v in r["spec"].items()):
                out_cfg = dict(r["spec"])
        elif kind == "BGPPeer":
            obj = _peer_object(topology, r)
            current = peers.get(obj["metadata"]["name"])
            if current is None or current.get("spec") != obj["spec"] or not _ours(current, topology):
                want_peers[obj["metadata"]["name"]] = obj
        elif kind == "Node":
            name = r["metadata"]["name"]
            node = nodes.get(name)
            if node is None:
                continue  # a node gone: nothing to label
            labels: dict[str, str | None] = {
                k: v for k, v in (r["metadata"].get("labels") or {}).items() if v is not None
            }
            for k in (node.get("metadata") or {}).get("labels") or {}:
                if scheme_label(k) and k not in labels:
                    labels[k] = None
            bgp = r["spec"]["bgp"]
            annotations: dict[str, str | None] = {
                CID_ANNOTATION: bgp.get("routeReflectorClusterID") or None,
                ASN_ANNOTATION: str(bgp["asNumber"]) if "asNumber" in bgp else None,
            }
            patch = _meta_patch(node, labels, annotations)
            if patch:
                node_patches[name] = patch
        elif kind == "Secret":
            secret = dict(r)
    rendered_names = {r["metadata"]["name"] for r in resources if r["kind"] == "BGPPeer"}
    stale = tuple(sorted(n for n, p in peers.items() if _ours(p, topology) and n not in rendered_names))
    return CalicoWrites(
        out_cfg, configuration is None and out_cfg is not None, want_peers, stale, node_patches, secret
    )


def _full_mesh(configs: Mapping[str, SpeakerConfig]) -> bool:
    names = set(configs)
    return all(
        not c.is_reflector
        and all(n.role is Role.PEER for n in c.neighbors)
        and {n.name for n in c.neighbors} == names - {c.node}
        and not any(n.password for n in c.neighbors)
        for c in configs.values()
    )


def _calico_mesh(
    topology: str,
    asn: int | None,
    configuration: Mapping[str, Any] | None,
    peers: Mapping[str, Mapping[str, Any]],
    nodes: Mapping[str, Mapping[str, Any]],
    selected: set[str] | None,
) -> CalicoWrites:
    """Calico's own mesh on (with ``asn``, when given), our peers deleted, the scheme's labels
    and the cluster-id/AS annotations removed from the nodes that carry them."""
    have = (configuration or {}).get("spec") or {}
    want: Obj = {"nodeToNodeMeshEnabled": True, **({"asNumber": asn} if asn is not None else {})}
    cfg = None if configuration is None and asn is None else want
    if configuration is not None and all(have.get(k) == v for k, v in want.items()):
        cfg = None
    stale = tuple(sorted(n for n, p in peers.items() if _ours(p, topology)))
    node_patches: dict[str, Obj] = {}
    for name, node in nodes.items():
        labels = {k: None for k in (node.get("metadata") or {}).get("labels") or {} if scheme_label(k)}
        if not labels and (selected is None or name not in selected):
            continue  # not a node of ours: its annotations are someone else's
        patch = _meta_patch(node, labels, {CID_ANNOTATION: None, ASN_ANNOTATION: None})
        if patch:
            node_patches[name] = patch
    return CalicoWrites(cfg, configuration is None and cfg is not None, {}, stale, node_patches)


def calico_revert(
    topology: str,
    configuration: Mapping[str, Any] | None,
    peers: Mapping[str, Mapping[str, Any]],
    nodes: Mapping[str, Mapping[str, Any]],
) -> CalicoWrites:
    """The writes that give the nodes back to Calico's own mesh: mesh on, our peers deleted, the
    scheme's labels and the cluster-id/AS annotations removed from the nodes that carry them
    (no BGPConfiguration at all is Calico's default: the mesh)."""
    return _calico_mesh(topology, None, configuration, peers, nodes, None)
