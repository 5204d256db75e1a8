"""Running checks (effects): once (``netkit doctor``) or on their intervals (inside ``netkit
agent``), each guarded so that a crashing check is a failed check and never takes the process
down; repairs through the engine's policy, verified by observing again, logged with before and
after facts; conditions, Events and metrics out."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from netkit.doctor.check import Check
from netkit.doctor.core import engine
from netkit.doctor.core.engine import CheckState, Decision, RepairPolicy
from netkit.doctor.core.model import Finding, error

__all__ = ["Doctor", "Reporter", "Result"]

log = logging.getLogger("netkit.doctor")

Condition = dict[str, Any]


class Reporter(Protocol):
    """Where conditions and Events go (the Node, in the control plane); a failure to write is
    the reporter's to log: the checks go on."""

    def conditions(self, conditions: Sequence[Condition]) -> None: ...

    def event(self, type_: str, reason: str, message: str) -> None: ...


@dataclass
class Result:
    check: str
    condition: Condition
    finding: Finding  # as found (before any repair)
    decision: Decision
    repair: str | None = None  # what the repair did
    repair_error: str | None = None
    after: Finding | None = None  # observed again after the repair
    seconds: float = 0.0

    @property
    def final(self) -> Finding:
        return self.after if self.after is not None else self.finding

    def as_dict(self) -> dict[str, Any]:
        f = self.final
        out: dict[str, Any] = {
            "check": self.check,
            "condition": self.condition["type"],
            "status": f.status,  # after the repair, if one ran
            "found": self.finding.status,
            "found_reason": self.finding.reason,
            "reason": self.condition["reason"],
            "message": self.condition["message"],
            "evidence": list(self.finding.evidence),
            "seconds": round(self.seconds, 3),
        }
        if self.finding.suggestion:
            out["suggestion"] = self.finding.suggestion
        if self.finding.repair is not None:
            out["repair"] = {"action": self.finding.repair.action, "applied": self.repair is not None}
            out["repair"]["decision"] = self.decision.why
            if self.repair_error:
                out["repair"]["error"] = self.repair_error
            if self.after is not None:
                out["repair"]["after"] = {"status": self.after.status, "evidence": list(self.after.evidence)}
        if f.facts:
            out["facts"] = dict(f.facts)
        return out


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Metrics:
    registry: CollectorRegistry
    problem: Gauge = field(init=False)
    runs: Counter = field(init=False)
    repairs: Counter = field(init=False)
    duration: Gauge = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.problem = Gauge(
            "netkit_doctor_problem",
            "1 while the check finds its failure mode (or cannot decide: status unknown/error), 0 when not.",
            ["check", "condition", "status"],
            registry=r,
        )
        self.runs = Counter(
            "netkit_doctor_check_runs", "Check runs by outcome.", ["check", "status"], registry=r
        )
        self.repairs = Counter(
            "netkit_doctor_repairs",
            "Repairs by result: held, did_not_hold, failed.",
            ["check", "result"],
            registry=r,
        )
        self.duration = Gauge(
            "netkit_doctor_check_duration_seconds",
            "How long the check's last run took.",
            ["check"],
            registry=r,
        )


