"""Route-reflector topology planner (pure): inventory + policy (+ the current plan) -> a plan.

How a plan is chosen, so that it is deterministic and changes as little as possible:

* Candidates: nodes marked ``reflector: true`` when any node is marked (always in ``dedicated``
  mode), otherwise every node not marked ``false``.
* Reflectors: in every failure domain that has candidates, ``reflectors_per_domain`` of them. The
  current plan's reflectors are kept while they remain candidates (a new node never displaces a
  reflector); free places go to the candidates with the highest rendezvous (HRW) hash, a stable
  function of the domain and the node name, so a fresh plan never depends on list order.
* Clients: each gets ``redundancy`` reflectors in distinct failure domains: its own domain first,
  then the others ranked by HRW hash of (client, reflector); a client keeps the reflectors it had
  while they remain. Adding or removing a client therefore adds or removes only its sessions.
* ``cluster_id: shared``: reflectors form groups of ``redundancy``, one per domain, sharing the
  first member's router id; a client peers with every member of one group (a reflector drops
  routes carrying its own cluster id, so a client of only part of a shared group would lose
  redundancy).
* ``levels: 2``: clients -> leaf reflectors (chosen as above) -> top reflectors (chosen by
  ``policy.top`` among the remaining candidates); top reflectors are meshed, leaf reflectors are
  clients of ``redundancy`` top reflectors. With one level the reflectors are meshed.

Session count: n*k client sessions + R(R-1)/2 reflector mesh (+ R_leaf*k with two levels): O(n*k).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bgp.core.inventory import (
    Inventory,
    InventoryError,
    Node,
    Policy,
    candidate_problems,
    reflector_candidates,
)
from bgp.core.model import NodeInfo, Session, SessionKind, SpeakerConfig, Timers, speaker_configs
from bgp.core.propagation import missing_routes

__all__ = [
    "PlanDiff",
    "ReflectorRole",
    "SessionPlan",
    "diff_plans",
    "mesh_plan",
    "plan",
    "plan_from_dict",
    "route_problems",
    "speakers_for",
]

PlanKind = Literal["mesh", "rr"]


@dataclass(frozen=True)
class ReflectorRole:
    node: str
    level: int  # 1: reflects for nodes (leaf level, or the only level); 2: top level
    cluster_id: str
    domain: str


@dataclass(frozen=True)
class SessionPlan:
    kind: PlanKind
    reflectors: Mapping[str, ReflectorRole]
    sessions: frozenset[Session]
    nodes: tuple[str, ...] = ()

    def reflectors_of(self, node: str) -> tuple[str, ...]:
        """The reflectors ``node`` is a client of (sorted)."""
        return tuple(sorted(s.a for s in self.sessions if s.kind is SessionKind.RR and s.b == node))

    def sessions_of(self, node: str) -> list[Session]:
        return sorted(s for s in self.sessions if s.involves(node))

    @property
    def cluster_ids(self) -> dict[str, str]:
        return {name: r.cluster_id for name, r in self.reflectors.items()}

    def per_node_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.nodes, 0)
        for s in self.sessions:
            counts[s.a] = counts.get(s.a, 0) + 1
            counts[s.b] = counts.get(s.b, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "nodes": list(self.nodes),
            "reflectors": [
                {"node": r.node, "level": r.level, "cluster_id": r.cluster_id, "domain": r.domain}
                for r in sorted(self.reflectors.values(), key=lambda r: (-r.level, r.node))
            ],
            "sessions": [
                {"a": s.a, "b": s.b, "kind": str(s.kind), **({"alt": True} if s.alt else {})}
                for s in sorted(self.sessions)
            ],
        }


def _session_from_dict(s: Any) -> Session:
    a, b, kind = str(s["a"]), str(s["b"]), SessionKind(str(s["kind"]))
    if a == b:
        raise ValueError(f"session {a} -- {b} joins a node to itself")
    alt = bool(s.get("alt", False))
    return Session.peer(a, b, alt) if kind is SessionKind.PEER else Session.rr(a, b, alt)


def plan_from_dict(raw: Any, source: str = "<plan>") -> SessionPlan:
    """Read back ``SessionPlan.to_dict`` output (e.g. the plan in force, for ``--current``)."""
    if not isinstance(raw, dict):
        what = "empty" if raw is None else f"a {type(raw).__name__}"
        raise InventoryError([f"{source}: not a netkit plan: {what}, not a mapping with kind and sessions"])
    try:
        reflectors = {
            str(r["node"]): ReflectorRole(
                str(r["node"]), int(r["level"]), str(r["cluster_id"]), str(r["domain"])
            )
            for r in raw.get("reflectors", [])
        }
        sessions = frozenset(_session_from_dict(s) for s in raw["sessions"])
        kind = raw["kind"]
        if kind not in ("mesh", "rr"):
            raise ValueError(f"kind {kind!r} is not mesh or rr")
        nodes = raw.get("nodes", [])
        if not isinstance(nodes, list):
            raise TypeError(f"nodes must be a list, not {type(nodes).__name__}")
        return SessionPlan(kind, reflectors, sessions, tuple(str(n) for n in nodes))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InventoryError([f"{source}: not a netkit plan ({exc!r})"]) from exc


def route_problems(inv: Inventory, p: SessionPlan, limit: int = 10) -> list[str]:
    """What running ``p`` would cut off: per AS, each node that would not learn every other
    node's route (``bgp.core.propagation``), with the origins it would miss. Empty: nothing lost.

    The nodes are those the plan is for (``p.nodes``), or the inventory's when it names none: a
    plan that names no node and no session is "every session removed", not "nothing to check"."""
    asn = {n.name: n.asn for n in inv.nodes}
    names = [n for n in (p.nodes or inv.names) if n in asn]
    problems: list[str] = []
    for number in sorted({asn[n] for n in names}):
        group = [n for n in names if asn[n] == number]
        sessions = [s for s in p.sessions if s.a in group and s.b in group]
        for node, origins in sorted(missing_routes(group, sessions, p.cluster_ids).items()):
            shown = sorted(origins)[:5]
            more = f" and {len(origins) - len(shown)} more" if len(origins) > len(shown) else ""
            have = len([s for s in sessions if s.involves(node)])
            problems.append(
                f"{node} would learn no route from {', '.join(shown)}{more} ({have} sessions in the plan)"
            )
    if len(problems) > limit:
        problems[limit:] = [f"... and {len(problems) - limit} more nodes"]
    return problems


# ------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------


def _hrw(*parts: str) -> int:
    """Rendezvous hash: stable across runs and Python versions (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest(), "big")


