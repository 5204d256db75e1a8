"""ExaBGP's entry point, optionally with two scheduling fixes (effects).

``python -m bgp.reflector.exabgp_main [--tuned] exabgp.conf`` runs the pinned ExaBGP exactly as
its own ``exabgp`` script does; with ``--tuned`` it first changes two things, both measured on
the reflector benchmark (10,000 prefixes, BIRD -> reflector -> BIRD, ExaBGP 4.2.25, reactor
speed 0.1: 1.4 s without, 0.24 s with both):

1. ``Configuration.inject_change`` deep-copies every route a command announces, once per
   neighbour the command names, so that "next-hop self" can be rewritten per neighbour. The API
   process names exactly one neighbour per command and never uses "next-hop self", and ExaBGP
   parses every command into fresh objects, so the copy protects nothing: the tuned version
   skips it when the command names one neighbour and the next hop is not "self". The deep copy
   was 40 % of ExaBGP's CPU time in a profile of the benchmark.
2. ExaBGP's reactor runs at most ``ASYNC.LIMIT`` (50) steps of API work per loop iteration (one
   step per route), and sleeps between iterations while idle: 10,000 routes took 200
   iterations. The tuned version allows 5,000 steps per iteration (5-50 ms of work), which keeps
   keepalives and reads timely.

Both patch ExaBGP internals, so they are applied only to the version pinned in pyproject.toml
(``PINNED``); any other version runs untuned, with a warning on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["ASYNC_LIMIT", "PINNED", "apply_tuning", "main"]

PINNED = "4.2.25"
ASYNC_LIMIT = 5000


def _inject_change(original: Callable[..., bool]) -> Callable[..., bool]:
    def inject_change(self: Any, peers: list[str], change: Any) -> bool:
        if len(peers) != 1 or change.nlri.nexthop.SELF:
            return original(self, peers, change)
        neighbor = self.neighbors.get(peers[0])
        if neighbor is None:
            return True  # as the original: a name that matches no neighbour changes nothing
        if change.nlri.family() not in neighbor.families():
            return original(self, peers, change)  # the original logs this
        neighbor.rib.outgoing.add_to_rib(change)
        return True

    inject_change.netkit_tuned = True  # type: ignore[attr-defined]
    return inject_change


def apply_tuning() -> list[str]:
    """Apply the fixes to the imported ExaBGP; returns what was changed ([] if the version is not
    the pinned one)."""
    from exabgp.configuration.configuration import Configuration
    from exabgp.reactor.asynchronous import ASYNC
    from exabgp.version import version

    if version != PINNED:
        print(f"netkit: ExaBGP {version} is not the pinned {PINNED}: running it untuned", file=sys.stderr)
        return []
    applied = []
    if not getattr(Configuration.inject_change, "netkit_tuned", False):
        Configuration.inject_change = _inject_change(Configuration.inject_change)
        applied.append("inject_change without deep copy")
    if ASYNC.LIMIT < ASYNC_LIMIT:
        ASYNC.LIMIT = ASYNC_LIMIT
        applied.append(f"ASYNC.LIMIT {ASYNC_LIMIT}")
    return applied


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--tuned":
        args.pop(0)
        apply_tuning()
    from exabgp.application import run_exabgp

    sys.argv = ["exabgp", *args]
    result = run_exabgp()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
