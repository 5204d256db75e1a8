"""The raw rtnetlink encoders send what pyroute2 would send (no kernel needed).

Each request tuple that ``kernel.op_requests`` can produce is encoded twice: by pyroute2's
``IPBatch`` (the messages part 1 sent through ``IPRoute``) and by ``netlink.encode_request``.
Both are decoded with pyroute2's message classes and compared: message type, request flags (the
fast path leaves out ``NLM_F_ACK``: failures are still reported), header fields and attributes
(order aside). The parsers are checked against pyroute2-encoded messages the same way.
"""

from __future__ import annotations

from typing import Any

import pytest
from pyroute2 import IPBatch
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from netkit.l2 import netlink as nl
from netkit.l2.core.plan import Change
from netkit.l2.core.state import ZERO_MAC, FdbEntry, Link, Neighbour, VlanInfo, VxlanInfo
from netkit.l2.kernel import create_link_requests, fdb_request, neighbour_request, set_link_requests

INDEX = {"eth1": 2, "nkbr-x": 10, "nkvx-100": 11, "pa": 12, "nkvl200-abcdef": 13}


def index(name: str) -> int:
    return INDEX[name]


def _norm(value: Any) -> Any:
    if isinstance(value, dict) and "attrs" in value:
        return sorted((k, _norm(v)) for k, v in value["attrs"])
    return value


def decode(data: bytes, method: str) -> tuple[int, int, dict[str, Any], list[Any]]:
    cls = ifinfmsg if method in ("link", "brport") else ndmsg
    msg = cls(data)
    msg.decode()
    fields = {f[0]: msg[f[0]] for f in msg.fields if not f[0].startswith("_")}
    attrs = sorted((k, _norm(v)) for k, v in msg["attrs"])
    return msg["header"]["type"], msg["header"]["flags"], fields, attrs


def pyroute2_bytes(method: str, command: str, spec: dict[str, Any]) -> bytes:
    b = IPBatch()
    getattr(b, method)(command, **spec)
    return bytes(b.batch)


def assert_same(method: str, command: str, spec: dict[str, Any]) -> None:
    theirs = decode(pyroute2_bytes(method, command, spec), method)
    ours = decode(nl.encode_request(method, command, spec, seq=7, ack=True), method)
    assert ours == theirs, (method, command, spec)
    # without the ack flag: the same but for NLM_F_ACK
    quiet = decode(nl.encode_request(method, command, spec, seq=7), method)
    assert quiet[1] == theirs[1] & ~nl.NLM_F_ACK and quiet[2:] == theirs[2:]


def by_index(spec: dict[str, Any]) -> dict[str, Any]:
    """The kernel sends ``set``/``del`` by name; pyroute2 as part 1 called it, by index."""
    out = dict(spec)
    out["index"] = INDEX[out.pop("ifname")]
    return out


VX = Link(
    "nkvx-100", "vxlan", 1450, True, "netkit:l2:blue", "nkbr-x",
    vxlan=VxlanInfo(100, "198.18.0.1", 4789, False, "eth1"), neigh_suppress=True, addrgen=False,
)  # fmt: skip
VX6 = Link("nkvx-100", "vxlan", 1430, vxlan=VxlanInfo(100, "2001:db8::1", 4790, True, None))
VL = Link("nkvl200-abcdef", "vlan", 1500, True, "netkit:l2:g", "nkbr-x", vlan=VlanInfo(200, "eth1"))
BR = Link("nkbr-x", "bridge", 1450, True, "netkit:l2:blue", address="02:aa:bb:cc:dd:ee", addrgen=False)


@pytest.mark.parametrize("link", [VX, VX6, VL, BR], ids=["vxlan", "vxlan6", "vlan", "bridge"])
def test_create_link_messages_match_pyroute2(link: Link) -> None:
    reqs = create_link_requests(link, index)
    assert reqs
    for method, command, spec in reqs:
        assert_same(method, command, spec if command == "add" else by_index(spec))


def test_set_link_messages_match_pyroute2() -> None:
    changes = [
        Change("mtu", 1450, 1400),
        Change("up", False, True),
        Change("alias", None, "netkit:l2:blue"),
        Change("master", None, "nkbr-x"),
        Change("address", None, "02:00:00:00:00:09"),
        Change("addrgen", True, False),
        Change("neigh_suppress", False, True),
    ]
    for method, command, spec in set_link_requests("nkvx-100", changes, index):
        assert_same(method, command, by_index(spec))
    detach = set_link_requests("pa", [Change("master", "nkbr-x", None), Change("alias", "x", None)], index)
    for method, command, spec in detach:
        assert_same(method, command, by_index(spec))
    assert_same("link", "set", {"index": 12, "state": "down"})
    assert_same("link", "del", {"index": 12})