def mesh_plan(inv: Inventory) -> SessionPlan:
    """The full iBGP mesh (per AS): n(n-1)/2 plain sessions."""
    sessions = frozenset(
        Session.peer(a.name, b.name)
        for i, a in enumerate(inv.nodes)
        for b in inv.nodes[i + 1 :]
        if a.asn == b.asn
    )
    return SessionPlan("mesh", {}, sessions, tuple(sorted(inv.names)))


def _choose(
    candidates: Sequence[Node], label: str, quota: int, keep: set[str], salt: str
) -> dict[str, list[Node]]:
    """Per failure domain, ``quota`` reflectors: previous ones (``keep``) first, then by HRW."""
    by_domain: dict[str, list[Node]] = defaultdict(list)
    for n in candidates:
        by_domain[n.domain(label)].append(n)
    chosen: dict[str, list[Node]] = {}
    for domain, nodes in sorted(by_domain.items()):
        ranked = sorted(nodes, key=lambda n: (n.name not in keep, -_hrw(salt, domain, n.name), n.name))
        chosen[domain] = ranked[:quota]
    return chosen


def _assign(
    client: Node,
    label: str,
    by_domain: Mapping[str, Sequence[str]],
    k: int,
    previous: Sequence[str],
) -> list[str]:
    """``k`` reflectors in distinct domains for ``client``: kept ones first, own domain next."""
    best: dict[str, str] = {}
    for domain, names in by_domain.items():
        options = [r for r in names if r != client.name]
        if not options:
            continue
        kept = [r for r in options if r in previous]
        best[domain] = kept[0] if kept else max(options, key=lambda r: (_hrw(client.name, r), r))
    own = client.domain(label)
    ranked = sorted(
        best,
        key=lambda d: (best[d] not in previous, d != own, -_hrw(client.name, best[d]), d),
    )
    return [best[d] for d in ranked[:k]]


def _need_domains(policy: Policy, label: str, by_domain: Mapping[str, Sequence[str]], who: str) -> None:
    if len(by_domain) < policy.redundancy:
        where = ", ".join(f"{d or '<unlabelled>'} ({len(v)})" for d, v in sorted(by_domain.items())) or "none"
        raise InventoryError(
            [
                f"policy.redundancy: {who} need {policy.redundancy} reflectors in distinct {label!r} "
                f"failure domains, but reflector candidates exist in {len(by_domain)}: {where}; mark more "
                "nodes reflector: true, label them, or lower policy.redundancy"
            ]
        )


