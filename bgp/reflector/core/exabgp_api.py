"""ExaBGP's API: its JSON messages in, its commands out, in two modes (pure).

ExaBGP 4.2 writes one JSON object per line to the API process (``encoder json``) and, after each
command, ``done`` or ``error`` (``exabgp.api.ack``). Session changes come as
``{"type": "state", "neighbor": {"address": {"peer": P}, "state": "up"|"down"|"connected"}}`` in
both modes; ``{"type": "notification", "notification": "shutdown"}`` says ExaBGP is stopping.

``WireCodec`` (``receive { packets; open; update; refresh; }``, with the hooks of
``exabgp_main``): every OPEN, UPDATE and ROUTE-REFRESH arrives as received,
``{"type": "update", "neighbor": {..., "message": {"category": 2, "header": "0xFF..", "body":
"0x.."}}}``, and is parsed by ``wire``; commands are ``neighbor A netkit-raw HEX HEX ...`` (whole
BGP messages built by ``wire.UpdateEncoder``), ``neighbor A netkit-notify CODE SUBCODE`` and
``neighbor A teardown SUBCODE``.

``TextCodec`` (ExaBGP's own API, ``receive { parsed; update; open; refresh; }``), the shapes it
reads:

- ``{"type": "state", "neighbor": {"address": {"peer": P}, "state": "up"|"down"|"connected",
  "reason": ...}}``
- ``{"type": "open", "neighbor": {..., "direction": "receive", "open": {"router_id": R,
  "capabilities": {"1": {"name": "multiprotocol", "families": ["ipv4/unicast", ...]}}}}}``
- ``{"type": "update", "neighbor": {..., "message": {"update": {"attribute": {...},
  "announce": {"ipv4 unicast": {NEXT_HOP: [{"nlri": P}, ...]}}, "withdraw": {"ipv4 unicast":
  [{"nlri": P}, ...]}}}}}``, or ``"message": {"eor": {"afi": "ipv4", "safi": "unicast"}}``
- ``{"type": "refresh", "neighbor": {..., "route-refresh": {"afi", "safi", "subtype": "query"}}}``
- ``{"type": "notification", "notification": "shutdown"}`` (ExaBGP is stopping)

Commands are one line each, naming one neighbour; announcements sharing attributes go as one
``neighbor X announce attributes ATTRS nlri P1 P2 ...`` line (ExaBGP packs them into as few
UPDATEs as fit), withdrawals as ``neighbor X withdraw attributes next-hop 0.0.0.0 nlri P1 P2 ...``
(one family per line).

Anything else raises :class:`DecodeError` with a short reason (a metric label); the caller counts
and logs it and goes on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from bgp.reflector.core.events import (
    Announce,
    Command,
    EndOfRib,
    Event,
    Malformed,
    PeerDown,
    PeerOpen,
    PeerUp,
    RouteRefresh,
    SendEndOfRib,
    SpeakerAck,
    SpeakerShutdown,
    Teardown,
    Update,
    Withdraw,
)
from bgp.reflector.core.prefix import V6, Prefix, from_text, to_text
from bgp.reflector.core.route import EGP, IGP, INCOMPLETE, ORIGIN_NAMES, Attrs, ipv4_int
from bgp.reflector.core.wire import (
    UpdateDecoder,
    UpdateEncoder,
    WireError,
    end_of_rib,
    parse_open,
    parse_refresh,
)

__all__ = [
    "RAW_LINE_BYTES",
    "Codec",
    "DecodeError",
    "TextCodec",
    "WireCodec",
    "encode",
    "encode_attrs",
    "make_codec",
]

_ORIGINS = {"igp": IGP, "egp": EGP, "incomplete": INCOMPLETE}
_FAMILY_KEYS = {"ipv4 unicast": "ipv4", "ipv6 unicast": "ipv6"}
_INTERN_LIMIT = 1 << 16
_OPTIONAL, _TRANSITIVE, _PARTIAL, _EXTENDED = 0x80, 0x40, 0x20, 0x10
# attributes ExaBGP decodes that a unicast reflector does not pass on
_IGNORED = frozenset({"confederation-path", "confederation-set", "aigp", "bgp-ls", "bgp-prefix-sid", "pmsi"})


class DecodeError(ValueError):
    """A line that is not a message this module understands; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DecodeError("bad_attribute", f"{what} is not a non-negative integer: {value!r}")
    return value


