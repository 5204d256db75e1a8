"""BGP messages on the wire (pure): UPDATEs built and parsed back are what went in (hypothesis,
IPv4 and IPv6, 2- and 4-octet AS numbers), no message exceeds 4096 octets, OPEN and
ROUTE-REFRESH parsing, and every RFC 7606 outcome: session reset, treat-as-withdraw, attribute
discard."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.reflector.core.prefix import from_text, to_text
from bgp.reflector.core.route import EGP, IGP, INCOMPLETE, Attrs
from bgp.reflector.core.wire import (
    MAX_MESSAGE,
    UpdateDecoder,
    UpdateEncoder,
    WireError,
    end_of_rib,
    nlri_keys,
    parse_open,
    parse_refresh,
)


def body(message: bytes) -> bytes:
    assert message[:16] == b"\xff" * 16 and message[18] == 2
    assert int.from_bytes(message[16:18], "big") == len(message) <= MAX_MESSAGE
    return message[19:]


def attr(code: int, flags: int, value: bytes) -> bytes:
    return bytes((flags, code, len(value))) + value


ORIGIN = attr(1, 0x40, b"\x00")
AS_PATH = attr(2, 0x40, b"")
NEXT_HOP = attr(3, 0x40, bytes([198, 18, 0, 1]))
LOCAL_PREF = attr(5, 0x40, (100).to_bytes(4, "big"))
NLRI = bytes([24, 198, 19, 1])


def update(attrs: bytes, nlri: bytes = NLRI, withdrawn: bytes = b"") -> bytes:
    return len(withdrawn).to_bytes(2, "big") + withdrawn + len(attrs).to_bytes(2, "big") + attrs + nlri


# -- round trips ---------------------------------------------------------------------------------

asn = st.integers(1, (1 << 32) - 1)
ipv4 = st.integers(0, (1 << 32) - 1).map(lambda v: str(ipaddress.IPv4Address(v)))
attrs_st = st.builds(
    Attrs,
    next_hop=st.just("198.18.0.1"),
    origin=st.sampled_from([IGP, EGP, INCOMPLETE]),
    as_path=st.lists(asn, max_size=300).map(tuple),
    as_set=st.lists(asn, max_size=3, unique=True).map(tuple),
    med=st.one_of(st.none(), st.integers(0, (1 << 32) - 1)),
    local_pref=st.one_of(st.none(), st.integers(0, (1 << 32) - 1)),
    originator_id=st.one_of(st.none(), ipv4),
    cluster_list=st.lists(ipv4, max_size=4).map(tuple),
    communities=st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 65535)), max_size=3).map(
        lambda xs: tuple(f"{a}:{b}" for a, b in xs)
    ),
    large_communities=st.lists(st.tuples(asn, asn, asn), max_size=2).map(
        lambda xs: tuple(f"{a}:{b}:{c}" for a, b, c in xs)
    ),
    ext_communities=st.lists(st.binary(min_size=8, max_size=8), max_size=2).map(
        lambda xs: tuple(f"0x{x.hex()}" for x in xs)
    ),
    atomic_aggregate=st.booleans(),
    aggregator=st.one_of(st.none(), st.tuples(asn, ipv4).map(lambda t: f"{t[0]}:{t[1]}")),
    unknown=st.lists(
        st.tuples(st.integers(33, 99), st.binary(max_size=20)), max_size=2, unique_by=lambda t: t[0]
    ).map(lambda xs: tuple(sorted((c, 0xE0, v.hex()) for c, v in xs))),
)


def v4_prefixes() -> st.SearchStrategy[list[str]]:
    def one(t: tuple[int, int]) -> str:
        value, length = t
        return str(ipaddress.IPv4Network((value >> (32 - length) << (32 - length) if length else 0, length)))

    return st.lists(
        st.tuples(st.integers(0, (1 << 32) - 1), st.integers(0, 32)).map(one),
        min_size=1,
        max_size=2000,
        unique=True,
    )


def v6_prefixes() -> st.SearchStrategy[list[str]]:
    def one(t: tuple[int, int]) -> str:
        value, length = t
        return str(
            ipaddress.IPv6Network((value >> (128 - length) << (128 - length) if length else 0, length))
        )

    return st.lists(
        st.tuples(st.integers(0, (1 << 128) - 1), st.integers(0, 128)).map(one),
        min_size=1,
        max_size=800,
        unique=True,
    )


def texts(keys: list[bytes]) -> list[str]:
    return [to_text(k) for k in keys]


def keys(prefixes: list[str]) -> list[bytes]:
    return [from_text(p) for p in prefixes]


def decode_all(messages: list[bytes], asn4: bool = True) -> tuple[list[tuple[Attrs, list[str]]], list[str]]:
    dec = UpdateDecoder()
    announced, withdrawn = [], []
    for m in messages:
        u = dec.decode(body(m), asn4)
        assert u.error is None, u.error
        announced += [(a, texts(ps)) for a, ps in u.announced]
        withdrawn += texts(u.withdrawn)
    return announced, withdrawn


@settings(max_examples=150, deadline=None)
@given(attrs_st, v4_prefixes(), st.booleans())
def test_ipv4_announce_round_trip(a: Attrs, prefixes: list[str], asn4: bool) -> None:
    msgs = UpdateEncoder().announce(a, keys(prefixes), asn4)
    announced, _ = decode_all(msgs, asn4)
    assert all(got == a for got, _ in announced)
    assert [p for _, ps in announced for p in ps] == prefixes


@settings(max_examples=100, deadline=None)
@given(attrs_st, v6_prefixes(), st.sampled_from(["2001:db8::1", "::ffff:198.18.0.1", "fe80::1"]))
def test_ipv6_announce_round_trip(a: Attrs, prefixes: list[str], next_hop: str) -> None:
    a = a.evolve(next_hop=next_hop)
    announced, _ = decode_all(UpdateEncoder().announce(a, keys(prefixes)))
    assert all(got == a for got, _ in announced)
    assert [p for _, ps in announced for p in ps] == prefixes


@settings(max_examples=100, deadline=None)
@given(st.one_of(v4_prefixes(), v6_prefixes()))
def test_withdraw_round_trip(prefixes: list[str]) -> None:
    msgs = UpdateEncoder().withdraw(keys(prefixes))
    _, withdrawn = decode_all(msgs)
    assert withdrawn == prefixes


def test_full_messages_are_used() -> None:
    prefixes = [f"198.19.{i // 256}.{i % 256}/32" for i in range(2000)]
    msgs = UpdateEncoder().announce(Attrs(next_hop="198.18.0.1", local_pref=100), keys(prefixes))
    assert len(msgs) == 3 and all(len(m) > MAX_MESSAGE - 5 for m in msgs[:-1])
    assert UpdateEncoder().announce(Attrs(next_hop="198.18.0.1"), []) == []
    assert UpdateEncoder().withdraw([]) == []


def test_two_octet_peers_get_as_trans_and_as4_path() -> None:
    a = Attrs(next_hop="198.18.0.1", as_path=(70000, 65001), aggregator="70000:10.0.0.1")
    m = body(UpdateEncoder().announce(a, keys(["198.19.1.0/24"]), asn4=False)[0])
    assert (23456).to_bytes(2, "big") in m  # AS_TRANS in AS_PATH and AGGREGATOR
    assert UpdateDecoder().decode(m, asn4=False).announced[0][0] == a


def test_end_of_rib() -> None:
    dec = UpdateDecoder()
    assert dec.decode(body(end_of_rib("ipv4"))).end_of_rib == "ipv4"
    assert dec.decode(body(end_of_rib("ipv6"))).end_of_rib == "ipv6"
    other = update(attr(15, 0x80, b"\x00\x01\x80"), nlri=b"")  # MP_UNREACH AFI 1 SAFI 128
    u = dec.decode(other)
    assert u.end_of_rib == "ipv4 128" and u.unsupported == 1


def test_prefix_encoding_and_host_bits() -> None:
    assert from_text("198.19.1.0/24") == bytes([24, 198, 19, 1])
    assert from_text("0.0.0.0/0") == b"\x00"
    assert from_text("2001:db8::/32") == bytes([0xFF, 32, 0x20, 0x01, 0x0D, 0xB8])  # IPv6 keys are marked
    assert texts(nlri_keys(bytes([23, 198, 19, 1]), False)) == ["198.19.0.0/23"]  # host bit cleared
    assert nlri_keys(bytes([23, 198, 19, 1]), False) == [from_text("198.19.0.0/23")]
    assert texts(nlri_keys(bytes([0, 9, 10, 192]), False)) == ["0.0.0.0/0", "10.128.0.0/9"]
    assert texts(nlri_keys(bytes([0, 48, 0x20, 1, 0xD, 0xB8, 0, 1]), True)) == ["::/0", "2001:db8:1::/48"]
    for bad in ("198.19.1.0/33", "2001:db8::/129", "198.19.1.1/24", "nonsense"):
        with pytest.raises(ValueError):
            from_text(bad)


# -- session reset (WireError) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "subcode"),
    [
        (b"\x00\x00\x00", 1),  # shorter than 4 octets
        (b"\x00\x09\x00\x00", 1),  # withdrawn length past the end
        (b"\x00\x00\x00\x09", 1),  # attribute length past the end
        (update(b"\x40\x01"), 1),  # attribute header cut short
        (update(b"\x50\x01\x00"), 1),  # extended-length header cut short
        (update(b"\x40\x01\x05\x00"), 5),  # attribute length past the list
        (update(ORIGIN + AS_PATH + NEXT_HOP, nlri=bytes([33, 1, 2, 3, 4, 5])), 10),  # prefix length 33
        (update(ORIGIN + AS_PATH + NEXT_HOP, nlri=bytes([24, 198])), 10),  # prefix past the field
        (update(b"", withdrawn=bytes([40, 1, 2, 3, 4, 5])), 10),
        (
            update(attr(14, 0x80, b"\x00\x02\x01\x10") + attr(14, 0x80, b"\x00\x02\x01\x10")),
            1,
        ),  # MP_REACH twice
        (update(attr(14, 0x80, b"\x00\x02"), nlri=b""), 1),  # MP_REACH too short
        (update(attr(14, 0x80, b"\x00\x02\x01\x20\x00"), nlri=b""), 1),  # next hop past the attribute
        (update(attr(15, 0x80, b"\x00"), nlri=b""), 1),  # MP_UNREACH too short
        (update(attr(15, 0x80, b"\x00\x02\x01" + bytes([129]) + bytes(17)), nlri=b""), 10),  # IPv6 /129
    ],
)
def test_malformed_structure_resets_the_session(data: bytes, subcode: int) -> None:
    with pytest.raises(WireError) as exc:
        UpdateDecoder().decode(data)
    assert (exc.value.code, exc.value.subcode) == (3, subcode)


# -- treat-as-withdraw ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        (AS_PATH + NEXT_HOP, "ORIGIN missing"),
        (ORIGIN + NEXT_HOP, "AS_PATH missing"),
        (ORIGIN + AS_PATH, "NEXT_HOP"),
        (attr(1, 0x40, b"\x07") + AS_PATH + NEXT_HOP, "ORIGIN malformed"),
        (ORIGIN + attr(2, 0x40, b"\x02\x02\x00\x00\x00\x01") + NEXT_HOP, "AS_PATH"),  # 2 ASNs, 1 there
        (ORIGIN + attr(2, 0x40, b"\x09\x01\x00\x00\x00\x01") + NEXT_HOP, "segment type"),
        (ORIGIN + attr(2, 0x40, b"\x02") + NEXT_HOP, "cut short"),
        (ORIGIN + AS_PATH + NEXT_HOP + attr(4, 0x80, b"\x00\x01"), "length 2"),  # MED
        (ORIGIN + AS_PATH + NEXT_HOP + attr(9, 0x80, b"\x01\x02"), "ORIGINATOR_ID"),
        (ORIGIN + AS_PATH + NEXT_HOP + attr(10, 0x80, b"\x01\x02\x03"), "CLUSTER_LIST"),
        (ORIGIN + AS_PATH + NEXT_HOP + attr(8, 0xC0, b"\x01"), "COMMUNITIES"),
        (ORIGIN + AS_PATH + NEXT_HOP + attr(32, 0xC0, b"\x01" * 5), "LARGE_COMMUNITY"),
        (ORIGIN + AS_PATH + NEXT_HOP + attr(16, 0xC0, b"\x01" * 5), "EXTENDED"),
        (ORIGIN + AS_PATH + NEXT_HOP + attr(40, 0x40, b""), "well-known"),
    ],
)
def test_bad_attribute_values_treat_as_withdraw(attrs: bytes, reason: str) -> None:
    u = UpdateDecoder().decode(update(attrs, withdrawn=bytes([24, 198, 19, 9])))
    assert u.announced == [] and texts(u.withdrawn) == ["198.19.9.0/24", "198.19.1.0/24"]
    assert u.error is not None and reason in u.error


def test_nlri_without_attributes_is_withdrawn() -> None:
    u = UpdateDecoder().decode(update(b""))
    assert texts(u.withdrawn) == ["198.19.1.0/24"] and u.error == "NLRI without path attributes"


def test_ipv6_next_hop_of_a_bad_length_is_treat_as_withdraw() -> None:
    mp = b"\x00\x02\x01\x05" + bytes(5) + b"\x00" + bytes([48, 0x20, 0x01, 0x0D, 0xB8, 0, 1])
    u = UpdateDecoder().decode(update(ORIGIN + AS_PATH + attr(14, 0x80, mp), nlri=b""))
    assert texts(u.withdrawn) == ["2001:db8:1::/48"] and u.error is not None


# -- accepted with care ---------------------------------------------------------------------------


def test_unknown_optional_attributes_pass_if_transitive_with_the_partial_bit() -> None:
    dec = UpdateDecoder()
    extra = attr(99, 0xC0, b"\x01\x02") + attr(98, 0x80, b"\x03")
    a, prefixes = dec.decode(update(ORIGIN + AS_PATH + NEXT_HOP + extra)).announced[0]
    assert a.unknown == ((99, 0xE0, "0102"),) and texts(prefixes) == ["198.19.1.0/24"]
    assert dec.ignored_attributes == 1  # the optional non-transitive one


def test_attribute_discard_for_atomic_aggregate_and_aggregator() -> None:
    dec = UpdateDecoder()
    bad = attr(6, 0x40, b"\x01") + attr(7, 0xC0, b"\x01\x02\x03")
    a, _ = dec.decode(update(ORIGIN + AS_PATH + NEXT_HOP + bad)).announced[0]
    assert not a.atomic_aggregate and a.aggregator is None and dec.ignored_attributes == 2


def test_repeated_attribute_keeps_the_first() -> None:
    a, _ = UpdateDecoder().decode(update(ORIGIN + attr(1, 0x40, b"\x02") + AS_PATH + NEXT_HOP)).announced[0]
    assert a.origin == IGP


def test_ipv6_with_link_local_next_hop_keeps_the_global_one() -> None:
    nh = ipaddress.IPv6Address("2001:db8:ffff::1").packed + ipaddress.IPv6Address("fe80::1").packed
    mp = b"\x00\x02\x01\x20" + nh + b"\x00" + bytes([48, 0x20, 0x01, 0x0D, 0xB8, 0, 1])
    a, prefixes = UpdateDecoder().decode(update(ORIGIN + AS_PATH + attr(14, 0x80, mp), nlri=b"")).announced[0]
    assert a.next_hop == "2001:db8:ffff::1" and texts(prefixes) == ["2001:db8:1::/48"]


def test_other_families_are_counted_not_parsed() -> None:
    mp = b"\x00\x01\x80\x04" + bytes(4) + b"\x00" + b"\x01\x02"  # IPv4 VPN: not ours
    u = UpdateDecoder().decode(update(ORIGIN + AS_PATH + attr(14, 0x80, mp), nlri=b""))
    assert u.unsupported == 1 and u.announced == [] and u.error is None


def test_as4_path_merged_for_two_octet_peers_and_ignored_if_broken() -> None:
    path2 = b"\x02\x02" + (65001).to_bytes(2, "big") + (23456).to_bytes(2, "big")
    as4 = attr(17, 0xC0, b"\x02\x01" + (70000).to_bytes(4, "big"))
    dec = UpdateDecoder()
    a, _ = dec.decode(update(ORIGIN + attr(2, 0x40, path2) + NEXT_HOP + as4), asn4=False).announced[0]
    assert a.as_path == (65001, 70000)
    broken = attr(17, 0xC0, b"\x02\x05\x00")
    a, _ = dec.decode(update(ORIGIN + attr(2, 0x40, path2) + NEXT_HOP + broken), asn4=False).announced[0]
    assert a.as_path == (65001, 23456) and dec.ignored_attributes == 1


def test_identical_attribute_blocks_are_interpreted_once() -> None:
    dec = UpdateDecoder()
    first = dec.decode(update(ORIGIN + AS_PATH + NEXT_HOP + LOCAL_PREF)).announced[0][0]
    again = dec.decode(
        update(ORIGIN + AS_PATH + NEXT_HOP + LOCAL_PREF, nlri=bytes([24, 198, 19, 2]))
    ).announced[0][0]
    assert first is again


# -- OPEN, ROUTE-REFRESH --------------------------------------------------------------------------


def open_body(caps: bytes, asn: int = 64512) -> bytes:
    params = bytes([2, len(caps)]) + caps
    return (
        bytes([4])
        + asn.to_bytes(2, "big")
        + (90).to_bytes(2, "big")
        + bytes([10, 0, 0, 1])
        + bytes([len(params)])
        + params
    )


def test_open_capabilities() -> None:
    caps = bytes([1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1, 65, 4]) + (4200000000).to_bytes(4, "big")
    info = parse_open(open_body(caps, 23456))
    assert (info.asn, info.router_id, info.families, info.asn4, info.hold) == (
        4200000000, "10.0.0.1", frozenset({"ipv4", "ipv6"}), True, 90,
    )  # fmt: skip
    bare = parse_open(open_body(b""))
    assert bare.families == frozenset({"ipv4"}) and not bare.asn4 and bare.asn == 64512
    only6 = parse_open(open_body(bytes([1, 4, 0, 2, 0, 1])))
    assert only6.families == frozenset({"ipv6"})


def test_open_extended_parameters_and_short_open() -> None:
    caps = bytes([1, 4, 0, 2, 0, 1])
    params = bytes([2]) + len(caps).to_bytes(2, "big") + caps
    ext = bytes([4, 0xFC, 0, 0, 90, 10, 0, 0, 2, 255, 255]) + len(params).to_bytes(2, "big") + params
    assert parse_open(ext).families == frozenset({"ipv6"})
    with pytest.raises(WireError):
        parse_open(b"\x04\x00")


def test_route_refresh() -> None:
    assert parse_refresh(b"\x00\x01\x00\x01") == "ipv4"
    assert parse_refresh(b"\x00\x02\x00\x01") == "ipv6"
    assert parse_refresh(b"\x00\x01\x01\x01") is None  # RFC 7313 BoRR marker
    assert parse_refresh(b"\x00\x01\x00\x80") is None
    with pytest.raises(WireError):
        parse_refresh(b"\x00")
