"""The L2 agent against the real kernel: three node namespaces on an underlay bridge, pods in
their own namespaces, the agent working inside a node's namespace (``--netns``).

Covers: create / modify / delete (GC with FDB), zero netlink writes for a no-op round (checked
with a netlink listener, not only our own counter), drift repaired by the agent within 1 s
(VTEP deleted, FDB flushed, MTU changed behind its back), the agent as a process (metrics, SIGHUP,
SIGTERM), ownership conflicts, rollback after a failed probe, bad input, a missing underlay,
connectivity inside a tenant network and isolation between tenants, ARP suppression.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyroute2 import IPRoute

from labs.l2lab import L2Lab, Pod
from labs.runid import RunDir, free_port
from netkit.l2.agent import Agent, L2Metrics, reconcile_once
from netkit.l2.core.model import L2Network, load_networks
from netkit.l2.core.plan import plan
from netkit.l2.core.state import ZERO_MAC, ObservedState, bridge_name, owner_alias, vxlan_name
from netkit.l2.kernel import Event, Kernel, Monitor

pytestmark = pytest.mark.root

BLUE_VX, RED_VX = vxlan_name(100), vxlan_name(200)
BLUE_BR, RED_BR = bridge_name("blue"), bridge_name("red")


@pytest.fixture
def lab() -> Iterator[L2Lab]:
    if os.geteuid() != 0:
        pytest.fail("the L2 agent tests need root (network namespaces); the suite runs as root")
    with L2Lab(nodes=3) as lab:
        lab.add_blue_pods()
        lab.add_pod("pc", "n3", "02:00:00:00:01:03", "198.19.1.3/24")  # red: same subnet on purpose
        yield lab
    assert lab.leftovers() == []


@pytest.fixture
def workdir(lab: L2Lab) -> Iterator[Path]:
    """A temp dir named after the lab's run id, removed afterwards (also on failure)."""
    with RunDir(lab.run_id) as rd:
        yield rd.path


def networks(lab: L2Lab, *, blue: dict[str, Any] | None = None, red: dict[str, Any] | None = None) -> str:
    """The standard file: blue (vni 100) on n1-n3 with pa and pb, red (vni 200) on n1, n3 with pc."""
    p = lab.pods
    nets: list[dict[str, Any]] = [
        lab.blue(**(blue or {})),
        {
            "name": "red",
            "vni": 200,
            "members": {"n1": lab.vtep["n1"], "n3": lab.vtep["n3"]},
            "ports": {"n3": [p["pc"].port]},
            **(red or {}),
        },
    ]
    return yaml.safe_dump({"networks": [n for n in nets if n.get("name")]})


def observe(lab: L2Lab, node: str) -> ObservedState:
    with Kernel(lab.ns(node)) as k:
        return k.read()


def pending(lab: L2Lab, nets: list[L2Network], node: str) -> int:
    return len(plan(nets, node, observe(lab, node)).ops)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netkit.cli", "l2", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write(workdir: Path, name: str, text: str) -> str:
    path = workdir / name
    path.write_text(text)
    return str(path)


def vxlan_fdb(state: ObservedState, dev: str) -> set[tuple[str, str | None]]:
    return {(e.mac, e.dst) for e in state.fdb if e.ifname == dev and not e.master}


# ------------------------------------------------------------------------------------------
# Create, modify, delete; connectivity and isolation
# ------------------------------------------------------------------------------------------


