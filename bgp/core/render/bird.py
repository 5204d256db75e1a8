"""BIRD 2 configuration for one speaker.

Choices worth knowing:

- Each session has one channel, of its own address family (see ``bgp.core.render``); originated
  prefixes of both families are static routes, and the kernel gets BGP routes of both.
- Next hops are resolved recursively (``gateway recursive``, BIRD's iBGP default) through the
  ``master4``/``master6`` tables, which ``protocol direct`` fills with the node's connected
  networks: on a shared segment (the lab's 198.18.0.0/24) a reflected next hop, the originator's
  address, resolves through the connected /24; on a routed underlay the IGP's routes would.
- Originated prefixes are ``blackhole`` static routes, as Calico does for its IPAM blocks; only
  routes BIRD learnt by BGP go to the kernel, so the blackholes stay inside BIRD.
- A session on an alternate local address (``Neighbor.local_address``) still announces the
  node's own prefixes with the node's main address as next hop, so moving a session between
  address pairs changes no next hop in anybody's FIB.
- Every neighbour gets its own ``protocol bgp`` named ``Neighbor.ident``; ``birdc show route``
  prints that name, which is how a reader tells which session a path came from.
- Graceful restart is off (BIRD advertises GR and LLGR by default): when a speaker dies, its
  peers drop its routes once the hold timer expires, instead of keeping them as stale for the
  dead speaker's restart time (120 s on BIRD and FRR). The FRR renderer does the same.
- ``connect delay time`` follows ``connect_retry`` and a short ``error wait time`` is set when
  ``connect_retry`` is small: BIRD's defaults (5 s, then 60-300 s) keep a lab peer that went
  away idle for minutes.
"""

from __future__ import annotations

from bgp.core.model import Neighbor, Role, SpeakerConfig, Timers
from bgp.core.render import family

__all__ = ["STATIC_PROTOCOLS", "render_bird"]

# Names of the static protocols holding originated prefixes (one per family).
STATIC_PROTOCOLS = {"ipv4": "nk_static4", "ipv6": "nk_static6"}

_FAMILIES = ("ipv4", "ipv6")
_SHORT_RETRY = 4  # connect_retry at or below this also shortens BIRD's error wait time (default 60-300 s)


def _quote(text: str) -> str:
    """A BIRD string literal; BIRD's lexer has no escapes, so a quote or newline cannot be said."""
    if '"' in text or "\n" in text:
        raise ValueError(f"BIRD cannot quote {text!r} (a double quote or newline)")
    return f'"{text}"'


def _timer_lines(t: Timers) -> list[str]:
    lines = [
        f"hold time {t.hold};",
        f"keepalive time {t.keepalive};",
        f"connect retry time {t.connect_retry};",
        f"connect delay time {t.connect_retry};",
    ]
    if t.connect_retry <= _SHORT_RETRY:
        lines.append(f"error wait time {t.connect_retry}, {max(5 * t.connect_retry, t.connect_retry + 1)};")
    return lines


def _bgp_protocol(cfg: SpeakerConfig, n: Neighbor) -> list[str]:
    body = [
        f"description {_quote(n.name)};",
        f"local {n.local_address or cfg.address} as {cfg.asn};",
        f"neighbor {n.address} as {n.asn};",
        *_timer_lines(cfg.timers),
        "graceful restart off;",
        "long lived graceful restart off;",
    ]
    if n.password is not None:
        body.append(f"password {_quote(n.password)};")
    if n.role is Role.CLIENT:
        body.append("rr client;")
        if cfg.cluster_id is not None:
            body.append(f"rr cluster id {cfg.cluster_id};")
    body += [
        f"{family(n.address)} {{",
        "    import all;",
        "    export where source ~ [ RTS_STATIC, RTS_BGP ];",
        "    gateway recursive;",
    ]
    if (
        n.local_address is not None
        and n.local_address != cfg.address
        and family(cfg.address) == family(n.address)
    ):
        body.append(f"    next hop address {cfg.address};")
    body.append("};")
    return [f"protocol bgp {n.ident} {{", *("    " + line for line in body), "}"]


def render_bird(cfg: SpeakerConfig) -> str:
    """A complete ``bird.conf`` for ``cfg`` (BIRD 2.0)."""
    out = [
        f"# netkit: BGP speaker {cfg.node} (generated, do not edit)",
        f"router id {cfg.router_id};",
        "",
        "protocol device {",
        "    scan time 10;",
        "}",
        "",
        "# connected networks, so that BGP next hops on them resolve (gateway recursive)",
        "protocol direct {",
        "    ipv4;",
        "    ipv6;",
        "}",
    ]
    if cfg.install_routes:
        for fam in _FAMILIES:
            out += [
                "",
                f"protocol kernel nk_kernel{fam[-1]} {{",
                f"    {fam} {{",
                "        import none;",
                "        export where source = RTS_BGP;",
                "    };",
                "}",
            ]
    for fam, prefixes in (("ipv4", cfg.prefixes_v4), ("ipv6", cfg.prefixes_v6)):
        if prefixes:
            out += ["", f"protocol static {STATIC_PROTOCOLS[fam]} {{", f"    {fam};"]
            out += [f"    route {p} blackhole;" for p in prefixes]
            out.append("}")
    for n in cfg.neighbors:
        out += ["", *_bgp_protocol(cfg, n)]
    return "\n".join(out) + "\n"
