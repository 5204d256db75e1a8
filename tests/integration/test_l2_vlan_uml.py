"""The 802.1Q path of the L2 agent, against a kernel that has it: User-Mode Linux.

This host kernel has no ``8021q``. On the host this module holds one test, which boots a UML
guest (``labs.uml``: the project's own runner) and runs *this same file* with pytest inside
it, once, where ``IN_UML=1`` defines the VLAN tests instead. Nothing is skipped: without
``linux.uml`` the host test fails and says how to get it.

Inside the guest: VLAN networks on a veth underlay between node namespaces (the agent's own
``reconcile_once``), the sub-interfaces and their attributes, tagged frames on the underlay seen
with ``PACKET_AUXDATA`` (VLAN 10 for blue, 20 for red, never untagged), pods with the same
addresses in two VLANs each reaching only their own, different VLAN ids on two nodes isolated,
a replaced sub-interface when the id changes, zero writes on a no-op round, drift repaired, and
``netkit l2 verify --kind vlan``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import yaml

IN_UML = os.environ.get("IN_UML") == "1"
pytestmark = pytest.mark.root

if not IN_UML:

    def test_vlan_path_in_user_mode_linux() -> None:
        from labs.uml import UmlError, run_in_uml

        if os.geteuid() != 0:
            pytest.fail("the UML VLAN tests need root; the suite runs as root")
        if shutil.which("linux.uml") is None:
            pytest.fail("linux.uml not found: `make setup` installs it (Debian package user-mode-linux)")
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", "--color=no", __file__]
        try:
            rc, out = run_in_uml(argv, timeout=170)
        except UmlError as exc:
            pytest.fail(str(exc))
        assert rc == 0, out[-6000:]
        assert re.search(r"\b2 passed\b", out), out[-3000:]
        assert "skipped" not in out and "8021q" not in out, out[-3000:]
        assert "PASSED" in out and "vlan: 16 frames, 0 leaks, 0 misses, 0 failed: PASS" in out, out[-3000:]

    def test_uml_runner_status_private_run_and_timeout() -> None:
        """The command's status comes back, the guest's namespaces stay in the guest, and a
        guest that overruns is killed."""
        from labs.runid import new_run_id
        from labs.uml import run_in_uml

        ns = f"{new_run_id()}-umlcheck"
        rc, out = run_in_uml(
            ["sh", "-c", f'ip netns add {ns} && test -e /run/netns/{ns} && echo "in=$IN_UML"; exit 7'],
            timeout=60,
        )
        assert rc == 7 and "in=1" in out, out
        assert not os.path.exists(f"/run/netns/{ns}")
        rc, out = run_in_uml(["sleep", "60"], timeout=4)
        assert rc == 124 and "timed out" in out

else:
    from labs.l2lab import L2Lab
    from labs.l2verify import ETH_P_IP, Tap, frame_vlan, run_verify
    from netkit.l2.agent import reconcile_once
    from netkit.l2.core.model import load_networks
    from netkit.l2.core.plan import CreateLink, DeleteLink
    from netkit.l2.core.state import ObservedState, bridge_name, owner_alias, vlan_name
    from netkit.l2.kernel import Kernel

    BLUE_VL, RED_VL = vlan_name("blue", 10), vlan_name("red", 20)

    @pytest.fixture
    def lab() -> Iterator[L2Lab]:
        from labs.runid import new_run_id

        rid = new_run_id()
        with L2Lab(nodes=2, run_id=rid, underlay_name=f"{rid}-ul") as lab:
            # blue and red use the same addresses: pa/pd are .1, pb/pc are .2
            lab.add_pod("pa", "n1", "02:00:00:00:01:01", "198.19.1.1/24")
            lab.add_pod("pb", "n2", "02:00:00:00:01:02", "198.19.1.2/24")
            lab.add_pod("pc", "n1", "02:00:00:00:02:02", "198.19.1.2/24")
            lab.add_pod("pd", "n2", "02:00:00:00:02:01", "198.19.1.1/24")
            yield lab
        assert lab.leftovers() == []

    def networks(lab: L2Lab, blue_vlan: int = 10) -> str:
        p = lab.pods
        ul = lab.underlay_name
        return yaml.safe_dump(
            {
                "networks": [
                    {"name": "blue", "kind": "vlan", "vlan": blue_vlan, "underlay": ul,
                     "ports": {"n1": [p["pa"].port], "n2": [p["pb"].port]}},
                    {"name": "red", "kind": "vlan", "vlan": 20, "underlay": ul,
                     "ports": {"n1": [p["pc"].port], "n2": [p["pd"].port]}},
                ]
            }
        )  # fmt: skip

    def apply(lab: L2Lab, node: str, text: str) -> tuple[int, ObservedState, list[object]]:
        with Kernel(lab.ns(node)) as k:
            pl, _, result = reconcile_once(k, load_networks(text), node)
            assert not pl.failed, pl.render()
            return result.writes, k.read(full=True), list(pl.ops)

    def neighbour_mac(lab: L2Lab, pod: str, ip: str) -> str | None:
        out = subprocess.run(
            ["ip", "-n", lab.pods[pod].netns, "neigh", "show", ip],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        m = re.search(r"lladdr (\S+)", out)
        return m.group(1) if m else None

    def icmp_tags(tap: Tap, src_mac: str) -> set[int | None]:
        """VLAN ids of the IPv4 frames from ``src_mac`` that reached the underlay tap."""
        tags = set()
        for c in tap.drain():
            if c.data[6:12] != bytes.fromhex(src_mac.replace(":", "")):
                continue
            inline = c.data[12:14] == b"\x81\x00"
            ethertype = c.data[16:18] if inline else c.data[12:14]
            if ethertype == ETH_P_IP.to_bytes(2, "big"):
                tags.add(frame_vlan(c))
        return tags

    def test_vlan_segments_on_a_veth_underlay(lab: L2Lab) -> None:
        text = networks(lab)
        for node in lab.node_ns:
            writes, state, _ = apply(lab, node, text)
            assert writes > 0
            vl = state.links[BLUE_VL]
            assert vl.kind == "vlan" and vl.vlan is not None and vl.vlan.vlan_id == 10
            assert vl.vlan.underlay == lab.underlay_name and vl.master == bridge_name("blue")
            assert vl.alias == owner_alias("blue") and vl.up and vl.mtu == 1500 and vl.addrgen is False
            assert state.links[RED_VL].vlan is not None and state.links[RED_VL].vlan.vlan_id == 20

        # tagged on the wire: blue with 10, red with 20, nothing untagged
        tap = Tap("u@n2", lab.ns("n2"), lab.underlay_name or "")
        try:
            tap.drain()
            assert lab.ping("pa", "198.19.1.2", timeout=2)
            assert neighbour_mac(lab, "pa", "198.19.1.2") == "02:00:00:00:01:02"  # pb, never pc
            time.sleep(0.2)
            assert icmp_tags(tap, "02:00:00:00:01:01") == {10}
            assert lab.ping("pc", "198.19.1.1", timeout=2)
            assert neighbour_mac(lab, "pc", "198.19.1.1") == "02:00:00:00:02:01"  # pd, never pa
            time.sleep(0.2)
            assert icmp_tags(tap, "02:00:00:00:02:02") == {20}
        finally:
            tap.close()

        # a no-op round writes nothing
        for node in lab.node_ns:
            assert apply(lab, node, text)[0] == 0

        # different VLAN ids on the two nodes: isolated; the id change replaces the sub-interface
        writes, state, ops = apply(lab, "n2", networks(lab, blue_vlan=11))
        assert {type(op) for op in ops} >= {DeleteLink, CreateLink}
        assert vlan_name("blue", 11) in state.links and BLUE_VL not in state.links
        subprocess.run(["ip", "-n", lab.pods["pa"].netns, "neigh", "flush", "all"], check=False)
        assert not lab.ping("pa", "198.19.1.2", timeout=1)
        apply(lab, "n2", text)
        assert lab.ping("pa", "198.19.1.2", timeout=2)

        # drift: the sub-interface deleted behind the agent's back comes back
        subprocess.run(["ip", "-n", lab.ns("n1"), "link", "del", BLUE_VL], check=True)
        writes, state, _ = apply(lab, "n1", text)
        assert writes > 0 and state.links[BLUE_VL].master == bridge_name("blue")
        assert lab.ping("pa", "198.19.1.2", timeout=2)

    def test_verify_vlan() -> None:
        _, report = run_verify("vlan")
        (run,) = report["runs"]
        # the matrix, for the host's log
        print("\nvlan: {} frames, {} leaks, {} misses, {} failed: {}".format(
            len(run["probes"]),
            sum(len(p["leaks"]) for p in run["probes"]),
            sum(len(p["misses"]) for p in run["probes"]),
            sum(1 for p in run["probes"] if not p["ok"]),
            "PASS" if run["ok"] else "FAIL",
        ))  # fmt: skip
        assert report["ok"] and run["ok"], json.dumps([p for p in run["probes"] if not p["ok"]], indent=1)
        assert len(run["probes"]) == 16
        tags = {seg for p in run["probes"] for seg, _ in p["wire"]["got"]}
        assert tags == {10, 20, 30}  # every network's frames crossed the trunk with its own tag
        escape = [p for p in run["probes"] if p["kind"] == "vlan-escape"]
        assert escape and all(p["ok"] and not p["leaks"] for p in escape)