def _ints(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise DecodeError("bad_attribute", f"{what} is not a list: {value!r}")
    return tuple(_int(v, what) for v in value)


def _router_id(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise DecodeError("bad_attribute", f"{what} is not a string: {value!r}")
    try:
        ipv4_int(value)
    except ValueError:
        raise DecodeError("bad_attribute", f"{what} is not an IPv4 address: {value!r}") from None
    return value


def _nlri(items: object, family: str) -> tuple[Prefix, ...]:
    if not isinstance(items, list):
        raise DecodeError("bad_update", f"{family} NLRI is not a list")
    out = []
    for item in items:
        prefix = item.get("nlri") if isinstance(item, dict) else item
        if not isinstance(prefix, str):
            raise DecodeError("bad_update", f"{family} NLRI without a prefix: {item!r}")
        try:
            out.append(from_text(prefix))
        except ValueError:
            raise DecodeError("bad_update", f"{family} NLRI is not a prefix: {prefix!r}") from None
    return tuple(out)


class _Decoder:
    """The parts both modes share: acks, the JSON envelope, session states."""

    mode = ""

    def __init__(self) -> None:
        self.ignored_attributes = 0  # attributes dropped as not meaningful to a unicast reflector

    def _update(self, peer: str, message: Mapping[str, Any]) -> Event:
        raise NotImplementedError

    def _open(self, peer: str, neighbor: Mapping[str, Any]) -> Event | None:
        raise NotImplementedError

    def _refresh(self, peer: str, neighbor: Mapping[str, Any]) -> Event | None:
        raise NotImplementedError

    def encode(self, commands: Sequence[Command]) -> str:
        """Commands as API lines (each with its newline)."""
        raise NotImplementedError

    def decode(self, line: str) -> Event | None:
        """One line from ExaBGP -> an event, or None for a message that needs no action."""
        text = line.strip()
        if not text:
            return None
        if text[0] != "{":
            if text == "done":
                return SpeakerAck(True)
            if text == "error":
                return SpeakerAck(False)
            raise DecodeError("not_json", text[:80])
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise DecodeError("not_json", str(exc)[:80]) from None
        if not isinstance(msg, dict):
            raise DecodeError("not_json", "not an object")
        try:
            return self._message(msg)
        except DecodeError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
            raise DecodeError("bad_structure", f"{type(exc).__name__}: {exc}"[:120]) from None

    def _message(self, msg: dict[str, Any]) -> Event | None:
        kind = msg.get("type")
        if kind == "notification" and msg.get("notification") == "shutdown":
            return SpeakerShutdown()
        if kind in ("signal", "keepalive", "fsm", "negotiated", "operational"):
            return None
        neighbor = msg.get("neighbor")
        if not isinstance(neighbor, dict):
            raise DecodeError("unexpected_message", f"type {kind!r} without a neighbor")
        peer = neighbor["address"]["peer"]
        if not isinstance(peer, str):
            raise DecodeError("bad_structure", "peer address is not a string")
        if kind == "update":
            return self._update(peer, neighbor["message"])
        if kind == "state":
            state = neighbor.get("state")
            if state == "up":
                return PeerUp(peer)
            if state == "down":
                return PeerDown(peer, str(neighbor.get("reason", "")))
            if state == "connected":
                return None
            raise DecodeError("unexpected_message", f"state {state!r}")
        if kind == "open":
            if neighbor.get("direction") != "receive":
                return None
            return self._open(peer, neighbor)
        if kind == "refresh":
            return self._refresh(peer, neighbor)
        if kind == "notification":
            return None  # a NOTIFICATION from the peer: the state "down" that follows is what matters
        raise DecodeError("unexpected_message", f"type {kind!r}")


class TextCodec(_Decoder):
    """ExaBGP's JSON and text API. Interns attribute objects (equal attributes: one object)."""

    mode = "text"

    def __init__(self) -> None:
        super().__init__()
        self._intern: dict[Attrs, Attrs] = {}
        self._attrs_text: dict[Attrs, str] = {}

    def encode(self, commands: Sequence[Command]) -> str:
        cache = self._attrs_text
        if len(cache) > _INTERN_LIMIT:
            cache.clear()
        return "".join(encode(c, cache) for c in commands)

    def _refresh(self, peer: str, neighbor: Mapping[str, Any]) -> Event | None:
        refresh = neighbor["route-refresh"]
        if refresh.get("subtype", "query") != "query":
            return None  # enhanced route refresh markers (RFC 7313)
        family = _FAMILY_KEYS.get(f"{refresh['afi']} {refresh['safi']}")
        return RouteRefresh(peer, family) if family else None

    def _open(self, peer: str, neighbor: Mapping[str, Any]) -> PeerOpen:
        body = neighbor["open"]
        router_id = _router_id(body.get("router_id"), "router_id")
        families: set[str] = set()
        multiprotocol = False
        caps = body.get("capabilities") or {}
        if not isinstance(caps, dict):
            raise DecodeError("bad_structure", "capabilities is not an object")
        for cap in caps.values():
            if isinstance(cap, dict) and cap.get("name") == "multiprotocol":
                multiprotocol = True
                for fam in cap.get("families", []):
                    if fam == "ipv4/unicast":
                        families.add("ipv4")
                    elif fam == "ipv6/unicast":
                        families.add("ipv6")
        if not multiprotocol:
            families.add("ipv4")  # RFC 4760: without the capability, IPv4 unicast only
        return PeerOpen(peer, router_id, frozenset(families))

    def _update(self, peer: str, message: Mapping[str, Any]) -> Event:
        if "eor" in message:
            eor = message["eor"]
            family = _FAMILY_KEYS.get(f"{eor['afi']} {eor['safi']}")
            return EndOfRib(peer, family or f"{eor['afi']} {eor['safi']}")
        body = message["update"]
        unsupported = 0
        withdraw: list[Prefix] = []
        for fam_key, items in (body.get("withdraw") or {}).items():
            if fam_key not in _FAMILY_KEYS:
                unsupported += len(items) if isinstance(items, list) else 1
                continue
            withdraw.extend(_nlri(items, fam_key))
        announce: list[tuple[Attrs, tuple[Prefix, ...]]] = []
        treat_as_withdraw = False
        ann = body.get("announce") or {}
        if ann:
            raw = body.get("attribute") or {}
            if not isinstance(raw, dict):
                raise DecodeError("bad_attribute", "attribute is not an object")
            treat_as_withdraw = "error" in raw  # ExaBGP's RFC 7606 verdict on a malformed attribute
            for fam_key, by_nh in ann.items():
                if fam_key not in _FAMILY_KEYS:
                    unsupported += sum(len(v) for v in by_nh.values()) if isinstance(by_nh, dict) else 1
                    continue
                if not isinstance(by_nh, dict):
                    raise DecodeError("bad_update", f"{fam_key} announce is not an object")
                for next_hop, items in by_nh.items():
                    prefixes = _nlri(items, fam_key)
                    if treat_as_withdraw or next_hop in ("null", ""):
                        withdraw.extend(prefixes)
                        continue
                    announce.append((self.attrs(raw, next_hop), prefixes))
        error = "ExaBGP found a malformed attribute" if treat_as_withdraw and ann else None
        return Update(peer, tuple(announce), tuple(withdraw), unsupported, error)

    def attrs(self, raw: Mapping[str, Any], next_hop: str) -> Attrs:
        """ExaBGP's ``attribute`` object and a next hop -> interned ``Attrs``."""
        origin = IGP
        as_path: tuple[int, ...] = ()
        as_set: tuple[int, ...] = ()
        med = local_pref = None
        originator_id = aggregator = None
        cluster_list: tuple[str, ...] = ()
        communities: tuple[str, ...] = ()
        large: tuple[str, ...] = ()
        ext: tuple[str, ...] = ()
        atomic = False
        unknown: list[tuple[int, int, str]] = []
        for key, value in raw.items():
            if key == "origin":
                if value not in _ORIGINS:
                    raise DecodeError("bad_attribute", f"origin {value!r}")
                origin = _ORIGINS[value]
            elif key == "as-path":
                as_path = _ints(value, key)
            elif key == "as-set":
                as_set = _ints(value, key)
            elif key == "med":
                med = _int(value, key)
            elif key == "local-preference":
                local_pref = _int(value, key)
            elif key == "originator-id":
                originator_id = _router_id(value, key)
            elif key == "cluster-list":
                if not isinstance(value, list):
                    raise DecodeError("bad_attribute", "cluster-list is not a list")
                cluster_list = tuple(_router_id(v, key) for v in value)
            elif key == "community":
                communities = tuple(f"{_int(a, key)}:{_int(b, key)}" for a, b in value)
            elif key == "large-community":
                large = tuple(f"{_int(a, key)}:{_int(b, key)}:{_int(c, key)}" for a, b, c in value)
            elif key == "extended-community":
                ext = tuple(f"0x{_int(v['value'], key):016x}" for v in value)
            elif key == "atomic-aggregate":
                atomic = value is True
            elif key == "aggregator":
                if not isinstance(value, str) or value.count(":") != 1:
                    raise DecodeError("bad_attribute", f"aggregator {value!r}")
                aggregator = value.strip("() ")
            elif key.startswith("attribute-0x"):
                code_text, _, flag_text = key[len("attribute-") :].partition("-")
                code, flags = int(code_text, 16), int(flag_text, 16)
                payload = value if isinstance(value, str) else ""
                payload = payload[2:] if payload.startswith("0x") else payload
                int(payload or "0", 16)  # ValueError -> bad_structure
                if flags & _OPTIONAL and flags & _TRANSITIVE:
                    unknown.append((code, (flags | _PARTIAL) & ~_EXTENDED, payload.lower()))
                else:
                    self.ignored_attributes += 1  # optional non-transitive: not passed on
            elif key in _IGNORED:
                if value:  # ExaBGP prints an empty confederation-path on every UPDATE
                    self.ignored_attributes += 1
            else:
                raise DecodeError("bad_attribute", f"unknown attribute {key!r}")
        a = Attrs(
            next_hop=next_hop,
            origin=origin,
            as_path=as_path,
            as_set=as_set,
            med=med,
            local_pref=local_pref,
            originator_id=originator_id,
            cluster_list=cluster_list,
            communities=communities,
            large_communities=large,
            ext_communities=ext,
            atomic_aggregate=atomic,
            aggregator=aggregator,
            unknown=tuple(sorted(unknown)),
        )
        interned = self._intern.get(a)
        if interned is not None:
            return interned
        if len(self._intern) >= _INTERN_LIMIT:
            self._intern.clear()
        self._intern[a] = a
        return a


def encode_attrs(a: Attrs) -> str:
    """``Attrs`` in ExaBGP's ``announce attributes`` syntax (everything before ``nlri``)."""
    parts = [f"next-hop {a.next_hop}", f"origin {ORIGIN_NAMES[a.origin]}"]
    if a.as_path or a.as_set:
        seq = " ".join(map(str, a.as_path))
        aset = f" ( {' '.join(map(str, a.as_set))} )" if a.as_set else ""
        parts.append(f"as-path [ {seq}{aset} ]".replace("[  (", "[ ("))
    if a.med is not None:
        parts.append(f"med {a.med}")
    if a.local_pref is not None:
        parts.append(f"local-preference {a.local_pref}")
    if a.atomic_aggregate:
        parts.append("atomic-aggregate")
    if a.aggregator is not None:
        parts.append(f"aggregator ( {a.aggregator} )")
    if a.communities:
        parts.append(f"community [ {' '.join(a.communities)} ]")
    if a.large_communities:
        parts.append(f"large-community [ {' '.join(a.large_communities)} ]")
    if a.ext_communities:
        parts.append(f"extended-community [ {' '.join(a.ext_communities)} ]")
    if a.originator_id is not None:
        parts.append(f"originator-id {a.originator_id}")
    if a.cluster_list:
        parts.append(f"cluster-list [ {' '.join(a.cluster_list)} ]")
    for code, flags, payload in a.unknown:
        parts.append(f"attribute [ 0x{code:02x} 0x{flags:02x} 0x{payload} ]")
    return " ".join(parts)


def encode(command: Command, attrs_text: dict[Attrs, str] | None = None) -> str:
    """One command as one API line (with its newline). ``attrs_text``: a cache of
    :func:`encode_attrs` results, worth passing when many commands share attributes."""
    if isinstance(command, Announce):
        if attrs_text is None:
            text = encode_attrs(command.attrs)
        else:
            cached = attrs_text.get(command.attrs)
            if cached is None:
                cached = attrs_text[command.attrs] = encode_attrs(command.attrs)
            text = cached
        prefixes = " ".join(map(to_text, command.prefixes))
        return f"neighbor {command.peer} announce attributes {text} nlri {prefixes}\n"
    if isinstance(command, Withdraw):
        # ExaBGP 4.2 needs a next hop of the prefixes' family even to withdraw them (without one,
        # building the UPDATE raises and the session is reset); its value is not sent
        nh = "::" if command.prefixes[0][0] == V6 else "0.0.0.0"
        return (
            f"neighbor {command.peer} withdraw attributes next-hop {nh} nlri "
            f"{' '.join(map(to_text, command.prefixes))}\n"
        )
    if isinstance(command, SendEndOfRib):
        return f"neighbor {command.peer} announce eor {command.family} unicast\n"
    if isinstance(command, Teardown):
        if command.code != 6:
            raise ValueError("ExaBGP's text API closes sessions with Cease (6) only")
        return f"neighbor {command.peer} teardown {command.subcode}\n"
    raise TypeError(f"not a command: {command!r}")


# a netkit-raw line carries at most about this much hex (ExaBGP reads its API pipe 16 KiB at a
# time and joins the pieces; shorter lines keep that cheap)
RAW_LINE_BYTES = 64 * 1024


def _hex_body(message: Mapping[str, Any]) -> bytes:
    body = message.get("body", "")
    if not isinstance(body, str):
        raise DecodeError("bad_structure", "packet body is not a string")
    try:
        return bytes.fromhex(body[2:] if body.startswith("0x") else body)
    except ValueError:
        raise DecodeError("bad_structure", "packet body is not hex") from None


class WireCodec(_Decoder):
    """Raw BGP messages through ExaBGP (see the module docstring and ``exabgp_main``).

    Remembers, per peer, whether its OPEN announced 4-octet AS numbers (RFC 6793), which decides
    how AS_PATH is read from it and written to it."""

    mode = "wire"

    def __init__(self) -> None:
        super().__init__()
        self.updates = UpdateDecoder()
        self.encoder = UpdateEncoder()
        self.asn4: dict[str, bool] = {}

    @property
    def ignored(self) -> int:
        return self.ignored_attributes + self.updates.ignored_attributes

    def _open(self, peer: str, neighbor: Mapping[str, Any]) -> Event | None:
        try:
            info = parse_open(_hex_body(neighbor["message"]))
        except WireError as exc:
            raise DecodeError("bad_open", exc.detail) from None
        self.asn4[peer] = info.asn4
        return PeerOpen(peer, info.router_id, info.families)

    def _refresh(self, peer: str, neighbor: Mapping[str, Any]) -> Event | None:
        try:
            family = parse_refresh(_hex_body(neighbor["message"]))
        except WireError as exc:
            raise DecodeError("bad_refresh", exc.detail) from None
        return RouteRefresh(peer, family) if family else None

    def _update(self, peer: str, message: Mapping[str, Any]) -> Event:
        body = _hex_body(message)
        try:
            parsed = self.updates.decode(body, self.asn4.get(peer, True))
        except WireError as exc:
            return Malformed(peer, exc.code, exc.subcode, exc.detail)
        if parsed.end_of_rib is not None:
            return EndOfRib(peer, parsed.end_of_rib)
        return Update(
            peer,
            tuple((a, tuple(p)) for a, p in parsed.announced),
            tuple(parsed.withdrawn),
            parsed.unsupported,
            parsed.error,
        )

    def messages(self, command: Command) -> list[bytes]:
        """The BGP messages for one announce, withdraw or End-of-RIB command."""
        if isinstance(command, Announce):
            return self.encoder.announce(command.attrs, command.prefixes, self.asn4.get(command.peer, True))
        if isinstance(command, Withdraw):
            return self.encoder.withdraw(command.prefixes)
        if isinstance(command, SendEndOfRib):
            return [end_of_rib(command.family)]
        raise TypeError(f"no BGP message for {command!r}")

    def encode(self, commands: Sequence[Command]) -> str:
        lines: list[str] = []
        for command in commands:
            if isinstance(command, Teardown):
                if command.code == 6:
                    lines.append(f"neighbor {command.peer} teardown {command.subcode}\n")
                else:
                    lines.append(f"neighbor {command.peer} netkit-notify {command.code} {command.subcode}\n")
                continue
            head = f"neighbor {command.peer} netkit-raw"
            parts: list[str] = [head]
            size = 0
            for msg in self.messages(command):
                text = msg.hex().upper()
                if size and size + len(text) > RAW_LINE_BYTES:
                    lines.append(" ".join(parts) + "\n")
                    parts, size = [head], 0
                parts.append(text)
                size += len(text) + 1
            if size:
                lines.append(" ".join(parts) + "\n")
        return "".join(lines)


Codec = TextCodec | WireCodec


def make_codec(mode: str) -> Codec:
    """``wire`` or ``text``."""
    if mode == "wire":
        return WireCodec()
    if mode == "text":
        return TextCodec()
    raise ValueError(f"unknown API mode {mode!r}")
