"""ExaBGP's API (pure): lines captured from ExaBGP 4.2.25 decode to the right events in text mode,
packet lines in wire mode; commands encode to what ExaBGP accepts (batched lines, next hop on
withdrawals, raw messages split into bounded lines); and every kind of bad line is a
``DecodeError`` with a reason, never another exception."""

from __future__ import annotations

import json

import pytest

from bgp.reflector.core.events import (
    Announce,
    EndOfRib,
    Malformed,
    PeerDown,
    PeerOpen,
    PeerUp,
    RouteRefresh,
    SendEndOfRib,
    SpeakerAck,
    SpeakerShutdown,
    Teardown,
    Update,
    Withdraw,
)
from bgp.reflector.core.exabgp_api import (
    RAW_LINE_BYTES,
    DecodeError,
    TextCodec,
    WireCodec,
    encode,
    encode_attrs,
    make_codec,
)
from bgp.reflector.core.prefix import from_text
from bgp.reflector.core.route import EGP, Attrs
from bgp.reflector.core.wire import UpdateDecoder, UpdateEncoder, end_of_rib


def P(*texts: str) -> tuple[bytes, ...]:
    return tuple(from_text(t) for t in texts)


HEAD = (
    '{ "exabgp": "4.0.1", "time": 1795612209.06, "host" : "vm", "pid" : 13994, "ppid" : 13953, "counter": 4, '
)
NEIGHBOR = (
    '"neighbor": { "address": { "local": "198.18.0.2", "peer": "198.18.0.1" }, '
    '"asn": { "local": 65000, "peer": 65000 } , '
)

# captured from ExaBGP 4.2.25 (an ExaBGP sender with every attribute, a BIRD peer)
STATE_UP = HEAD + '"type": "state", ' + NEIGHBOR + '"state": "up" } }'
STATE_DOWN = (
    HEAD
    + '"type": "state", '
    + NEIGHBOR
    + '"state": "down", "reason": "peer reset, message (closing connection)" } }'
)
STATE_CONNECTED = HEAD + '"type": "state", ' + NEIGHBOR + '"state": "connected" } }'
OPEN = (
    HEAD
    + '"type": "open", '
    + NEIGHBOR
    + '"direction": "receive", "open": { "version": 4, "asn": 65000, "hold_time": 180, '
    '"router_id": "198.18.0.1", "capabilities": { "1": { "name": '
    '"multiprotocol", "families": [ "ipv4/unicast", '
    '"ipv6/unicast" ] }, "65": { "name": "asn4", "asn4": 65000 }, "6": { "name": '
    '"extended-message", "size": 65535 } } } } }'
)
OPEN_NO_MP = (
    HEAD
    + '"type": "open", '
    + NEIGHBOR
    + '"direction": "receive", "open": { "router_id": "10.0.0.1", "capabilities": { } } } }'
)
FULL = (
    HEAD
    + '"type": "update", '
    + NEIGHBOR
    + '"direction": "receive", "message": { "update": { "attribute": { "origin": '
    '"egp", "as-path": [ 65001, 65002 ], "as-set": [ 65003, 65004 ], "confederation-path": [], "med": 5, '
    '"local-preference": 200, "atomic-aggregate": true, "aggregator": '
    '"65001:10.0.0.1", "community": [ [ 65000, 1 ], '
    '[ 65000, 2 ] ], "originator-id": "10.0.0.9", "cluster-list": [ "1.1.1.1", '
    '"2.2.2.2" ], "extended-community": [ '
    '{ "value": 842122827661319, "string": "target:65000:7" } ], "large-community": [ [ 1, 2 , 3 ] ], '
    '"attribute-0x63-0xE0": "0x0102" }, "announce": { "ipv4 unicast": { "198.18.0.1": [ '
    '{ "nlri": "198.19.200.0/24" } ] } } } } } }'
)
V6 = (
    HEAD
    + '"type": "update", '
    + NEIGHBOR
    + '"direction": "receive", "message": { "update": { "attribute": { "origin": "igp", '
    '"local-preference": 100 }, "announce": { "ipv6 unicast": { "2001:db8:ffff::1": [ { '
    '"nlri": "2001:db8:200::/48" } ] } } } } } }'
)
WITHDRAW = (
    HEAD
    + '"type": "update", '
    + NEIGHBOR
    + '"direction": "receive", "message": { "update": { "withdraw": { "ipv4 unicast": '
    '[ { "nlri": "198.19.32.209/32" }, { "nlri": "198.19.12.93/32" } ] } } } } }'
)
EOR = (
    HEAD
    + '"type": "update", '
    + NEIGHBOR
    + '"direction": "receive", "message": { "eor": { "afi" : "ipv6", "safi" : "unicast" } } } }'
)
SHUTDOWN = (
    '{ "exabgp": "4.0.1", "time": 1.0, "host" : "vm", "pid" : 1, "ppid" : 1, "type": '
    '"notification", "notification": "shutdown" }'
)


