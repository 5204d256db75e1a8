"""The BGP checks' decisions (pure): sessions down or flapping; prefixes the speaker holds a best
path for that the kernel FIB lacks."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from bgp.core.speakerstate import PathInfo
from netkit.doctor.core.model import Finding, Repair, ok, problem, unknown

__all__ = [
    "SessionEvent",
    "decide_fib",
    "decide_sessions",
    "missing_from_fib",
    "record_sessions",
    "speaker_not_answering",
]


@dataclass(frozen=True)
class SessionEvent:
    """A session seen leaving Established at ``at`` (seconds, monotonic)."""

    at: float
    peer: str
    state: str


def record_sessions(
    history: Sequence[SessionEvent],
    previous: Mapping[str, str],
    sessions: Mapping[str, str],
    now: float,
    window: float,
) -> tuple[SessionEvent, ...]:
    """The history with this observation: an event per session that was Established at the
    previous run and is not now; events older than ``window`` dropped."""
    kept = [e for e in history if now - e.at < window]
    for peer, state in sorted(sessions.items()):
        if previous.get(peer) == "Established" and state != "Established":
            kept.append(SessionEvent(now, peer, state))
    return tuple(kept)


def decide_sessions(
    sessions: Mapping[str, str],
    history: Sequence[SessionEvent] = (),
    *,
    flaps: int = 3,
    window: float = 600.0,
    down_for: Mapping[str, float] | None = None,
    grace: float = 0.0,
) -> Finding:
    """``down_for``: how long each session has been seen not Established (None: not known, as
    in a one-shot run); one down for less than ``grace`` is still coming up, not a problem."""
    if not sessions:
        return unknown("NoSessions", "the speaker has no BGP session configured")
    down = sorted(
        p
        for p, s in sessions.items()
        if s != "Established" and (down_for is None or down_for.get(p, 0.0) >= grace)
    )
    if down:
        return problem(
            "SessionDown",
            f"{len(down)} of {len(sessions)} BGP session(s) not Established: {', '.join(down)}",
            [f"{p}: {sessions[p]}" for p in down],
            suggestion="check the peer is up and reachable "
            "(birdc show protocols all, vtysh show bgp neighbors)",
            down=len(down),
            sessions=len(sessions),
        )
    counts: dict[str, int] = {}
    for e in history:
        counts[e.peer] = counts.get(e.peer, 0) + 1
    flapping = sorted(p for p, n in counts.items() if n >= flaps)
    if flapping:
        return problem(
            "SessionFlapping",
            f"BGP session(s) {', '.join(flapping)} went down {flaps}+ times in {window:.0f} s",
            [f"{p}: down {counts[p]} times" for p in flapping],
            suggestion="look for an unstable link or hold-time expiries on the peer",
        )
    coming = sorted(p for p, s in sessions.items() if s != "Established")
    if coming:
        return ok(f"{len(sessions) - len(coming)} BGP session(s) Established, {len(coming)} coming up")
    return ok(f"{len(sessions)} BGP session(s) Established", sessions=len(sessions))


def _norm(prefix: str) -> str:
    return str(ipaddress.ip_network(prefix, strict=False))


def missing_from_fib(routes: Mapping[str, Sequence[PathInfo]], fib: Collection[str]) -> list[str]:
    """Prefixes with a best path learnt over BGP (not originated here) that the FIB lacks."""
    have = {_norm(p) for p in fib}
    out = []
    for prefix, paths in routes.items():
        if any(p.best and p.from_address for p in paths) and _norm(prefix) not in have:
            out.append(prefix)
    return sorted(out, key=lambda p: ipaddress.ip_network(p, strict=False))


def speaker_not_answering(error: str) -> Finding:
    return problem(
        "SpeakerNotAnswering",
        f"the BGP speaker does not answer its control socket: {error}",
        suggestion="is the speaker running? (its pod, systemctl status bird / frr)",
    )


def decide_fib(
    routes: Mapping[str, Sequence[PathInfo]], fib: Collection[str], resync: str | None = None
) -> Finding:
    """``resync``: how the speaker is asked to install its routes again (None: it cannot be)."""
    learnt = sum(1 for paths in routes.values() if any(p.best and p.from_address for p in paths))
    missing = missing_from_fib(routes, fib)
    if not missing:
        return ok(f"{learnt} learnt prefix(es), every one in the kernel FIB", prefixes=learnt)
    return problem(
        "RoutesMissingFromFIB",
        f"{len(missing)} of {learnt} prefix(es) the speaker holds are not in the kernel FIB",
        [f"{p}: best path held, no kernel route" for p in missing[:20]],
        repair=Repair(f"have the speaker install its routes again ({resync})", None) if resync else None,
        suggestion="if they go missing again, look for a process deleting routes (ip monitor route)",
        missing=len(missing),
    )
