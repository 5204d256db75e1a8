"""The reflector itself: RIBs, best paths, reflection rules and what to send to whom (pure).

``Reflector`` is told what happened (``events``) through :meth:`Reflector.handle` and asked what
to send through :meth:`Reflector.flush`. It does no I/O and keeps no clock: the API process
drives it from a reader thread and a writer thread; tests drive it directly.

State:

- Adj-RIB-In: per peer, the prefixes accepted from it. A prefix with one path (the common case:
  one originator, no second reflector) is kept only as its best path; ``paths[prefix][peer]``
  holds the candidates of prefixes that have several (one per peer: no ADD-PATH), so a peer's
  new announcement replaces its old one (implicit withdraw) and reselection looks at one prefix;
- Loc-RIB: ``best[prefix] = (peer, attrs)``, reselected (``bestpath``) whenever a prefix's
  candidates change; a prefix whose best path changed is marked dirty;
- Adj-RIB-Out: per peer, what it was last sent. :meth:`flush` computes, for every dirty prefix
  and every established peer, what the peer should have, compares it with what it has and emits
  only the difference, grouped into one ``Announce`` per (peer, attributes, family) with up to
  ``chunk`` prefixes, which ExaBGP packs into as few UPDATEs as fit.

Rules (RFC 4456 section 8, RFC 4271 9.1.3):

- a route from a client goes to every other peer, client or not; a route from a non-client goes
  to clients only; a route learnt over eBGP goes to every iBGP peer; the best route of every
  prefix goes to eBGP peers (with our AS prepended, next hop self, no LOCAL_PREF, MED,
  ORIGINATOR_ID or CLUSTER_LIST);
- a reflected route gets ORIGINATOR_ID (the BGP identifier of the peer it came from) unless it has
  one, and our CLUSTER_ID prepended to its CLUSTER_LIST; its next hop is left alone;
- never back to the peer it came from, never to the peer whose router id is its ORIGINATOR_ID;
- on receipt, a route whose CLUSTER_LIST holds our cluster id or whose ORIGINATOR_ID is our router
  id is a loop and is dropped (and so is an eBGP route with our AS in its path);
- only the best path is advertised: when it may not go to a peer (e.g. it came from there), the
  peer gets a withdrawal if it had something else before.

Sessions: when a peer's session goes down, everything learnt from it is withdrawn (reselected);
when it comes up, it gets the full table and then End-of-RIB for each family it negotiated. What
a peer was sent is forgotten when its session drops; prefixes it was sent before and that are no
longer to be announced when it comes back are withdrawn explicitly after the full table ("ghost"
withdrawals: commands written just before ExaBGP reported the drop may still sit in its queue for
that peer and be sent on the new session).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bgp.core.model import Role
from bgp.reflector.core.bestpath import Selection
from bgp.reflector.core.events import (
    Announce,
    Command,
    EndOfRib,
    Event,
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
from bgp.reflector.core.policy import DEFAULT_ROUTES, MaxPrefixAction, PeerPolicy, Reject
from bgp.reflector.core.prefix import V6, Prefix, to_text
from bgp.reflector.core.route import Attrs, Peer, ipv4_int

__all__ = ["CEASE_ADMIN_RESET", "CEASE_MAX_PREFIX", "PeerSpec", "PeerStats", "Reflector"]

log = logging.getLogger("netkit.bgp.reflector")

CEASE_MAX_PREFIX = 1  # RFC 4486: Maximum Number of Prefixes Reached
CEASE_ADMIN_RESET = 4  # RFC 4486: Administrative Reset

_MEMO_LIMIT = 1 << 16  # reflected-attribute memo entries before the memo is cleared
_FAMILIES = ("ipv4", "ipv6")

Best = tuple[Peer, Attrs]


@dataclass(frozen=True)
class PeerSpec:
    """A configured neighbour: ``role`` as in ``bgp.core.model`` (seen from the reflector)."""

    name: str
    address: str
    asn: int
    role: Role = Role.CLIENT
    policy: PeerPolicy = field(default_factory=PeerPolicy.open)


@dataclass
class PeerStats:
    """Counters and state of one peer (read by the metrics collector)."""

    state: str = "idle"  # idle | established | down
    updates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    max_prefix_breaches: int = 0
    transitions: Counter[str] = field(default_factory=Counter)  # up, down
    end_of_rib: set[str] = field(default_factory=set)  # families whose EoR arrived this session
    advertised_total: int = 0
    withdrawn_total: int = 0
    malformed: int = 0
    treat_as_withdraw: int = 0


@dataclass
class _Sync:
    """A full-table send in progress to one peer (it came up, or asked for a route refresh)."""

    keys: list[Prefix]
    pos: int = 0
    end_of_rib: bool = True


class _PeerState:
    __slots__ = (
        "adj_in",
        "adj_out",
        "blocked",
        "breached",
        "families",
        "ghosts",
        "over_limit",
        "policy",
        "rejected",
        "stats",
    )

    def __init__(self, policy: PeerPolicy) -> None:
        self.policy = policy
        self.adj_in: set[Prefix] = set()  # accepted prefixes (their paths are in Reflector.paths)
        self.rejected: dict[Prefix, Reject] = {}  # announced but not accepted, and why
        self.over_limit: dict[Prefix, Attrs] = {}  # max-prefix keep: waiting for room, in arrival order
        self.adj_out: dict[Prefix, Attrs] = {}  # what the peer was sent
        self.ghosts: set[Prefix] = set()  # sent before its session last dropped
        self.families: frozenset[str] = frozenset({"ipv4"})  # negotiated (from its OPEN)
        self.blocked = False  # torn down for max-prefix: ignore it until its session drops
        self.breached = False  # max-prefix keep: over the limit (logged once per episode)
        self.stats = PeerStats()


class Reflector:
    """See the module docstring. ``families``: the unicast families carried (``ipv4``, ``ipv6``)."""

    def __init__(
        self,
        *,
        router_id: str,
        asn: int,
        peers: Sequence[PeerSpec],
        cluster_id: str | None = None,
        local_address: str | None = None,
        local_address_v6: str | None = None,
        selection: Selection | None = None,
        families: Iterable[str] = _FAMILIES,
        chunk: int = 1000,
    ) -> None:
        ipv4_int(router_id)
        self.router_id = router_id
        self.cluster_id = cluster_id or router_id
        ipv4_int(self.cluster_id)
        self.asn = asn
        self.local_address = local_address or router_id
        self.local_address_v6 = local_address_v6
        self.selection = selection or Selection()
        self.families = frozenset(families)
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        self.chunk = chunk
        self.peers: dict[str, Peer] = {}
        self._state: dict[Peer, _PeerState] = {}
        for spec in peers:
            if spec.address in self.peers:
                raise ValueError(f"two peers with address {spec.address}")
            ebgp = spec.asn != asn
            peer = Peer(
                spec.name, spec.address, spec.asn, client=spec.role is Role.CLIENT and not ebgp, ebgp=ebgp
            )
            self.peers[spec.address] = peer
            self._state[peer] = _PeerState(spec.policy)
        self._order = sorted(self.peers.values(), key=lambda p: p.addr_key)
        self.paths: dict[Prefix, dict[Peer, Attrs]] = {}
        self.best: dict[Prefix, Best] = {}
        self._dirty: dict[Prefix, None] = {}
        self._syncs: dict[Peer, _Sync] = {}
        self._pending: list[Command] = []
        self._reflect_memo: dict[tuple[Peer, Attrs], Attrs] = {}
        self._ibgp_memo: dict[Attrs, Attrs] = {}
        self._ebgp_memo: dict[Attrs, Attrs | None] = {}
        # counters
        self.updates_processed = 0
        self.unknown_peer_messages = 0
        self.command_errors = 0
        self.shutting_down = False

    # -- reading state -------------------------------------------------------------------------

    def peer_stats(self, address: str) -> PeerStats:
        return self._state[self.peers[address]].stats

    def received(self, address: str) -> int:
        """Prefixes the peer currently announces (accepted or not)."""
        st = self._state[self.peers[address]]
        return len(st.adj_in) + len(st.rejected)

    def accepted(self, address: str) -> int:
        return len(self._state[self.peers[address]].adj_in)

    def advertised(self, address: str) -> int:
        return len(self._state[self.peers[address]].adj_out)

    def families_of(self, address: str) -> frozenset[str]:
        """The unicast families negotiated with the peer (from its OPEN)."""
        return self._state[self.peers[address]].families

    def adj_out(self, address: str) -> Mapping[Prefix, Attrs]:
        return self._state[self.peers[address]].adj_out

    def rejected(self, address: str) -> Mapping[Prefix, Reject]:
        return self._state[self.peers[address]].rejected

    @property
    def pending(self) -> bool:
        """Whether :meth:`flush` has anything to send."""
        return bool(self._dirty or self._syncs or self._pending)

    def established(self) -> list[Peer]:
        return [p for p in self._order if p.established]

    # -- events --------------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Apply one event. Events for unknown peers are counted and ignored."""
        if isinstance(event, SpeakerAck):
            if not event.ok:
                self.command_errors += 1
            return
        if isinstance(event, SpeakerShutdown):
            self.shutting_down = True
            return
        peer = self.peers.get(event.peer)
        if peer is None:
            self.unknown_peer_messages += 1
            log.warning("message about an unconfigured peer", extra={"peer": event.peer})
            return
        if isinstance(event, Update):
            self._update(peer, event)
        elif isinstance(event, PeerUp):
            self._up(peer)
        elif isinstance(event, PeerDown):
            self._down(peer, event.reason)
        elif isinstance(event, PeerOpen):
            peer.set_router_id(event.router_id)
            self._state[peer].families = event.families & self.families
        elif isinstance(event, EndOfRib):
            st = self._state[peer]
            st.stats.end_of_rib.add(event.family)
            log.info("end-of-rib received", extra={"peer": peer.address, "family": event.family})
        elif isinstance(event, RouteRefresh):
            self._refresh(peer)
        elif isinstance(event, Malformed):
            self._malformed(peer, event)

    def _malformed(self, peer: Peer, event: Malformed) -> None:
        st = self._state[peer]
        st.stats.malformed += 1
        log.warning(
            "malformed UPDATE: resetting the session",
            extra={
                "peer": peer.address,
                "neighbor": peer.name,
                "detail": event.detail,
                "notification": f"{event.code}/{event.subcode}",
            },
        )
        if st.blocked:
            return
        self._forget(peer, st)
        st.blocked = True
        self._pending.append(Teardown(peer.address, event.subcode, event.code))

    def _up(self, peer: Peer) -> None:
        st = self._state[peer]
        if peer.established:  # a second "up" without "down": start the session over
            self._down(peer, "up again without down")
        peer.established = True
        st.stats.state = "established"
        st.stats.transitions["up"] += 1
        st.stats.end_of_rib = set()
        self._syncs[peer] = _Sync(list(self.best))
        log.info(
            "session up", extra={"peer": peer.address, "neighbor": peer.name, "router_id": peer.router_id}
        )

    def _down(self, peer: Peer, reason: str) -> None:
        st = self._state[peer]
        was = peer.established
        peer.established = False
        st.blocked = False
        st.stats.state = "down"
        if was:
            st.stats.transitions["down"] += 1
        lost = self._forget(peer, st)
        log.info(
            "session down",
            extra={"peer": peer.address, "neighbor": peer.name, "reason": reason, "withdrawn": lost},
        )

    def _forget(self, peer: Peer, st: _PeerState) -> int:
        """Drop what the peer sent us and what we sent it; returns the prefixes withdrawn."""
        st.ghosts.update(st.adj_out)
        st.adj_out = {}
        self._syncs.pop(peer, None)
        self._pending = [c for c in self._pending if c.peer != peer.address]
        lost = len(st.adj_in)
        self._withdraw_all(peer, st)
        st.rejected.clear()
        st.over_limit.clear()
        st.breached = False
        return lost

    def _refresh(self, peer: Peer) -> None:
        if not peer.established:
            return
        st = self._state[peer]
        st.ghosts.update(st.adj_out)
        st.adj_out = {}
        # a refresh during the table sent when the session came up still ends with its End-of-RIB
        prev = self._syncs.get(peer)
        self._syncs[peer] = _Sync(list(self.best), end_of_rib=prev is not None and prev.end_of_rib)

    def _withdraw_all(self, peer: Peer, st: _PeerState) -> None:
        drop = self._drop
        for p in st.adj_in:
            drop(peer, p)
        st.adj_in = set()

    def _drop(self, peer: Peer, p: Prefix) -> None:
        """Remove ``peer``'s path for ``p`` (it has one) and reselect."""
        cands = self.paths.get(p)
        if cands is None:  # it was the only path
            del self.best[p]
            self._dirty[p] = None
            return
        del cands[peer]
        if len(cands) == 1:
            del self.paths[p]
        if self.best[p][0] is peer:
            self._reselect(p, cands)

    def _reselect(self, prefix: Prefix, cands: dict[Peer, Attrs]) -> None:
        if len(cands) == 1:
            new = next(iter(cands.items()))
        else:
            winner = self.selection.best(cands)
            new = (winner, cands[winner])
        old = self.best.get(prefix)
        if old is None or old[0] is not new[0] or old[1] is not new[1]:
            self.best[prefix] = new
            self._dirty[prefix] = None

    def candidates(self, prefix: Prefix) -> dict[Peer, Attrs]:
        """Every accepted path for ``prefix`` (a copy)."""
        cands = self.paths.get(prefix)
        if cands is not None:
            return dict(cands)
        b = self.best.get(prefix)
        return {} if b is None else {b[0]: b[1]}

    def _loop(self, peer: Peer, attrs: Attrs) -> Reject | None:
        if peer.ebgp:  # ORIGINATOR_ID and CLUSTER_LIST mean nothing from another AS (dropped on export)
            return Reject.AS_LOOP if self.asn in attrs.as_path or self.asn in attrs.as_set else None
        if self.cluster_id in attrs.cluster_list:
            return Reject.CLUSTER_LOOP
        if attrs.originator_id == self.router_id:
            return Reject.ORIGINATOR_LOOP
        return None

    def _update(self, peer: Peer, upd: Update) -> None:
        st = self._state[peer]
        self.updates_processed += 1
        st.stats.updates += 1
        if st.blocked:
            return
        if not peer.established:
            # ExaBGP reports "up" before any UPDATE; be lenient if that message went missing
            log.warning("update from a peer not known to be up", extra={"peer": peer.address})
            self._up(peer)
        if upd.unsupported:
            st.stats.rejected[Reject.FAMILY] += upd.unsupported
        if upd.error is not None:
            st.stats.treat_as_withdraw += 1
            log.warning(
                "UPDATE treated as withdraw (RFC 7606)",
                extra={"peer": peer.address, "error": upd.error, "prefixes": len(upd.withdraw)},
            )
        if upd.withdraw:
            self._withdraw(peer, st, upd.withdraw)
        for attrs, prefixes in upd.announce:
            self._announce(peer, st, attrs, prefixes)
            if st.blocked:
                return

    def _withdraw(self, peer: Peer, st: _PeerState, prefixes: Iterable[Prefix]) -> None:
        adj_in, paths, best, dirty = st.adj_in, self.paths, self.best, self._dirty
        for p in prefixes:
            if p in adj_in:
                adj_in.discard(p)
                if p not in paths:  # the only path: the common case, inlined
                    del best[p]
                    dirty[p] = None
                else:
                    self._drop(peer, p)
            elif st.rejected:
                st.rejected.pop(p, None)
                st.over_limit.pop(p, None)
        if st.over_limit:
            self._admit_waiting(peer, st)

    def _reject(self, peer: Peer, st: _PeerState, prefixes: Iterable[Prefix], reason: Reject) -> None:
        """Record rejections; a prefix accepted before from this peer is withdrawn (its new
        announcement replaced the old one and is not accepted, and so is one waiting for room
        under max-prefix keep: its old attributes must not be admitted later)."""
        if st.over_limit:
            for p in prefixes:
                st.over_limit.pop(p, None)
        accepted = [p for p in prefixes if p in st.adj_in]
        if accepted:
            self._withdraw(peer, st, accepted)
        count = 0
        for p in prefixes:
            st.rejected[p] = reason
            count += 1
        st.stats.rejected[reason] += count

    def _announce(self, peer: Peer, st: _PeerState, attrs: Attrs, prefixes: Sequence[Prefix]) -> None:
        loop = self._loop(peer, attrs)
        if loop is not None:
            self._reject(peer, st, prefixes, loop)
            log.info(
                "routes dropped: loop",
                extra={
                    "peer": peer.address,
                    "reason": str(loop),
                    "prefixes": len(prefixes),
                    "first": to_text(prefixes[0]),
                },
            )
            return
        flt = st.policy.prefixes
        limit = st.policy.max_prefix
        paths, best, dirty, adj_in = self.paths, self.best, self._dirty, st.adj_in
        best_get = best.get
        mine = (peer, attrs)  # one tuple shared by every prefix of this announcement
        bad: dict[Reject, list[Prefix]] = {}
        simple = flt.blocks is None and limit is None and not st.rejected
        if simple and not flt.allow_default and any(d in prefixes for d in DEFAULT_ROUTES):
            simple = False
        if simple:  # no filter to check, no limit, nothing rejected before: the bulk path
            adj_in.update(prefixes)
        check = flt.check
        for p in prefixes:
            if not simple:
                reason = check(p)
                if reason is not None:
                    bad.setdefault(reason, []).append(p)
                    continue
                if limit is not None and p not in adj_in and len(adj_in) >= limit.limit:
                    if self._breach(peer, st, p, attrs):
                        return  # torn down: nothing more from this peer
                    continue
                if st.rejected:
                    st.rejected.pop(p, None)
                    st.over_limit.pop(p, None)
                adj_in.add(p)
            b = best_get(p)
            if b is None:  # a new prefix
                best[p] = mine
                dirty[p] = None
            elif b[0] is peer and p not in paths:  # our own, only path: replaced
                if b[1] is not attrs:
                    best[p] = mine
                    dirty[p] = None
            else:  # more than one peer has a path
                cands = paths.get(p)
                if cands is None:
                    cands = paths[p] = {b[0]: b[1]}
                elif cands.get(peer) is attrs:
                    continue  # the same announcement again
                cands[peer] = attrs
                self._reselect(p, cands)
        for reason, ps in bad.items():
            self._reject(peer, st, ps, reason)
            log.info(
                "prefixes rejected by policy",
                extra={
                    "peer": peer.address,
                    "reason": str(reason),
                    "prefixes": len(ps),
                    "first": to_text(ps[0]),
                },
            )

    def _breach(self, peer: Peer, st: _PeerState, prefix: Prefix, attrs: Attrs) -> bool:
        """A prefix over the peer's limit; True if the session is being torn down."""
        limit = st.policy.max_prefix
        assert limit is not None
        if limit.action is MaxPrefixAction.TEARDOWN:
            st.stats.max_prefix_breaches += 1
            st.stats.rejected[Reject.MAX_PREFIX] += 1
            log.warning(
                "max-prefix exceeded: tearing the session down",
                extra={
                    "peer": peer.address,
                    "neighbor": peer.name,
                    "limit": limit.limit,
                    "prefix": to_text(prefix),
                },
            )
            # its routes go now; the session is closed by ExaBGP, which then reports it down
            self._forget(peer, st)
            st.blocked = True
            self._pending.append(Teardown(peer.address, CEASE_MAX_PREFIX))
            return True
        if not st.breached:
            st.breached = True
            st.stats.max_prefix_breaches += 1
            log.warning(
                "max-prefix exceeded: prefixes over the limit are rejected, session kept",
                extra={
                    "peer": peer.address,
                    "neighbor": peer.name,
                    "limit": limit.limit,
                    "prefix": to_text(prefix),
                },
            )
        st.over_limit[prefix] = attrs
        st.rejected[prefix] = Reject.MAX_PREFIX
        st.stats.rejected[Reject.MAX_PREFIX] += 1
        return False

    def _admit_waiting(self, peer: Peer, st: _PeerState) -> None:
        """Max-prefix keep: room freed by withdrawals goes to waiting prefixes, oldest first."""
        limit = st.policy.max_prefix
        if limit is None:
            return
        while st.over_limit and len(st.adj_in) < limit.limit:
            prefix = next(iter(st.over_limit))
            attrs = st.over_limit.pop(prefix)
            del st.rejected[prefix]
            self._announce(peer, st, attrs, (prefix,))
        if not st.over_limit:
            st.breached = False

    # -- commands ------------------------------------------------------------------------------

    def _reflected(self, src: Peer, attrs: Attrs) -> Attrs:
        key = (src, attrs)
        out = self._reflect_memo.get(key)
        if out is None:
            if len(self._reflect_memo) >= _MEMO_LIMIT:
                self._reflect_memo.clear()
            out = attrs.evolve(
                originator_id=attrs.originator_id or src.router_id or src.address,
                cluster_list=(self.cluster_id, *attrs.cluster_list),
            )
            self._reflect_memo[key] = out
        return out

    def _to_ibgp_from_ebgp(self, attrs: Attrs) -> Attrs:
        out = self._ibgp_memo.get(attrs)
        if out is None:
            if len(self._ibgp_memo) >= _MEMO_LIMIT:
                self._ibgp_memo.clear()
            # RFC 4456 attributes are non-transitive: an eBGP peer has no business sending them
            out = attrs.evolve(
                local_pref=self.selection.local_pref(attrs), originator_id=None, cluster_list=()
            )
            self._ibgp_memo[attrs] = out
        return out

    def _to_ebgp(self, attrs: Attrs) -> Attrs | None:
        if attrs in self._ebgp_memo:
            return self._ebgp_memo[attrs]
        if ":" in attrs.next_hop:
            v4_session = ":" not in self.local_address
            nh = self.local_address_v6 or ("::ffff:" + self.local_address if v4_session else None)
        else:
            nh = self.local_address if ":" not in self.local_address else None
        out = None
        if nh is not None:
            out = attrs.evolve(
                next_hop=nh,
                as_path=(self.asn, *attrs.as_path),
                local_pref=None,
                med=None,
                originator_id=None,
                cluster_list=(),
            )
        if len(self._ebgp_memo) >= _MEMO_LIMIT:
            self._ebgp_memo.clear()
        self._ebgp_memo[attrs] = out
        return out

    def export(self, best: Best, dst: Peer) -> Attrs | None:
        """What ``dst`` should be sent for a prefix whose best path is ``best`` (None: nothing)."""
        src, attrs = best
        if src is dst:
            return None
        if dst.ebgp:
            if dst.asn in attrs.as_path or dst.asn in attrs.as_set:
                return None
            return self._to_ebgp(attrs)
        if src.ebgp:
            return self._to_ibgp_from_ebgp(attrs)
        if not (src.client or dst.client):
            return None  # non-client to non-client: the iBGP mesh rule
        out = self._reflected(src, attrs)
        if dst.router_id is not None and out.originator_id == dst.router_id:
            return None
        return out

    def flush(self, limit: int | None = None) -> list[Command]:
        """Commands that bring every established peer's Adj-RIB-Out up to date.

        With ``limit``, at most about that many prefixes are looked at per call (call again while
        :attr:`pending`), so a writer can send the first commands while later ones are computed.
        """
        budget = limit if limit is not None else 1 << 62
        commands: list[Command] = self._pending
        self._pending = []
        ann: dict[tuple[Peer, Attrs, bool], list[Prefix]] = {}
        wd: dict[tuple[Peer, bool], list[Prefix]] = {}
        eors: list[Command] = []
        for peer in list(self._syncs):
            if budget <= 0:
                break
            budget -= self._sync_step(peer, ann, wd, eors, budget)
        if budget > 0 and self._dirty:
            budget = self._dirty_step(ann, wd, budget)
        chunk = self.chunk
        for (peer, _v6), prefixes in wd.items():
            st = self._state[peer]
            st.stats.withdrawn_total += len(prefixes)
            for i in range(0, len(prefixes), chunk):
                commands.append(Withdraw(peer.address, tuple(prefixes[i : i + chunk])))
        for (peer, attrs, _v6), prefixes in ann.items():
            self._state[peer].stats.advertised_total += len(prefixes)
            for i in range(0, len(prefixes), chunk):
                commands.append(Announce(peer.address, attrs, tuple(prefixes[i : i + chunk])))
        commands.extend(eors)
        return commands

    def _dirty_step(
        self,
        ann: dict[tuple[Peer, Attrs, bool], list[Prefix]],
        wd: dict[tuple[Peer, bool], list[Prefix]],
        budget: int,
    ) -> int:
        dirty = self._dirty
        if len(dirty) <= budget:
            batch = list(dirty)
            dirty.clear()
        else:
            batch = []
            it = iter(dirty)
            for _ in range(budget):
                batch.append(next(it))
            for p in batch:
                del dirty[p]
        targets = [
            (peer, self._state[peer])
            for peer in self._order
            if peer.established and not self._state[peer].blocked
        ]
        if targets:
            groups = _group(batch, self.best.get)
            for peer, st in targets:
                self._send(peer, st, groups, ann, wd, withdraw=True)
        return budget - len(batch)

    def _send(
        self,
        peer: Peer,
        st: _PeerState,
        groups: dict[tuple[Best | None, bool], list[Prefix]],
        ann: dict[tuple[Peer, Attrs, bool], list[Prefix]],
        wd: dict[tuple[Peer, bool], list[Prefix]],
        withdraw: bool,
    ) -> None:
        """Bring ``peer``'s Adj-RIB-Out up to date for ``groups`` (prefixes grouped by best path
        and family, so the rules run once per group, not once per prefix)."""
        adj = st.adj_out
        fams = st.families
        v4ok, v6ok = "ipv4" in fams, "ipv6" in fams
        export = self.export
        for (best, v6), prefixes in groups.items():
            new = export(best, peer) if best is not None and (v6ok if v6 else v4ok) else None
            if new is None:
                if withdraw and adj:
                    pop = adj.pop
                    gone = [p for p in prefixes if pop(p, None) is not None]
                    if gone:
                        wd.setdefault((peer, v6), []).extend(gone)
                continue
            get = adj.get
            changed = [p for p in prefixes if (cur := get(p)) is None or (cur is not new and cur != new)]
            if changed:
                adj.update(dict.fromkeys(changed, new))
                ann.setdefault((peer, new, v6), []).extend(changed)

    def _sync_step(
        self,
        peer: Peer,
        ann: dict[tuple[Peer, Attrs, bool], list[Prefix]],
        wd: dict[tuple[Peer, bool], list[Prefix]],
        eors: list[Command],
        budget: int,
    ) -> int:
        """Send the next part of the full table to ``peer``; returns the prefixes looked at."""
        sync = self._syncs[peer]
        st = self._state[peer]
        adj = st.adj_out
        fams = st.families
        end = min(len(sync.keys), sync.pos + budget)
        self._send(peer, st, _group(sync.keys[sync.pos : end], self.best.get), ann, wd, withdraw=False)
        looked = end - sync.pos
        sync.pos = end
        if sync.pos >= len(sync.keys):
            del self._syncs[peer]
            ghosts = [p for p in st.ghosts if p not in adj]
            st.ghosts = set()
            for p in ghosts:
                wd.setdefault((peer, p[0] == V6), []).append(p)
            if sync.end_of_rib:
                eors.extend(SendEndOfRib(peer.address, fam) for fam in _FAMILIES if fam in fams)
        return max(looked, 1)

    def snapshot(self) -> dict[str, Any]:
        """Plain data for metrics and the status page."""
        v6 = sum(1 for p in self.best if p[0] == V6)
        peers = []
        for peer in self._order:
            st = self._state[peer]
            peers.append(
                {
                    "name": peer.name,
                    "address": peer.address,
                    "asn": peer.asn,
                    "kind": "ebgp" if peer.ebgp else ("client" if peer.client else "non-client"),
                    "state": "blocked" if st.blocked else st.stats.state,
                    "router_id": peer.router_id,
                    "families": sorted(st.families),
                    "received": len(st.adj_in) + len(st.rejected),
                    "accepted": len(st.adj_in),
                    "advertised": len(st.adj_out),
                    "rejected": dict(st.stats.rejected),
                    "max_prefix_breaches": st.stats.max_prefix_breaches,
                    "malformed": st.stats.malformed,
                    "treat_as_withdraw": st.stats.treat_as_withdraw,
                    "updates": st.stats.updates,
                    "transitions": dict(st.stats.transitions),
                    "end_of_rib": sorted(st.stats.end_of_rib),
                    "announced_total": st.stats.advertised_total,
                    "withdrawn_total": st.stats.withdrawn_total,
                }
            )
        return {
            "router_id": self.router_id,
            "cluster_id": self.cluster_id,
            "asn": self.asn,
            "routes": {"ipv4": len(self.best) - v6, "ipv6": v6},
            "updates_processed": self.updates_processed,
            "unknown_peer_messages": self.unknown_peer_messages,
            "command_errors": self.command_errors,
            "peers": peers,
        }

    def teardown_all(self) -> None:
        """Reset every session (an API process started while ExaBGP already had sessions up
        knows nothing of them: resetting makes every peer send its table again)."""
        for peer in self._order:
            self._pending.append(Teardown(peer.address, CEASE_ADMIN_RESET))


def _group(
    prefixes: Iterable[Prefix], best_get: Callable[[Prefix], Best | None]
) -> dict[tuple[Best | None, bool], list[Prefix]]:
    """Prefixes by (best path, IPv6?): a bulk change has a handful of groups for many prefixes."""
    groups: dict[tuple[Best | None, bool], list[Prefix]] = {}
    for p in prefixes:
        key = (best_get(p), p[0] == V6)
        g = groups.get(key)
        if g is None:
            groups[key] = [p]
        else:
            g.append(p)
    return groups