def test_text_mode_decodes_what_exabgp_writes() -> None:
    c = TextCodec()
    assert c.decode(STATE_UP) == PeerUp("198.18.0.1")
    assert c.decode(STATE_DOWN) == PeerDown("198.18.0.1", "peer reset, message (closing connection)")
    assert c.decode(STATE_CONNECTED) is None
    assert c.decode(OPEN) == PeerOpen("198.18.0.1", "198.18.0.1", frozenset({"ipv4", "ipv6"}))
    assert c.decode(OPEN_NO_MP) == PeerOpen("198.18.0.1", "10.0.0.1", frozenset({"ipv4"}))
    assert c.decode(EOR) == EndOfRib("198.18.0.1", "ipv6")
    assert c.decode(WITHDRAW) == Update("198.18.0.1", withdraw=P("198.19.32.209/32", "198.19.12.93/32"))
    assert c.decode(SHUTDOWN) == SpeakerShutdown()
    assert c.decode("done\n") == SpeakerAck(True) and c.decode("error") == SpeakerAck(False)
    assert c.decode("   \n") is None


def test_text_mode_attributes() -> None:
    c = TextCodec()
    ev = c.decode(FULL)
    assert isinstance(ev, Update)
    ((a, prefixes),) = ev.announce
    assert prefixes == P("198.19.200.0/24")
    assert a == Attrs(
        next_hop="198.18.0.1",
        origin=EGP,
        as_path=(65001, 65002),
        as_set=(65003, 65004),
        med=5,
        local_pref=200,
        originator_id="10.0.0.9",
        cluster_list=("1.1.1.1", "2.2.2.2"),
        communities=("65000:1", "65000:2"),
        large_communities=("1:2:3",),
        ext_communities=("0x0002fde800000007",),
        atomic_aggregate=True,
        aggregator="65001:10.0.0.1",
        unknown=((0x63, 0xE0, "0102"),),
    )
    again = c.decode(FULL)
    assert isinstance(again, Update) and again.announce[0][0] is a  # interned
    assert c.ignored_attributes == 0  # the empty confederation-path is no loss
    v6 = c.decode(V6)
    assert isinstance(v6, Update) and v6.announce[0][0].next_hop == "2001:db8:ffff::1"
    # the text command carries every attribute back, in ExaBGP's syntax
    assert encode_attrs(a) == (
        "next-hop 198.18.0.1 origin egp as-path [ 65001 65002 ( 65003 65004 ) ] med 5 local-preference 200 "
        "atomic-aggregate aggregator ( 65001:10.0.0.1 ) community [ 65000:1 "
        "65000:2 ] large-community [ 1:2:3 ] "
        "extended-community [ 0x0002fde800000007 ] originator-id 10.0.0.9 cluster-list [ 1.1.1.1 2.2.2.2 ] "
        "attribute [ 0x63 0xe0 0x0102 ]"
    )


