"""``netkit l2 verify`` on this host (the VXLAN path; the VLAN path runs in User-Mode Linux:
``test_l2_vlan_uml.py``): it passes, cleans up, and it does catch leaks: a node that answers
ARP from a tenant segment and an underlay that accepts another tenant's VNI from anyone (the two
holes the agent closes), and the agent's next full round closes them again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from labs.l2verify import Probe, Verifier
from netkit.l2.agent import reconcile_once
from netkit.l2.core.plan import ARP_IGNORE_NEVER, RP_FILTER_STRICT
from netkit.l2.core.state import bridge_name
from netkit.l2.kernel import Kernel

pytestmark = pytest.mark.root

KINDS = {"broadcast", "arp", "unknown-unicast", "known-unicast", "multicast", "vlan-escape", "vxlan-inject"}


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("netkit l2 verify needs root (network namespaces); the suite runs as root")


def test_verify_vxlan_passes_and_leaves_nothing_behind() -> None:
    need_root()
    res = subprocess.run(
        [sys.executable, "-m", "netkit.cli", "l2", "verify", "--kind", "vxlan", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(res.stdout)
    (run,) = report["runs"]
    assert report["ok"] and run["ok"] and run["kind"] == "vxlan"
    probes = run["probes"]
    assert {p["kind"] for p in probes} == KINDS and len(probes) == 19
    assert all(p["ok"] and not p["leaks"] and not p["misses"] for p in probes)
    node_arp = [p for p in probes if "underlay address" in p["description"]]
    assert len(node_arp) == 3 and all(p["arp_reply"]["got"] is None for p in node_arp)
    assert all(p["received"] == [] for p in probes if p["kind"] == "vxlan-inject")
    # overlapping addresses: r1's ARP for 198.19.1.2 is answered by r2, never by b2 or g2
    (r1_arp,) = [p for p in probes if p["sender"] == "r1" and p["kind"] == "arp"]
    assert r1_arp["arp_reply"]["got"] == "02:00:00:00:02:02" and "b2" not in r1_arp["received"]
    assert not [n for n in os.listdir("/run/netns") if n.startswith(run["run_id"])]


def pick(probes: list[Probe], kind: str, sender: str, text: str = "") -> Probe:
    return next(p for p in probes if p.kind == kind and p.sender == sender and text in p.description)


def test_verify_catches_the_holes_the_agent_closes() -> None:
    need_root()
    v = Verifier("vxlan")
    try:
        v.build()
        probes = v.probes()
        arp_node = pick(probes, "arp", "b1", "node n1's underlay address")
        inject = pick(probes, "vxlan-inject", "rogue", "to n1")
        assert v.run_probe(1, arp_node).ok and v.run_probe(2, inject).ok
        n1 = v.lab.ns("n1")
        blue = bridge_name("blue")

        # behind the agent's back: the node answers ARP again, the underlay filter is gone
        # (either setting alone stops the reply: rp_filter fails the reply's route lookup)
        for key in ("arp_ignore", "rp_filter"):
            subprocess.run(
                ["ip", "netns", "exec", n1, "sysctl", "-qw", f"net.ipv4.conf.{blue}.{key}=0"], check=True
            )
        subprocess.run(["ip", "netns", "exec", n1, "nft", "delete", "table", "inet", "netkit_l2"], check=True)
        leaked = v.run_probe(3, arp_node)
        assert not leaked.ok and leaked.reply is not None  # n1's blue bridge answered for 198.18.0.1
        injected = v.run_probe(4, inject)
        assert injected.leaks == {"r1"}  # red's pod on n1 got a frame from a non-member

        # a full round (the agent's periodic resync: sysctl changes are not announced) repairs both
        with Kernel(n1) as k:
            _, observed, result = reconcile_once(k, v.networks, "n1", full=True)
            assert (observed.links[blue].arp_ignore, observed.links[blue].rp_filter) == (0, 0)
            assert result.writes_by_op["link_set"] == 1 and result.filter_writes == 1
            fixed = k.read(full=True).links[blue]
            assert (fixed.arp_ignore, fixed.rp_filter) == (ARP_IGNORE_NEVER, RP_FILTER_STRICT)
            _, _, again = reconcile_once(k, v.networks, "n1", full=True)
            assert again.writes == 0 and again.filter_writes == 0
        assert v.run_probe(5, arp_node).ok and v.run_probe(6, inject).ok
    finally:
        v.close()
    assert v.lab.leftovers() == []
