"""A BGPTopology end to end over real speakers: four nodes as network namespaces, each running
its own speaker (BIRD on odd nodes, FRR on even ones, started with no neighbour) and a real
``netkit agent`` that configures it; the lab API server, a ``netkit controller``, kubectl.

A mesh applied with kubectl converges (every FIB holds every other node's pod CIDR, Ready); the
same object edited to reflectors migrates make-before-break, step by step as the agents report,
with **no prefix missing from any FIB at any sample** (``labs.fibwatch``, every 80 ms); the plan
in force in the status is the reflectors'; deleting the object leaves every speaker without a
netkit neighbour and the finalizer removed.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest
from kubernetes import client, config

from bgp.core.model import SpeakerConfig, Timers
from labs.apiserver.lab import ApiLab
from labs.bgpmigrate import migration_lab, speaker_class
from labs.bgpspeakers import BgpSpeaker, BirdSpeaker
from labs.fibwatch import FibWatch
from labs.l2lab import L2Lab
from labs.runid import RunDir, free_port
from tests.kubehelpers import G, Kubectl, V, agent, replica, stop_process, wait_for

NODES = 4
ZONE = "topology.kubernetes.io/zone"
TOPOLOGY = """\
apiVersion: netkit.io/v1alpha1
kind: BGPTopology
metadata: {{name: cluster}}
spec:
  asn: 64512
  speaker: bird
  topology: {topology}
  timers: {{holdSeconds: 9, keepaliveSeconds: 3, connectRetrySeconds: 1}}
  policy: {{failureDomainLabel: {zone}, redundancy: 2}}
  migration: {{batch: 4, stepTimeoutSeconds: 120}}
"""


@dataclass
class World:
    run: RunDir
    lab: L2Lab
    kubectl: Kubectl
    co: client.CustomObjectsApi
    speakers: dict[str, BgpSpeaker] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
            for p in sorted(self.run.path.glob("*.log"))
        )


@pytest.fixture
def world(run_dir: RunDir) -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.fail("the BGP end-to-end test needs root (network namespaces); the suite runs as root")
    with ApiLab(run_dir.path / "api") as api_lab, migration_lab(NODES, run_dir) as lab, ExitStack() as stack:
        home = run_dir.path / "home"
        home.mkdir()
        k = Kubectl(api_lab, home)
        k("apply", "-k", "deploy/crds")
        api = stack.enter_context(config.new_client_from_config(str(api_lab.kubeconfig)))
        core = client.CoreV1Api(api)
        w = World(run_dir, lab, k, client.CustomObjectsApi(api))
        try:
            for node in sorted(lab.node_ns):
                i = int(node[1:])
                meta = client.V1ObjectMeta(
                    name=node,
                    labels={ZONE: f"z{i % 3}"},
                    annotations={"netkit.io/bgp-alternate-address": f"198.18.1.{i}"},
                )
                spec = client.V1NodeSpec(pod_cidr=f"198.19.{i}.0/24", pod_cidrs=[f"198.19.{i}.0/24"])
                core.create_node(client.V1Node(metadata=meta, spec=spec))
                address = {"type": "InternalIP", "address": f"198.18.0.{i}"}
                core.patch_node_status(node, {"status": {"addresses": [address]}})
                quiet = SpeakerConfig(
                    node, f"198.18.0.{i}", f"198.18.0.{i}", 64512, (), (), timers=Timers.lab()
                )
                sp = speaker_class(i)(lab.ns(node), run_dir.path, quiet)
                w.speakers[node] = stack.enter_context(sp)  # stopped when the stack unwinds
            w.procs.append(replica(api_lab, "replica-a", free_port(), run_dir.path / "controller.log"))
            for node, sp in sorted(w.speakers.items()):
                args = [
                    "--no-dns",
                    "--netns",
                    lab.ns(node),
                    "--state-dir",
                    str(run_dir.path / f"state-{node}"),
                ]
                if isinstance(sp, BirdSpeaker):
                    args += ["--bird-control", str(sp.ctl_path), "--bird-config", str(sp.conf_path)]
                else:
                    args += ["--frr", "--frr-vty", str(sp.dir)]
                w.procs.append(agent(api_lab, node, args, run_dir.path / f"agent-{node}.log"))
            yield w
        finally:
            for proc in w.procs:
                stop_process(proc)


def status(w: World) -> dict:  # type: ignore[type-arg]
    return w.co.get_cluster_custom_object(G, V, "bgptopologies", "cluster").get("status") or {}


def ready(w: World, kind: str) -> bool:
    s = status(w)
    conds = {c["type"]: c["status"] for c in s.get("conditions", [])}
    return conds.get("Ready") == "True" and (s.get("plan") or {}).get("kind") == kind and "migration" not in s


def test_mesh_to_reflectors_through_the_api_loses_no_prefix(world: World) -> None:
    w, k = world, world.kubectl
    prefixes = {n: {f"198.19.{n[1:]}.0/24"} for n in w.lab.node_ns}
    every = set().union(*prefixes.values())
    k("apply", "-f", "-", stdin=TOPOLOGY.format(topology="mesh", zone=ZONE))
    with FibWatch(w.lab.node_ns, 0.08) as watch:
        watch.require_all({n: every - p for n, p in prefixes.items()})
        assert wait_for(lambda: ready(w, "mesh") and not watch.missing_now(), 90), (status(w), w.logs())
        assert status(w)["sessions"] == NODES * (NODES - 1) // 2
        watch.reset()
        t0 = time.monotonic()
        k("apply", "-f", "-", stdin=TOPOLOGY.format(topology="reflectors", zone=ZONE))
        assert wait_for(lambda: "migration" in status(w) or ready(w, "rr"), 30), status(w)
        steps = status(w).get("migration", {}).get("steps", 0)
        assert wait_for(lambda: ready(w, "rr"), 120), (status(w), w.logs())
        seconds = time.monotonic() - t0
        time.sleep(0.3)
        report = watch.reset()
    assert not report.errors, report.errors
    assert not report.misses, report.misses[:10]  # no prefix missing from any FIB at any sample
    assert report.samples > 10
    s = status(w)
    assert s["phase"] == "Converged" and len(s["reflectors"]) >= 2 and steps >= 3
    print(f"mesh -> reflectors through the API: {steps} steps in {seconds:.1f} s, {report.summary()}")
    table = k("get", "bgptopology", "cluster", "-o", "wide").stdout
    print(table)
    assert "Converged" in table and "True" in table
    # deleted: every speaker left without a netkit neighbour, the finalizer run
    k("delete", "bgptopology", "cluster", "--timeout=60s")
    assert wait_for(lambda: all(not sp.sessions() for sp in w.speakers.values()), 30), w.logs()
    assert "cluster" not in k("get", "bgptopologies", "-o", "name").stdout
