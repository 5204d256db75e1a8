"""What a BGP speaker reports, parsed (pure): sessions and paths from ``birdc``, FRR's vtysh
JSON and ``gobgp -j`` output, as plain data. The lab managers (``labs.bgpspeakers``) and the
control of running speakers (``bgp.control``) both read speakers through these parsers.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PathInfo",
    "normalise_state",
    "parse_bird_neighbors",
    "parse_bird_protocols",
    "parse_bird_routes",
    "parse_frr_neighbors",
    "parse_frr_prefixes",
    "parse_frr_routes",
    "parse_gobgp_neighbors",
    "parse_gobgp_rib",
]


@dataclass(frozen=True)
class PathInfo:
    """One path for a prefix, as a speaker reports it.

    ``from_address`` is the neighbour the path was learnt from (None: originated locally);
    ``next_hop`` is the BGP NEXT_HOP (None for a local path without one).
    """

    prefix: str
    next_hop: str | None
    from_address: str | None
    best: bool
    local_pref: int | None
    as_path: tuple[int, ...] = ()
    originator_id: str | None = None
    cluster_list: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Parsers (pure)
# --------------------------------------------------------------------------------------------

_STATES = {s.lower(): s for s in ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established")}
_GOBGP_STATES = {1: "Idle", 2: "Connect", 3: "Active", 4: "OpenSent", 5: "OpenConfirm", 6: "Established"}


def normalise_state(state: str) -> str:
    """RFC 4271 spelling of an FSM state in any speaker's case (``established`` -> ``Established``);
    anything else is returned unchanged."""
    return _STATES.get(state.lower(), state)


def parse_bird_protocols(text: str, neighbors: Mapping[str, str]) -> dict[str, str]:
    """``birdc show protocols`` -> {neighbour address: state} for the BGP protocols named in
    ``neighbors`` (protocol name -> neighbour address). A protocol that is down without a BGP
    state (e.g. disabled) reports ``Down``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[1] != "BGP" or fields[0] not in neighbors:
            continue
        info = fields[5] if len(fields) > 5 else ""
        out[neighbors[fields[0]]] = normalise_state(info) if info else fields[3].capitalize()
    return out


def parse_bird_neighbors(text: str) -> dict[str, str]:
    """``birdc show protocols all`` -> {BGP protocol name: neighbour address}, whatever the
    protocols are called (calico/node's confd names them ``Node_10_0_0_2``, ``Mesh_...``)."""
    out: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if line and not line[0].isspace():
            fields = line.split()
            current = fields[0] if len(fields) > 1 and fields[1] == "BGP" else None
            continue
        key, _, value = line.strip().partition(":")
        if current is not None and key == "Neighbor address" and value.strip():
            out[current] = value.strip().split("%")[0]
    return out


# BIRD 2: "198.19.2.0/24  unicast [n_n2 12:27:59.082 from 198.18.0.1] * (100) [i]"; BIRD 1.6
# (calico/node's): "192.168.2.0/26  via 10.77.0.2 on eth0 [Node_10_77_0_2 01:36:02] * (100/0) [i]"
# (prefix only on the first path of a prefix; the time may be a date for old routes)
_BIRD_PATH = re.compile(
    r"^(?P<prefix>\S+)?\s+(?P<kind>\w+)(?:\s+(?P<gw>[^\s\[]+)(?:\s+on\s+\S+)?)?"
    r"\s+\[(?P<proto>\S+)\s+[^\]]*?(?:\s+from\s+(?P<from>\S+))?\]\s+(?P<best>\*)?"
)


def parse_bird_routes(text: str, neighbors: Mapping[str, str]) -> dict[str, list[PathInfo]]:
    """``birdc show route all [table T]`` -> {prefix: paths}.

    ``neighbors`` maps BGP protocol names to neighbour addresses: a path's ``from_address`` is
    its protocol's neighbour; for a BGP path of a protocol not named there, the ``from X`` field
    (printed only when X differs from the gateway), else the gateway. Paths of other protocols
    are local (None); only BGP paths and originated blackholes (static) are kept.
    """
    out: dict[str, list[PathInfo]] = {}
    current: dict[str, Any] | None = None
    extra: dict[str, Any] = {}
    prefix: str | None = None

    def flush() -> None:
        if current is None:
            return
        if extra["bgp"] and current["from_address"] is None:
            current["from_address"] = _address(extra["from"] or extra["via"])
        if extra["bgp"] or extra["originated"]:
            out.setdefault(current["prefix"], []).append(PathInfo(**current))

    for raw in text.splitlines():
        if not raw.strip() or raw.startswith(("BIRD ", "Table ")):
            continue
        m = _BIRD_PATH.match(raw)
        if m and not raw.startswith("\t"):  # attribute lines are tab-indented, paths are not
            flush()
            prefix = m["prefix"] or prefix
            proto = m["proto"]
            current = {
                "prefix": prefix,
                "next_hop": None,
                "from_address": neighbors.get(proto),
                "best": m["best"] is not None,
                "local_pref": None,
                "as_path": (),
                "originator_id": None,
                "cluster_list": (),
            }
            extra = {
                "bgp": proto in neighbors,
                "originated": m["kind"] in ("blackhole", "unreachable", "prohibited"),
                "from": m["from"],
                "via": m["gw"] if m["kind"] == "via" else None,
            }
            continue
        if current is None:
            continue
        line = raw.strip()
        key, _, value = line.partition(":")
        value = value.strip()
        if line.startswith("via "):
            extra["via"] = line.split()[1]
        elif key == "Type" and value.startswith("BGP"):
            extra["bgp"] = True
        elif key == "BGP.next_hop":
            current["next_hop"] = _address(value.split()[0]) if value else None
        elif key == "BGP.local_pref":
            current["local_pref"] = int(value)
        elif key == "BGP.as_path":
            current["as_path"] = tuple(int(t) for t in value.replace("{", " ").replace("}", " ").split())
        elif key == "BGP.originator_id":
            current["originator_id"] = value
        elif key == "BGP.cluster_list":
            current["cluster_list"] = tuple(value.split())
    flush()
    return out


