"""``netkit-cni`` invoked exactly as a container runtime invokes a plugin (the environment, the
configuration on stdin, the result on stdout), in node namespaces whose L2Networks the node
agent's own reconcile built, with Debian's reference plugins: ``host-local`` as its IPAM, and
``bridge`` run side by side on the same inputs as the anchor for result shape and DEL rules.

- ADD, CHECK, DEL (twice, and after the netns is gone): results and errors as the spec's
  schemas say, laid out as the bridge plugin lays them out, both plugins agreeing;
- two nodes, two networks with the *same* addresses, four pods: a pod reaches its network's pod
  on the other node and nothing of the other network (pings, and a marked broadcast seen only
  where it belongs, through VXLAN); the agent's next reconcile keeps the pods on the bridges
  (their veths are declared by their alias); DEL removes veth, address and record;
- bad input: an unknown network, a network not on this node, a vanished netns, a missing IPAM
  plugin, an exhausted pool, a taken interface name: the right code and message, nothing left
  behind; a plugin killed mid-ADD (after the veth, after IPAM): the runtime's DEL leaves
  nothing.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from labs.l2verify import Tap, ether
from labs.runid import RunDir
from netkit.base.netns import netns_exec
from netkit.l2.agent import reconcile_once
from netkit.l2.core.state import bridge_name
from netkit.l2.kernel import Kernel
from tests.cnihelpers import CNI_PATH, NETWORKS, PLUGIN, Runtime, cni_lab

pytestmark = [pytest.mark.root, pytest.mark.peers]


@pytest.fixture
def runtime(run_dir: RunDir) -> Iterator[Runtime]:
    with cni_lab(run_dir) as rt:
        yield rt


def test_add_check_del_as_the_spec_says_beside_the_reference_bridge_plugin(runtime: Runtime) -> None:
    rt = runtime
    ours, ref = rt.lab.add_sandbox("p1"), rt.lab.add_sandbox("r1")
    rc, mine = rt.call("n1", "ADD", rt.conf("blue", "n1"), "c-ours", ours)
    assert rc == 0, mine
    rc, theirs = rt.call("n1", "ADD", rt.reference("n1"), "c-ref", ref, plugin=f"{CNI_PATH}/bridge")
    assert rc == 0, theirs
    # the same layout: bridge, host veth, the pod's interface in its sandbox; addresses on it
    for out, netns in ((mine, ours), (theirs, ref)):
        bridge, host, pod = out["interfaces"]
        assert (
            "sandbox" not in bridge
            and "sandbox" not in host
            and pod == {**pod, "name": "eth0", "sandbox": netns}
        )
        assert [ip["interface"] for ip in out["ips"]] == [2] and out["cniVersion"] == "1.0.0"
    assert mine["interfaces"][0]["name"] == bridge_name("blue")
    assert mine["ips"][0]["address"] == "10.99.0.10/24" and rt.allocated("n1") == ["10.99.0.10"]
    links = rt.links("n1")
    host = links[mine["interfaces"][1]["name"]]
    assert host.get_attr("IFLA_MASTER") == links[bridge_name("blue")]["index"]
    assert host.get_attr("IFLA_MTU") == links[bridge_name("blue")].get_attr("IFLA_MTU") == 1450
    assert rt.records("n1") == ["c-ours-eth0.json"]

    for conf, out, cid, netns, plugin in (
        (rt.conf("blue", "n1"), mine, "c-ours", ours, PLUGIN),
        (rt.reference("n1"), theirs, "c-ref", ref, f"{CNI_PATH}/bridge"),
    ):
        assert rt.call("n1", "CHECK", {**conf, "prevResult": out}, cid, netns, plugin=plugin)[0] == 0
        assert rt.call("n1", "DEL", {**conf, "prevResult": out}, cid, netns, plugin=plugin)[0] == 0
        assert rt.call("n1", "DEL", {**conf, "prevResult": out}, cid, netns, plugin=plugin)[0] == 0
    assert mine["interfaces"][1]["name"] not in rt.links("n1") and theirs["interfaces"][1][
        "name"
    ] not in rt.links("n1")
    assert rt.allocated("n1") == [] and rt.allocated("n1", "ipam-ref") == [] and rt.records("n1") == []

    # a DEL after the sandbox is gone succeeds for both; a CHECK of something gone fails for ours
    rc, again = rt.call("n1", "ADD", rt.conf("blue", "n1"), "c-gone", rt.lab.add_sandbox("p2"))
    assert rc == 0
    subprocess.run(["ip", "netns", "del", f"{rt.lab.run_id}-p2"], check=True)
    rt.lab.created.remove(f"{rt.lab.run_id}-p2")
    assert rt.call("n1", "DEL", rt.conf("blue", "n1"), "c-gone", "")[0] == 0
    assert rt.call("n1", "DEL", rt.reference("n1"), "c-gone2", "", plugin=f"{CNI_PATH}/bridge")[0] == 0
    assert rt.allocated("n1") == [] and again["interfaces"][1]["name"] not in rt.links("n1")


def test_pods_reach_their_network_across_nodes_and_nothing_of_the_other(runtime: Runtime) -> None:
    rt = runtime
    pods = {"a1": ("blue", "n1"), "a2": ("blue", "n2"), "b1": ("red", "n1"), "b2": ("red", "n2")}
    sandbox, results = {}, {}
    for name, (net, node) in pods.items():
        sandbox[name] = rt.lab.add_sandbox(name)
        conf = rt.conf(net, node)
        conf["ipam"]["dataDir"] += f"-{net}"  # each network its own pool: the same addresses in both
        rc, results[name] = rt.call(node, "ADD", conf, name, sandbox[name])
        assert rc == 0, results[name]
    ip = {n: r["ips"][0]["address"].split("/")[0] for n, r in results.items()}
    assert ip["a1"] == ip["b1"] == "10.99.0.10" and ip["a2"] == ip["b2"] == "10.99.0.20"

    def ping(src: str, dst: str) -> bool:
        cmd = netns_exec(sandbox[src].rsplit("/", 1)[1], ["ping", "-c", "2", "-i", "0.2", "-W", "1", dst])
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0

    assert ping("a1", ip["a2"]) and ping("b1", ip["b2"])
    # the agent's next reconcile keeps the pods on their bridges (declared by their alias)
    for node in rt.lab.node_ns:
        with Kernel(rt.lab.ns(node)) as k:
            pl, _, _ = reconcile_once(k, rt.networks, node)
        assert "nomaster" not in pl.render(), pl.render()
    # a marked broadcast from a1: a2 gets it, across VXLAN; the red pods never
    marker = b"netkit-cni-" + os.urandom(6).hex().encode()
    taps = {n: Tap(n, s.rsplit("/", 1)[1], "eth0") for n, s in sandbox.items()}
    try:
        taps["a1"].send(ether("ff:ff:ff:ff:ff:ff", results["a1"]["interfaces"][2]["mac"], 0x88B5, marker))
        time.sleep(0.4)
        seen = {n: any(marker in c.data for c in t.drain()) for n, t in taps.items() if n != "a1"}
    finally:
        for t in taps.values():
            t.close()
    assert seen == {"a2": True, "b1": False, "b2": False}, seen
    assert ping("a1", ip["a2"])  # still, after the agent's pass
    # DEL removes everything
    for name, (net, node) in pods.items():
        conf = rt.conf(net, node)
        conf["ipam"]["dataDir"] += f"-{net}"
        assert rt.call(node, "DEL", {**conf, "prevResult": results[name]}, name, sandbox[name])[0] == 0
    for node in rt.lab.node_ns:
        assert not rt.pod_veths(node)
        assert rt.records(node) == []
    assert not [
        f for node in ("n1", "n2") for net in NETWORKS for f in (rt.dir / f"ipam-{node}-{net}").glob("*/10.*")
    ]


def test_bad_input_gets_the_right_code_and_leaves_nothing(runtime: Runtime) -> None:
    rt = runtime
    box = rt.lab.add_sandbox("bad")
    cases = [
        ("an unknown network", rt.conf("green", "n1"), box, {}, 11, "no bridge"),
        (
            "a vanished netns",
            rt.conf("blue", "n1"),
            "/run/netns/nothing-here-" + rt.lab.run_id,
            {},
            3,
            "cannot be opened",
        ),
        (
            "a missing IPAM plugin",
            {**rt.conf("blue", "n1"), "ipam": {"type": "no-such-ipam"}},
            box,
            {},
            101,
            "not found",
        ),
        (
            "an unsupported version",
            {**rt.conf("blue", "n1"), "cniVersion": "0.1.0"},
            box,
            {},
            1,
            "not supported",
        ),
        (
            "an invalid configuration",
            {**rt.conf("blue", "n1"), "bridgeTimeoutSeconds": "soon"},
            box,
            {},
            7,
            "bridgeTimeoutSeconds",
        ),
    ]
    for what, conf, netns, env, code, says in cases:
        rc, err = rt.call("n1", "ADD", conf, "c-bad", netns, env=env)
        assert (rc, err["code"]) == (1, code) and says in f"{err['msg']} {err.get('details', '')}", (
            what,
            err,
        )
        assert not rt.pod_veths("n1"), what
        assert rt.allocated("n1") == [] and rt.records("n1") == [], what
    # a bridge by the network's name that netkit did not make (no owner alias): not this network
    subprocess.run(
        ["ip", "-n", rt.lab.ns("n1"), "link", "add", bridge_name("purple"), "type", "bridge"], check=True
    )
    rc, err = rt.call("n1", "ADD", rt.conf("purple", "n1"), "c-bad", box)
    assert rc == 1 and err["code"] == 100 and "is not network purple's bridge" in err["msg"], err
    assert not rt.pod_veths("n1") and rt.allocated("n1") == []
    # an exhausted pool: the one address taken, the second pod refused, its veth removed
    one = rt.conf("blue", "n1")
    one["ipam"]["ranges"] = [
        [{"subnet": "10.99.0.0/24", "rangeStart": "10.99.0.10", "rangeEnd": "10.99.0.10"}]
    ]
    assert rt.call("n1", "ADD", one, "c-first", rt.lab.add_sandbox("first"))[0] == 0
    rc, err = rt.call("n1", "ADD", one, "c-second", box)
    assert rc == 1 and err["code"] == 101 and "no IP addresses available" in err.get("details", ""), err
    assert rt.allocated("n1") == ["10.99.0.10"] and rt.records("n1") == ["c-first-eth0.json"]
    assert len(rt.pod_veths("n1")) == 1
    # the interface name taken in the sandbox
    rc, err = rt.call("n1", "ADD", rt.conf("blue", "n1"), "c-again", rt.lab.add_sandbox("taken"), ifname="lo")
    assert rc == 1 and err["code"] == 102, err


@pytest.mark.parametrize("stage", ["veth", "ipam"])
def test_a_plugin_killed_mid_add_leaves_nothing_after_the_runtimes_del(runtime: Runtime, stage: str) -> None:
    rt = runtime
    box = rt.lab.add_sandbox("crash")
    rc, out = rt.call("n1", "ADD", rt.conf("blue", "n1"), "c-crash", box, env={"NETKIT_CNI_CRASH": stage})
    assert rc == -9 and out is None
    half = rt.pod_veths("n1")
    assert len(half) == 1 and rt.allocated("n1") == (["10.99.0.10"] if stage == "ipam" else [])
    assert rt.call("n1", "DEL", rt.conf("blue", "n1"), "c-crash", box)[0] == 0  # what a runtime does next
    assert not rt.pod_veths("n1")
    assert rt.allocated("n1") == [] and rt.records("n1") == []
    # and the sandbox can be attached again
    rc, out = rt.call("n1", "ADD", rt.conf("blue", "n1"), "c-crash", box)
    assert rc == 0 and rt.allocated("n1") == [out["ips"][0]["address"].split("/")[0]]  # host-local goes round
