"""The one place that turns ``state`` values into pyroute2 requests (no kernel needed).

The VXLAN and bridge requests are also proven against the kernel in
``tests/integration/test_l2_agent.py``; the VLAN ones run against a kernel only where ``8021q``
exists.
"""

from __future__ import annotations

from netkit.l2.core.plan import AttachPort, Change, DeleteLink, DetachPort
from netkit.l2.core.state import ZERO_MAC, FdbEntry, Link, Neighbour, VlanInfo, VxlanInfo
from netkit.l2.kernel import (
    create_link_requests,
    fdb_request,
    neighbour_request,
    op_requests,
    set_link_requests,
)
from netkit.l2.netlink import AF_INET6, NTF_MASTER, NTF_SELF, NUD_NOARP, NUD_PERMANENT

INDEX = {"eth1": 2, "nkbr-x": 10, "nkvx-100": 11, "pa": 12}


def index(name: str) -> int:
    return INDEX[name]


AF6 = {"attrs": [["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", 1]]}]]}


def test_vxlan_create_requests() -> None:
    link = Link(
        "nkvx-100",
        "vxlan",
        1450,
        True,
        "netkit:l2:blue",
        "nkbr-x",
        vxlan=VxlanInfo(100, "198.18.0.1", 4789, False, "eth1"),
        neigh_suppress=True,
        addrgen=False,
    )
    assert create_link_requests(link, index) == [
        (
            "link",
            "add",
            {
                "ifname": "nkvx-100",
                "kind": "vxlan",
                "mtu": 1450,
                "state": "down",
                "master": 10,
                "vxlan_id": 100,
                "vxlan_port": 4789,
                "vxlan_learning": 0,
                "vxlan_local": "198.18.0.1",
                "vxlan_link": 2,
            },
        ),
        ("link", "set", {"ifname": "nkvx-100", "ifalias": "netkit:l2:blue", "IFLA_AF_SPEC": AF6}),
        ("link", "set", {"ifname": "nkvx-100", "state": "up"}),
        ("brport", "set", {"ifname": "nkvx-100", "neigh_suppress": 1}),
    ]
    v6 = Link("nkvx-100", "vxlan", 1430, vxlan=VxlanInfo(100, "2001:db8::1", 4789, False, None))
    spec = create_link_requests(v6, index)[0][2]
    assert spec["vxlan_local6"] == "2001:db8::1" and "vxlan_local" not in spec and "vxlan_link" not in spec


def test_vlan_and_bridge_create_requests() -> None:
    vlan = Link("nkvl200-abcdef", "vlan", 1500, True, "netkit:l2:g", "nkbr-x", vlan=VlanInfo(200, "eth1"))
    add = create_link_requests(vlan, index)[0]
    assert add == (
        "link",
        "add",
        {
            "ifname": "nkvl200-abcdef",
            "kind": "vlan",
            "mtu": 1500,
            "state": "down",
            "master": 10,
            "vlan_id": 200,
            "link": 2,
        },
    )
    bridge = Link("nkbr-x", "bridge", 1450, True, "netkit:l2:b", address="02:00:00:00:00:01", addrgen=False)
    reqs = create_link_requests(bridge, index)
    assert reqs[0][2]["address"] == "02:00:00:00:00:01" and "master" not in reqs[0][2]
    assert [r[:2] for r in reqs] == [("link", "add"), ("link", "set"), ("link", "set")]


def test_set_requests_put_the_port_flag_after_the_master() -> None:
    changes = [
        Change("mtu", 1450, 1400),
        Change("up", False, True),
        Change("master", None, "nkbr-x"),
        Change("neigh_suppress", None, True),
        Change("addrgen", True, False),
    ]
    assert set_link_requests("nkvx-100", changes, index) == [
        (
            "link",
            "set",
            {"ifname": "nkvx-100", "mtu": 1400, "state": "up", "master": 10, "IFLA_AF_SPEC": AF6},
        ),
        ("brport", "set", {"ifname": "nkvx-100", "neigh_suppress": 1}),
    ]
    assert set_link_requests("pa", [Change("master", "nkbr-x", None)], index) == [
        ("link", "set", {"ifname": "pa", "master": 0})
    ]


def test_fdb_and_neighbour_requests() -> None:
    bum = FdbEntry("nkvx-100", ZERO_MAC, "198.18.0.2")
    assert fdb_request(bum, "add", index) == (
        "fdb",
        "append",
        {
            "ifindex": 11,
            "lladdr": ZERO_MAC,
            "flags": NTF_SELF,
            "state": NUD_NOARP | NUD_PERMANENT,
            "dst": "198.18.0.2",
        },
    )
    assert fdb_request(bum, "del", index)[1] == "del"
    odd = FdbEntry("nkvx-100", "02:00:00:00:00:01", "198.18.0.2", port=4790, vni=7)
    assert fdb_request(odd, "del", index)[2]["port"] == 4790  # deleting needs what was added
    static = FdbEntry("nkvx-100", "02:00:00:00:00:01", None, master=True, state="static")
    assert fdb_request(static, "add", index) == (
        "fdb",
        "replace",
        {"ifindex": 11, "lladdr": "02:00:00:00:00:01", "flags": NTF_MASTER, "state": NUD_NOARP},
    )
    n6 = Neighbour("nkbr-x", "2001:db8::3", "02:00:00:00:00:03")
    assert neighbour_request(n6, "add", index) == (
        "neigh",
        "replace",
        {
            "ifindex": 10,
            "dst": "2001:db8::3",
            "family": AF_INET6,
            "lladdr": "02:00:00:00:00:03",
            "state": 0x80,
        },
    )
    assert neighbour_request(n6, "del", index) == (
        "neigh",
        "del",
        {"ifindex": 10, "dst": "2001:db8::3", "family": AF_INET6},
    )


def test_port_and_delete_ops() -> None:
    assert op_requests(AttachPort("b", "pa", "nkbr-x"), index) == [
        ("link", "set", {"ifname": "pa", "master": 10})
    ]
    assert op_requests(DetachPort("b", "pa", "nkbr-x"), index) == [
        ("link", "set", {"ifname": "pa", "master": 0})
    ]
    gone = Link("nkbr-x", "bridge", 1450)
    assert op_requests(DeleteLink("b", gone), index) == [("link", "del", {"ifname": "nkbr-x"})]
