"""Calico mode's writes (pure), on an in-memory API: the BGP controller's decisions (driven by
the simulated agents of ``test_control_bgppublish``) written as Calico's KDD resources.

- a mesh topology is Calico's own node-to-node mesh: a cluster running it is adopted with no
  peer written and no session changed;
- mesh -> reflectors: every step's resources are a fixed point (a second pass writes nothing),
  Calico's mesh is never off while no peer of ours exists, the end holds exactly the plan's
  sessions (read back from the BGPPeers' selectors and the Node labels), reflectors carry
  their cluster id as the annotation calico/node reads;
- the scheme's labels a restarted controller never set are removed; nobody else's BGPPeer,
  label or annotation is touched;
- deleting the topology gives the nodes back to Calico's mesh with nothing of ours left;
- a plan Calico cannot run (an IPv6 cluster id) is a ValueError, nothing written.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from typing import Any

import pytest

from bgp.core.model import Role
from netkit.control.core.bgppublish import config_from_dict, decide, topology_status
from netkit.control.core.calicopublish import (
    CID_ANNOTATION,
    CalicoWrites,
    calico_revert,
    calico_writes,
    scheme_label,
)
from tests.unit.test_control_bgppublish import NOW, nodes, simulate, spec

Obj = dict[str, Any]


class Api:
    """What the API server holds of Calico's resources and the Nodes."""

    def __init__(self, names: list[str]) -> None:
        self.configuration: Obj | None = None
        self.peers: dict[str, Obj] = {
            "admin-tor": {"metadata": {"name": "admin-tor"}, "spec": {"peerIP": "10.0.0.1"}}
        }
        self.nodes: dict[str, Obj] = {
            n: {"metadata": {"name": n, "labels": {"rack": "r1"}, "annotations": {"owner": "ops"}}}
            for n in names
        }
        self.history: list[tuple[bool, int]] = []  # (mesh on, peers of ours) after every write

    def apply(self, w: CalicoWrites) -> None:
        """In the controller's order (``BgpController._calico_apply``)."""
        if not w.configuration_last:
            self._configure(w)
        for name, peer in w.peers.items():
            self.peers[name] = copy.deepcopy(peer)
            self._sample()
        for node, patch in w.nodes.items():
            meta = self.nodes[node]["metadata"]
            for part in ("labels", "annotations"):
                have = meta.setdefault(part, {})
                for k, v in (patch.get(part) or {}).items():
                    if v is None:
                        have.pop(k, None)
                    else:
                        have[k] = v
        if w.configuration_last:
            self._configure(w)
        for name in w.delete_peers:
            del self.peers[name]
            self._sample()

    def _configure(self, w: CalicoWrites) -> None:
        if w.configuration is not None:
            self.configuration = {
                "spec": {**((self.configuration or {}).get("spec") or {}), **w.configuration}
            }
            self._sample()

    def _sample(self) -> None:
        mesh = ((self.configuration or {}).get("spec") or {}).get("nodeToNodeMeshEnabled", True)
        self.history.append((bool(mesh), len([p for p in self.peers if p.startswith("netkit-")])))

    def write(self, configs: dict[str, Any]) -> CalicoWrites:
        w = calico_writes("cluster", configs, 64512, self.configuration, self.peers, self.nodes)
        self.apply(w)
        return w


def labels_of(api: Api, node: str) -> dict[str, str]:
    return dict(api.nodes[node]["metadata"].get("labels") or {})


def _matches(selector: str, labels: dict[str, str]) -> bool:
    m = re.fullmatch(r"(\S+) == '([^']*)'", selector)
    assert m, selector
    return labels.get(m[1]) == m[2]


def sessions_of(api: Api) -> set[frozenset[str]]:
    """The node pairs calico/node would peer, from our BGPPeers (as confd reads them)."""
    out = set()
    if ((api.configuration or {}).get("spec") or {}).get("nodeToNodeMeshEnabled", True):
        names = sorted(api.nodes)
        out |= {frozenset((a, b)) for i, a in enumerate(names) for b in names[i + 1 :]}
    for name, p in api.peers.items():
        if not name.startswith("netkit-"):
            continue
        for a in api.nodes:
            for b in api.nodes:
                node_side = _matches(p["spec"]["nodeSelector"], labels_of(api, a))
                if a != b and node_side and _matches(p["spec"]["peerSelector"], labels_of(api, b)):
                    out.add(frozenset((a, b)))
    return out


