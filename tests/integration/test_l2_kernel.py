"""The kernel layer against the real kernel: the raw-netlink reader agrees with pyroute2's
decoder, reads re-dump only what notifications announced, pipelined failures are reported with
the operation that failed, and a deleted underlay filter is put back by the agent within a
second. (The node's silence on tenant segments is proven with frames in test_l2_verify.py.)"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from pyroute2 import IPRoute

from labs.l2lab import L2Lab
from netkit.l2.core.model import load_networks
from netkit.l2.core.plan import ARP_IGNORE_NEVER, RP_FILTER_STRICT, AddFdb, DelFdb
from netkit.l2.core.state import (
    FdbEntry,
    Link,
    Neighbour,
    ObservedState,
    VlanInfo,
    VxlanInfo,
    bridge_name,
    vxlan_name,
)
from netkit.l2.kernel import ApplyError, Kernel, _fdb_state, _neigh_state
from netkit.l2.netlink import AF_INET, AF_INET6, IFF_UP, IN6_ADDR_GEN_MODE_NONE, NTF_SELF

pytestmark = pytest.mark.root

BLUE_VX, BLUE_BR = vxlan_name(100), bridge_name("blue")


@pytest.fixture
def lab() -> Iterator[L2Lab]:
    if os.geteuid() != 0:
        pytest.fail("the L2 kernel tests need root (network namespaces); the suite runs as root")
    with L2Lab(nodes=2) as lab:
        lab.add_blue_pods()
        endpoint = {"mac": "02:00:00:00:01:02", "ip": "198.19.1.2", "node": "n2"}
        lab.apply(yaml.safe_dump({"networks": [lab.blue(endpoints=[endpoint])]}))
        yield lab
    assert lab.leftovers() == []


# pyroute2's decoded messages as model values: a second, independent reader of the same kernel


def link_from_msg(msg: Any, names: dict[int, str]) -> Link:
    """An ``RTM_NEWLINK`` message (from a dump or an event) as a ``Link``."""
    kind = "device"
    vxlan = vlan = None
    neigh_suppress = None
    info = msg.get_attr("IFLA_LINKINFO")
    if info is not None:
        kind = info.get_attr("IFLA_INFO_KIND") or "device"
        data = info.get_attr("IFLA_INFO_DATA")
        if kind == "vxlan" and data is not None:
            lower = data.get_attr("IFLA_VXLAN_LINK")
            vxlan = VxlanInfo(
                vni=data.get_attr("IFLA_VXLAN_ID"),
                local=data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6"),
                port=data.get_attr("IFLA_VXLAN_PORT") or 4789,
                learning=bool(data.get_attr("IFLA_VXLAN_LEARNING")),
                underlay=names.get(lower) if lower else None,
            )
        elif kind == "vlan" and data is not None:
            lower = msg.get_attr("IFLA_LINK")
            vlan = VlanInfo(data.get_attr("IFLA_VLAN_ID"), names.get(lower) if lower else None)
        if info.get_attr("IFLA_INFO_SLAVE_KIND") == "bridge":
            slave = info.get_attr("IFLA_INFO_SLAVE_DATA")
            neigh_suppress = slave is not None and bool(slave.get_attr("IFLA_BRPORT_NEIGH_SUPPRESS"))
    addrgen = None
    af_spec = msg.get_attr("IFLA_AF_SPEC")
    inet6 = af_spec.get_attr("AF_INET6") if af_spec is not None else None
    if inet6 is not None and inet6.get_attr("IFLA_INET6_ADDR_GEN_MODE") is not None:
        addrgen = inet6.get_attr("IFLA_INET6_ADDR_GEN_MODE") != IN6_ADDR_GEN_MODE_NONE
    arp_ignore = rp_filter = None
    inet = af_spec.get_attr("AF_INET") if af_spec is not None else None
    if inet is not None:
        arp_ignore, rp_filter = inet.get("arp_ignore"), inet.get("rp_filter")
    master = msg.get_attr("IFLA_MASTER")
    return Link(
        name=msg.get_attr("IFLA_IFNAME"),
        kind=kind,
        mtu=msg.get_attr("IFLA_MTU") or 0,
        up=bool(msg["flags"] & IFF_UP),
        alias=msg.get_attr("IFLA_IFALIAS") or None,
        master=names.get(master) if master else None,
        vxlan=vxlan,
        vlan=vlan,
        neigh_suppress=neigh_suppress,
        address=msg.get_attr("IFLA_ADDRESS"),
        addrgen=addrgen,
        arp_ignore=arp_ignore,
        rp_filter=rp_filter,
    )


def fdb_from_msg(msg: Any, names: dict[int, str]) -> FdbEntry | None:
    """A bridge-family neighbour message as an ``FdbEntry`` (None if it has no MAC/link)."""
    ifname = names.get(msg["ifindex"])
    mac = msg.get_attr("NDA_LLADDR")
    if ifname is None or not mac:
        return None
    return FdbEntry(
        ifname=ifname,
        mac=mac,
        dst=msg.get_attr("NDA_DST"),
        master=not (msg["flags"] & NTF_SELF),
        state=_fdb_state(msg["state"]),
        port=msg.get_attr("NDA_PORT"),
        vni=msg.get_attr("NDA_VNI"),
    )


def neighbour_from_msg(msg: Any, names: dict[int, str]) -> Neighbour | None:
    ifname = names.get(msg["ifindex"])
    ip = msg.get_attr("NDA_DST")
    if ifname is None or ip is None or msg["family"] not in (AF_INET, AF_INET6):
        return None
    return Neighbour(ifname, ip, msg.get_attr("NDA_LLADDR"), _neigh_state(msg["state"]))


def pyroute2_read(netns: str) -> ObservedState:
    """Part 1's reader: pyroute2's decoded messages through ``*_from_msg``."""
    with IPRoute(netns=netns, flags=0) as ipr:
        msgs = list(ipr.link("dump"))
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs}
        links = [link_from_msg(m, names) for m in msgs]
        fdb = [e for m in ipr.fdb("dump") if (e := fdb_from_msg(m, names)) is not None]
        neigh = [n for m in ipr.neigh("dump") if (n := neighbour_from_msg(m, names)) is not None]
        addrs = [
            (names[m["index"]], m.get_attr("IFA_ADDRESS")) for m in ipr.addr("dump") if m["index"] in names
        ]
    return ObservedState.of(links, fdb, neigh, addrs)


def same(a: ObservedState, b: ObservedState) -> bool:
    """Equal but for what pods change between two reads: learned FDB entries, multicast
    filter entries and neighbours (IGMP/MLD), ARP states."""

    def stable(s: ObservedState) -> tuple[object, ...]:
        fdb = {e for e in s.fdb if e.state != "dynamic" and not int(e.mac[:2], 16) & 1}
        return s.links, fdb, s.owned_fdb(), s.owned_neighbours(), s.addresses

    return stable(a) == stable(b)


def test_raw_reader_agrees_with_pyroute2(lab: L2Lab) -> None:
    ns = lab.ns("n1")
    with Kernel(ns) as k:
        ours = k.read(full=True)
    theirs = pyroute2_read(ns)
    assert same(ours, theirs)
    assert ours.owned_fdb() and ours.owned_neighbours()
    br = ours.links[BLUE_BR]
    assert (br.arp_ignore, br.rp_filter) == (ARP_IGNORE_NEVER, RP_FILTER_STRICT)
    assert ours.links[BLUE_VX].vxlan is not None and ours.links[BLUE_VX].neigh_suppress is True


def test_reads_redump_only_announced_tables(lab: L2Lab) -> None:
    ns = lab.ns("n1")
    with Kernel(ns) as k:
        first = k.read(full=True)
        assert k.read() is first  # nothing announced: the same value, no dump
        reads = dict(k.table_reads)
        with IPRoute(netns=ns, flags=0) as ipr:
            vx = ipr.link_lookup(ifname=BLUE_VX)[0]
            ipr.fdb("del", ifindex=vx, lladdr="00:00:00:00:00:00", dst=lab.vtep["n2"])
        after = k.read()
        assert k.table_reads["fdb"] == reads["fdb"] + 1
        assert k.table_reads["links"] == reads["links"]
        # learned entries come and go with the pods' own frames (IPv6 DAD): only programmed ones
        programmed = lambda s: {e for e in s.fdb if e.state != "dynamic"}  # noqa: E731
        assert programmed(after) < programmed(first) and after.links == first.links
        subprocess.run(["ip", "-n", ns, "link", "set", BLUE_BR, "mtu", "1300"], check=True)
        assert k.read().links[BLUE_BR].mtu == 1300
        assert k.table_reads["links"] == reads["links"] + 1
        assert same(k.read(full=True), pyroute2_read(ns))


def test_a_failure_in_a_pipelined_batch_names_its_operation(lab: L2Lab) -> None:
    good1 = FdbEntry(BLUE_VX, "02:00:00:00:09:01", lab.vtep["n2"])
    missing = FdbEntry(BLUE_VX, "02:00:00:00:09:02", lab.vtep["n2"])
    good2 = FdbEntry(BLUE_VX, "02:00:00:00:09:03", lab.vtep["n2"])
    with Kernel(lab.ns("n1")) as k:
        with pytest.raises(ApplyError) as info:
            k.apply([AddFdb("blue", good1), DelFdb("blue", missing), AddFdb("blue", good2)])
        err = info.value
        assert err.op == DelFdb("blue", missing) and "No such file or directory" in str(err)
        assert err.result.ops == 1 and err.result.writes == 2  # good2 went in with the batch
        fdb = k.read().fdb
        assert good1 in fdb and good2 in fdb


def test_the_agent_puts_back_a_deleted_underlay_filter_within_a_second(lab: L2Lab) -> None:
    import threading
    import time

    from netkit.l2.agent import Agent, L2Metrics

    ns = lab.ns("n1")
    nets = load_networks(
        yaml.safe_dump({"networks": [{"name": "blue", "vni": 100, "members": dict(lab.vtep)}]})
    )

    def table() -> bool:
        cmd = ["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "netkit_l2"]
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0

    agent = Agent(nets, "n1", ns, metrics=L2Metrics(), resync=30.0)
    runner = threading.Thread(target=agent.run, daemon=True)
    try:
        assert agent.start().error is None and table()
        runner.start()
        time.sleep(0.3)
        subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "netkit_l2"], check=True)
        start = time.monotonic()
        while not table():
            assert time.monotonic() - start < 1.0, "the filter was not put back within 1 s"
            time.sleep(0.02)
    finally:
        agent.stop()
        runner.join(5)
        agent.close()
