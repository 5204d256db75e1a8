"""The speaker-output parsers of labs.bgpspeakers on real captured output (tests/data/bgp,
see its README for the topology): states, best paths, next hops, ORIGINATOR_ID, CLUSTER_LIST,
AS_PATH, and which neighbour each path came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgp.core.speakerstate import (
    PathInfo,
    normalise_state,
    parse_bird_neighbors,
    parse_bird_protocols,
    parse_bird_routes,
    parse_frr_neighbors,
    parse_frr_prefixes,
    parse_frr_routes,
    parse_gobgp_neighbors,
    parse_gobgp_rib,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "bgp"
N = {i: f"198.18.0.{i}" for i in range(1, 6)}
N3_PROTOCOLS = {"n_n1": N[1], "n_n2": N[2]}


def read(name: str) -> str:
    return (DATA / name).read_text()


def by_source(paths: list[PathInfo]) -> dict[str | None, PathInfo]:
    return {p.from_address: p for p in paths}


def test_normalise_state() -> None:
    assert normalise_state("established") == "Established"
    assert normalise_state("OPENCONFIRM") == "OpenConfirm"
    assert normalise_state("weird") == "weird"


# -- BIRD ---------------------------------------------------------------------------------------


def test_bird_protocols() -> None:
    protocols = {f"n_n{i}": N[i] for i in (2, 3, 4, 5)}
    assert parse_bird_protocols(read("bird_rr_protocols.txt"), protocols) == {
        N[2]: "Established",
        N[3]: "Established",
        N[4]: "Established",
        N[5]: "Established",
    }
    down = parse_bird_protocols(read("bird_client_protocols_down.txt"), N3_PROTOCOLS)
    assert down == {N[1]: "Active", N[2]: "Established"}
    # protocols the caller did not name (device, kernel, static) are not sessions
    assert parse_bird_protocols(read("bird_rr_protocols.txt"), {}) == {}


def test_bird_routes_reflected_paths_from_both_reflectors() -> None:
    routes = parse_bird_routes(read("bird_client_routes4.txt"), N3_PROTOCOLS)
    # the connected /24 (protocol direct) is not a BGP or originated route
    assert set(routes) == {f"198.19.{i}.0/24" for i in (1, 2, 3, 4, 5)}
    n4 = by_source(routes["198.19.4.0/24"])
    assert set(n4) == {N[1], N[2]}
    assert n4[N[1]] == PathInfo("198.19.4.0/24", N[4], N[1], True, 100, (), N[4], ("1.1.1.1",))
    assert n4[N[2]] == PathInfo("198.19.4.0/24", N[4], N[2], False, 100, (), N[4], ("2.2.2.2",))
    # exactly one best path per prefix
    assert all(sum(p.best for p in paths) == 1 for paths in routes.values())


def test_bird_routes_local_ebgp_and_reflector_own() -> None:
    routes = parse_bird_routes(read("bird_client_routes4.txt"), N3_PROTOCOLS)
    assert routes["198.19.3.0/24"] == [PathInfo("198.19.3.0/24", None, None, True, None)]
    ebgp = by_source(routes["198.19.5.0/24"])
    assert ebgp[N[1]].as_path == (64513,) and ebgp[N[1]].originator_id is None
    assert ebgp[N[2]].originator_id == N[1] and ebgp[N[2]].cluster_list == ("2.2.2.2",)
    own = by_source(routes["198.19.1.0/24"])[N[1]]  # n1's own prefix, straight from n1
    assert (own.next_hop, own.originator_id, own.cluster_list, own.best) == (N[1], None, (), True)


def test_bird_routes_ipv6_with_ipv4_next_hops() -> None:
    routes = parse_bird_routes(read("bird_client_routes6.txt"), N3_PROTOCOLS)
    assert set(routes) == {f"2001:db8:{i}::/48" for i in (1, 2, 3, 4, 5)}
    n2 = by_source(routes["2001:db8:2::/48"])
    assert n2[N[2]].next_hop == N[2] and n2[N[1]].cluster_list == ("1.1.1.1",)


def test_bird_route_from_unknown_protocol_uses_from_field() -> None:
    text = (
        "Table master4:\n"
        "198.19.9.0/24        unicast [n_old 12:00:00.000 from 198.18.0.9] * (100) [i]\n"
        "\tvia 198.18.0.7 on eth0\n\tType: BGP univ\n\tBGP.next_hop: 198.18.0.7\n"
    )
    (path,) = parse_bird_routes(text, {})["198.19.9.0/24"]
    assert path.from_address == "198.18.0.9" and path.next_hop == "198.18.0.7" and path.best


# -- FRR ----------------------------------------------------------------------------------------


def test_frr_neighbors() -> None:
    assert parse_frr_neighbors(read("frr_rr_neighbors.json")) == {
        N[1]: "Established",
        N[3]: "Established",
        N[4]: "Established",
    }
    assert parse_frr_neighbors(read("frr_rr_neighbors_down.json"))[N[1]] == "Active"
    assert parse_frr_neighbors("") == {}


def test_frr_prefixes_and_routes() -> None:
    assert parse_frr_prefixes(read("frr_rr_table4.json")) == [f"198.19.{i}.0/24" for i in (1, 2, 3, 4, 5)]
    routes = parse_frr_routes(read("frr_rr_routes4.json"))
    assert routes["198.19.2.0/24"] == [PathInfo("198.19.2.0/24", None, None, True, None)]  # its own
    n3 = by_source(routes["198.19.3.0/24"])
    assert n3[N[3]] == PathInfo("198.19.3.0/24", N[3], N[3], True, 100, (), None, ())
    assert n3[N[1]] == PathInfo("198.19.3.0/24", N[3], N[1], False, 100, (), N[3], ("1.1.1.1",))
    assert routes["198.19.5.0/24"][0].as_path == (64513,)


def test_frr_ipv6_mapped_next_hops_read_as_ipv4() -> None:
    assert "::ffff:" in read("frr_rr_routes6.json")  # how FRR prints them
    routes = parse_frr_routes(read("frr_rr_routes6.json"))
    assert by_source(routes["2001:db8:4::/48"])[N[4]].next_hop == N[4]


# -- GoBGP --------------------------------------------------------------------------------------


def test_gobgp_neighbors() -> None:
    assert parse_gobgp_neighbors(read("gobgp_client_neighbors.json")) == {
        N[1]: "Established",
        N[2]: "Established",
    }
    assert parse_gobgp_neighbors(read("gobgp_client_neighbors_down.json")) == {
        N[1]: "Active",
        N[2]: "Established",
    }


@pytest.mark.parametrize("name", ["gobgp_client_rib4.json", "gobgp_client_rib6.json"])
def test_gobgp_rib(name: str) -> None:
    routes = parse_gobgp_rib(read(name))
    assert len(routes) == 5
    fam4 = name.endswith("4.json")
    p3 = "198.19.3.0/24" if fam4 else "2001:db8:3::/48"
    p4 = "198.19.4.0/24" if fam4 else "2001:db8:4::/48"
    paths = by_source(routes[p3])
    assert paths[N[1]] == PathInfo(p3, N[3], N[1], True, 100, (), N[3], ("1.1.1.1",))
    assert paths[N[2]] == PathInfo(p3, N[3], N[2], False, 100, (), N[3], ("2.2.2.2",))
    (own,) = routes[p4]
    assert own.from_address is None and own.next_hop == N[4] and own.best


# calico/node's BIRD 1.6 (Debian's bird 1.6.8 under calico-style names, read with bird2's birdc)
BIRD16_PROTOCOLS_ALL = """\
BIRD 1.6.8 ready.
name     proto    table    state  since       info
device1  Device   master   up     01:35:58
  Preference:     240
  Input filter:   ACCEPT
  Output filter:  REJECT
  Routes:         0 imported, 0 exported, 0 preferred

