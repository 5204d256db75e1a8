"""The netkit reflector's config file (``netkit bgp reflector --config FILE``) for one speaker.

A planner ``SpeakerConfig`` of a node that reflects becomes the YAML ``bgp.reflector.core.config``
reads: router id, AS, session address, cluster id, timers and every neighbour with its role
(client, peer, reflector), TCP MD5 password and alternate local address. Policy is not part of a
``SpeakerConfig``; pass it here: ``allowed`` (neighbour name -> allowed blocks, e.g. each node's
own pod CIDRs), ``max_prefix`` (one limit for every neighbour) and ``metrics``.

Differences from the other renderers worth knowing: the netkit reflector installs no route in
the kernel and originates none, so a reflector node's own prefixes (``cfg.prefixes``) must be
announced by a speaker on that node (they are listed in a comment); and ExaBGP listens on the
session address (``listen: true``), so a second BGP daemon on the same address and port cannot
run beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import yaml

from bgp.core.model import SpeakerConfig

__all__ = ["render_reflector_config"]


def render_reflector_config(
    cfg: SpeakerConfig,
    *,
    allowed: Mapping[str, Sequence[str]] | None = None,
    max_prefix: int | None = None,
    max_prefix_action: str = "keep",
    metrics: str | None = None,
) -> str:
    """YAML for ``netkit bgp reflector --config`` from ``cfg`` (the node's planner output)."""
    neighbors: list[dict[str, object]] = []
    for n in cfg.neighbors:
        entry: dict[str, object] = {"name": n.name, "address": n.address, "asn": n.asn, "role": str(n.role)}
        if n.password is not None:
            entry["password"] = n.password
        if n.local_address is not None and n.local_address != cfg.address:
            entry["local_address"] = n.local_address
        if allowed is not None and n.name in allowed:
            entry["allowed_prefixes"] = list(allowed[n.name])
        neighbors.append(entry)
    doc: dict[str, object] = {
        "router_id": cfg.router_id,
        "asn": cfg.asn,
        "local_address": cfg.address,
    }
    if cfg.cluster_id is not None:
        doc["cluster_id"] = cfg.cluster_id
    if metrics is not None:
        doc["metrics"] = metrics
    doc["timers"] = {
        "hold": cfg.timers.hold,
        "keepalive": cfg.timers.keepalive,
        "connect_retry": cfg.timers.connect_retry,
    }
    if max_prefix is not None:
        doc["defaults"] = {"max_prefix": {"limit": max_prefix, "action": max_prefix_action}}
    doc["neighbors"] = neighbors
    head = [
        f"# netkit bgp reflector for {cfg.node} (generated from the plan, do not edit)",
        "# run: netkit bgp reflector --config THIS_FILE",
    ]
    if cfg.prefixes:
        head.append(
            "# not originated by the reflector (announce them from another speaker on the node): "
            + ", ".join(cfg.prefixes)
        )
    return "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
