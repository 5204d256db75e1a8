"""The doctor's runner: a crashing check is a failed check (status error) and the others run;
a repair is checked by observing again, counted, logged and told as an Event; a repair that does
not hold escalates; the Node's other conditions are never touched."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from netkit.cli.doctor import _table
from netkit.control.doctorreport import merge_conditions
from netkit.doctor.check import Check, RepairError
from netkit.doctor.core.model import Finding, Repair, ok, problem
from netkit.doctor.runner import Doctor


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.reports: list[list[dict[str, Any]]] = []

    def conditions(self, conditions: Any) -> None:
        self.reports.append(list(conditions))

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


class Broken(Check):
    name, condition, summary = "broken", "NetkitBroken", "raises"

    def gather(self) -> Any:
        raise OSError("netlink socket: permission denied")

    def decide(self, facts: Any) -> Finding:
        raise AssertionError("not reached")


class Fault(Check):
    """A fault the repair fixes (``holds``) or not; ``raises``: the repair fails."""

    name, condition, summary = "fault", "NetkitFault", "a fault"

    def __init__(self, holds: bool = True, raises: bool = False) -> None:
        self.present, self.holds, self.raises, self.repairs = True, holds, raises, 0

    def gather(self) -> bool:
        return self.present

    def decide(self, facts: bool) -> Finding:
        if facts:
            return problem("Broken", "it is broken", ["evidence"], repair=Repair("fix it"))
        return ok("fine")

    def repair(self, finding: Finding) -> str:
        self.repairs += 1
        if self.raises:
            raise RepairError("cannot")
        self.present = not self.holds
        return "fixed it"


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, labels) or 0.0


def test_a_crashing_check_is_a_failed_check_and_the_others_run() -> None:
    reg, rec = CollectorRegistry(), Recorder()
    results = Doctor([Broken(), Fault()], registry=reg, reporter=rec, settle=0).run_once()
    assert [r.final.status for r in results] == ["error", "problem"]
    assert results[0].condition["status"] == "Unknown" and results[0].condition["reason"] == "CheckFailed"
    assert "permission denied" in results[0].condition["message"]
    assert sample(reg, "netkit_doctor_check_runs_total", check="broken", status="error") == 1
    assert sample(reg, "netkit_doctor_problem", check="fault", condition="NetkitFault", status="problem") == 1
    assert {c["type"] for c in rec.reports[-1]} == {"NetkitBroken", "NetkitFault"}
    assert ("Warning", "Broken", "NetkitFault: it is broken") in rec.events


def test_a_repair_that_holds_clears_the_condition_with_an_event() -> None:
    reg, rec, fault = CollectorRegistry(), Recorder(), Fault()
    (r,) = Doctor([fault], fix=True, registry=reg, reporter=rec, settle=0).run_once()
    assert r.finding.status == "problem" and r.after is not None and r.after.status == "ok"
    assert r.condition["status"] == "False" and r.repair == "fixed it"
    assert ("Normal", "Repaired", "NetkitFault: fix it: fixed it") in rec.events
    assert sample(reg, "netkit_doctor_repairs_total", check="fault", result="held") == 1
    assert "repaired" in _table([r.as_dict()])


def test_a_repair_that_does_not_hold_escalates_and_is_not_retried() -> None:
    reg, rec, fault = CollectorRegistry(), Recorder(), Fault(holds=False)
    doctor = Doctor([fault], fix=True, registry=reg, reporter=rec, settle=0)
    for _ in range(5):
        doctor.run_once()
    assert fault.repairs == 2  # then escalated: no repair loop
    cond = doctor.conditions()[0]
    assert cond["status"] == "True" and cond["reason"] == "RepairDidNotHold"
    assert sample(reg, "netkit_doctor_repairs_total", check="fault", result="did_not_hold") == 2
    assert any(e[1] == "RepairDidNotHold" for e in rec.events)


class Recurring(Fault):
    """Repaired every time, and back by the next run (something keeps resetting it)."""

    def gather(self) -> bool:
        present, self.present = self.present, True
        return present


def test_a_fault_that_comes_back_after_each_repair_escalates() -> None:
    fault = Recurring()
    doctor = Doctor([fault], fix=True, settle=0)
    results = [doctor.run_once()[0] for _ in range(5)]
    assert fault.repairs == 2 and [r.repair is not None for r in results] == [True, True, False, False, False]
    assert results[1].condition["status"] == "False"  # each repair held at first
    assert doctor.conditions()[0]["reason"] == "RepairDidNotHold"


def test_a_failed_repair_is_reported_and_the_problem_stays() -> None:
    reg, fault = CollectorRegistry(), Fault(raises=True)
    (r,) = Doctor([fault], fix=True, registry=reg, settle=0).run_once()
    assert r.repair_error == "RepairError: cannot" and r.final.status == "problem"
    assert r.as_dict()["repair"]["error"] == "RepairError: cannot"
    assert sample(reg, "netkit_doctor_repairs_total", check="fault", result="failed") == 1


def test_without_fix_nothing_is_repaired() -> None:
    fault = Fault()
    (r,) = Doctor([fault]).run_once()
    assert fault.repairs == 0 and r.as_dict()["repair"] == {
        "action": "fix it",
        "applied": False,
        "decision": "not asked (--fix)",
    }


def test_node_conditions_merge_leaves_the_others_alone() -> None:
    kubelet = {"type": "Ready", "status": "True", "reason": "KubeletReady"}
    old = {"type": "NetkitGone", "status": "False", "reason": "AsExpected", "lastHeartbeatTime": "a"}
    ours = {"type": "NetkitFault", "status": "True", "reason": "Broken", "lastHeartbeatTime": "b"}
    merged = merge_conditions([kubelet, old], [ours], heartbeat_due=False)
    assert merged == [kubelet, ours]  # a check no longer run leaves no stale condition
    beat = {**ours, "lastHeartbeatTime": "c"}
    assert merge_conditions([kubelet, ours], [beat], heartbeat_due=False) is None  # nothing new
    assert merge_conditions([kubelet, ours], [beat], heartbeat_due=True) == [kubelet, beat]
    # netkit doctor --report --only ...: the agent's other conditions stay
    assert merge_conditions([kubelet, old], [ours], heartbeat_due=False, prune=False) == [kubelet, old, ours]