def test_text_mode_commands() -> None:
    a = Attrs(next_hop="198.18.0.1", local_pref=100, as_set=(5,))
    lines = (
        TextCodec()
        .encode(
            [
                Announce("198.18.0.3", a, P("198.19.1.0/24", "198.19.2.0/24")),
                Withdraw("198.18.0.3", P("198.19.3.0/24")),
                Withdraw("198.18.0.3", P("2001:db8:1::/48")),
                SendEndOfRib("198.18.0.3", "ipv6"),
                Teardown("198.18.0.3", 1),
            ]
        )
        .splitlines()
    )
    assert lines == [
        "neighbor 198.18.0.3 announce attributes next-hop 198.18.0.1 origin igp "
        "as-path [ ( 5 ) ] local-preference 100 "
        "nlri 198.19.1.0/24 198.19.2.0/24",
        "neighbor 198.18.0.3 withdraw attributes next-hop 0.0.0.0 nlri 198.19.3.0/24",
        "neighbor 198.18.0.3 withdraw attributes next-hop :: nlri 2001:db8:1::/48",
        "neighbor 198.18.0.3 announce eor ipv6 unicast",
        "neighbor 198.18.0.3 teardown 1",
    ]
    with pytest.raises(ValueError):
        encode(Teardown("198.18.0.3", 10, code=3))  # ExaBGP's text API only sends Cease
    with pytest.raises(TypeError):
        encode("nonsense")  # type: ignore[arg-type]


def packet(kind: str, category: int, message: bytes) -> str:
    return (
        HEAD + f'"type": "{kind}", ' + NEIGHBOR + '"direction": "receive", "message": { '
        f'"category": {category}, "header": "0x{message[:19].hex().upper()}", "body": '
        f'"0x{message[19:].hex().upper()}" }} }} }}'
    )


def test_wire_mode_decodes_packets() -> None:
    c = WireCodec()
    caps = bytes([1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1])  # no 4-octet AS: AS_PATH is read with 2 octets
    params = bytes([2, len(caps)]) + caps
    open_msg = (
        b"\xff" * 16 + b"\x00\x00\x01" + bytes([4, 0xFD, 0xE8, 0, 90, 10, 0, 0, 1, len(params)]) + params
    )
    assert c.decode(packet("open", 1, open_msg)) == PeerOpen(
        "198.18.0.1", "10.0.0.1", frozenset({"ipv4", "ipv6"})
    )
    assert c.asn4 == {"198.18.0.1": False}
    a = Attrs(next_hop="198.18.0.1", as_path=(65001,), local_pref=100)
    msg = UpdateEncoder().announce(a, P("198.19.1.0/24"), asn4=False)[0]
    assert c.decode(packet("update", 2, msg)) == Update("198.18.0.1", ((a, P("198.19.1.0/24")),))
    assert c.decode(packet("update", 2, end_of_rib("ipv4"))) == EndOfRib("198.18.0.1", "ipv4")
    refresh = b"\xff" * 16 + b"\x00\x17\x05" + b"\x00\x02\x00\x01"
    assert c.decode(packet("refresh", 5, refresh)) == RouteRefresh("198.18.0.1", "ipv6")
    bad = b"\xff" * 16 + b"\x00\x19\x02" + b"\x00\x00\x00\x00" + bytes([33, 198])
    assert c.decode(packet("update", 2, bad)) == Malformed("198.18.0.1", 3, 10, "IPv4 prefix length 33")
    treat = b"\xff" * 16 + b"\x00\x1b\x02" + b"\x00\x00\x00\x00" + bytes([24, 198, 19, 1])
    assert c.decode(packet("update", 2, treat)) == Update(
        "198.18.0.1", withdraw=P("198.19.1.0/24"), error="NLRI without path attributes"
    )
    assert c.decode(STATE_UP) == PeerUp("198.18.0.1")  # states are the same in both modes


