"""FRR bgpd configuration for one speaker, and the vtysh commands that move a running bgpd
from one config to another without a restart.

Neighbours are keyed by address (as bgpd keys them). Each is activated in the address family
of its own address only (see ``bgp.core.render``; ``no bgp default ipv4-unicast`` makes activation
explicit); originated prefixes are
``network`` statements, which with ``no bgp network import-check`` need no route in the RIB.
When ``install_routes`` is off, a ``table-map`` whose route-map denies everything keeps BGP's
routes out of zebra (and so out of the kernel) without touching BGP's own RIB. A session on an
alternate local address (``Neighbor.local_address``) gets an outbound route-map that sets the
node's main address as next hop of its own prefixes, as the BIRD renderer does. Graceful
restart is disabled (also helper mode), as in the BIRD renderer: a dead speaker's routes go when
its session does.

Measured on FRR 8.4.4: toggling ``route-reflector-client`` resets the session (bgpd sends a
CEASE and reconnects); see ``frr_delta``.
"""

from __future__ import annotations

from bgp.core.model import Neighbor, Role, SpeakerConfig
from bgp.core.render import family

__all__ = ["NEXT_HOP_ROUTE_MAP", "NO_FIB_ROUTE_MAP", "OWN_PREFIX_LIST", "frr_delta", "render_frr"]

NO_FIB_ROUTE_MAP = "NK-NO-FIB"
NEXT_HOP_ROUTE_MAP = "NK-NH-MAIN"
OWN_PREFIX_LIST = "NK-OWN"
_FAMILIES = ("ipv4", "ipv6")


def _alt(cfg: SpeakerConfig, n: Neighbor) -> bool:
    return n.local_address is not None and n.local_address != cfg.address


def _session_lines(cfg: SpeakerConfig, n: Neighbor) -> dict[str, str]:
    """Session-level lines for one neighbour (inside ``router bgp``), by what they set."""
    a, t = n.address, cfg.timers
    lines = {
        "remote-as": f"neighbor {a} remote-as {n.asn}",
        "description": f"neighbor {a} description {n.name}",
        "update-source": f"neighbor {a} update-source {n.local_address or cfg.address}",
        "timers": f"neighbor {a} timers {t.keepalive} {t.hold}",
        "timers connect": f"neighbor {a} timers connect {t.connect_retry}",
    }
    if n.password is not None:
        lines["password"] = f"neighbor {a} password {n.password}"
    return lines


def _af_lines(cfg: SpeakerConfig, n: Neighbor, fam: str) -> list[str]:
    if family(n.address) != fam:
        return []
    lines = [f"neighbor {n.address} activate"]
    if n.role is Role.CLIENT:
        lines.append(f"neighbor {n.address} route-reflector-client")
    if _alt(cfg, n):
        lines.append(f"neighbor {n.address} route-map {NEXT_HOP_ROUTE_MAP} out")
    return lines


def _prefixes(cfg: SpeakerConfig, fam: str) -> tuple[str, ...]:
    return cfg.prefixes_v4 if fam == "ipv4" else cfg.prefixes_v6


def _no_fib_route_map() -> list[str]:
    return [f"route-map {NO_FIB_ROUTE_MAP} deny 10", "exit"]


def _own_prefixes(cfg: SpeakerConfig) -> tuple[str, ...]:
    return _prefixes(cfg, family(cfg.address))


def _next_hop_route_map(cfg: SpeakerConfig) -> list[str]:
    """Own prefixes (by prefix-list: ``match peer`` in an outbound map matches the receiving peer,
    not where the route came from) get the main address as next hop; everything else passes."""
    v6 = family(cfg.address) == "ipv6"
    ip = "ipv6" if v6 else "ip"
    lines = [
        f"{ip} prefix-list {OWN_PREFIX_LIST} seq {5 * k} permit {p}"
        for k, p in enumerate(_own_prefixes(cfg), 1)
    ]
    lines += [f"route-map {NEXT_HOP_ROUTE_MAP} permit 10"]
    if lines[:-1]:
        lines.append(f" match {ip} address prefix-list {OWN_PREFIX_LIST}")
        lines.append(f" set {'ipv6 next-hop global' if v6 else 'ip next-hop'} {cfg.address}")
    else:
        lines.append(" match peer 255.255.255.255")  # no own prefix: let nothing match
    return [*lines, "exit", f"route-map {NEXT_HOP_ROUTE_MAP} permit 20", "exit"]


def _drop_next_hop_route_map(cfg: SpeakerConfig) -> list[str]:
    ip = "ipv6" if family(cfg.address) == "ipv6" else "ip"
    lines = [f"no route-map {NEXT_HOP_ROUTE_MAP}"]
    if _own_prefixes(cfg):
        lines.append(f"no {ip} prefix-list {OWN_PREFIX_LIST}")
    return lines


