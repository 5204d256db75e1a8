"""Node-wide checks: the conntrack table near full, the API server unreachable from the node."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from netkit.base.netns import in_netns
from netkit.doctor.check import Check
from netkit.doctor.core import node as decide
from netkit.doctor.core.model import Finding, unknown

__all__ = ["ApiServerCheck", "ConntrackCheck"]

_NF = Path("/proc/sys/net/netfilter")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class ConntrackCheck(Check):
    name = "conntrack"
    condition = "NetkitConntrackNearFull"
    interval = 10.0
    summary = "the conntrack table (nf_conntrack_count of nf_conntrack_max) at or above the threshold"

    def __init__(self, netns: str | None = None, threshold: float = 0.9) -> None:
        self.netns, self.threshold = netns, threshold

    def gather(self) -> tuple[int | None, int | None]:
        # /proc/sys/net shows the namespace of the thread that opens it
        return in_netns(
            self.netns, lambda: (_read_int(_NF / "nf_conntrack_count"), _read_int(_NF / "nf_conntrack_max"))
        )

    def decide(self, facts: tuple[int | None, int | None]) -> Finding:
        return decide.decide_conntrack(facts[0], facts[1], self.threshold)


ApiProbe = Callable[[], str | None]  # None when the API server answered, else the error


class ApiServerCheck(Check):
    name = "api-server"
    condition = "NetkitAPIServerUnreachable"
    interval = 10.0
    summary = "the Kubernetes API server does not answer /version from the node"

    def __init__(self, server: str, probe: ApiProbe | None) -> None:
        self.server, self.probe = server, probe

    def gather(self) -> tuple[str | None, float] | None:
        if self.probe is None:
            return None
        t0 = time.monotonic()
        err = self.probe()
        return err, time.monotonic() - t0

    def decide(self, facts: tuple[str | None, float] | None) -> Finding:
        if facts is None:
            return unknown("NoKubeconfig", "no API server configured (--kubeconfig)")
        return decide.decide_api(self.server, facts[0], facts[1])