def _groups(
    by_domain: Mapping[str, Sequence[str]], k: int, previous: SessionPlan | None
) -> list[tuple[str, ...]]:
    """Shared cluster ids: groups of ``k`` reflectors in distinct domains (kept ones first)."""
    reflectors = {r for names in by_domain.values() for r in names}
    domain_of = {r: d for d, names in by_domain.items() for r in names}
    groups: list[tuple[str, ...]] = []
    if previous is not None:
        old: dict[str, list[str]] = defaultdict(list)
        for r in previous.reflectors.values():
            if r.level == 1:
                old[r.cluster_id].append(r.node)
        for members in sorted(old.values()):
            if len(members) == k and set(members) <= reflectors and len({domain_of[m] for m in members}) == k:
                groups.append(tuple(sorted(members)))
    used = {m for g in groups for m in g}
    free = {d: [r for r in names if r not in used] for d, names in by_domain.items()}
    while True:
        domains = sorted((d for d in free if free[d]), key=lambda d: (-len(free[d]), d))[:k]
        if len(domains) < k:
            break
        groups.append(tuple(sorted(free[d].pop(0) for d in domains)))
    left = sorted(r for names in free.values() for r in names)
    if left:
        raise InventoryError(
            [
                f"policy.cluster_id: shared needs the reflectors to split into groups of {k} in distinct "
                f"failure domains; {', '.join(left)} would be left without a group - change "
                "reflectors_per_domain, or use cluster_id: per-reflector"
            ]
        )
    return groups


def _plan_as(
    nodes: Sequence[Node], policy: Policy, previous: SessionPlan | None
) -> tuple[dict[str, ReflectorRole], set[Session]]:
    label = policy.failure_domain
    k = policy.redundancy
    problems = candidate_problems(nodes, policy)
    if problems:
        raise InventoryError(problems)
    cands = reflector_candidates(nodes, policy)
    prev_refl = previous.reflectors if previous else {}
    keep1 = {r for r, info in prev_refl.items() if info.level == 1}
    leaf = _choose(cands, label, policy.reflectors_per_domain, keep1, "leaf")
    leaf_names = {d: [n.name for n in ns] for d, ns in leaf.items()}
    _need_domains(policy, label, leaf_names, "clients")
    by_name = {n.name: n for n in nodes}
    reflectors: dict[str, ReflectorRole] = {}
    sessions: set[Session] = set()

    def prev_of(node: str) -> list[str]:
        return list(previous.reflectors_of(node)) if previous else []

    if policy.cluster_id == "shared":
        groups = _groups(leaf_names, k, previous)
        for g in groups:
            cid = min((by_name[m].router_id for m in g), key=lambda r: tuple(int(x) for x in r.split(".")))
            for m in g:
                reflectors[m] = ReflectorRole(m, 1, cid, by_name[m].domain(label))
    else:
        for names in leaf_names.values():
            for m in names:
                reflectors[m] = ReflectorRole(m, 1, by_name[m].router_id, by_name[m].domain(label))

    top_names: dict[str, list[str]] = {}
    if policy.levels == 2:
        tlabel = policy.top.failure_domain
        rest = [n for n in cands if n.name not in reflectors]
        for n in rest:
            if tlabel not in n.labels:
                raise InventoryError(
                    [f"nodes[{n.name}].labels.{tlabel}: missing; top reflector candidates need it"]
                )
        keep2 = {r for r, info in prev_refl.items() if info.level == 2}
        top = _choose(rest, tlabel, policy.top.reflectors_per_domain, keep2, "top")
        top_names = {d: [n.name for n in ns] for d, ns in top.items()}
        _need_domains(policy, tlabel, top_names, "leaf reflectors")
        for names in top_names.values():
            for m in names:
                reflectors[m] = ReflectorRole(m, 2, by_name[m].router_id, by_name[m].domain(tlabel))
        meshed = sorted(m for names in top_names.values() for m in names)
        for name in sorted(r for r, info in reflectors.items() if info.level == 1):
            for t in _assign(by_name[name], tlabel, top_names, k, prev_of(name)):
                sessions.add(Session.rr(t, name))
    else:
        meshed = sorted(reflectors)
    for i, a in enumerate(meshed):
        for b in meshed[i + 1 :]:
            sessions.add(Session.peer(a, b))

    groups_of: dict[str, tuple[str, ...]] = defaultdict(tuple)
    if policy.cluster_id == "shared":
        for info in reflectors.values():
            if info.level == 1:
                groups_of[info.cluster_id] = (*groups_of[info.cluster_id], info.node)
    for node in sorted(nodes, key=lambda n: n.name):
        if node.name in reflectors:
            continue
        mine: Sequence[str]
        if policy.cluster_id == "shared":
            mine = _shared_group(node, label, groups_of, by_name, prev_of(node.name))
        else:
            mine = _assign(node, label, leaf_names, k, prev_of(node.name))
        for name in mine:
            sessions.add(Session.rr(name, node.name))
    return reflectors, sessions