def render_frr(cfg: SpeakerConfig) -> str:
    """A complete ``frr.conf`` for bgpd (FRR 8)."""
    out = [
        f"! netkit: BGP speaker {cfg.node} (generated, do not edit)",
        "frr defaults traditional",
        f"hostname {cfg.node}",
        "!",
    ]
    if not cfg.install_routes:
        out += [*_no_fib_route_map(), "!"]
    if any(_alt(cfg, n) for n in cfg.neighbors):
        out += [*_next_hop_route_map(cfg), "!"]
    out += [
        f"router bgp {cfg.asn}",
        f" bgp router-id {cfg.router_id}",
        " no bgp ebgp-requires-policy",
        " no bgp network import-check",
        " no bgp default ipv4-unicast",
        " bgp graceful-restart-disable",
    ]
    if _cluster_id(cfg) is not None:
        out.append(f" bgp cluster-id {_cluster_id(cfg)}")
    for n in cfg.neighbors:
        out += [" " + line for line in _session_lines(cfg, n).values()]
    for fam in _FAMILIES:
        out += [" !", f" address-family {fam} unicast"]
        out += [f"  network {p}" for p in _prefixes(cfg, fam)]
        for n in cfg.neighbors:
            out += ["  " + line for line in _af_lines(cfg, n, fam)]
        if not cfg.install_routes:
            out.append(f"  table-map {NO_FIB_ROUTE_MAP}")
        out.append(" exit-address-family")
    out += ["exit", "!"]
    return "\n".join(out) + "\n"


def _cluster_id(cfg: SpeakerConfig) -> str | None:
    """The ``bgp cluster-id`` line's value: none when it is the router id, bgpd's default.

    Setting it, even to the value in effect, resets every iBGP session, so a node that starts
    reflecting during a live migration (cluster id = its router id) must not get the line.
    """
    if cfg.cluster_id is None or cfg.cluster_id == cfg.router_id:
        return None
    return cfg.cluster_id


def frr_delta(old: SpeakerConfig, new: SpeakerConfig) -> list[str]:
    """vtysh configuration commands (to run after ``configure terminal``) that turn a bgpd running
    ``old`` into one running ``new``; empty when nothing changes.

    Removed neighbours go first (``no neighbor X``), then global settings, then each kept or new
    neighbour's changed lines, then per address family the ``network`` and per-neighbour lines
    (``activate``, ``route-reflector-client``) that differ. A neighbour whose settings did not
    change is not touched. Beware: bgpd resets a session whose ``route-reflector-client`` flag
    changes, and ``bgp cluster-id`` resets every iBGP session. Changing the AS number needs a
    restart (bgpd has one ``router bgp`` per AS): that raises ValueError.
    """
    if old.asn != new.asn:
        raise ValueError(f"{new.node}: AS {old.asn} -> {new.asn} needs a bgpd restart, not a delta")
    olds = {n.address: n for n in old.neighbors}
    news = {n.address: n for n in new.neighbors}
    body = [f"no neighbor {a}" for a in olds if a not in news]
    if old.router_id != new.router_id:
        body.append(f"bgp router-id {new.router_id}")
    if _cluster_id(old) != _cluster_id(new):
        cid = _cluster_id(new)
        body.append(f"bgp cluster-id {cid}" if cid else "no bgp cluster-id")
    for a, n in news.items():
        was = _session_lines(old, olds[a]) if a in olds else {}
        now = _session_lines(new, n)
        body += [line for key, line in now.items() if was.get(key) != line]
        body += [f"no {line}" for key, line in was.items() if key not in now]
    for fam in _FAMILIES:
        af: list[str] = []
        had, has = _prefixes(old, fam), _prefixes(new, fam)
        af += [f"no network {p}" for p in had if p not in has]
        af += [f"network {p}" for p in has if p not in had]
        for a, n in news.items():
            was_af = _af_lines(old, olds[a], fam) if a in olds else []
            now_af = _af_lines(new, n, fam)
            af += [f"no {line}" for line in was_af if line not in now_af]
            af += [line for line in now_af if line not in was_af]
        if old.install_routes != new.install_routes:
            af.append(("no " if new.install_routes else "") + f"table-map {NO_FIB_ROUTE_MAP}")
        if af:
            body += [f"address-family {fam} unicast", *af, "exit-address-family"]
    if not body:
        return []
    head: list[str] = []
    if not new.install_routes and old.install_routes:
        head += _no_fib_route_map()
    had_alt, has_alt = any(_alt(old, n) for n in old.neighbors), any(_alt(new, n) for n in new.neighbors)
    tail: list[str] = []
    if has_alt and (not had_alt or _own_prefixes(old) != _own_prefixes(new) or old.address != new.address):
        head += _drop_next_hop_route_map(old) if had_alt else []
        head += _next_hop_route_map(new)  # before the alternate sessions that use it
    elif had_alt and not has_alt:
        tail += _drop_next_hop_route_map(old)  # after the last alternate session is gone
    return [*head, f"router bgp {new.asn}", *body, "exit", *tail]
