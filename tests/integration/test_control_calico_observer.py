"""The agent's side of ``speaker: calico`` over the BIRD calico/node runs (BIRD 1.6, Debian's
``bird`` package unpacked by ``make setup``): three nodes as network namespaces, each BIRD
configured as calico/node's confd names things (``Node_<address>`` protocols from a
``bgp_template``, pod blocks as static blackholes, table ``master``), read through bird2's
``birdc`` as the agent's image has it.

- a step's sessions are found by neighbour address, whatever the protocols are called, and the
  report the gates read says every session Established and every other node's pod block held
  via that node;
- a neighbour calico/node has not configured yet counts as not Established (the gate waits);
- calico/node's BIRD gone: the report says it does not answer, 0 Established (the gate waits,
  nothing is torn down); an agent without ``--calico-bird-control`` fails the step naming it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from bgp.core.model import Neighbor, Role, SpeakerConfig, Timers
from labs.bgpmigrate import migration_lab
from labs.l2lab import L2Lab
from labs.runid import RunDir
from netkit.base.process import ManagedProcess
from netkit.control.bgpagent import NodeBgp, SpeakerAccess
from netkit.control.core.bgppublish import config_to_dict
from tests.kubehelpers import wait_for

pytestmark = [pytest.mark.root, pytest.mark.peers]
BIRD1 = Path(sys.prefix) / "bird1" / "usr" / "sbin" / "bird"
NODES = 3


def calico_style_bird(i: int, peers: list[int]) -> str:
    """A bird.cfg shaped as calico/node's confd writes it (BIRD 1.6)."""
    me = f"198.18.0.{i}"
    out = [
        f"router id {me};",
        "protocol device { scan time 2; }",
        'protocol direct { interface "-dummy*", "*"; }',
        "protocol kernel { learn; persist; scan time 2; import all; export none; graceful restart; }",
        f"protocol static {{ route 198.19.{i}.0/24 blackhole; }}",
        "template bgp bgp_template { local as 64512; multihop; gateway recursive; import all;"
        " export all; graceful restart; connect delay time 1; connect retry time 2; error wait time 1,5;"
        " hold time 9; keepalive time 3; }",
    ]
    for p in peers:
        a = f"198.18.0.{p}"
        out.append(
            f"protocol bgp Node_{a.replace('.', '_')} from bgp_template {{ neighbor {a} as 64512;"
            f" source address {me}; }}"
        )
    return "\n".join(out) + "\n"


class CalicoNode:
    """calico/node's BIRD on one lab node (started by us, stopped by PID)."""

    def __init__(self, lab: L2Lab, run: RunDir, i: int) -> None:
        self.dir = run.path / f"calico-n{i}"
        self.dir.mkdir()
        self.ctl = self.dir / "bird.ctl"
        conf = self.dir / "bird.cfg"
        conf.write_text(calico_style_bird(i, [p for p in range(1, NODES + 1) if p != i]))
        argv = [str(BIRD1), "-f", "-c", str(conf), "-s", str(self.ctl)]
        self.proc = ManagedProcess(argv, self.dir / "bird.log", netns=lab.ns(f"n{i}"))
        assert wait_for(self.ctl.exists, 10), (self.dir / "bird.log").read_text()

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture
def calico(run_dir: RunDir) -> Iterator[tuple[L2Lab, dict[int, CalicoNode]]]:
    assert BIRD1.exists(), f"{BIRD1} is missing: make setup unpacks Debian's bird (1.6) there"
    with migration_lab(NODES, run_dir) as lab, ExitStack() as stack:
        nodes = {}
        for i in range(1, NODES + 1):
            nodes[i] = CalicoNode(lab, run_dir, i)
            stack.callback(nodes[i].stop)
        yield lab, nodes


def step(i: int, peers: list[int], revision: str) -> dict[str, Any]:
    cfg = SpeakerConfig(
        f"n{i}",
        f"198.18.0.{i}",
        f"198.18.0.{i}",
        64512,
        tuple(Neighbor(f"n{p}", f"198.18.0.{p}", 64512, Role.PEER) for p in peers),
        (f"198.19.{i}.0/24",),
        timers=Timers.lab(),
    )
    return {
        "name": "cluster",
        "generation": 1,
        "revision": revision,
        "step": 0,
        "steps": 0,
        "speaker": "calico",
        "config": config_to_dict(cfg),
    }


def test_the_agent_reads_calico_nodes_bird_by_neighbour_address(
    calico: tuple[L2Lab, dict[int, CalicoNode]], run_dir: RunDir
) -> None:
    lab, nodes = calico
    agent = NodeBgp(
        "n1",
        SpeakerAccess(calico_bird=str(nodes[1].ctl)),
        run_dir.path / "state-n1",
        lambda: None,
        netns=lab.ns("n1"),
        poll=0.2,
    ).start()
    try:
        agent.update(step(1, [2, 3], "r1"))

        def converged() -> bool:
            # the other nodes' pod blocks, not a count: BIRD's direct protocol exports interface
            # routes as well, so three prefixes can be held before either block arrives (a CI flake)
            o = agent.observed()
            held = {r["prefix"] for r in o.get("routes", [])}
            return (
                o.get("revision") == "r1"
                and o.get("sessionsEstablished") == 2
                and {"198.19.2.0/24", "198.19.3.0/24"} <= held
            )

        assert wait_for(converged, 30), agent.observed()
        seen = agent.observed()
        assert seen["sessionsConfigured"] == 2 and agent.applied[0]["state"] == "Applied"
        routes = {r["prefix"]: r["via"] for r in seen["routes"]}
        assert routes["198.19.2.0/24"] == ["198.18.0.2"] and routes["198.19.3.0/24"] == ["198.18.0.3"]
        assert routes["198.19.1.0/24"] == []  # its own block, originated

        # a neighbour calico/node has not configured (yet): not Established, the gate waits
        agent.update(step(1, [2, 3, 4], "r2"))
        assert wait_for(lambda: agent.observed().get("revision") == "r2", 10), agent.observed()
        assert wait_for(lambda: agent.observed().get("sessionsConfigured") == 3, 10)
        assert agent.observed()["sessionsEstablished"] == 2

        # calico/node's BIRD gone: said, 0 Established; nothing else happens
        nodes[1].stop()
        assert wait_for(lambda: "does not answer" in agent.observed().get("message", ""), 10)
        assert agent.observed()["sessionsEstablished"] == 0
    finally:
        agent.stop()


def test_an_agent_without_the_calico_socket_fails_the_step_naming_the_flag(run_dir: RunDir) -> None:
    agent = NodeBgp("n1", SpeakerAccess(), run_dir.path / "state", lambda: None, poll=0.1).start()
    try:
        agent.update(step(1, [2], "r1"))
        assert wait_for(lambda: bool(agent.applied) and agent.applied[0]["state"] == "Failed", 10)
        assert "--calico-bird-control" in agent.applied[0]["message"]
        assert agent.observed()["state"] == "Failed"
    finally:
        agent.stop()