def test_create_modify_delete_with_connectivity_and_isolation(lab: L2Lab) -> None:
    text = networks(lab)
    writes = lab.apply(text)
    assert all(w > 0 for w in writes.values())

    n1 = observe(lab, "n1")
    br, vx = n1.links[BLUE_BR], n1.links[BLUE_VX]
    assert br.kind == "bridge" and br.alias == owner_alias("blue") and br.mtu == 1450
    assert vx.kind == "vxlan" and vx.master == BLUE_BR and vx.mtu == 1450 and vx.up
    assert vx.vxlan is not None and vx.vxlan.vni == 100 and not vx.vxlan.learning
    assert vx.vxlan.local == lab.vtep["n1"] and vx.vxlan.underlay == lab.underlay["n1"]
    assert vxlan_fdb(n1, BLUE_VX) == {(ZERO_MAC, lab.vtep["n2"]), (ZERO_MAC, lab.vtep["n3"])}
    assert n1.links[lab.pods["pa"].port].master == BLUE_BR
    # the node does not speak on tenant segments: no IPv6 link-local on the bridge or the VTEP
    assert br.addrgen is False and vx.addrgen is False
    assert not [a for a in n1.addresses if a[0] in (BLUE_BR, BLUE_VX)]
    assert RED_BR not in observe(lab, "n2").links  # n2 is not a member of red

    # same tenant across nodes: yes; across tenants (same subnet, n1 -> n3 red): no
    assert lab.ping("pa", lab.pods["pb"].address)
    assert lab.ping("pb", lab.pods["pa"].address)
    assert not lab.ping("pa", lab.pods["pc"].address)

    # modify: n3 leaves blue, the MTU drops to 1400
    members = {"n1": lab.vtep["n1"], "n2": lab.vtep["n2"]}
    text2 = networks(lab, blue={"members": members, "mtu": 1400})
    nets2 = load_networks(text2)
    with Kernel(lab.ns("n1")) as k:
        pl, _, result = reconcile_once(k, nets2, "n1")
    assert sorted(type(op).__name__ for op in pl.ops) == ["DelFdb", "SetLink", "SetLink"]
    assert result.writes == 3
    n1 = observe(lab, "n1")
    assert vxlan_fdb(n1, BLUE_VX) == {(ZERO_MAC, lab.vtep["n2"])}
    assert n1.links[BLUE_VX].mtu == 1400 and n1.links[BLUE_BR].mtu == 1400
    lab.apply(text2)
    assert BLUE_BR not in observe(lab, "n3").links  # GC on the node that left
    assert lab.ping("pa", lab.pods["pb"].address)

    # add n3 back as a member: one FDB entry on n1
    with Kernel(lab.ns("n1")) as k:
        pl, _, _ = reconcile_once(k, load_networks(networks(lab, blue={"mtu": 1400})), "n1")
    assert [type(op).__name__ for op in pl.ops] == ["AddFdb"]

    # delete: blue is gone from the file; its links and FDB entries go, the pod's veth stays
    only_red = networks(lab, blue={"name": None})
    lab.apply(only_red)
    for node in lab.node_ns:
        state = observe(lab, node)
        assert BLUE_BR not in state.links and BLUE_VX not in state.links
        assert not [e for e in state.fdb if e.dst in lab.vtep.values() and e.ifname != RED_VX]
    n1 = observe(lab, "n1")
    assert n1.links[lab.pods["pa"].port].master is None
    assert vxlan_fdb(n1, RED_VX) == {(ZERO_MAC, lab.vtep["n3"])}
    assert not lab.ping("pa", lab.pods["pb"].address, timeout=1)


def test_noop_reconcile_performs_zero_netlink_writes(lab: L2Lab) -> None:
    text = networks(lab)
    lab.apply(text)
    nets = load_networks(text)
    events: list[Event | None] = []
    monitor = Monitor(lab.ns("n1"), events.append)
    monitor.start()
    try:
        with Kernel(lab.ns("n1")) as k:
            # a change behind our back is seen by the listener (so it works)...
            with IPRoute(netns=lab.ns("n1"), flags=0) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname=BLUE_VX)[0], mtu=1400)
            wait_for(lambda: bool(events), 2.0)
            _, _, repair = reconcile_once(k, nets, "n1")
            assert repair.writes >= 1  # the bridge follows its port down: 2 here
            time.sleep(0.2)
            events.clear()
            # ...and a no-op round sends nothing the kernel would announce
            pl, _, result = reconcile_once(k, nets, "n1")
            assert pl.empty and result.writes == 0 and result.ops == 0
            time.sleep(0.3)
    finally:
        monitor.stop()
    # pods keep talking (IPv6 router solicitations...): the bridges learn, which the kernel
    # announces as dynamic FDB entries; anything else would have come from a write
    assert [e for e in events if e is None or not e.kind.endswith("NEIGH") or e.state & 0xC0] == []


