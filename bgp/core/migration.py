"""Make-before-break migration between two plans (pure): the steps and the checks between them.

Every step is a complete session set (with cluster ids), so each node's speaker config for a
step is ``speakers_for(inventory, step.sessions, step.cluster_ids)``. Order:

1. **add**: sessions the target has and the current topology lacks (nothing is lost by adding
   a session), first between nodes that had none, then beside old ones. A pair whose session
   changes kind (mesh peer -> reflector client) gets its new session *beside* the old one, on
   the nodes' alternate addresses: BIRD and FRR
   both reset a session whose reflector-client flag changes (measured: BIRD 2.0.12 dropped the
   peer's prefix for 3+ s), and in a mesh the two ends' own prefixes ride only on that session;
2. **reflect**: only for pairs without alternate addresses: flip in place, one reflector at a
   time (and cluster-id changes), accepting the reset;
3. **retire**: the old session of each pair that got a new one beside it (in batches): while
   both exist a reflector prefers the old path (lower neighbour address), and a path from a
   plain peer is reflected to clients only, so the other reflectors would never hear it;
4. **gate**: wait until every node has every prefix over a session of the *target* topology;
5. **remove**: the other old sessions in batches, the check after every batch: nothing missing;
6. **unreflect**: in-place flips that remove reflection, one reflector at a time, last.

The reverse migration (reflectors -> mesh) and plan changes (nodes or reflectors added or
removed) are the same algorithm with other inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from bgp.core.model import NodeInfo, Session, SessionKind
from bgp.core.planner import SessionPlan

__all__ = ["Expect", "Step", "expectations", "migration_steps", "realize", "unmet"]

StepKind = Literal["add", "reflect", "retire", "gate", "remove", "unreflect"]


@dataclass(frozen=True)
class Step:
    kind: StepKind
    title: str
    sessions: frozenset[Session]  # the whole topology once this step is applied
    cluster_ids: Mapping[str, str] = field(default_factory=dict)
    touched: tuple[str, ...] = ()  # nodes whose config changes in this step

    def __str__(self) -> str:
        return f"{self.kind}: {self.title}"


def _touched(before: Iterable[Session], after: Iterable[Session]) -> tuple[str, ...]:
    delta = set(before) ^ set(after)
    return tuple(sorted({n for s in delta for n in (s.a, s.b)}))


def realize(
    current: SessionPlan, target: SessionPlan, alt_nodes: frozenset[str] | None = None
) -> tuple[set[Session], dict[frozenset[str], Session]]:
    """Where each target session will run, and the sessions that must be flipped in place.

    A target session identical to a current one (same ends and kind) stays on its address pair.
    A pair that changes kind gets a new session on the other address pair when both nodes have
    an alternate address (``alt_nodes``; None: all have), else it is flipped in place: BIRD and
    FRR reset a session whose reflector-client flag changes, which loses the routes only that
    session carried until it is back.
    """
    by_pair: dict[frozenset[str], list[Session]] = {}
    for c in current.sessions:
        by_pair.setdefault(c.pair, []).append(c)
    realized: set[Session] = set()
    flips: dict[frozenset[str], Session] = {}
    for t in sorted(target.sessions):
        olds = by_pair.get(t.pair, [])
        same = [c for c in olds if (c.a, c.b, c.kind) == (t.a, t.b, t.kind)]
        if same:
            realized.add(same[0])
        elif not olds:
            realized.add(t)
        else:
            used = {c.alt for c in olds}
            free = [alt for alt in (False, True) if alt not in used]
            can_alt = alt_nodes is None or t.pair <= alt_nodes
            if free and (can_alt or free == [False]):
                realized.add(t.on(free[0]))
            else:
                flipped = t.on(olds[0].alt)
                realized.add(flipped)
                flips[t.pair] = flipped
    return realized, flips


def migration_steps(
    current: SessionPlan, target: SessionPlan, batch: int = 10, alt_nodes: frozenset[str] | None = None
) -> list[Step]:
    """The steps from ``current`` to ``target``; an empty list when there is nothing to do.

    The last step's session set is where the target runs (``realize``): it can differ from
    ``target.sessions`` in which address pair a session uses.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    realized, flips = realize(current, target, alt_nodes)
    now = set(current.sessions)
    steps: list[Step] = []
    cids_now: dict[str, str] = dict(current.cluster_ids)

    def push(kind: StepKind, title: str, new: set[Session], ids: Mapping[str, str] | None = None) -> None:
        nonlocal now, cids_now
        touched = set(_touched(now, new))
        if ids is not None:
            touched |= {n for n in ids if ids.get(n) != cids_now.get(n)}
            cids_now = dict(ids)
        if not touched:
            return
        steps.append(Step(kind, title, frozenset(new), dict(cids_now), tuple(sorted(touched))))
        now = set(new)

    flipped_slots = {f.slot for f in flips.values()}
    # 1. add: sessions between nodes that had none first, then those beside an old session of
    # the same pair. A reflector that gains a plain session to its own client prefers that path
    # (lower neighbour address) and stops reflecting the client's routes to other reflectors:
    # by then they must hold them over their own new sessions.
    fresh = {s for s in realized if s not in now and s.slot not in flipped_slots}
    old_pairs = {s.pair for s in now}
    ids = {**cids_now, **{r: c for r, c in target.cluster_ids.items() if r not in cids_now}}
    for part, where in (
        ({s for s in fresh if s.pair not in old_pairs}, "between nodes without one"),
        ({s for s in fresh if s.pair in old_pairs}, "beside old ones"),
    ):
        if part:
            alt = sum(1 for s in part if s.alt)
            push("add", f"{len(part)} new sessions {where} ({alt} on alternate addresses)", now | part, ids)
    # 2. reflect: in-place flips that add reflection and cluster-id changes, one reflector at a time
    gaining: dict[str, set[Session]] = {}
    for f in flips.values():
        if f.kind is SessionKind.RR:
            gaining.setdefault(f.a, set()).add(f)
    recluster = {r for r, c in target.cluster_ids.items() if r in cids_now and cids_now[r] != c}
    for r in sorted(set(gaining) | recluster):
        mine = gaining.get(r, set())
        slots = {f.slot for f in mine}
        new = {s for s in now if s.slot not in slots} | mine
        ids = {**cids_now, r: target.cluster_ids.get(r, cids_now.get(r, ""))}
        push("reflect", f"{r} reflects to {len(mine)} clients in place (sessions reset)", new, ids)
    # 3. retire the old session of every pair that now has its new one beside it: a reflector
    # prefers the old path (same route, lower neighbour address) and, when that path is a plain
    # peer's, reflects it to clients only, so nothing reaches the other reflectors until it goes
    realized_pairs = {s.pair for s in realized}
    gone = sorted(s for s in now if s not in realized and s.slot not in flipped_slots)
    superseded = [s for s in gone if s.pair in realized_pairs]
    for i in range(0, len(superseded), batch):
        part = set(superseded[i : i + batch])
        title = f"{len(part)} sessions replaced by new ones ({i + len(part)}/{len(superseded)})"
        push("retire", title, now - part)
    # 4. gate
    steps.append(
        Step("gate", "every node learns every prefix over target sessions", frozenset(now), dict(cids_now))
    )
    # 5. remove the rest, in batches
    rest = [s for s in gone if s.pair not in realized_pairs]
    for i in range(0, len(rest), batch):
        part = set(rest[i : i + batch])
        push("remove", f"{len(part)} old sessions ({i + len(part)}/{len(rest)})", now - part)
    # 6. unreflect: in-place flips that remove reflection, one reflector at a time
    losing: dict[str, set[Session]] = {}
    for s in now:
        want = flips.get(s.pair)
        if want is not None and want != s and s.kind is SessionKind.RR:
            losing.setdefault(s.a, set()).add(want)
    for r in sorted(losing):
        slots = {f.slot for f in losing[r]}
        new = {s for s in now if s.slot not in slots} | losing[r]
        push("unreflect", f"{r} stops reflecting to {len(slots)} peers in place (sessions reset)", new)
    if now != realized:  # pragma: no cover - the steps above are complete
        raise AssertionError("migration steps do not reach the target")
    if all(s.kind == "gate" for s in steps):
        return []
    return steps


