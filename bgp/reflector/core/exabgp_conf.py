"""The ``exabgp.conf`` and environment a ``ReflectorConfig`` implies (pure).

In ``wire`` API mode the API process receives OPEN, UPDATE and ROUTE-REFRESH messages as they
came (``receive { packets; ... }``) and sends whole UPDATEs (see ``exabgp_main``); in ``text``
mode it uses ExaBGP's parsed JSON and text commands. Either way it learns the peer's router id
and families from its OPEN, and gets route-refresh requests and session changes.

Per neighbour: ``adj-rib-in false`` and ``adj-rib-out false`` (the API process keeps both RIBs;
ExaBGP keeping copies would double the memory and its resend-on-reconnect would race ours),
``manual-eor true`` (the API process sends End-of-RIB after the full table, not ExaBGP before
it) and ``group-updates true``.

Environment (ExaBGP reads its settings from ``exabgp.<section>.<key>`` variables):
``exabgp.daemon.user`` is the current user (as root ExaBGP would otherwise drop to ``nobody``
before starting the API process), ``exabgp.api.cli=false`` (no named pipes), ``exabgp.tcp.bind``
the local address when listening (empty: ExaBGP only connects out), ``exabgp.reactor.speed``
as configured (default per API mode, see ``ExabgpSettings.speed``), ``exabgp.api.ack=true``
(the API process counts rejected commands), ``exabgp.api.respawn=true`` (a respawned API
process resets every session, see ``process``).
"""

from __future__ import annotations

from collections.abc import Mapping

from bgp.reflector.core.config import ReflectorConfig

__all__ = ["PROCESS_NAME", "exabgp_environment", "render_exabgp_conf"]

PROCESS_NAME = "netkit-reflector"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def render_exabgp_conf(cfg: ReflectorConfig, api_command: list[str]) -> str:
    """``exabgp.conf`` for ``cfg``; ``api_command`` runs the API process (argv, absolute path
    first, no spaces in any word: ExaBGP splits the line on whitespace)."""
    for word in api_command:
        if not word or any(c.isspace() or c in ";{}#\"'" for c in word):
            raise ValueError(f"API command word {word!r} cannot go into exabgp.conf")
    out = [
        "# netkit bgp reflector: generated, do not edit",
        f"process {PROCESS_NAME} {{",
        f"    run {' '.join(api_command)};",
        "    encoder json;",
        "}",
        "",
    ]
    fams = [f"{fam} unicast;" for fam in cfg.families]
    # wire: OPEN, UPDATE and ROUTE-REFRESH as received (parsed by the API process)
    receive = (
        "packets; open; update; refresh;" if cfg.exabgp.api == "wire" else "parsed; update; open; refresh;"
    )
    for n in cfg.neighbors:
        local = n.local_address or (
            cfg.local_address_v6 if ":" in n.address and cfg.local_address_v6 else cfg.local_address
        )
        body = [
            f'description "{_safe(n.name)}";',
            f"router-id {cfg.router_id};",
            f"local-address {local};",
            f"local-as {cfg.asn};",
            f"peer-as {n.asn};",
            f"hold-time {cfg.timers.hold};",
            "adj-rib-in false;",
            "adj-rib-out false;",
            "manual-eor true;",
            "group-updates true;",
        ]
        if n.passive:
            body.append("passive true;")
        if n.password is not None:
            body.append(f"md5-password {n.password};")
        body += [
            "capability {",
            "    route-refresh enable;",
            "}",
            "family {",
            *(f"    {f}" for f in fams),
            "}",
            "api {",
            f"    processes [ {PROCESS_NAME} ];",
            "    neighbor-changes;",
            f"    receive {{ {receive} }}",
            "}",
        ]
        out += [f"neighbor {n.address} {{", *(f"    {line}" for line in body), "}", ""]
    return "\n".join(out)


def exabgp_environment(cfg: ReflectorConfig, user: str, log_destination: str = "stdout") -> Mapping[str, str]:
    """The ``exabgp.*`` environment variables ExaBGP runs with."""
    binds = [cfg.local_address] if cfg.listen else []
    if cfg.listen and cfg.local_address_v6:
        binds.append(cfg.local_address_v6)
    for n in cfg.neighbors:
        if cfg.listen and n.local_address and n.local_address not in binds:
            binds.append(n.local_address)
    return {
        "exabgp.daemon.user": user,
        "exabgp.daemon.daemonize": "false",
        "exabgp.api.cli": "false",
        "exabgp.api.ack": "true",
        "exabgp.api.respawn": "true",
        "exabgp.api.encoder": "json",
        "exabgp.tcp.bind": " ".join(binds),
        "exabgp.tcp.port": str(cfg.port),
        "exabgp.reactor.speed": repr(cfg.exabgp.speed),
        "exabgp.log.destination": log_destination,
        "exabgp.log.level": cfg.exabgp.log_level,
        "exabgp.log.short": "true",
    }
