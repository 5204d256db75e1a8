"""The reflector core (pure): reflection rules, attributes, loops, sessions, End-of-RIB, policy;
and, with hypothesis, over random event sequences: a route never goes back to its sender nor to
the peer that originated it, reflected routes always carry our cluster id first, nothing goes to
a peer that is not up, and after every flush each peer holds exactly what the rules say it
should (simulated from the commands it was sent)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.core.model import Role
from bgp.reflector.core.events import (
    Announce,
    Command,
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
from bgp.reflector.core.policy import MaxPrefix, MaxPrefixAction, PeerPolicy, PrefixFilter
from bgp.reflector.core.prefix import Prefix, family, from_text, to_text
from bgp.reflector.core.rib import PeerSpec, Reflector
from bgp.reflector.core.route import Attrs

ASN = 64512
ME = "198.18.0.100"
C1, C2, N1, E1 = "198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"  # clients, non-client, eBGP


def reflector(policies: dict[str, PeerPolicy] | None = None, chunk: int = 1000) -> Reflector:
    pol = policies or {}
    peers = [
        PeerSpec("c1", C1, ASN, Role.CLIENT, pol.get(C1, PeerPolicy.open())),
        PeerSpec("c2", C2, ASN, Role.CLIENT, pol.get(C2, PeerPolicy.open())),
        PeerSpec("n1", N1, ASN, Role.PEER, pol.get(N1, PeerPolicy.open())),
        PeerSpec("e1", E1, 64999, Role.PEER, pol.get(E1, PeerPolicy.open())),
    ]
    return Reflector(router_id=ME, asn=ASN, cluster_id="1.1.1.1", peers=peers, chunk=chunk)


def up(r: Reflector, *peers: str) -> None:
    for p in peers:
        r.handle(PeerOpen(p, p, frozenset({"ipv4", "ipv6"})))
        r.handle(PeerUp(p))


def announce(r: Reflector, peer: str, *prefixes: str, **kw: object) -> Attrs:
    kw.setdefault("next_hop", peer)
    kw.setdefault("local_pref", 100)
    a = Attrs(**kw)  # type: ignore[arg-type]
    r.handle(Update(peer, ((a, tuple(map(from_text, prefixes))),)))
    return a


def text_keys(d: object) -> dict[str, object]:
    return {to_text(k): v for k, v in dict(d).items()}  # type: ignore[call-overload]


def sent(commands: Sequence[Command], peer: str) -> dict[str, Attrs | None]:
    """{prefix: attrs (announce) or None (withdraw)} of the commands to ``peer``."""
    out: dict[str, Attrs | None] = {}
    for c in commands:
        if isinstance(c, Announce) and c.peer == peer:
            out.update(dict.fromkeys(map(to_text, c.prefixes), c.attrs))
        elif isinstance(c, Withdraw) and c.peer == peer:
            out.update(dict.fromkeys(map(to_text, c.prefixes)))
    return out


def test_client_route_goes_to_every_other_peer_with_originator_and_cluster_list() -> None:
    r = reflector()
    up(r, C1, C2, N1, E1)
    r.flush()
    announce(r, C1, "198.19.1.0/24")
    cmds = r.flush()
    assert sent(cmds, C1) == {}
    for p in (C2, N1):
        a = sent(cmds, p)["198.19.1.0/24"]
        assert a is not None
        assert (a.next_hop, a.originator_id, a.cluster_list, a.local_pref) == (C1, C1, ("1.1.1.1",), 100)
    e = sent(cmds, E1)["198.19.1.0/24"]
    assert e is not None  # to eBGP: our AS prepended, next hop self, no iBGP-only attributes
    assert (e.next_hop, e.as_path, e.local_pref, e.originator_id, e.cluster_list) == (
        ME,
        (ASN,),
        None,
        None,
        (),
    )


def test_non_client_route_goes_to_clients_only() -> None:
    r = reflector()
    up(r, C1, C2, N1, E1)
    r.flush()
    announce(r, N1, "198.19.3.0/24")
    cmds = r.flush()
    assert set(sent(cmds, C1)) == set(sent(cmds, C2)) == {"198.19.3.0/24"}
    assert sent(cmds, N1) == {}
    assert "198.19.3.0/24" in sent(cmds, E1)  # eBGP gets the best route whatever its source


def test_ebgp_route_goes_to_every_ibgp_peer_with_local_pref() -> None:
    r = reflector()
    up(r, C1, N1, E1)
    r.flush()
    announce(
        r, E1, "198.19.4.0/24", local_pref=None, as_path=(64999,), originator_id=C1, cluster_list=("9.9.9.9",)
    )
    cmds = r.flush()
    for p in (C1, N1):
        a = sent(cmds, p)["198.19.4.0/24"]
        assert a is not None and a.local_pref == 100 and a.originator_id is None and a.cluster_list == ()
    assert sent(cmds, E1) == {}


def test_existing_originator_and_cluster_list_are_kept_and_prepended() -> None:
    r = reflector()
    up(r, C1, C2)
    r.flush()
    announce(r, C1, "198.19.1.0/24", originator_id="10.9.9.9", cluster_list=("2.2.2.2",))
    a = sent(r.flush(), C2)["198.19.1.0/24"]
    assert a is not None and (a.originator_id, a.cluster_list) == ("10.9.9.9", ("1.1.1.1", "2.2.2.2"))


def test_loops_are_dropped_on_receipt() -> None:
    r = reflector()
    up(r, C1, C2, E1)
    r.flush()
    announce(r, C1, "198.19.1.0/24", cluster_list=("9.9.9.9", "1.1.1.1"))
    announce(r, C1, "198.19.2.0/24", originator_id=ME)
    announce(r, E1, "198.19.3.0/24", as_path=(64999, ASN), local_pref=None)
    assert r.flush() == []
    assert text_keys(r.rejected(C1)) == {"198.19.1.0/24": "cluster_loop", "198.19.2.0/24": "originator_loop"}
    assert text_keys(r.rejected(E1)) == {"198.19.3.0/24": "as_loop"}
    assert r.peer_stats(C1).rejected == {"cluster_loop": 1, "originator_loop": 1}


def test_never_sent_to_the_peer_whose_router_id_is_the_originator() -> None:
    r = reflector()
    up(r, C1, C2)
    r.flush()
    announce(r, C1, "198.19.1.0/24", originator_id=C2)  # C2 originated it (e.g. via another RR)
    assert sent(r.flush(), C2) == {}


def test_implicit_withdraw_replaces_a_peers_path() -> None:
    r = reflector()
    up(r, C1, C2)
    r.flush()
    announce(r, C1, "198.19.1.0/24", med=1)
    r.flush()
    new = announce(r, C1, "198.19.1.0/24", med=2)
    a = sent(r.flush(), C2)["198.19.1.0/24"]
    assert a is not None and a.med == 2
    assert r.candidates(from_text("198.19.1.0/24")) == {r.peers[C1]: new}


def test_a_better_path_moves_the_best_and_the_loser_is_told() -> None:
    r = reflector()
    up(r, C1, C2, N1)
    r.flush()
    announce(r, C1, "198.19.9.0/24", local_pref=100)
    r.flush()
    announce(r, C2, "198.19.9.0/24", local_pref=200)
    cmds = r.flush()
    # C1 now gets C2's path; C2 had C1's and is told to withdraw it (its own path is best)
    assert sent(cmds, C2) == {"198.19.9.0/24": None}
    a = sent(cmds, C1)["198.19.9.0/24"]
    assert a is not None and a.originator_id == C2


def test_session_down_withdraws_everything_learnt_from_the_peer() -> None:
    r = reflector()
    up(r, C1, C2)
    r.flush()
    announce(r, C1, "198.19.1.0/24", "198.19.11.0/24")
    r.flush()
    r.handle(PeerDown(C1, "hold timer expired"))
    assert sent(r.flush(), C2) == {"198.19.1.0/24": None, "198.19.11.0/24": None}
    assert r.best == {} and r.accepted(C1) == 0
    assert r.peer_stats(C1).transitions == {"up": 1, "down": 1}


def test_a_peer_that_comes_up_gets_the_full_table_then_end_of_rib() -> None:
    r = reflector()
    up(r, C1)
    announce(r, C1, "198.19.1.0/24", "2001:db8:1::/48", next_hop="::ffff:198.18.0.1")
    r.flush()
    up(r, C2)
    cmds = r.flush()
    assert set(sent(cmds, C2)) == {"198.19.1.0/24", "2001:db8:1::/48"}
    assert cmds[-2:] == [SendEndOfRib(C2, "ipv4"), SendEndOfRib(C2, "ipv6")]


def test_families_follow_the_peers_open() -> None:
    r = reflector()
    up(r, C1)
    r.handle(PeerOpen(C2, C2, frozenset({"ipv4"})))
    r.handle(PeerUp(C2))
    announce(r, C1, "198.19.1.0/24", "2001:db8:1::/48")
    cmds = r.flush()
    assert set(sent(cmds, C2)) == {"198.19.1.0/24"}
    assert SendEndOfRib(C2, "ipv6") not in cmds


def test_reconnect_resends_and_withdraws_ghosts_queued_for_the_old_session() -> None:
    r = reflector()
    up(r, C1, C2)
    announce(r, C1, "198.19.1.0/24", "198.19.11.0/24")
    r.flush()
    r.handle(PeerDown(C2))
    r.handle(Update(C1, withdraw=(from_text("198.19.11.0/24"),)))
    assert sent(r.flush(), C2) == {}  # nothing to a peer that is down
    r.handle(PeerUp(C2))
    cmds = sent(r.flush(), C2)
    # the full table, and a withdrawal of what the old session was sent and is gone now
    assert cmds["198.19.1.0/24"] is not None and cmds["198.19.11.0/24"] is None


def test_route_refresh_resends_the_table_without_end_of_rib() -> None:
    r = reflector()
    up(r, C1, C2)
    announce(r, C1, "198.19.1.0/24")
    r.flush()
    r.handle(RouteRefresh(C2, "ipv4"))
    cmds = r.flush()
    assert set(sent(cmds, C2)) == {"198.19.1.0/24"}
    assert not any(isinstance(c, SendEndOfRib) for c in cmds)


def test_route_refresh_during_the_initial_table_keeps_its_end_of_rib() -> None:
    r = reflector()
    up(r, C1)
    announce(r, C1, *(f"198.19.{i}.0/24" for i in range(10)))
    r.flush()
    up(r, C2)
    cmds = r.flush(limit=3)  # the first part of C2's table
    r.handle(RouteRefresh(C2, "ipv4"))
    while r.pending:
        cmds += r.flush(limit=3)
    assert len(sent(cmds, C2)) == 10
    assert [c for c in cmds if isinstance(c, SendEndOfRib)] == [
        SendEndOfRib(C2, "ipv4"),
        SendEndOfRib(C2, "ipv6"),
    ]


def test_end_of_rib_acks_shutdown_and_unknown_peers_are_recorded() -> None:
    r = reflector()
    up(r, C1)
    r.handle(EndOfRib(C1, "ipv4"))
    assert r.peer_stats(C1).end_of_rib == {"ipv4"}
    r.handle(SpeakerAck(False))
    r.handle(SpeakerAck(True))
    assert r.command_errors == 1
    r.handle(PeerUp("198.18.9.9"))
    r.handle(Update("198.18.9.9"))
    assert r.unknown_peer_messages == 2
    r.handle(SpeakerShutdown())
    assert r.shutting_down


def test_update_from_a_peer_not_known_up_brings_it_up() -> None:
    r = reflector()
    up(r, C2)
    announce(r, C1, "198.19.1.0/24")
    assert r.peers[C1].established and "198.19.1.0/24" in sent(r.flush(), C2)


def test_unsupported_families_and_treat_as_withdraw_are_counted() -> None:
    r = reflector()
    up(r, C1, C2)
    announce(r, C1, "198.19.1.0/24")
    r.handle(Update(C1, withdraw=(from_text("198.19.1.0/24"),), unsupported=3, error="ORIGIN malformed"))
    st = r.peer_stats(C1)
    assert st.rejected["family"] == 3 and st.treat_as_withdraw == 1
    assert r.best == {}


def test_malformed_update_drops_the_peer_and_resets_its_session() -> None:
    r = reflector()
    up(r, C1, C2)
    announce(r, C1, "198.19.1.0/24")
    r.flush()
    r.handle(Malformed(C1, 3, 10, "bad prefix length"))
    cmds = r.flush()
    assert Teardown(C1, 10, 3) in cmds and sent(cmds, C2) == {"198.19.1.0/24": None}
    announce(r, C1, "198.19.2.0/24")  # in flight before the reset: ignored
    r.handle(Malformed(C1, 3, 10, "again"))
    assert r.flush() == [] and r.peer_stats(C1).malformed == 2
    r.handle(PeerDown(C1))
    up(r, C1)
    announce(r, C1, "198.19.2.0/24")
    assert "198.19.2.0/24" in sent(r.flush(), C2)


def test_prefix_filter_and_default_route() -> None:
    r = reflector({C1: PeerPolicy(PrefixFilter(["198.19.1.0/24 le 28"]))})
    up(r, C1, C2)
    announce(r, C1, "198.19.1.0/24", "198.19.1.16/28", "198.19.1.16/29", "198.19.2.0/24", "0.0.0.0/0")
    assert set(sent(r.flush(), C2)) == {"198.19.1.0/24", "198.19.1.16/28"}
    assert r.peer_stats(C1).rejected == {"not_allowed": 2, "default_route": 1}
    assert r.received(C1) == 5 and r.accepted(C1) == 2
    # an accepted prefix re-announced with a loop is withdrawn (implicit withdraw, then rejected)
    announce(r, C1, "198.19.1.0/24", cluster_list=("1.1.1.1",))
    assert sent(r.flush(), C2) == {"198.19.1.0/24": None}


def test_default_route_allowed_when_configured() -> None:
    r = reflector({C1: PeerPolicy(PrefixFilter(None, allow_default=True))})
    up(r, C1, C2)
    announce(r, C1, "0.0.0.0/0", "::/0", next_hop="::ffff:198.18.0.1")
    assert set(sent(r.flush(), C2)) == {"0.0.0.0/0", "::/0"}


def test_max_prefix_keep_rejects_the_excess_then_admits_waiting_prefixes() -> None:
    r = reflector({C1: PeerPolicy(PrefixFilter(), MaxPrefix(2, MaxPrefixAction.KEEP))})
    up(r, C1, C2)
    announce(r, C1, *(f"198.19.{i}.0/24" for i in range(4)))
    assert set(sent(r.flush(), C2)) == {"198.19.0.0/24", "198.19.1.0/24"}
    st = r.peer_stats(C1)
    assert (st.max_prefix_breaches, st.rejected["max_prefix"], r.accepted(C1), r.received(C1)) == (1, 2, 2, 4)
    announce(r, C1, "198.19.1.0/24", med=5)  # re-announcing an accepted one is no new prefix
    assert r.accepted(C1) == 2
    r.flush()
    r.handle(Update(C1, withdraw=(from_text("198.19.0.0/24"),)))
    assert sent(r.flush(), C2) == {
        "198.19.0.0/24": None,
        "198.19.2.0/24": r.adj_out(C2)[from_text("198.19.2.0/24")],
    }
    r.handle(Update(C1, withdraw=(from_text("198.19.1.0/24"),)))
    assert "198.19.3.0/24" in sent(r.flush(), C2)
    assert st.max_prefix_breaches == 1 and r.rejected(C1) == {}
    announce(r, C1, "198.19.7.0/24")  # a new episode is counted again
    assert st.max_prefix_breaches == 2


def test_max_prefix_keep_a_waiting_prefix_re_announced_with_a_loop_is_not_admitted() -> None:
    r = reflector({C1: PeerPolicy(PrefixFilter(), MaxPrefix(1, MaxPrefixAction.KEEP))})
    up(r, C1, C2)
    announce(r, C1, "198.19.0.0/24", "198.19.1.0/24")  # the second waits for room
    r.flush()
    # both replaced by looped announcements: the room freed by the first must not admit the
    # second's old path
    announce(r, C1, "198.19.0.0/24", "198.19.1.0/24", cluster_list=("1.1.1.1",))
    assert sent(r.flush(), C2) == {"198.19.0.0/24": None}
    assert r.best == {} and r.accepted(C1) == 0 and r.received(C1) == 2
    assert set(text_keys(r.rejected(C1)).values()) == {"cluster_loop"}


def test_max_prefix_teardown_drops_everything_and_closes_the_session() -> None:
    r = reflector({C1: PeerPolicy(PrefixFilter(), MaxPrefix(1, MaxPrefixAction.TEARDOWN))})
    up(r, C1, C2)
    r.flush()
    announce(r, C1, "198.19.0.0/24", "198.19.1.0/24")
    cmds = r.flush()
    assert cmds == [Teardown(C1, 1)]  # nothing reached C2: the first prefix was dropped too
    announce(r, C1, "198.19.5.0/24")  # still in flight until ExaBGP closes the session
    assert r.flush() == [] and r.snapshot()["peers"][0]["state"] == "blocked"
    r.handle(PeerDown(C1))
    up(r, C1)
    announce(r, C1, "198.19.5.0/24")
    assert "198.19.5.0/24" in sent(r.flush(), C2)


def test_flush_with_a_budget_sends_everything_eventually_and_in_chunks() -> None:
    r = reflector(chunk=100)
    up(r, C1, C2)
    prefixes = [f"198.19.{i // 256}.{i % 256}/32" for i in range(1000)]
    announce(r, C1, *prefixes)
    got: list[Command] = []
    while r.pending:
        got += r.flush(limit=250)
    anns = [c for c in got if isinstance(c, Announce) and c.peer == C2]
    assert all(len(c.prefixes) <= 100 for c in anns)
    assert sorted(to_text(p) for c in anns for p in c.prefixes) == sorted(prefixes)


def test_teardown_all_resets_every_session() -> None:
    r = reflector()
    r.teardown_all()
    assert r.flush() == [Teardown(p, 4) for p in (C1, C2, N1, E1)]


def test_constructor_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        Reflector(router_id="not-an-ip", asn=ASN, peers=[])
    with pytest.raises(ValueError):
        Reflector(router_id=ME, asn=ASN, peers=[PeerSpec("a", C1, ASN), PeerSpec("b", C1, ASN)])
    with pytest.raises(ValueError):
        Reflector(router_id=ME, asn=ASN, peers=[], chunk=0)


# -- model check ----------------------------------------------------------------------------------

PEERS = [C1, C2, N1, E1]
PREFIXES = ["198.19.1.0/24", "198.19.2.0/24", "2001:db8:1::/48", "198.19.3.0/24"]

event_st = st.one_of(
    st.tuples(st.just("up"), st.sampled_from(PEERS)),
    st.tuples(st.just("down"), st.sampled_from(PEERS)),
    st.tuples(
        st.just("announce"),
        st.sampled_from(PEERS),
        st.lists(st.sampled_from(PREFIXES), min_size=1, max_size=3, unique=True),
        st.sampled_from([None, 90, 100, 200]),
        st.sampled_from([(), ("1.1.1.1",), ("7.7.7.7",)]),
        st.sampled_from([None, C1, C2, ME]),
    ),
    st.tuples(st.just("withdraw"), st.sampled_from(PEERS), st.lists(st.sampled_from(PREFIXES), max_size=2)),
    st.tuples(st.just("refresh"), st.sampled_from(PEERS)),
    st.tuples(st.just("flush"), st.integers(1, 5)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(event_st, max_size=40))
def test_model_check_random_event_sequences(events: list[tuple[object, ...]]) -> None:
    r = reflector()
    held: dict[str, dict[Prefix, Attrs]] = {p: {} for p in PEERS}  # what each peer was told and keeps
    accepted: dict[str, dict[Prefix, Attrs]] = {p: {} for p in PEERS}  # what each peer's paths should be

    def apply(cmds: list[Command]) -> None:
        for c in cmds:
            assert not isinstance(c, Teardown)
            peer = r.peers[c.peer]
            assert peer.established, f"{c} to a peer that is down"
            if isinstance(c, Announce):
                for p in c.prefixes:
                    src, _ = r.best[p]
                    assert src is not peer, f"{p} sent back to its sender {peer}"
                    if peer.router_id is not None:
                        assert c.attrs.originator_id != peer.router_id, f"{p} sent to its originator"
                    if not src.ebgp and not peer.ebgp:
                        assert c.attrs.cluster_list[:1] == ("1.1.1.1",)
                        assert src.client or peer.client, "non-client to non-client"
                    held[c.peer][p] = c.attrs
            elif isinstance(c, Withdraw):
                for p in c.prefixes:
                    held[c.peer].pop(p, None)

    for ev in events:
        kind = ev[0]
        if kind == "up":
            peer = str(ev[1])
            held[peer] = {}  # a session (re)starts empty (an "up" while up: the reflector restarts it too)
            accepted[peer] = {}
            up(r, peer)
        elif kind == "down":
            r.handle(PeerDown(str(ev[1])))
            held[str(ev[1])] = {}
            accepted[str(ev[1])] = {}
        elif kind == "announce":
            _, peer, prefixes, lp, clusters, originator = ev
            peer = str(peer)
            for v6 in (False, True):  # one UPDATE per family, all its prefixes sharing attributes
                keys = tuple(from_text(p) for p in prefixes if (":" in p) == v6)  # type: ignore[attr-defined]
                if not keys:
                    continue
                nh = "::ffff:" + peer if v6 else peer
                a = Attrs(next_hop=nh, local_pref=lp, cluster_list=clusters, originator_id=originator)  # type: ignore[arg-type]
                r.handle(Update(peer, ((a, keys),)))
                loop = peer != E1 and ("1.1.1.1" in a.cluster_list or a.originator_id == ME)
                for k in keys:
                    if loop:
                        accepted[peer].pop(k, None)
                    else:
                        accepted[peer][k] = a
        elif kind == "withdraw":
            keys = tuple(map(from_text, ev[2]))  # type: ignore[call-overload]
            r.handle(Update(str(ev[1]), withdraw=keys))
            for k in keys:
                accepted[str(ev[1])].pop(k, None)
        elif kind == "refresh":
            r.handle(RouteRefresh(str(ev[1]), "ipv4"))
        else:
            while r.pending:
                apply(r.flush(limit=int(ev[1])))  # type: ignore[arg-type]
    while r.pending:
        apply(r.flush(limit=3))
    # every established peer holds exactly what the rules give for the current best paths
    for address, peer in r.peers.items():
        if not peer.established:
            continue
        want = {}
        families = r.families_of(address)
        for prefix, best in r.best.items():
            out = r.export(best, peer)
            if out is not None and family(prefix) in families:
                want[prefix] = out
        assert held[address] == want, f"{address}: {held[address]} != {want}"
        assert dict(r.adj_out(address)) == want
    # the RIB holds exactly the accepted paths, and each prefix's best is the selection's winner
    every = {k for paths in accepted.values() for k in paths}
    assert set(r.best) == every
    for k in every:
        want_paths = {r.peers[p]: paths[k] for p, paths in accepted.items() if k in paths}
        assert r.candidates(k) == want_paths, to_text(k)
        winner = r.selection.best(want_paths)
        assert r.best[k] == (winner, want_paths[winner])
    # no iBGP route with our cluster id, or our router id as originator, was ever accepted
    for prefix in r.best:
        for src, a in r.candidates(prefix).items():
            if not src.ebgp:
                assert "1.1.1.1" not in a.cluster_list and a.originator_id != ME, prefix