Node_10_77_0_2 BGP      master   up     01:36:02    Established
  Preference:     100
  Routes:         1 imported, 1 exported, 1 preferred
  BGP state:          Established
    Neighbor address: 10.77.0.2
    Neighbor AS:      64512
    Source address:   10.77.0.1

Mesh_10_77_0_3 BGP      master   start  01:36:02    Active        Socket: Connection refused
  Preference:     100
  BGP state:          Active
    Neighbor address: 10.77.0.3
    Neighbor AS:      64512
"""

BIRD16_ROUTES = """\
BIRD 1.6.8 ready.
10.77.0.0/24       dev cbv1 [direct1 01:36:11] * (240)
\tType: device unicast univ
                   via 10.77.0.2 on cbv1 [Node_10_77_0_2 01:36:11] (100/0) [i]
\tType: BGP unicast univ
\tBGP.origin: IGP
\tBGP.as_path:
\tBGP.next_hop: 10.77.0.2
\tBGP.local_pref: 100
192.168.1.0/26     blackhole [static1 01:35:58] * (200)
\tType: static unicast univ
192.168.2.0/26     via 10.77.0.2 on cbv1 [Node_10_77_0_2 01:36:02] * (100/0) [i]
\tType: BGP unicast univ
\tBGP.origin: IGP
\tBGP.as_path:
\tBGP.next_hop: 10.77.0.2
\tBGP.local_pref: 100
"""


def test_bird16_neighbours_and_paths_as_calico_node_names_them() -> None:
    names = parse_bird_neighbors(BIRD16_PROTOCOLS_ALL)
    assert names == {"Node_10_77_0_2": "10.77.0.2", "Mesh_10_77_0_3": "10.77.0.3"}
    shown = "\n".join(line for line in BIRD16_PROTOCOLS_ALL.splitlines() if not line.startswith(" "))
    assert parse_bird_protocols(shown, names) == {"10.77.0.2": "Established", "10.77.0.3": "Active"}
    routes = parse_bird_routes(BIRD16_ROUTES, names)
    assert set(routes) == {"10.77.0.0/24", "192.168.1.0/26", "192.168.2.0/26"}
    (learnt,) = routes["192.168.2.0/26"]
    assert (learnt.from_address, learnt.next_hop, learnt.best, learnt.local_pref) == (
        "10.77.0.2",
        "10.77.0.2",
        True,
        100,
    )
    (own,) = routes["192.168.1.0/26"]
    assert own.from_address is None and own.best
    (via_bgp,) = routes["10.77.0.0/24"]  # the device route is not BGP's: only the BGP path is kept
    assert via_bgp.from_address == "10.77.0.2" and not via_bgp.best
