"""Conditions as the Kubernetes API conventions define them (pure).

A condition is ``type/status/reason/message/observedGeneration/lastTransitionTime``; a list holds
one per type. ``lastTransitionTime`` moves only when the status changes, so a controller that sets
the same condition every resync writes nothing new, and a restart with unchanged inputs changes
nothing (``set_condition`` returns the list unchanged, the same object).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DEGRADED", "PROGRESSING", "READY", "Problem", "Status", "find", "is_true", "set_condition"]

Status = Literal["True", "False", "Unknown"]
READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"

_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
Condition = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Problem:
    """What keeps an object (or one node of it) from being applied: a condition's reason and
    message."""

    reason: str  # Conflict | NodeUnusable | Unresolved | ...
    message: str


def find(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: Sequence[Mapping[str, Any]], type_: str, generation: int | None = None) -> bool:
    """The condition holds, and (given ``generation``) was set for that generation: a Ready from
    an older spec is not Ready."""
    c = find(conditions, type_)
    if c is None or c.get("status") != "True":
        return False
    return generation is None or c.get("observedGeneration") == generation


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: Status,
    reason: str,
    message: str,
    *,
    generation: int,
    now: str,
) -> list[Condition]:
    """``conditions`` with ``type_`` set. ``now`` (RFC 3339) becomes its ``lastTransitionTime`` only
    if the status changed; nothing else changing returns an equal list."""
    if status not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status {status!r} is not True, False or Unknown")
    if not _REASON.match(reason):
        raise ValueError(f"condition reason {reason!r} is not a CamelCase word")
    old = find(conditions, type_)
    since = old["lastTransitionTime"] if old is not None and old.get("status") == status else now
    new: Condition = {
        "type": type_,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message[:32768],
    }
    if old is not None and dict(old) == new:
        return list(conditions)
    out = [dict(c) if c.get("type") != type_ else new for c in conditions]
    if old is None:
        out.append(new)
    return out
