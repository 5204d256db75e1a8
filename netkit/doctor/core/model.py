"""What a check decides (pure): a ``Finding`` over observed facts, with the repair that would fix
it when one is safe, and the node-problem-detector condition it becomes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["PREFIX", "Finding", "Repair", "Status", "error", "ok", "problem", "unknown"]

# ok: nothing wrong; problem: the failure mode is present; unknown: nothing to decide on (the
# part is not configured on this node, a source could not be read); error: the check crashed.
Status = Literal["ok", "problem", "unknown", "error"]
PREFIX = "Netkit"  # every condition type the doctor writes on a Node starts with it


@dataclass(frozen=True)
class Repair:
    """A safe, idempotent action that fixes a problem: ``action`` says it for people, ``payload``
    is what the check's effect side needs to do it (operations, a pid, an address)."""

    action: str
    payload: Any = None


@dataclass(frozen=True)
class Finding:
    status: Status
    reason: str  # CamelCase, as a condition's reason: FdbEntryMissing, AsExpected
    message: str
    evidence: tuple[str, ...] = ()  # the observed facts behind it, one line each
    repair: Repair | None = None  # set only when a safe repair exists
    suggestion: str = ""  # what a person should do when there is no safe repair
    facts: Mapping[str, Any] = field(default_factory=dict)  # numbers for metrics and -o json

    @property
    def is_problem(self) -> bool:
        return self.status in ("problem", "error")


def ok(message: str, *evidence: str, **facts: Any) -> Finding:
    return Finding("ok", "AsExpected", message, tuple(evidence), facts=facts)


def unknown(reason: str, message: str) -> Finding:
    return Finding("unknown", reason, message)


def problem(
    reason: str,
    message: str,
    evidence: tuple[str, ...] | list[str] = (),
    *,
    repair: Repair | None = None,
    suggestion: str = "",
    **facts: Any,
) -> Finding:
    return Finding("problem", reason, message, tuple(evidence), repair, suggestion, facts)


def error(message: str) -> Finding:
    """A check that raised: reported as failed, never taking the process down."""
    return Finding("error", "CheckFailed", message)