def _address(text: str | None) -> str | None:
    """An address as every parser reports it: IPv4-mapped IPv6 (``::ffff:c612:1``, how FRR
    shows an IPv4 next hop of an IPv6 route) becomes the IPv4 address; unspecified is None."""
    if text is None:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if ip.is_unspecified:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def _json_documents(text: str) -> list[Any]:
    """Every JSON document in ``text`` (vtysh prints one per ``-c`` command, back to back)."""
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return docs
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)


def parse_frr_neighbors(text: str) -> dict[str, str]:
    """``show bgp neighbors json`` -> {neighbour address: state}."""
    data = json.loads(text) if text.strip() else {}
    return {a: normalise_state(str(v.get("bgpState", ""))) for a, v in data.items() if isinstance(v, dict)}


def parse_frr_prefixes(text: str) -> list[str]:
    """``show bgp <afi> unicast json`` -> the prefixes in the table."""
    data = json.loads(text) if text.strip() else {}
    return list(data.get("routes", {}))


def _frr_as_path(aspath: Mapping[str, Any]) -> tuple[int, ...]:
    asns: list[int] = []
    for seg in aspath.get("segments", []):
        asns += [int(a) for a in seg.get("list", [])]
    return tuple(asns)


def parse_frr_routes(text: str) -> dict[str, list[PathInfo]]:
    """Back-to-back ``show bgp <afi> unicast PREFIX json`` documents -> {prefix: paths}."""
    out: dict[str, list[PathInfo]] = {}
    for doc in _json_documents(text):
        prefix = doc.get("prefix")
        if prefix is None:
            continue
        for p in doc.get("paths", []):
            peer = p.get("peer", {}).get("peerId")
            local = peer in (None, "(unspec)", "0.0.0.0", "::") or p.get("sourced") or p.get("local")
            nhs = p.get("nexthops", [])
            nh = nhs[0].get("ip") if nhs else None
            best = p.get("bestpath", {})
            out.setdefault(prefix, []).append(
                PathInfo(
                    prefix=prefix,
                    next_hop=_address(nh),
                    from_address=None if local else _address(peer),
                    best=bool(best.get("overall")) if isinstance(best, dict) else bool(best),
                    local_pref=p.get("locPrf"),
                    as_path=_frr_as_path(p.get("aspath", {})),
                    originator_id=p.get("originatorId"),
                    cluster_list=tuple(p.get("clusterList", {}).get("list", [])),
                )
            )
    return out


def parse_gobgp_neighbors(text: str) -> dict[str, str]:
    """``gobgp neighbor -j`` -> {neighbour address: state}."""
    data = json.loads(text) if text.strip() else []
    out: dict[str, str] = {}
    for n in data or []:
        address = n.get("conf", {}).get("neighbor_address") or n.get("state", {}).get("neighbor_address")
        raw = n.get("state", {}).get("session_state", 1)  # gobgp omits zero values; absent: idle
        out[address] = _GOBGP_STATES.get(raw, str(raw)) if isinstance(raw, int) else normalise_state(raw)
    return out


def parse_gobgp_rib(text: str) -> dict[str, list[PathInfo]]:
    """``gobgp global rib -a AFI -j`` -> {prefix: paths}."""
    data = json.loads(text) if text.strip() else {}
    out: dict[str, list[PathInfo]] = {}
    for prefix, paths in (data or {}).items():
        for p in paths:
            attrs = {a["type"]: a for a in p.get("attrs", [])}
            nh = attrs.get(3, attrs.get(14, {})).get("nexthop")
            as_path: list[int] = []
            for seg in attrs.get(2, {}).get("as_paths", []):
                as_path += seg.get("asns", [])
            out.setdefault(prefix, []).append(
                PathInfo(
                    prefix=prefix,
                    next_hop=_address(nh),
                    from_address=_address(p.get("neighbor-ip")),
                    best=bool(p.get("best")),
                    local_pref=attrs[5]["value"] if 5 in attrs else None,
                    as_path=tuple(as_path),
                    originator_id=attrs[9]["value"] if 9 in attrs else None,
                    cluster_list=tuple(attrs[10]["value"]) if 10 in attrs else (),
                )
            )
    return out