def _shared_group(
    client: Node,
    label: str,
    groups_of: Mapping[str, tuple[str, ...]],
    by_name: Mapping[str, Node],
    previous: Sequence[str],
) -> tuple[str, ...]:
    def rank(cid: str) -> tuple[bool, bool, int, str]:
        members = groups_of[cid]
        kept = set(members) == set(previous)
        own = any(by_name[m].domain(label) == client.domain(label) for m in members)
        return (not kept, not own, -_hrw(client.name, cid), cid)

    return groups_of[min(groups_of, key=rank)]


def plan(inv: Inventory, previous: SessionPlan | None = None) -> SessionPlan:
    """The reflector plan for ``inv``; with ``previous`` (the plan in force) changes stay minimal."""
    if previous is not None and previous.kind == "mesh":
        previous = None
    by_as: dict[int, list[Node]] = defaultdict(list)
    for n in inv.nodes:
        by_as[n.asn].append(n)
    reflectors: dict[str, ReflectorRole] = {}
    sessions: set[Session] = set()
    for asn in sorted(by_as):
        try:
            r, s = _plan_as(by_as[asn], inv.policy, previous)
        except InventoryError as exc:
            if len(by_as) == 1:
                raise
            raise InventoryError([f"AS {asn}: {e}" for e in exc.errors]) from exc
        reflectors.update(r)
        sessions |= s
    if previous is not None:  # a kept session stays on the address pair it runs on
        kept = {(s.a, s.b, s.kind): s.alt for s in previous.sessions}
        sessions = {s.on(kept.get((s.a, s.b, s.kind), s.alt)) for s in sessions}
    return SessionPlan("rr", reflectors, frozenset(sessions), tuple(sorted(inv.names)))


# ------------------------------------------------------------------------------------------
# Diff and rendering input
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanDiff:
    added: tuple[Session, ...] = ()
    removed: tuple[Session, ...] = ()
    changed: tuple[tuple[Session, Session], ...] = ()  # same pair, other kind or direction
    reflectors_added: tuple[str, ...] = ()
    reflectors_removed: tuple[str, ...] = ()
    cluster_ids_changed: tuple[tuple[str, str, str], ...] = ()  # node, old, new
    unchanged: int = 0

    @property
    def empty(self) -> bool:
        return not (
            self.added
            or self.removed
            or self.changed
            or self.reflectors_added
            or self.reflectors_removed
            or self.cluster_ids_changed
        )

    def lines(self) -> list[str]:
        out = [f"+ {s}" for s in self.added]
        out += [f"- {s}" for s in self.removed]
        out += [f"~ {old}  =>  {new}" for old, new in self.changed]
        out += [f"+ reflector {r}" for r in self.reflectors_added]
        out += [f"- reflector {r}" for r in self.reflectors_removed]
        out += [f"~ cluster id of {n}: {a} => {b}" for n, a, b in self.cluster_ids_changed]
        summary = (
            f"{len(self.added)} sessions added, {len(self.removed)} removed, {len(self.changed)} changed, "
            f"{self.unchanged} unchanged"
        )
        return [*out, summary]


def diff_plans(old: SessionPlan, new: SessionPlan) -> PlanDiff:
    old_by_pair = {s.pair: s for s in old.sessions}
    new_by_pair = {s.pair: s for s in new.sessions}
    added = tuple(sorted(s for p, s in new_by_pair.items() if p not in old_by_pair))
    removed = tuple(sorted(s for p, s in old_by_pair.items() if p not in new_by_pair))
    changed = tuple(
        sorted(
            (old_by_pair[p], s) for p, s in new_by_pair.items() if p in old_by_pair and old_by_pair[p] != s
        )
    )
    unchanged = sum(1 for p, s in new_by_pair.items() if old_by_pair.get(p) == s)
    cids = tuple(
        sorted(
            (n, old.reflectors[n].cluster_id, r.cluster_id)
            for n, r in new.reflectors.items()
            if n in old.reflectors and old.reflectors[n].cluster_id != r.cluster_id
        )
    )
    return PlanDiff(
        added,
        removed,
        changed,
        tuple(sorted(set(new.reflectors) - set(old.reflectors))),
        tuple(sorted(set(old.reflectors) - set(new.reflectors))),
        cids,
        unchanged,
    )


def node_infos(inv: Inventory) -> list[NodeInfo]:
    return [NodeInfo(n.name, n.address, n.asn, n.router_id, n.prefixes, n.alt_address) for n in inv.nodes]


def speakers_for(
    inv: Inventory,
    sessions: Iterable[Session],
    cluster_ids: Mapping[str, str],
    timers: Timers | None = None,
) -> dict[str, SpeakerConfig]:
    """Per-node speaker configs for a session set (a plan's, or a migration step's)."""
    return speaker_configs(node_infos(inv), sessions, cluster_ids, timers)
