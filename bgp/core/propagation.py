"""A model of iBGP route propagation over a session set (pure), to check plans before deploying.

Each node originates one route; a node advertises only its best path (shortest CLUSTER_LIST,
then lowest neighbour name), following RFC 4271's iBGP rule (no re-advertisement of iBGP
routes) and RFC 4456's reflection rules (from a client: to everyone but the sender; from a
non-client: to clients only; drop on own cluster id in CLUSTER_LIST or own ORIGINATOR_ID).
The planner's tests use it to prove every node learns every route, also with any one
reflector down; the live lab proves the same with real speakers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bgp.core.model import Session, SessionKind

__all__ = ["Path", "missing_routes", "propagate"]


@dataclass(frozen=True, order=True)
class Path:
    cluster_list: tuple[str, ...]
    sender: str  # "" when originated locally
    originator: str


def propagate(
    nodes: Iterable[str],
    sessions: Iterable[Session],
    cluster_ids: Mapping[str, str],
    origin: str,
    down: frozenset[str] = frozenset(),
) -> dict[str, Path]:
    """The best path to ``origin``'s route at every node that learns it (``down`` nodes are gone)."""
    up = [n for n in nodes if n not in down]
    clients: dict[str, set[str]] = {n: set() for n in up}
    neighbours: dict[str, set[str]] = {n: set() for n in up}
    for s in sessions:
        if s.a in down or s.b in down or s.a not in clients or s.b not in clients:
            continue
        neighbours[s.a].add(s.b)
        neighbours[s.b].add(s.a)
        if s.kind is SessionKind.RR:
            clients[s.a].add(s.b)
    if origin in down:
        return {}
    best: dict[str, Path] = {origin: Path((), "", origin)}
    changed = True
    while changed:
        changed = False
        for x in sorted(best):
            path = best[x]
            if path.sender == "":
                targets = neighbours[x]
                cl: tuple[str, ...] = ()
            elif not clients[x]:
                continue  # plain iBGP speaker: never re-advertises iBGP routes
            else:
                cid = cluster_ids.get(x, x)
                cl = (cid, *path.cluster_list)
                targets = (neighbours[x] - {path.sender}) if path.sender in clients[x] else set(clients[x])
            for z in sorted(targets):
                if z == path.originator or cluster_ids.get(z, "\x00") in cl:
                    continue
                candidate = Path(cl, x, path.originator)
                if z == origin:
                    continue
                current = best.get(z)
                if current is None or (len(candidate.cluster_list), candidate.sender) < (
                    len(current.cluster_list),
                    current.sender,
                ):
                    best[z] = candidate
                    changed = True
    return best


def missing_routes(
    nodes: Iterable[str],
    sessions: Iterable[Session],
    cluster_ids: Mapping[str, str],
    down: frozenset[str] = frozenset(),
) -> dict[str, set[str]]:
    """For each live node, the origins whose route it never learns (empty dict: all complete)."""
    names = sorted(nodes)
    session_list = list(sessions)
    learnt: dict[str, set[str]] = {n: {n} for n in names if n not in down}
    for origin in names:
        for node in propagate(names, session_list, cluster_ids, origin, down):
            learnt[node].add(origin)
    want = {n for n in names if n not in down}
    return {n: want - got for n, got in learnt.items() if want - got}