class Doctor:
    def __init__(
        self,
        checks: Sequence[Check],
        *,
        fix: bool = False,
        dry_run: bool = False,
        policy: RepairPolicy | None = None,
        reporter: Reporter | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], str] = _now,
        settle: float = 0.2,
    ) -> None:
        self.checks = list(checks)
        self.fix, self.dry_run = fix, dry_run
        self.policy = policy or RepairPolicy()
        self.reporter = reporter
        self.clock, self.now, self.settle = clock, now, settle
        self.states: dict[str, CheckState] = {c.name: CheckState() for c in self.checks}
        self.results: dict[str, Result] = {}
        self.metrics = _Metrics(registry) if registry is not None else None
        self._lock = threading.Lock()

    def _observe(self, check: Check) -> Finding:
        try:
            return check.observe()
        except Exception as exc:  # a crashing check is a failed check, never a dead agent
            log.warning("check failed", extra={"check": check.name, "error": f"{type(exc).__name__}: {exc}"})
            return error(f"{type(exc).__name__}: {exc}"[:500])

    def run_check(self, check: Check) -> Result:
        started = time.monotonic()
        finding = self._observe(check)
        state = engine.observe(self.states[check.name], finding, self.clock(), self.policy)
        decision = engine.decide_repair(
            state, finding, self.clock(), self.policy, fix=self.fix, dry_run=self.dry_run
        )
        result = Result(check.name, {}, finding, decision)
        if decision.repair:
            state = self._repair(check, finding, state, result)
        elif finding.repair is not None and finding.status == "problem":
            log.info(
                "repair not run",
                extra={"check": check.name, "action": finding.repair.action, "why": decision.why},
            )
        previous = state.condition
        cond = engine.condition(check.condition, result.final, state, self.now(), previous)
        self.states[check.name] = CheckState(
            state.attempts, state.repaired, state.failed, state.escalated_at, cond
        )
        result.condition, result.seconds = cond, time.monotonic() - started
        self.results[check.name] = result
        self._tell(check, previous, cond, result)
        return result

    def _repair(self, check: Check, finding: Finding, state: CheckState, result: Result) -> CheckState:
        assert finding.repair is not None
        try:
            result.repair = check.repair(finding)
        except Exception as exc:
            result.repair_error = f"{type(exc).__name__}: {exc}"[:500]
            log.error(
                "repair failed",
                extra={"check": check.name, "action": finding.repair.action, "error": result.repair_error},
            )
            self._count_repair(check, "failed")
            return engine.repaired(state, self.clock())
        state = engine.repaired(state, self.clock())
        time.sleep(self.settle)
        after = self._observe(check)
        result.after = after
        state = engine.verified(state, after, self.clock(), self.policy)
        held = not after.is_problem
        self._count_repair(check, "held" if held else "did_not_hold")
        log.info(
            "repaired" if held else "repair did not hold",
            extra={
                "check": check.name,
                "action": result.repair,
                "before": list(finding.evidence) or [finding.message],
                "after": list(after.evidence) or [after.message],
            },
        )
        if self.reporter is not None:
            self.reporter.event(
                "Normal" if held else "Warning",
                "Repaired" if held else "RepairDidNotHold",
                f"{check.condition}: {finding.repair.action}: {result.repair}"
                + ("" if held else f"; still: {after.message}"),
            )
        return state

    def _count_repair(self, check: Check, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.repairs.labels(check.name, outcome).inc()

    def _tell(self, check: Check, previous: Condition | None, cond: Condition, result: Result) -> None:
        if self.metrics is not None:
            m = self.metrics
            for status in ("ok", "problem", "unknown", "error"):
                m.problem.labels(check.name, check.condition, status).set(
                    1.0 if result.final.status == status and status != "ok" else 0.0
                )
            m.runs.labels(check.name, result.final.status).inc()
            m.duration.labels(check.name).set(result.seconds)
        change = engine.transition(previous, cond)
        if change is not None:
            log.log(
                logging.WARNING if change[0] == "Warning" else logging.INFO,
                "condition changed",
                extra={"check": check.name, "status": cond["status"], "reason": cond["reason"]},
            )
            if self.reporter is not None:
                self.reporter.event(*change)

    def conditions(self) -> list[Condition]:
        return [s.condition for s in self.states.values() if s.condition is not None]

    def summary(self) -> list[dict[str, Any]]:
        """For the NodeState status: a line per check."""
        return [
            {
                "check": name,
                "status": r.final.status,
                "reason": r.condition["reason"],
                "since": r.condition["lastTransitionTime"],
            }
            for name, r in self.results.items()
        ]

    def run_once(self, only: Sequence[str] = ()) -> list[Result]:
        with self._lock:
            out = [self.run_check(c) for c in self.checks if not only or c.name in only]
        self._report()
        return out

    def _report(self) -> None:
        if self.reporter is not None:
            self.reporter.conditions(self.conditions())

    def run(self, stop: threading.Event, on_round: Callable[[], None] | None = None) -> None:
        """Each check on its interval until ``stop``; conditions reported after every round
        that ran a check."""
        due = {c.name: 0.0 for c in self.checks}
        while not stop.is_set():
            now = time.monotonic()
            ran = False
            for c in self.checks:
                if due[c.name] <= now and not stop.is_set():
                    with self._lock:
                        self.run_check(c)
                    due[c.name] = time.monotonic() + c.interval
                    ran = True
            if ran:
                self._report()
                if on_round is not None:
                    on_round()
            stop.wait(max(0.05, min(due.values()) - time.monotonic()))