def test_wire_mode_commands_are_whole_messages_in_bounded_lines() -> None:
    c = WireCodec()
    a = Attrs(next_hop="198.18.0.1", local_pref=100)
    prefixes = P(*(f"198.19.{i // 256}.{i % 256}/32" for i in range(20000)))
    text = c.encode([Announce("198.18.0.3", a, prefixes), SendEndOfRib("198.18.0.3", "ipv4")])
    lines = text.splitlines()
    assert len(lines) > 2 and all(len(line) < RAW_LINE_BYTES + 9000 for line in lines)
    got: list[bytes] = []
    dec = UpdateDecoder()
    for line in lines[:-1]:
        head, _, rest = line.partition(" netkit-raw ")
        assert head == "neighbor 198.18.0.3"
        for hexmsg in rest.split():
            u = dec.decode(bytes.fromhex(hexmsg)[19:])
            got += [p for _, ps in u.announced for p in ps]
    assert got == list(prefixes)
    assert lines[-1] == "neighbor 198.18.0.3 netkit-raw " + end_of_rib("ipv4").hex().upper()
    assert c.encode([Teardown("198.18.0.3", 1), Teardown("198.18.0.3", 10, code=3)]).splitlines() == [
        "neighbor 198.18.0.3 teardown 1",
        "neighbor 198.18.0.3 netkit-notify 3 10",
    ]
    wd = c.encode([Withdraw("198.18.0.3", P("2001:db8:1::/48"))])
    assert UpdateDecoder().decode(bytes.fromhex(wd.split()[3])[19:]).withdrawn == list(P("2001:db8:1::/48"))
    with pytest.raises(TypeError):
        c.messages(Teardown("198.18.0.3", 1))


def test_make_codec() -> None:
    assert isinstance(make_codec("wire"), WireCodec) and isinstance(make_codec("text"), TextCodec)
    with pytest.raises(ValueError):
        make_codec("json")


def mutate(line: str, path: list[str], value: object) -> str:
    doc = json.loads(line)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(doc)


