"""Findings over time (pure): a check's Node condition in node-problem-detector's format, the
transitions worth an Event, and when a repair may run.

A repair runs only for a problem that offers one, at most ``max_attempts`` times per ``window``
seconds. When the problem is still there right after a repair, or back at the next run, the
repair did not hold; after ``max_failed`` such repairs in a row (or with the budget spent) the
check escalates: no more repairs until the window has passed, and the condition's reason says
so (RepairDidNotHold).
The clock is an argument (seconds, monotonic); times written are RFC 3339 strings given by the
caller.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from netkit.doctor.core.model import Finding

__all__ = [
    "CheckState",
    "Decision",
    "RepairPolicy",
    "condition",
    "decide_repair",
    "observe",
    "repaired",
    "transition",
    "verified",
]

Condition = dict[str, Any]
ESCALATED = "RepairDidNotHold"


@dataclass(frozen=True)
class RepairPolicy:
    max_attempts: int = 3  # repairs per window
    window: float = 600.0  # seconds
    max_failed: int = 2  # runs in a row that found the problem back after a repair


@dataclass(frozen=True)
class CheckState:
    attempts: tuple[float, ...] = ()  # when repairs ran (within the window)
    repaired: bool = False  # the previous run repaired
    failed: int = 0  # runs in a row that found the problem back after a repair
    escalated_at: float | None = None
    condition: Condition | None = None  # as last reported


@dataclass(frozen=True)
class Decision:
    repair: bool
    why: str  # "repair", "no safe repair", "dry run", "not asked (--fix)", "escalated: ..."


def observe(state: CheckState, finding: Finding, now: float, policy: RepairPolicy) -> CheckState:
    """The state after a run found ``finding`` (before deciding on a repair)."""
    attempts = tuple(t for t in state.attempts if now - t < policy.window)
    failed = state.failed
    escalated_at = state.escalated_at
    if not finding.is_problem:
        failed, escalated_at = 0, None
    elif state.repaired:
        failed += 1
    if escalated_at is not None and now - escalated_at >= policy.window:
        escalated_at, failed = None, 0  # the window has passed: one more try is allowed
    spent = failed >= policy.max_failed or (failed and len(attempts) >= policy.max_attempts)
    if finding.repair is not None and escalated_at is None and spent:
        escalated_at = now
    return replace(state, attempts=attempts, repaired=False, failed=failed, escalated_at=escalated_at)


def verified(state: CheckState, after: Finding, now: float, policy: RepairPolicy) -> CheckState:
    """The state once a repair has been checked by observing again (``after``). Gone: the next
    run judges whether it held (the problem back then counts as a repair that did not hold).
    Still there: it did not hold now."""
    if not after.is_problem:
        return replace(state, repaired=True)
    failed = state.failed + 1
    escalated_at = state.escalated_at
    spent = failed >= policy.max_failed or len(state.attempts) >= policy.max_attempts
    if escalated_at is None and spent:
        escalated_at = now
    return replace(state, repaired=False, failed=failed, escalated_at=escalated_at)


def decide_repair(
    state: CheckState, finding: Finding, now: float, policy: RepairPolicy, *, fix: bool, dry_run: bool
) -> Decision:
    if finding.status != "problem":
        return Decision(False, "nothing to repair")
    if finding.repair is None:
        return Decision(False, "no safe repair")
    if state.escalated_at is not None:
        return Decision(False, f"escalated: the repair did not hold {state.failed} time(s)")
    if len([t for t in state.attempts if now - t < policy.window]) >= policy.max_attempts:
        return Decision(False, f"rate limited: {policy.max_attempts} repairs in {policy.window:.0f} s")
    if not fix:
        return Decision(False, "not asked (--fix)")
    if dry_run:
        return Decision(False, "dry run")
    return Decision(True, "repair")


def repaired(state: CheckState, now: float) -> CheckState:
    return replace(state, attempts=(*state.attempts, now), repaired=True)


def condition(
    type_: str, finding: Finding, state: CheckState, now: str, previous: Condition | None = None
) -> Condition:
    """The Node condition, as node-problem-detector writes them: ``True`` while the problem is
    there, ``False`` when not, ``Unknown`` when the check could not decide (or crashed).
    ``lastTransitionTime`` moves only with the status or the reason; ``lastHeartbeatTime`` always."""
    status = {"problem": "True", "ok": "False"}.get(finding.status, "Unknown")
    reason, message = finding.reason, finding.message
    if state.escalated_at is not None and finding.is_problem:
        reason = ESCALATED
        message = f"the repair did not hold ({finding.reason}): {finding.message}"
    since = now
    if previous and previous.get("status") == status and previous.get("reason") == reason:
        since = previous.get("lastTransitionTime") or now
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastHeartbeatTime": now,
        "lastTransitionTime": since,
    }


def transition(previous: Condition | None, new: Condition) -> tuple[str, str, str] | None:
    """An Event (type, reason, message) worth telling: a problem found (or its reason changed),
    a problem gone, a check that crashed. A check with nothing to decide on (Unknown: its part
    not configured yet) and a first report of no problem are not Events."""
    if previous is not None and (previous.get("status"), previous.get("reason")) == (
        new["status"],
        new["reason"],
    ):
        return None
    if new["status"] == "True":
        return ("Warning", new["reason"], f"{new['type']}: {new['message']}")
    if new["status"] == "Unknown":
        if new["reason"] != "CheckFailed":
            return None
        return ("Warning", new["reason"], f"{new['type']} unknown: {new['message']}")
    if previous is not None and previous.get("status") == "True":
        return ("Normal", f"{new['type']}Cleared", f"{new['type']}: {new['message']}")
    return None
