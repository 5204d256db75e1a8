"""Node-wide checks' decisions (pure): the conntrack table near full, the API server unreachable."""

from __future__ import annotations

from typing import Any

from netkit.doctor.core.model import Finding, ok, problem, unknown

__all__ = ["decide_api", "decide_conntrack"]


def decide_conntrack(count: int | None, maximum: int | None, threshold: float) -> Finding:
    if count is None or not maximum:
        return unknown("NoConntrack", "connection tracking is not loaded in this namespace")
    ratio = count / maximum
    facts: dict[str, Any] = {"entries": count, "max": maximum, "ratio": round(ratio, 4)}
    if ratio >= threshold:
        return problem(
            "ConntrackNearFull",
            f"conntrack table {ratio:.0%} full ({count} of {maximum}): new flows will be dropped",
            [f"nf_conntrack_count {count}", f"nf_conntrack_max {maximum}", f"threshold {threshold:.0%}"],
            suggestion="raise net.netfilter.nf_conntrack_max or find the flow storm (conntrack -L)",
            **facts,
        )
    return ok(f"conntrack table {ratio:.1%} full ({count} of {maximum})", **facts)


def decide_api(server: str, error: str | None, seconds: float) -> Finding:
    if error is not None:
        return problem(
            "APIServerUnreachable",
            f"the API server {server} is unreachable from the node: {error}",
            suggestion="the data plane keeps running as it is; check the path to the API server",
        )
    return ok(f"the API server {server} answered in {seconds * 1000:.0f} ms", seconds=round(seconds, 4))