BAD_LINES = [
    ("garbage", "not_json"),
    ("{ not json", "not_json"),
    ("[1, 2]", "not_json"),
    ('{"type": "update"}', "unexpected_message"),
    ('{"type": "mystery", "neighbor": {"address": {"peer": "1.2.3.4"}}}', "unexpected_message"),
    (mutate(STATE_UP, ["neighbor", "state"], "sideways"), "unexpected_message"),
    (mutate(STATE_UP, ["neighbor", "address", "peer"], 7), "bad_structure"),
    (mutate(STATE_UP, ["neighbor", "address"], "x"), "bad_structure"),
    (mutate(FULL, ["neighbor", "message", "update", "attribute", "origin"], "sideways"), "bad_attribute"),
    (mutate(FULL, ["neighbor", "message", "update", "attribute", "med"], -1), "bad_attribute"),
    (mutate(FULL, ["neighbor", "message", "update", "attribute", "as-path"], "1 2"), "bad_attribute"),
    (mutate(FULL, ["neighbor", "message", "update", "attribute", "originator-id"], "x"), "bad_attribute"),
    (mutate(FULL, ["neighbor", "message", "update", "attribute", "cluster-list"], "x"), "bad_attribute"),
    (mutate(FULL, ["neighbor", "message", "update", "attribute", "aggregator"], 5), "bad_attribute"),
    (mutate(FULL, ["neighbor", "message", "update", "attribute", "community"], [[1]]), "bad_structure"),
    (
        mutate(FULL, ["neighbor", "message", "update", "attribute", "attribute-0x63-0xE0"], "0xZZ"),
        "bad_structure",
    ),
    (mutate(FULL, ["neighbor", "message", "update", "attribute", "brand-new"], 1), "bad_attribute"),
    (mutate(FULL, ["neighbor", "message", "update", "attribute"], [1]), "bad_attribute"),
    (mutate(FULL, ["neighbor", "message", "update", "announce", "ipv4 unicast"], [1]), "bad_update"),
    (
        mutate(FULL, ["neighbor", "message", "update", "announce", "ipv4 unicast", "198.18.0.1"], [{"x": 1}]),
        "bad_update",
    ),
    (mutate(WITHDRAW, ["neighbor", "message", "update", "withdraw", "ipv4 unicast"], "x"), "bad_update"),
    (mutate(OPEN, ["neighbor", "open", "router_id"], "x.y"), "bad_attribute"),
    (mutate(OPEN, ["neighbor", "open", "capabilities"], [1]), "bad_structure"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_bad_lines_raise_decode_error_with_a_reason(line: str, reason: str) -> None:
    with pytest.raises(DecodeError) as exc:
        TextCodec().decode(line)
    assert exc.value.reason == reason


def test_wire_mode_bad_packets() -> None:
    c = WireCodec()
    for line, reason in (
        (packet("update", 2, b"\xff" * 19).replace('"0x"', '"0xZZ"'), "bad_structure"),
        (
            mutate(packet("update", 2, end_of_rib("ipv4")), ["neighbor", "message", "body"], 5),
            "bad_structure",
        ),
        (packet("open", 1, b"\xff" * 16 + b"\x00\x15\x01\x04\x00"), "bad_open"),
        (packet("refresh", 5, b"\xff" * 16 + b"\x00\x14\x05\x00"), "bad_refresh"),
    ):
        with pytest.raises(DecodeError) as exc:
            c.decode(line)
        assert exc.value.reason == reason, line


def test_families_ignored_and_counted() -> None:
    line = mutate(
        FULL,
        ["neighbor", "message", "update", "announce"],
        {"ipv4 flow": {"x": [{"nlri": "a/1"}, {"nlri": "b/1"}]}},
    )
    ev = TextCodec().decode(line)
    assert isinstance(ev, Update) and ev.unsupported == 2 and ev.announce == ()
    line = mutate(WITHDRAW, ["neighbor", "message", "update", "withdraw"], {"l2vpn evpn": [{"nlri": "x/1"}]})
    ev = TextCodec().decode(line)
    assert isinstance(ev, Update) and ev.unsupported == 1


def test_treat_as_withdraw_from_exabgp_and_missing_next_hop() -> None:
    line = mutate(FULL, ["neighbor", "message", "update", "attribute", "error"], "treat-as-withdraw")
    ev = TextCodec().decode(line)
    assert isinstance(ev, Update) and ev.withdraw == P("198.19.200.0/24") and ev.error is not None
    line = mutate(
        V6,
        ["neighbor", "message", "update", "announce", "ipv6 unicast"],
        {"null": [{"nlri": "2001:db8::/32"}]},
    )
    ev = TextCodec().decode(line)
    assert isinstance(ev, Update) and ev.withdraw == P("2001:db8::/32")


def test_sent_open_and_keepalives_need_no_action() -> None:
    c = TextCodec()
    assert c.decode(mutate(OPEN, ["neighbor", "direction"], "send")) is None
    for kind in ("keepalive", "signal", "fsm", "negotiated", "operational"):
        assert c.decode(f'{{"type": "{kind}"}}') is None
    assert c.decode(mutate(STATE_UP, ["type"], "notification")) is None
    refresh = mutate(STATE_UP, ["type"], "refresh")
    refresh = mutate(
        refresh, ["neighbor", "route-refresh"], {"afi": "ipv4", "safi": "unicast", "subtype": "query"}
    )
    assert c.decode(refresh) == RouteRefresh("198.18.0.1", "ipv4")
    assert c.decode(mutate(refresh, ["neighbor", "route-refresh", "subtype"], "begin")) is None
    assert c.decode(mutate(refresh, ["neighbor", "route-refresh", "safi"], "flow")) is None
