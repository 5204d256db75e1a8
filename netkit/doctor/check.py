"""A check as a plugin: a name, the Node condition it owns, an interval, the facts it gathers
(effects), the pure decision over them, and optionally a repair."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from netkit.doctor.core.model import Finding

__all__ = ["Check", "RepairError"]


class RepairError(RuntimeError):
    """A repair that could not be carried out."""


class Check(ABC):
    name: ClassVar[str]  # l2-drift
    condition: ClassVar[str]  # NetkitL2Drift
    interval: ClassVar[float] = 10.0  # seconds between runs in the agent
    summary: ClassVar[str]  # one line for --help and docs/doctor.md

    @abstractmethod
    def gather(self) -> Any:
        """Observe the facts (netlink, files, sockets, a speaker); may raise: a failed check."""

    @abstractmethod
    def decide(self, facts: Any) -> Finding:
        """The pure decision (a ``netkit.doctor.core`` function) over ``facts``."""

    def observe(self) -> Finding:
        return self.decide(self.gather())

    def repair(self, finding: Finding) -> str:
        """Carry out ``finding.repair`` (safe, idempotent, on objects netkit owns only) and say
        what was done; raises ``RepairError``. Checks without a repair never offer one."""
        raise RepairError(f"{self.name} has no repair")