def migrate(s: Obj, ns: Any, status: Obj, api: Api, passes: int = 60) -> Obj:
    reports: dict[str, Obj] = {}
    for _ in range(passes):
        d = decide("cluster", 1, s, ns, status, reports, NOW)
        configs = {n: config_from_dict(e["config"]) for n, e in d.publish.items()}
        api.write(configs)
        assert api.write(configs).empty, "a second pass over the same step writes nothing"
        status = topology_status(d, 1, status, NOW)
        if status["phase"] == "Converged" and "migration" not in status and reports:
            return status
        reports = simulate(d.publish, ns)
    raise AssertionError(f"not converged: {status}")


def test_mesh_is_calicos_own_mesh_and_reflectors_come_step_by_step() -> None:
    ns = [replace(n, alt_address=None) for n in nodes(6)]
    api = Api([n.name for n in ns])
    mesh = migrate({**spec("mesh"), "speaker": "calico"}, ns, {}, api)
    assert api.configuration == {"spec": {"nodeToNodeMeshEnabled": True, "asNumber": 64512}}
    assert set(api.peers) == {"admin-tor"} and all(
        not any(scheme_label(k) for k in labels_of(api, n)) for n in api.nodes
    )
    rr = migrate({**spec(), "speaker": "calico"}, ns, mesh, api)
    assert api.configuration["spec"]["nodeToNodeMeshEnabled"] is False  # type: ignore[index]
    assert all(mesh_on or ours for mesh_on, ours in api.history), "never without any session"
    # the plan's sessions, exactly, from what calico/node reads
    d = decide("cluster", 1, {**spec(), "speaker": "calico"}, ns, rr, {}, NOW)
    configs = {n: config_from_dict(e["config"]) for n, e in d.publish.items()}
    planned = {frozenset((c.node, nb.name)) for c in configs.values() for nb in c.neighbors}
    assert sessions_of(api) == planned and len(planned) < 15
    reflectors = {c.node for c in configs.values() if any(nb.role is Role.CLIENT for nb in c.neighbors)}
    assert reflectors == set(rr["reflectors"])
    for n in api.nodes:
        annotations = api.nodes[n]["metadata"]["annotations"]
        assert (CID_ANNOTATION in annotations) == (n in reflectors) and annotations["owner"] == "ops"
        assert labels_of(api, n)["rack"] == "r1"
    assert api.peers["admin-tor"] == {"metadata": {"name": "admin-tor"}, "spec": {"peerIP": "10.0.0.1"}}
    # a label of the scheme nobody asked for (left by an earlier controller) goes
    api.nodes["n1"]["metadata"]["labels"]["netkit.io/rr-gone"] = "client"
    api.write(configs)
    assert "netkit.io/rr-gone" not in labels_of(api, "n1")
    # deleted: Calico's mesh again, nothing of ours
    revert = calico_revert("cluster", api.configuration, api.peers, api.nodes)
    api.apply(revert)
    assert api.configuration["spec"]["nodeToNodeMeshEnabled"] is True  # type: ignore[index]
    assert set(api.peers) == {"admin-tor"}
    for n in api.nodes:
        assert labels_of(api, n) == {"rack": "r1"} and api.nodes[n]["metadata"]["annotations"] == {
            "owner": "ops"
        }
    assert calico_revert("cluster", api.configuration, api.peers, api.nodes).empty
    # the mesh was on before the first of our peers went
    first_delete = next(i for i, (_, ours) in enumerate(api.history) if ours < len(revert.delete_peers))
    assert all(on for on, _ in api.history[first_delete - 1 :])


def test_a_plan_calico_cannot_run_is_refused() -> None:
    ns = [replace(n, alt_address=None) for n in nodes(4)]
    d = decide("cluster", 1, {**spec(), "speaker": "calico"}, ns, {}, {}, NOW)
    configs = {n: config_from_dict(e["config"]) for n, e in d.publish.items()}
    reflector = next(n for n, c in configs.items() if c.is_reflector)
    configs[reflector] = replace(configs[reflector], cluster_id="fd00::1")
    with pytest.raises(ValueError, match="IPv4 cluster id"):
        calico_writes("cluster", configs, 64512, None, {}, {})