# ------------------------------------------------------------------------------------------
# The agent: drift repair
# ------------------------------------------------------------------------------------------


def wait_for(cond: Callable[[], bool], timeout: float, interval: float = 0.01) -> float:
    start = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@contextmanager
def running_agent(lab: L2Lab, nets: list[L2Network], node: str) -> Iterator[Agent]:
    agent = Agent(nets, node, lab.ns(node), metrics=L2Metrics(), resync=30.0)
    thread = threading.Thread(target=agent.run, name=f"agent-{node}", daemon=True)
    try:
        first = agent.start()
        assert first.error is None
        thread.start()
        yield agent
    finally:
        agent.stop()
        if thread.is_alive():
            thread.join(5)
        agent.close()


def sample(agent: Agent, name: str, **labels: str) -> float:
    value = agent.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_agent_repairs_drift_within_one_second(lab: L2Lab) -> None:
    text = networks(lab)
    nets = load_networks(text)
    lab.apply(text)  # the other nodes
    with running_agent(lab, nets, "n1") as agent, IPRoute(netns=lab.ns("n1"), flags=0) as ipr:
        assert pending(lab, nets, "n1") == 0

        def repaired() -> bool:
            return pending(lab, nets, "n1") == 0

        # someone deletes the VTEP
        ipr.link("del", index=ipr.link_lookup(ifname=BLUE_VX)[0])
        assert BLUE_VX not in observe(lab, "n1").links
        assert wait_for(repaired, 1.0) < 1.0
        assert lab.ping("pa", lab.pods["pb"].address)

        # someone flushes the VXLAN device's FDB (head-end replication list)
        vx = ipr.link_lookup(ifname=BLUE_VX)[0]
        for dst in (lab.vtep["n2"], lab.vtep["n3"]):
            ipr.fdb("del", ifindex=vx, lladdr=ZERO_MAC, dst=dst)
        assert vxlan_fdb(observe(lab, "n1"), BLUE_VX) == set()
        assert wait_for(repaired, 1.0) < 1.0

        # someone changes an MTU, and takes the bridge down
        ipr.link("set", index=ipr.link_lookup(ifname=RED_BR)[0], mtu=1300, state="down")
        assert wait_for(repaired, 1.0) < 1.0
        assert observe(lab, "n1").links[RED_BR].mtu == 1450

        # a port appears later: attached as soon as it exists
        late = lab.add_pod("pd", "n1", "02:00:00:00:01:04", "198.19.1.4/24")
        nets2 = load_networks(networks(lab, blue={"ports": {"n1": [lab.pods["pa"].port, late.port]}}))
        agent.reload(nets2)
        wait_for(lambda: observe(lab, "n1").links[late.port].master == BLUE_BR, 1.0)

        wait_for(lambda: sample(agent, "netkit_l2_drift_repairs_total", trigger="event") >= 3, 1.0)
        assert sample(agent, "netkit_l2_netlink_writes_total", op="link_create") >= 2
        assert sample(agent, "netkit_l2_reconcile_seconds_count", trigger="event") >= 3
        assert sample(agent, "netkit_l2_networks", status="ok") == 2
        assert sample(agent, "netkit_l2_reconcile_errors_total") == 0


