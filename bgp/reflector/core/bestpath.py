"""Best-path selection: RFC 4271 9.1 with RFC 4456 9's additions (pure).

The candidates for one prefix (one path per peer: no ADD-PATH) go through the RFC's elimination
steps in order:

1. highest LOCAL_PREF (a route without one, learnt over eBGP, gets ``default_local_pref``);
2. shortest AS_PATH (an AS_SET counts as one);
3. lowest ORIGIN (IGP < EGP < INCOMPLETE);
4. lowest MED, compared only between routes from the same neighbour AS (the first AS of the
   path; an empty path is the local AS); a missing MED is 0;
5. eBGP-learnt over iBGP-learnt;
6. lowest IGP cost to the next hop, when known (``igp_cost``; unknown costs rank after known);
7. lowest BGP identifier, where a reflected route's ORIGINATOR_ID stands for it (RFC 4456);
8. shortest CLUSTER_LIST (RFC 4456);
9. lowest peer address.

Steps 1-3 and 5-9 compare each route on its own values, so they are a strict total order on one
prefix's candidates (the peer address differs between any two). Step 4 is not a pairwise order
(MED is not transitive across neighbour ASes), which is why selection is done as the RFC words
it, as elimination over the whole set rather than by pairwise comparisons in arrival order: the
result depends only on the set of candidates, never on the order they arrived in.
"""

from __future__ import annotations

from collections.abc import Mapping

from bgp.reflector.core.route import Attrs, Peer, ipv4_int

__all__ = ["DEFAULT_LOCAL_PREF", "Selection"]

DEFAULT_LOCAL_PREF = 100
_UNKNOWN_COST = 1 << 32

PreKey = tuple[int, int, int]
PostKey = tuple[int, int, int, int, tuple[int, int]]


class Selection:
    """The selection procedure with its context (IGP costs, default LOCAL_PREF)."""

    def __init__(
        self, igp_cost: Mapping[str, int] | None = None, default_local_pref: int = DEFAULT_LOCAL_PREF
    ):
        self.igp_cost = dict(igp_cost or {})
        self.default_local_pref = default_local_pref

    def local_pref(self, attrs: Attrs) -> int:
        return attrs.local_pref if attrs.local_pref is not None else self.default_local_pref

    def pre_key(self, attrs: Attrs) -> PreKey:
        """Steps 1-3 (lower is better)."""
        return (-self.local_pref(attrs), attrs.as_path_length, attrs.origin)

    def post_key(self, peer: Peer, attrs: Attrs) -> PostKey:
        """Steps 5-9 (lower is better)."""
        ident = ipv4_int(attrs.originator_id) if attrs.originator_id is not None else peer.router_id_int
        return (
            1 if not peer.ebgp else 0,
            self.igp_cost.get(attrs.next_hop, _UNKNOWN_COST),
            ident,
            len(attrs.cluster_list),
            peer.addr_key,
        )

    def order_key(self, peer: Peer, attrs: Attrs) -> tuple[PreKey, PostKey]:
        """Steps 1-3 and 5-9 as one key: the total order used wherever MED does not decide."""
        return (self.pre_key(attrs), self.post_key(peer, attrs))

    def best(self, candidates: Mapping[Peer, Attrs]) -> Peer:
        """The peer whose path wins; ``candidates`` must not be empty."""
        if len(candidates) == 1:
            return next(iter(candidates))
        items = list(candidates.items())
        pre = [self.pre_key(a) for _, a in items]
        top = min(pre)
        remaining = [item for item, key in zip(items, pre, strict=True) if key == top]
        if len(remaining) > 1:
            lowest: dict[int | None, int] = {}
            for _, a in remaining:
                med = a.med or 0
                nas = a.neighbor_as
                if med < lowest.get(nas, med + 1):
                    lowest[nas] = med
            remaining = [(p, a) for p, a in remaining if (a.med or 0) == lowest[a.neighbor_as]]
        return min(remaining, key=lambda item: self.post_key(*item))[0]