@pytest.mark.parametrize(
    "entry",
    [
        FdbEntry("nkvx-100", ZERO_MAC, "198.18.0.2"),
        FdbEntry("nkvx-100", "02:00:00:00:01:02", "198.18.0.3", state="static"),
        FdbEntry("nkvx-100", "02:00:00:00:01:02", "2001:db8::3", port=4790, vni=7),
        FdbEntry("nkvx-100", "02:00:00:00:01:02", None, master=True, state="static"),
        FdbEntry("nkvx-100", "02:00:00:00:01:02", None, master=True, state="permanent"),
    ],
)
def test_fdb_messages_match_pyroute2(entry: FdbEntry) -> None:
    for command in ("add", "del"):
        assert_same(*fdb_request(entry, command, index))


@pytest.mark.parametrize(
    "entry",
    [
        Neighbour("nkbr-x", "198.19.1.2", "02:00:00:00:01:02"),
        Neighbour("nkbr-x", "2001:db8::2", "02:00:00:00:01:03"),
    ],
)
def test_neighbour_messages_match_pyroute2(entry: Neighbour) -> None:
    for command in ("add", "del"):
        assert_same(*neighbour_request(entry, command, index))


def test_named_requests_carry_the_name_and_no_index() -> None:
    data = nl.encode_request("link", "set", {"ifname": "nkbr-x", "mtu": 1400}, seq=1)
    _, flags, fields, attrs = decode(data, "link")
    assert fields["index"] == 0 and ("IFLA_IFNAME", "nkbr-x") in attrs and ("IFLA_MTU", 1400) in attrs
    assert not flags & (nl.NLM_F_CREATE | nl.NLM_F_ACK)
    _, _, fields, attrs = decode(
        nl.encode_request("brport", "set", {"ifname": "pa", "neigh_suppress": 0}, 2), "brport"
    )
    assert fields["index"] == 0 and ("IFLA_IFNAME", "pa") in attrs


def test_unsupported_request_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported keys"):
        nl.encode_request("link", "set", {"ifname": "x", "txqlen": 5}, 1)


def test_parsers_read_pyroute2_encoded_messages() -> None:
    fdb = pyroute2_bytes(
        "fdb", "append",
        {"ifindex": 11, "lladdr": "02:00:00:00:01:02", "flags": 2, "state": 0xC0, "dst": "2001:db8::3",
         "port": 4790, "vni": 7},
    )  # fmt: skip
    ((kind, _, _, off, end),) = list(nl.iter_messages(fdb))
    assert kind == nl.RTM_NEWNEIGH
    assert nl.parse_fdb(fdb, off, end) == (11, True, "02:00:00:00:01:02", "2001:db8::3", 4790, 7, 0xC0)
    neigh = pyroute2_bytes(
        "neigh", "replace", {"ifindex": 10, "dst": "198.19.1.2", "family": 2, "lladdr": "02:00:00:00:01:02"}
    )
    ((_, _, _, off, end),) = list(nl.iter_messages(neigh))
    assert nl.parse_neigh(neigh, off, end) == (10, "198.19.1.2", "02:00:00:00:01:02", 0x80)
    link = nl.encode_request("link", "add", create_link_requests(VX, index)[0][2], seq=3)
    ((_, _, _, off, end),) = list(nl.iter_messages(link))
    rec = nl.parse_link(link, off, end)
    assert (rec.name, rec.kind, rec.mtu, rec.master, rec.up) == ("nkvx-100", "vxlan", 1450, 10, False)
    assert rec.vxlan == (100, "198.18.0.1", 4789, False, 2)


def test_the_fdb_fast_path_sends_the_same_bytes() -> None:
    """``Kernel.apply`` encodes FDB operations without building request dicts."""
    from netkit.l2.kernel import _fdb_mode

    entries = [
        FdbEntry("nkvx-100", ZERO_MAC, "198.18.0.2"),
        FdbEntry("nkvx-100", "02:00:00:00:01:02", "2001:db8::3", state="static", port=4790, vni=7),
        FdbEntry("nkvx-100", "02:00:00:00:01:02", None, master=True, state="static"),
        FdbEntry("nkvx-100", "02:00:00:00:01:02", None, master=True, state="permanent"),
        FdbEntry("nkvx-100", "02:00:00:00:01:02", None, master=True, state="dynamic"),
    ]
    for e in entries:
        for add in (True, False):
            command, state, flags = _fdb_mode(e.master, e.state, add)
            fast = nl.encode_fdb(command, 11, e.mac, e.dst, e.port, e.vni, state, flags, seq=9)
            assert fast == nl.encode_request(*fdb_request(e, "add" if add else "del", index), seq=9)