def test_agent_process_metrics_reload_and_stop(lab: L2Lab, workdir: Path) -> None:
    only_blue = write(workdir, "blue.yaml", networks(lab, red={"name": None}))
    lab.apply(networks(lab))
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "netkit.cli", "l2", "agent", "-f", only_blue, "--node", "n1"),
            *("--netns", lab.ns("n1"), "--metrics", f"127.0.0.1:{port}", "--log-level", "info"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def metrics() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                return str(resp.read().decode())

        def up() -> bool:
            try:
                return 'netkit_l2_networks{status="ok"} 1.0' in metrics()
            except OSError:
                return False

        wait_for(up, 10.0, 0.05)  # started, converged (red removed from n1)
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                assert (resp.status, resp.read()) == (200, b"OK\n"), path
        assert RED_BR not in observe(lab, "n1").links
        with IPRoute(netns=lab.ns("n1"), flags=0) as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname=BLUE_VX)[0])
        wait_for(lambda: 'netkit_l2_drift_repairs_total{trigger="event"} 1.0' in metrics(), 2.0, 0.05)
        assert BLUE_VX in observe(lab, "n1").links
        text = metrics()
        assert re.search(r'netkit_l2_netlink_writes_total\{op="link_delete"\} [1-9]', text)
        assert 'netkit_l2_reconcile_seconds_bucket{le="1.0",trigger="event"}' in text

        # SIGHUP: re-read the file, now with red again
        Path(only_blue).write_text(networks(lab))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: RED_BR in observe(lab, "n1").links, 3.0, 0.05)
        # SIGTERM: a clean exit
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        logs = [line for line in err.splitlines() if line.startswith("{")]
        assert any('"msg": "agent started"' in line for line in logs)
        assert any('"msg": "reload"' in line for line in logs)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


# ------------------------------------------------------------------------------------------
# Ownership, rollback, bad input, missing underlay (the CLI)
# ------------------------------------------------------------------------------------------