@dataclass(frozen=True)
class Expect:
    """``node`` must hold a path for ``prefix`` learnt from one of ``via`` (neighbour addresses)."""

    node: str
    prefix: str
    via: frozenset[str]
    why: str


def _address(node: NodeInfo, alt: bool) -> str:
    return (node.alt_address or node.address) if alt else node.address


def _neighbour_addresses(sessions: Iterable[Session], infos: Mapping[str, NodeInfo]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for s in sessions:
        out.setdefault(s.a, set()).add(_address(infos[s.b], s.alt))
        out.setdefault(s.b, set()).add(_address(infos[s.a], s.alt))
    return out


def expectations(
    step: Step,
    before: Iterable[Session],
    final: Iterable[Session],
    infos: Iterable[NodeInfo],
    nodes: Iterable[str],
) -> list[Expect]:
    """What must hold before the step after ``step`` may start.

    Always: every node in ``nodes`` has every other node's prefixes over a session in force (no
    loss). After **add**: each new session has carried both ends' own prefixes (a session that is
    Established may not have sent its table yet, and the next step retires the old session).
    After the **gate**: the paths come over sessions of the final topology.
    """
    by_name = {n.name: n for n in infos}
    live = [n for n in sorted(nodes) if n in by_name]
    origin = {p: n for n in live for p in by_name[n].prefixes}
    scope = final if step.kind == "gate" else step.sessions
    why = "over the target topology" if step.kind == "gate" else "over the sessions in force"
    addresses = _neighbour_addresses(scope, by_name)
    out = [
        Expect(node, prefix, frozenset(addresses.get(node, ())), why)
        for node in live
        for prefix, owner in sorted(origin.items())
        if owner != node
    ]
    if step.kind == "add":
        for s in sorted(set(step.sessions) - set(before)):
            for me, other in ((s.a, s.b), (s.b, s.a)):
                if me not in by_name:
                    continue
                via = frozenset([_address(by_name[other], s.alt)])
                out += [Expect(me, p, via, f"over the new session {s}") for p in by_name[other].prefixes]
    return out


def unmet(expects: Iterable[Expect], learnt: Mapping[str, Mapping[str, Iterable[str]]]) -> list[str]:
    """The expectations ``learnt`` (node -> prefix -> neighbour addresses of its paths) misses."""
    problems = []
    for e in expects:
        if not set(learnt.get(e.node, {}).get(e.prefix, ())) & e.via:
            problems.append(f"{e.node} lacks {e.prefix} {e.why}")
    return problems
