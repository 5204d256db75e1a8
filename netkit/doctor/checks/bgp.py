"""BGP checks: sessions down or flapping, and prefixes the speaker holds that the kernel FIB
lacks (a route deleted behind the speaker's back)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from bgp.control import ControlError
from bgp.core.speakerstate import PathInfo
from netkit.base.netns import in_netns
from netkit.doctor.check import Check, RepairError
from netkit.doctor.core import bgp as decide
from netkit.doctor.core.model import Finding, unknown

__all__ = ["BgpFibCheck", "BgpSessionsCheck", "Speaker", "kernel_prefixes"]


class Speaker(Protocol):
    def sessions(self) -> dict[str, str]: ...

    def routes(self, family: str = "ipv4") -> dict[str, list[PathInfo]]: ...


SpeakerSource = Callable[[], Speaker | None]  # None: no speaker on this node (yet)


@dataclass(frozen=True)
class Sessions:
    sessions: dict[str, str]
    history: tuple[decide.SessionEvent, ...]
    down_for: dict[str, float] | None = None
    error: str | None = None  # the speaker did not answer


class BgpSessionsCheck(Check):
    name = "bgp-sessions"
    condition = "NetkitBGPSessionDown"
    interval = 5.0
    summary = "a BGP session not Established, or going down 3+ times in 10 minutes (flapping)"

    def __init__(
        self,
        speaker: SpeakerSource,
        clock: Callable[[], float] = time.monotonic,
        window: float = 600.0,
        grace: float | None = None,
    ) -> None:
        """``grace``: seconds a session may take to come up (None: a one-shot run, no history)."""
        self.speaker, self.clock, self.window, self.grace = speaker, clock, window, grace
        self.last: dict[str, str] = {}
        self.history: tuple[decide.SessionEvent, ...] = ()
        self.down_since: dict[str, float] = {}

    def gather(self) -> Sessions | None:
        sp = self.speaker()
        if sp is None:
            return None
        try:
            now = sp.sessions()
        except ControlError as exc:
            return Sessions({}, self.history, error=str(exc)[:300])
        t = self.clock()
        self.history = decide.record_sessions(self.history, self.last, now, t, self.window)
        self.last = dict(now)
        self.down_since = {p: self.down_since.get(p, t) for p, s in now.items() if s != "Established"}
        down_for = None if self.grace is None else {p: t - since for p, since in self.down_since.items()}
        return Sessions(dict(now), self.history, down_for)

    def decide(self, facts: Sessions | None) -> Finding:
        if facts is None:
            return unknown("NoSpeaker", "no BGP speaker configured on this node")
        if facts.error is not None:
            return decide.speaker_not_answering(facts.error)
        return decide.decide_sessions(
            facts.sessions,
            facts.history,
            window=self.window,
            down_for=facts.down_for,
            grace=self.grace or 0.0,
        )


def kernel_prefixes(netns: str | None, family: int = socket.AF_INET, table: int = 254) -> set[str]:
    """Every route's prefix in the kernel table (main by default)."""
    from pyroute2 import IPRoute

    def read() -> set[str]:
        out = set()
        with IPRoute() as ipr:
            for r in ipr.get_routes(family=family, table=table):
                dst = r.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
                out.add(f"{dst}/{r['dst_len']}")
        return out

    return in_netns(netns, read)


@dataclass(frozen=True)
class Fib:
    routes: Mapping[str, list[PathInfo]]
    fib: set[str]
    resync: str | None  # how the speaker re-installs its routes, if it can
    error: str | None = None  # the speaker did not answer


class BgpFibCheck(Check):
    name = "bgp-fib"
    condition = "NetkitBGPRoutesNotInFIB"
    interval = 10.0
    summary = "prefixes the speaker holds a best BGP path for, missing from the kernel FIB"

    def __init__(self, speaker: SpeakerSource, netns: str | None = None) -> None:
        self.speaker, self.netns = speaker, netns

    def gather(self) -> Fib | None:
        sp = self.speaker()
        if sp is None:
            return None
        try:
            routes = dict(sp.routes("ipv4"))
        except ControlError as exc:
            return Fib({}, set(), None, error=str(exc)[:300])
        fib = kernel_prefixes(self.netns, socket.AF_INET)
        v6 = sp.routes("ipv6")
        if v6:
            routes.update(v6)
            fib |= kernel_prefixes(self.netns, socket.AF_INET6)
        can = hasattr(sp, "resync_fib")
        return Fib(routes, fib, "birdc reload out <kernel protocols>" if can else None)

    def decide(self, facts: Fib | None) -> Finding:
        if facts is None:
            return unknown("NoSpeaker", "no BGP speaker configured on this node")
        if facts.error is not None:
            return decide.speaker_not_answering(facts.error)
        return decide.decide_fib(facts.routes, facts.fib, facts.resync)

    def repair(self, finding: Finding) -> str:
        sp = self.speaker()
        resync = getattr(sp, "resync_fib", None)
        if resync is None:
            raise RepairError("the speaker cannot be asked to install its routes again")
        return str(resync())
