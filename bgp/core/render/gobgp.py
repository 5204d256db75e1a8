"""GoBGP (gobgpd 3) TOML configuration for one speaker, and the CLI commands that originate
its prefixes (GoBGP's TOML has no place for locally originated routes).

Each session carries the address family of its own addresses (see ``bgp.core.render``). gobgpd
installs nothing in the kernel by itself (only through zebra), so ``install_routes`` has no
effect here. gobgpd listens on every address (no ``local-address-list``: a SIGHUP reload does
not change global settings, and new sessions may use an alternate local address); each
neighbour's ``transport.local-address`` pins the session's source. Originated prefixes carry
the node's main address as next hop on every session. No graceful restart is configured (as
in the BIRD and FRR renderers).
"""

from __future__ import annotations

from bgp.core.model import Role, SpeakerConfig
from bgp.core.render import family

__all__ = ["gobgp_announce_commands", "gobgp_withdraw_commands", "render_gobgp"]


def _s(text: str) -> str:
    """A TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_gobgp(cfg: SpeakerConfig) -> str:
    """A complete ``gobgpd.toml`` for ``cfg``."""
    t = cfg.timers
    out = [
        f"# netkit: BGP speaker {cfg.node} (generated, do not edit)",
        "[global.config]",
        f"  as = {cfg.asn}",
        f"  router-id = {_s(cfg.router_id)}",
    ]
    for n in cfg.neighbors:
        out += [
            "",
            "[[neighbors]]",
            "  [neighbors.config]",
            f"    neighbor-address = {_s(n.address)}",
            f"    peer-as = {n.asn}",
            f"    description = {_s(n.name)}",
        ]
        if n.password is not None:
            out.append(f"    auth-password = {_s(n.password)}")
        out += [
            "  [neighbors.timers.config]",
            f"    hold-time = {t.hold}",
            f"    keepalive-interval = {t.keepalive}",
            f"    connect-retry = {t.connect_retry}",
            "  [neighbors.transport.config]",
            f"    local-address = {_s(n.local_address or cfg.address)}",
        ]
        if n.role is Role.CLIENT:
            out += [
                "  [neighbors.route-reflector.config]",
                "    route-reflector-client = true",
                f"    route-reflector-cluster-id = {_s(cfg.cluster_id or cfg.router_id)}",
            ]
        out += [
            "  [[neighbors.afi-safis]]",
            "    [neighbors.afi-safis.config]",
            f"      afi-safi-name = {_s(family(n.address) + '-unicast')}",
        ]
    return "\n".join(out) + "\n"


def _next_hop(cfg: SpeakerConfig, prefix: str) -> str:
    if family(prefix) == "ipv6" and family(cfg.address) == "ipv4":
        return "::ffff:" + cfg.address  # IPv4-mapped: the RIB wants one; no IPv4 session carries it
    if family(prefix) == "ipv4" and family(cfg.address) == "ipv6":
        return "0.0.0.0"  # likewise
    return cfg.address


def _rib_commands(cfg: SpeakerConfig, verb: str, api: tuple[str, int] | None) -> list[list[str]]:
    head = ["gobgp"] + ([] if api is None else ["-u", api[0], "-p", str(api[1])])
    out = []
    for p in cfg.prefixes:
        fam = "ipv6" if ":" in p else "ipv4"
        out.append(
            [*head, "global", "rib", verb, p, "nexthop", _next_hop(cfg, p), "origin", "igp", "-a", fam]
        )
    return out


def gobgp_announce_commands(cfg: SpeakerConfig, api: tuple[str, int] | None = None) -> list[list[str]]:
    """argv lists (``gobgp [-u HOST -p PORT] global rib add PREFIX nexthop ADDR origin igp -a FAMILY``)
    originating ``cfg.prefixes`` with the speaker's session address as next hop."""
    return _rib_commands(cfg, "add", api)


def gobgp_withdraw_commands(cfg: SpeakerConfig, api: tuple[str, int] | None = None) -> list[list[str]]:
    """The matching ``global rib del`` commands."""
    return _rib_commands(cfg, "del", api)
