"""FRR bgpd configuration for one speaker, and the vtysh commands that move a running bgpd
from one config to another without a restart.

Neighbours are keyed by address (as bgpd keys them). Both address families are activated on
every session (``no bgp default ipv4-unicast`` makes that explicit); originated prefixes are
``network`` statements, which with ``no bgp network import-check`` need no route in the RIB.
When ``install_routes`` is off, a ``table-map`` whose route-map denies everything keeps BGP's
routes out of zebra (and so out of the kernel) without touching BGP's own RIB.
"""

from __future__ import annotations

from bgp.model import Neighbor, Role, SpeakerConfig, Timers

__all__ = ["NO_FIB_ROUTE_MAP", "frr_delta", "render_frr"]

NO_FIB_ROUTE_MAP = "NK-NO-FIB"
_FAMILIES = ("ipv4", "ipv6")


def _family(prefix: str) -> str:
    return "ipv6" if ":" in prefix else "ipv4"


def _neighbor_lines(cfg: SpeakerConfig, n: Neighbor) -> list[str]:
    """Session-level lines for one neighbour (inside ``router bgp``)."""
    a = n.address
    lines = [
        f"neighbor {a} remote-as {n.asn}",
        f"neighbor {a} description {n.name}",
        f"neighbor {a} update-source {cfg.address}",
        *_timer_lines(a, cfg.timers),
    ]
    if n.password is not None:
        lines.append(f"neighbor {a} password {n.password}")
    return lines


def _timer_lines(address: str, t: Timers) -> list[str]:
    return [
        f"neighbor {address} timers {t.keepalive} {t.hold}",
        f"neighbor {address} timers connect {t.connect_retry}",
    ]


def _af_neighbor_lines(n: Neighbor) -> list[str]:
    lines = [f"neighbor {n.address} activate"]
    if n.role is Role.CLIENT:
        lines.append(f"neighbor {n.address} route-reflector-client")
    return lines


def _prefixes(cfg: SpeakerConfig, family: str) -> tuple[str, ...]:
    return cfg.prefixes_v4 if family == "ipv4" else cfg.prefixes_v6


def render_frr(cfg: SpeakerConfig) -> str:
    """A complete ``frr.conf`` for bgpd (FRR 8)."""
    out = [
        f"! netkit: BGP speaker {cfg.node} (generated, do not edit)",
        "frr defaults traditional",
        f"hostname {cfg.node}",
        "!",
    ]
    if not cfg.install_routes:
        out += [f"route-map {NO_FIB_ROUTE_MAP} deny 10", "exit", "!"]
    out += [
        f"router bgp {cfg.asn}",
        f" bgp router-id {cfg.router_id}",
        " no bgp ebgp-requires-policy",
        " no bgp network import-check",
        " no bgp default ipv4-unicast",
    ]
    if cfg.cluster_id is not None:
        out.append(f" bgp cluster-id {cfg.cluster_id}")
    for n in cfg.neighbors:
        out += [" " + line for line in _neighbor_lines(cfg, n)]
    for fam in _FAMILIES:
        out += [" !", f" address-family {fam} unicast"]
        out += [f"  network {p}" for p in _prefixes(cfg, fam)]
        for n in cfg.neighbors:
            out += ["  " + line for line in _af_neighbor_lines(n)]
        if not cfg.install_routes:
            out.append(f"  table-map {NO_FIB_ROUTE_MAP}")
        out.append(" exit-address-family")
    out += ["exit", "!"]
    return "\n".join(out) + "\n"


def frr_delta(old: SpeakerConfig, new: SpeakerConfig) -> list[str]:
    """vtysh configuration commands (to run after ``configure terminal``) that turn a bgpd running
    ``old`` into one running ``new``; empty when nothing changes.

    Untouched neighbours keep their sessions unless their own settings change. Changing the AS
    number needs a restart (bgpd has one ``router bgp`` per AS): that raises ValueError.
    """
    if old.asn != new.asn:
        raise ValueError(f"{new.node}: AS {old.asn} -> {new.asn} needs a bgpd restart, not a delta")
    body: list[str] = []
    if old.router_id != new.router_id:
        body.append(f"bgp router-id {new.router_id}")
    if old.cluster_id != new.cluster_id:
        body.append(f"bgp cluster-id {new.cluster_id}" if new.cluster_id else "no bgp cluster-id")
    olds = {n.address: n for n in old.neighbors}
    news = {n.address: n for n in new.neighbors}
    body += [f"no neighbor {a}" for a in olds if a not in news]
    session_changed = old.timers != new.timers or old.address != new.address
    for a, n in news.items():
        o = olds.get(a)
        if o is None:
            body += _neighbor_lines(new, n)
            continue
        if o.asn != n.asn:
            body.append(f"neighbor {a} remote-as {n.asn}")
        if o.name != n.name:
            body.append(f"neighbor {a} description {n.name}")
        if old.address != new.address:
            body.append(f"neighbor {a} update-source {new.address}")
        if session_changed:
            body += _timer_lines(a, new.timers)
        if o.password != n.password:
            body.append(f"neighbor {a} password {n.password}" if n.password else f"no neighbor {a} password")
    for fam in _FAMILIES:
        af: list[str] = []
        was, now = set(_prefixes(old, fam)), set(_prefixes(new, fam))
        af += [f"no network {p}" for p in _prefixes(old, fam) if p not in now]
        af += [f"network {p}" for p in _prefixes(new, fam) if p not in was]
        for a, n in news.items():
            o = olds.get(a)
            if o is None:
                af += _af_neighbor_lines(n)
            elif (o.role is Role.CLIENT) != (n.role is Role.CLIENT):
                prefix = "" if n.role is Role.CLIENT else "no "
                af.append(f"{prefix}neighbor {a} route-reflector-client")
        if old.install_routes != new.install_routes:
            af.append(("no " if new.install_routes else "") + f"table-map {NO_FIB_ROUTE_MAP}")
        if af:
            body += [f"address-family {fam} unicast", *af, "exit-address-family"]
    if not body:
        return []
    head = (
        [f"route-map {NO_FIB_ROUTE_MAP} deny 10", "exit"]
        if not new.install_routes and old.install_routes
        else []
    )
    return [*head, f"router bgp {new.asn}", *body, "exit"]