def test_unowned_link_with_colliding_name_is_reported_and_untouched(lab: L2Lab, workdir: Path) -> None:
    with IPRoute(netns=lab.ns("n1"), flags=0) as ipr:
        ipr.link("add", ifname=BLUE_BR, kind="bridge", mtu=1500)
        squatter = ipr.link_lookup(ifname=BLUE_BR)[0]
    before = observe(lab, "n1").links[BLUE_BR]
    f = write(workdir, "nets.yaml", networks(lab))
    res = cli("apply", "-f", f, "--node", "n1", "--netns", lab.ns("n1"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"conflict: link {BLUE_BR} exists and is not managed by netkit" in res.stdout
    after = observe(lab, "n1")
    assert after.links[BLUE_BR] == before and BLUE_VX not in after.links
    with IPRoute(netns=lab.ns("n1"), flags=0) as ipr:
        assert ipr.link_lookup(ifname=BLUE_BR) == [squatter]
    assert RED_BR in after.links  # the other network went ahead
    st = cli("status", "-f", f, "--node", "n1", "--netns", lab.ns("n1"))
    assert st.returncode == 1
    assert re.search(r"^blue\s+vxlan\s+100\s+\S+\s+conflict", st.stdout, re.M), st.stdout
    assert re.search(r"^red\s+vxlan\s+200\s+\S+\s+ok", st.stdout, re.M), st.stdout


def test_rollback_when_the_probe_fails(lab: L2Lab, workdir: Path) -> None:
    ns = lab.ns("n1")
    good = write(workdir, "good.yaml", networks(lab, red={"name": None}))
    pa: Pod = lab.pods["pa"]
    lab.apply(networks(lab))
    res = cli("apply", "-f", good, "--node", "n1", "--netns", ns, "--probe", f"{pa.netns}/198.19.1.2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Probes passed: 1" in res.stdout
    checkpoint = observe(lab, "n1")

    # a change that breaks the segment for pa: n2 dropped from blue, MTU lowered, red back
    bad = write(
        workdir,
        "bad.yaml",
        networks(
            lab,
            blue={
                "members": {"n1": lab.vtep["n1"], "n3": lab.vtep["n3"]},
                "ports": {"n1": [pa.port]},
                "mtu": 1300,
            },
        ),
    )
    res = cli(
        "apply", "-f", bad, "--node", "n1", "--netns", ns,
        "--probe", f"{pa.netns}/198.19.1.2", "--rollback-timeout", "1.5",
    )  # fmt: skip
    assert res.returncode == 3, res.stdout + res.stderr
    assert "probe failed: ping 198.19.1.2" in res.stderr and "Rolled back:" in res.stderr
    now = observe(lab, "n1")
    assert {n: lk for n, lk in now.links.items()} == dict(checkpoint.links)
    assert now.owned_fdb() == checkpoint.owned_fdb()
    assert RED_BR not in now.links and now.links[BLUE_VX].mtu == 1450
    assert lab.ping("pa", lab.pods["pb"].address)


def test_bad_input_exits_2_naming_the_field(lab: L2Lab, workdir: Path) -> None:
    f = write(workdir, "bad.yaml", networks(lab, blue={"vni": 16777216}, red={"kind": "vlan"}))
    res = cli("apply", "-f", f, "--node", "n1", "--netns", lab.ns("n1"))
    assert res.returncode == 2
    assert f"{f}: networks[0].vni: 16777216 is out of range: must be between 1 and 16777215" in res.stderr
    assert "networks[1].vlan: is required for a vlan network" in res.stderr
    assert cli("status", "-f", f, "--node", "n1").returncode == 2
    assert cli("apply", "-f", str(workdir / "missing.yaml"), "--node", "n1").returncode == 2
    assert not observe(lab, "n1").owned_links()
    res = cli(
        "apply", "-f", write(workdir, "ok.yaml", networks(lab)), "--node", "n1", "--netns", "nk-no-such-ns"
    )
    assert res.returncode == 1 and "network namespace 'nk-no-such-ns' does not exist" in res.stderr
    assert not os.path.exists("/run/netns/nk-no-such-ns")  # and it was not created


def test_missing_underlay_is_a_clear_error_and_nothing_is_applied(lab: L2Lab, workdir: Path) -> None:
    gone = f"{lab.run_id}-zz"
    f = write(workdir, "nets.yaml", networks(lab, blue={"underlay": gone}, red={"underlay": gone}))
    dry = cli("apply", "-f", f, "--node", "n1", "--netns", lab.ns("n1"), "--dry-run")
    assert dry.returncode == 1
    res = cli("apply", "-f", f, "--node", "n1", "--netns", lab.ns("n1"))
    assert res.returncode == 1
    assert f"error: underlay: interface {gone} not found on node n1" in res.stdout
    assert "Applied 0 operations (0 netlink writes)" in res.stdout
    assert not observe(lab, "n1").owned_links()


def test_known_endpoints_are_answered_on_the_node(lab: L2Lab) -> None:
    """ARP/ND suppression: a request for a known remote endpoint is answered by n1's bridge,
    even though nothing with that address exists anywhere."""
    ghost_mac, ghost_ip, ghost_ip6 = "02:00:00:00:01:50", "198.19.1.50", "2001:db8::50"
    endpoints = [
        {"mac": ghost_mac, "ip": ghost_ip, "node": "n3"},
        {"mac": "02:00:00:00:01:51", "ip": ghost_ip6, "node": "n3"},
        {"mac": lab.pods["pb"].mac, "ip": lab.pods["pb"].address, "node": "n2"},
    ]
    lab.apply(networks(lab, blue={"endpoints": endpoints}))
    n1 = observe(lab, "n1")
    assert n1.links[BLUE_VX].neigh_suppress is True
    assert (ghost_mac, lab.vtep["n3"]) in vxlan_fdb(n1, BLUE_VX)
    assert lab.ping("pa", lab.pods["pb"].address)
    pa = lab.pods["pa"].netns
    subprocess.run(
        ["ip", "-n", pa, "addr", "add", "2001:db8::1/64", "dev", f"{lab.run_id}-eth", "nodad"], check=True
    )
    lab.ping("pa", ghost_ip, timeout=1)  # no one answers the pings themselves...
    lab.ping("pa", ghost_ip6, timeout=1)
    neigh = subprocess.run(
        ["ip", "-n", pa, "neigh", "show"], capture_output=True, text=True, check=False
    ).stdout
    neigh6 = subprocess.run(
        ["ip", "-n", pa, "-6", "neigh", "show"], capture_output=True, text=True, check=False
    )
    # ...but the ARP request and the neighbour solicitation were answered with the known MACs
    assert re.search(rf"^{re.escape(ghost_ip)} .*lladdr {ghost_mac}", neigh, re.M), neigh
    assert re.search(rf"^{re.escape(ghost_ip6)} .*lladdr 02:00:00:00:01:51", neigh6.stdout, re.M), (
        neigh6.stdout
    )
