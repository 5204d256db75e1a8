"""BGP messages on the wire: UPDATE (RFC 4271, 4760 for IPv6 unicast, 6793 for 4-octet AS
numbers, 7606 for error handling), OPEN capabilities and ROUTE-REFRESH (pure).

Used in ``wire`` API mode, where ExaBGP hands the API process every UPDATE as received and
sends the UPDATEs the API process built, so that no route goes through ExaBGP's per-route Python
objects (see ``exabgp_main``). Prefixes are the keys of ``bgp.reflector.core.prefix``, which are their
NLRI encoding: decoding slices them out of the message, encoding joins them back.

Errors (RFC 7606):

- a malformed message structure (lengths that do not add up, a broken NLRI field, an
  MP_REACH_NLRI that cannot be parsed, a duplicate MP attribute) raises :class:`WireError` with the
  NOTIFICATION code and subcode: the session must be reset;
- a malformed attribute value, or a missing mandatory one, makes the UPDATE "treat-as-withdraw":
  its NLRI are reported as withdrawn, with the reason in ``ParsedUpdate.error``;
- a malformed ATOMIC_AGGREGATE or AGGREGATOR is discarded ("attribute discard"); a repeated
  attribute keeps its first occurrence.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from bgp.reflector.core.prefix import V6, Prefix
from bgp.reflector.core.route import INCOMPLETE, Attrs

__all__ = [
    "MAX_MESSAGE",
    "OpenInfo",
    "ParsedUpdate",
    "UpdateDecoder",
    "UpdateEncoder",
    "WireError",
    "end_of_rib",
    "nlri_keys",
    "parse_open",
    "parse_refresh",
]

MARKER = b"\xff" * 16
_V6_MARK = bytes((V6,))
MAX_MESSAGE = 4096
_HEADER = 19
UPDATE, OPEN, REFRESH = 2, 1, 5

# path attribute type codes
ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR = 1, 2, 3, 4, 5, 6, 7
COMMUNITY, ORIGINATOR_ID, CLUSTER_LIST, MP_REACH, MP_UNREACH, EXT_COMMUNITY = 8, 9, 10, 14, 15, 16
AS4_PATH, AS4_AGGREGATOR, LARGE_COMMUNITY = 17, 18, 32
_OPTIONAL, _TRANSITIVE, _PARTIAL, _EXTENDED = 0x80, 0x40, 0x20, 0x10
AS_TRANS = 23456
_SET, _SEQUENCE, _CONFED_SEQUENCE, _CONFED_SET = 1, 2, 3, 4
_AFI = {1: "ipv4", 2: "ipv6"}
_AFI_NUM = {"ipv4": 1, "ipv6": 2}
_SAFI_UNICAST = 1

# NOTIFICATION codes (RFC 4271 6.3)
UPDATE_ERROR = 3
MALFORMED_ATTRIBUTE_LIST, ATTRIBUTE_FLAGS, ATTRIBUTE_LENGTH, INVALID_NETWORK_FIELD, MALFORMED_AS_PATH = (
    1,
    4,
    5,
    10,
    11,
)
OPEN_ERROR = 2


class WireError(ValueError):
    """A message that cannot be used at all: the session is to be reset with this NOTIFICATION."""

    def __init__(self, code: int, subcode: int, detail: str) -> None:
        super().__init__(f"{detail} (NOTIFICATION {code}/{subcode})")
        self.code = code
        self.subcode = subcode
        self.detail = detail


class _TreatAsWithdraw(Exception):
    pass


# -- prefixes -----------------------------------------------------------------------------------


def nlri_keys(data: bytes, v6: bool) -> list[Prefix]:
    """An NLRI field (RFC 4271 4.3: length in bits, then the octets it covers) -> prefix keys
    (``bgp.reflector.core.prefix``). Bits past the length are cleared; WireError if the field is
    broken. This runs for every prefix received: it only slices."""
    out: list[Prefix] = []
    append = out.append
    i, n = 0, len(data)
    limit = 128 if v6 else 32
    while i < n:
        length = data[i]
        if length > limit:
            raise WireError(
                UPDATE_ERROR, INVALID_NETWORK_FIELD, f"IPv{6 if v6 else 4} prefix length {length}"
            )
        j = i + 1 + ((length + 7) >> 3)
        if j > n:
            raise WireError(
                UPDATE_ERROR, INVALID_NETWORK_FIELD, f"IPv{6 if v6 else 4} NLRI runs past the field"
            )
        key = data[i:j]
        bits = length & 7
        if bits and data[j - 1] & (0xFF >> bits):  # host bits set: clear them
            key = key[:-1] + bytes((data[j - 1] & (0xFF << (8 - bits)) & 0xFF,))
        append(_V6_MARK + key if v6 else key)
        i = j
    return out


# -- OPEN, ROUTE-REFRESH ------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenInfo:
    asn: int  # the 4-octet AS if announced, else My Autonomous System
    hold: int
    router_id: str
    families: frozenset[str]  # unicast families announced (RFC 4760: none -> ipv4)
    asn4: bool


def parse_open(body: bytes) -> OpenInfo:
    """An OPEN message body (after the 19-octet header)."""
    if len(body) < 10:
        raise WireError(OPEN_ERROR, 0, "OPEN shorter than 10 octets")
    asn = int.from_bytes(body[1:3], "big")
    hold = int.from_bytes(body[3:5], "big")
    router_id = ".".join(str(b) for b in body[5:9])
    opt_len = body[9]
    params = body[10 : 10 + opt_len]
    if opt_len == 255 and len(params) and params[0] == 255:  # RFC 9072 extended parameters
        opt_len = int.from_bytes(body[11:13], "big")
        params = body[13 : 13 + opt_len]
        extended = True
    else:
        extended = False
    families: set[str] = set()
    mp = False
    asn4 = False
    i = 0
    while i < len(params):
        ptype = params[i]
        if extended:
            plen = int.from_bytes(params[i + 1 : i + 3], "big")
            value = params[i + 3 : i + 3 + plen]
            i += 3 + plen
        else:
            plen = params[i + 1] if i + 1 < len(params) else 0
            value = params[i + 2 : i + 2 + plen]
            i += 2 + plen
        if ptype != 2:  # only capabilities (RFC 5492)
            continue
        k = 0
        while k + 2 <= len(value):
            code, clen = value[k], value[k + 1]
            cap = value[k + 2 : k + 2 + clen]
            k += 2 + clen
            if code == 1 and len(cap) == 4:
                mp = True
                afi, safi = int.from_bytes(cap[0:2], "big"), cap[3]
                if safi == _SAFI_UNICAST and afi in _AFI:
                    families.add(_AFI[afi])
            elif code == 65 and len(cap) == 4:
                asn4 = True
                asn = int.from_bytes(cap, "big")
    if not mp:
        families.add("ipv4")
    return OpenInfo(asn, hold, router_id, frozenset(families), asn4)


def parse_refresh(body: bytes) -> str | None:
    """A ROUTE-REFRESH body -> the family asked for (None: not unicast, or an RFC 7313 marker)."""
    if len(body) != 4:
        raise WireError(7, 1, "ROUTE-REFRESH of the wrong length")
    afi, subtype, safi = int.from_bytes(body[0:2], "big"), body[2], body[3]
    if subtype != 0 or safi != _SAFI_UNICAST:
        return None
    return _AFI.get(afi)


# -- UPDATE in ----------------------------------------------------------------------------------


@dataclass
class ParsedUpdate:
    withdrawn: list[Prefix] = field(default_factory=list)
    announced: list[tuple[Attrs, list[Prefix]]] = field(default_factory=list)
    end_of_rib: str | None = None
    error: str | None = None  # why announced NLRI were treated as withdrawn
    unsupported: int = 0  # NLRI of other families (counted, ignored)


def _u32(value: bytes) -> int:
    if len(value) != 4:
        raise _TreatAsWithdraw(f"attribute of length {len(value)}, expected 4")
    return int.from_bytes(value, "big")


def _ipv4_text(value: bytes) -> str:
    return f"{value[0]}.{value[1]}.{value[2]}.{value[3]}"


def _ipv6_text(value: bytes) -> str:
    """IPv6 address text; IPv4-mapped ones as ``::ffff:a.b.c.d`` (how BIRD, FRR and ExaBGP show them)."""
    ip = ipaddress.IPv6Address(value)
    mapped = ip.ipv4_mapped
    return f"::ffff:{mapped}" if mapped is not None else str(ip)


def _as_path(value: bytes, width: int) -> tuple[list[int], list[int]]:
    """AS_PATH (or AS4_PATH) -> (sequence, set); confederation segments are dropped."""
    seq: list[int] = []
    aset: list[int] = []
    i, n = 0, len(value)
    while i < n:
        if i + 2 > n:
            raise _TreatAsWithdraw("AS_PATH segment header cut short")
        stype, count = value[i], value[i + 1]
        j = i + 2 + count * width
        if j > n or count == 0:
            raise _TreatAsWithdraw("malformed AS_PATH segment")
        asns = [int.from_bytes(value[k : k + width], "big") for k in range(i + 2, j, width)]
        if stype == _SEQUENCE:
            seq.extend(asns)
        elif stype == _SET:
            aset.extend(a for a in asns if a not in aset)
        elif stype not in (_CONFED_SEQUENCE, _CONFED_SET):
            raise _TreatAsWithdraw(f"AS_PATH segment type {stype}")
        i = j
    return seq, aset


def _merge_as4(seq: list[int], as4: list[int]) -> list[int]:
    """RFC 6793 4.2.3: the leading part of AS_PATH beyond AS4_PATH's length, then AS4_PATH."""
    if len(as4) > len(seq):
        return seq
    return seq[: len(seq) - len(as4)] + as4


AttrKey = tuple[bytes, str, bool]


class UpdateDecoder:
    """UPDATE bodies -> ``ParsedUpdate``. Identical attribute blocks (every UPDATE of one bulk
    announcement) are interpreted once: ``Attrs`` are cached by their raw bytes."""

    def __init__(self, limit: int = 1 << 16) -> None:
        self._cache: dict[AttrKey, Attrs] = {}
        self._limit = limit
        self.ignored_attributes = 0

    def decode(self, body: bytes, asn4: bool = True) -> ParsedUpdate:
        n = len(body)
        if n < 4:
            raise WireError(UPDATE_ERROR, MALFORMED_ATTRIBUTE_LIST, "UPDATE shorter than 4 octets")
        wlen = int.from_bytes(body[0:2], "big")
        if 2 + wlen + 2 > n:
            raise WireError(UPDATE_ERROR, MALFORMED_ATTRIBUTE_LIST, "withdrawn routes length too long")
        alen = int.from_bytes(body[2 + wlen : 4 + wlen], "big")
        start = 4 + wlen
        if start + alen > n:
            raise WireError(UPDATE_ERROR, MALFORMED_ATTRIBUTE_LIST, "path attribute length too long")
        out = ParsedUpdate()
        out.withdrawn = nlri_keys(body[2 : 2 + wlen], False) if wlen else []
        nlri = body[start + alen :]
        v4 = nlri_keys(nlri, False) if nlri else []
        if not alen:
            if not wlen and not v4:
                out.end_of_rib = "ipv4"
            elif v4:
                out.withdrawn.extend(v4)
                out.error = "NLRI without path attributes"
            return out
        seen: dict[int, tuple[int, bytes]] = {}
        attrs = body[start : start + alen]
        i = 0
        while i < alen:
            if i + 3 > alen:
                raise WireError(UPDATE_ERROR, MALFORMED_ATTRIBUTE_LIST, "attribute header cut short")
            flags, code = attrs[i], attrs[i + 1]
            if flags & _EXTENDED:
                if i + 4 > alen:
                    raise WireError(UPDATE_ERROR, MALFORMED_ATTRIBUTE_LIST, "attribute header cut short")
                length = int.from_bytes(attrs[i + 2 : i + 4], "big")
                i += 4
            else:
                length = attrs[i + 2]
                i += 3
            if i + length > alen:
                raise WireError(
                    UPDATE_ERROR, ATTRIBUTE_LENGTH, f"attribute {code} runs past the attribute list"
                )
            if code in seen:
                if code in (MP_REACH, MP_UNREACH):
                    raise WireError(UPDATE_ERROR, MALFORMED_ATTRIBUTE_LIST, f"attribute {code} repeated")
            else:
                seen[code] = (flags, attrs[i : i + length])
            i += length
        v6_withdrawn: list[Prefix] = []
        v6_announced: list[Prefix] = []
        v6_next_hop: str | None = None
        if MP_UNREACH in seen:
            value = seen.pop(MP_UNREACH)[1]
            if len(value) < 3:
                raise WireError(UPDATE_ERROR, MALFORMED_ATTRIBUTE_LIST, "MP_UNREACH_NLRI too short")
            afi, safi = int.from_bytes(value[0:2], "big"), value[2]
            if afi == 2 and safi == _SAFI_UNICAST:
                v6_withdrawn = nlri_keys(value[3:], True)
                if len(value) == 3 and not seen and not wlen and not v4:
                    out.end_of_rib = "ipv6"
                    return out
            elif afi == 1 and safi == _SAFI_UNICAST:
                v6_withdrawn = nlri_keys(value[3:], False)  # IPv4 by MP (unusual, legal)
            else:
                out.unsupported += 1
                if len(value) == 3 and not seen and not wlen and not v4:
                    out.end_of_rib = f"{_AFI.get(afi, afi)} {safi}"
                    return out
        v4_mp_next_hop: str | None = None
        v4_mp: list[Prefix] = []
        if MP_REACH in seen:
            value = seen.pop(MP_REACH)[1]
            if len(value) < 5:
                raise WireError(UPDATE_ERROR, MALFORMED_ATTRIBUTE_LIST, "MP_REACH_NLRI too short")
            afi, safi, nhlen = int.from_bytes(value[0:2], "big"), value[2], value[3]
            if 5 + nhlen > len(value):
                raise WireError(UPDATE_ERROR, MALFORMED_ATTRIBUTE_LIST, "MP_REACH_NLRI next hop too long")
            nh = value[4 : 4 + nhlen]
            mp_nlri = value[5 + nhlen :]
            if safi != _SAFI_UNICAST or afi not in _AFI:
                out.unsupported += 1
            elif afi == 2:
                v6_announced = nlri_keys(mp_nlri, True)
                if nhlen in (16, 32):  # global, or global + link-local: the global one is passed on
                    v6_next_hop = _ipv6_text(nh[:16])
                elif nhlen == 4:  # an IPv4 next hop for IPv6 NLRI (RFC 8950 style)
                    v6_next_hop = _ipv4_text(nh)
                elif v6_announced:
                    v6_withdrawn.extend(v6_announced)
                    v6_announced = []
                    out.error = f"MP_REACH_NLRI next hop of {nhlen} octets"
            else:
                v4_mp = nlri_keys(mp_nlri, False)
                if nhlen == 4:
                    v4_mp_next_hop = _ipv4_text(nh)
                elif nhlen in (16, 32):
                    v4_mp_next_hop = _ipv6_text(nh[:16])
                elif v4_mp:
                    v6_withdrawn.extend(v4_mp)
                    v4_mp = []
                    out.error = f"MP_REACH_NLRI next hop of {nhlen} octets"
        out.withdrawn.extend(v6_withdrawn)
        groups: list[tuple[str | None, list[Prefix]]] = []
        if v4:
            nh_attr = seen.get(NEXT_HOP)
            if nh_attr is None or len(nh_attr[1]) != 4:
                out.withdrawn.extend(v4)
                out.error = "IPv4 NLRI without a valid NEXT_HOP"
            else:
                groups.append((_ipv4_text(nh_attr[1]), v4))
        if v4_mp:
            groups.append((v4_mp_next_hop, v4_mp))
        if v6_announced:
            groups.append((v6_next_hop, v6_announced))
        if not groups:
            return out
        seen.pop(NEXT_HOP, None)
        key_bytes = b"".join(
            bytes((code, flags & ~_EXTENDED)) + value for code, (flags, value) in sorted(seen.items())
        )
        for next_hop, prefixes in groups:
            assert next_hop is not None
            key = (key_bytes, next_hop, asn4)
            attrs_obj = self._cache.get(key)
            if attrs_obj is None:
                try:
                    attrs_obj = self._interpret(seen, next_hop, asn4)
                except _TreatAsWithdraw as exc:
                    out.withdrawn.extend(prefixes)
                    out.error = str(exc)
                    continue
                if len(self._cache) >= self._limit:
                    self._cache.clear()
                self._cache[key] = attrs_obj
            out.announced.append((attrs_obj, prefixes))
        return out

    def _interpret(self, seen: dict[int, tuple[int, bytes]], next_hop: str, asn4: bool) -> Attrs:
        if ORIGIN not in seen:
            raise _TreatAsWithdraw("ORIGIN missing")
        if AS_PATH not in seen:
            raise _TreatAsWithdraw("AS_PATH missing")
        origin_value = seen[ORIGIN][1]
        if len(origin_value) != 1 or origin_value[0] > INCOMPLETE:
            raise _TreatAsWithdraw("ORIGIN malformed")
        width = 4 if asn4 else 2
        seq, aset = _as_path(seen[AS_PATH][1], width)
        if not asn4 and AS4_PATH in seen:
            try:
                seq4, aset4 = _as_path(seen[AS4_PATH][1], 4)
                seq = _merge_as4(seq, seq4)
                aset = aset4 or aset
            except _TreatAsWithdraw:
                self.ignored_attributes += 1  # RFC 6793: a malformed AS4_PATH is ignored
        med = _u32(seen[MED][1]) if MED in seen else None
        local_pref = _u32(seen[LOCAL_PREF][1]) if LOCAL_PREF in seen else None
        originator = None
        if ORIGINATOR_ID in seen:
            value = seen[ORIGINATOR_ID][1]
            if len(value) != 4:
                raise _TreatAsWithdraw("ORIGINATOR_ID malformed")
            originator = _ipv4_text(value)
        cluster_list: tuple[str, ...] = ()
        if CLUSTER_LIST in seen:
            value = seen[CLUSTER_LIST][1]
            if len(value) % 4 or not value:
                raise _TreatAsWithdraw("CLUSTER_LIST malformed")
            cluster_list = tuple(_ipv4_text(value[k : k + 4]) for k in range(0, len(value), 4))
        communities: tuple[str, ...] = ()
        if COMMUNITY in seen:
            value = seen[COMMUNITY][1]
            if len(value) % 4 or not value:
                raise _TreatAsWithdraw("COMMUNITIES malformed")
            communities = tuple(
                f"{int.from_bytes(value[k : k + 2], 'big')}:{int.from_bytes(value[k + 2 : k + 4], 'big')}"
                for k in range(0, len(value), 4)
            )
        large: tuple[str, ...] = ()
        if LARGE_COMMUNITY in seen:
            value = seen[LARGE_COMMUNITY][1]
            if len(value) % 12 or not value:
                raise _TreatAsWithdraw("LARGE_COMMUNITY malformed")
            large = tuple(
                ":".join(str(int.from_bytes(value[k + o : k + o + 4], "big")) for o in (0, 4, 8))
                for k in range(0, len(value), 12)
            )
        ext: tuple[str, ...] = ()
        if EXT_COMMUNITY in seen:
            value = seen[EXT_COMMUNITY][1]
            if len(value) % 8 or not value:
                raise _TreatAsWithdraw("EXTENDED_COMMUNITIES malformed")
            ext = tuple(f"0x{value[k : k + 8].hex()}" for k in range(0, len(value), 8))
        atomic = ATOMIC_AGGREGATE in seen and not seen[ATOMIC_AGGREGATE][1]
        if ATOMIC_AGGREGATE in seen and seen[ATOMIC_AGGREGATE][1]:
            self.ignored_attributes += 1  # attribute discard
        aggregator = None
        agg_code = AS4_AGGREGATOR if (not asn4 and AS4_AGGREGATOR in seen) else AGGREGATOR
        if agg_code in seen:
            value = seen[agg_code][1]
            agg_width = 4 if (asn4 or agg_code == AS4_AGGREGATOR) else 2
            if len(value) == agg_width + 4:
                aggregator = f"{int.from_bytes(value[:agg_width], 'big')}:{_ipv4_text(value[agg_width:])}"
            else:
                self.ignored_attributes += 1  # attribute discard
        known = {
            ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR, COMMUNITY,
            ORIGINATOR_ID, CLUSTER_LIST, EXT_COMMUNITY, AS4_PATH, AS4_AGGREGATOR, LARGE_COMMUNITY,
        }  # fmt: skip
        unknown = []
        for code, (flags, value) in sorted(seen.items()):
            if code in known:
                continue
            if flags & _OPTIONAL and flags & _TRANSITIVE:
                unknown.append((code, (flags | _PARTIAL) & ~_EXTENDED & 0xF0, value.hex()))
            elif not flags & _OPTIONAL:
                raise _TreatAsWithdraw(f"unrecognized well-known attribute {code}")
            else:
                self.ignored_attributes += 1  # optional non-transitive: not passed on
        return Attrs(
            next_hop=next_hop,
            origin=origin_value[0],
            as_path=tuple(seq),
            as_set=tuple(aset),
            med=med,
            local_pref=local_pref,
            originator_id=originator,
            cluster_list=cluster_list,
            communities=communities,
            large_communities=large,
            ext_communities=ext,
            atomic_aggregate=atomic,
            aggregator=aggregator,
            unknown=tuple(unknown),
        )


# -- UPDATE out ---------------------------------------------------------------------------------


def _attr(code: int, flags: int, value: bytes) -> bytes:
    if len(value) > 255:
        return bytes((flags | _EXTENDED, code)) + len(value).to_bytes(2, "big") + value
    return bytes((flags & ~_EXTENDED, code, len(value))) + value


def _segments(asns: Sequence[int], stype: int, width: int) -> bytes:
    out = b""
    for k in range(0, len(asns), 255):
        part = asns[k : k + 255]
        out += bytes((stype, len(part))) + b"".join(a.to_bytes(width, "big") for a in part)
    return out


def _message(body: bytes) -> bytes:
    return MARKER + (_HEADER + len(body)).to_bytes(2, "big") + bytes((UPDATE,)) + body


def end_of_rib(family: str) -> bytes:
    """The End-of-RIB marker for a unicast family (RFC 4724 2)."""
    if family == "ipv4":
        return _message(b"\0\0\0\0")
    mp = _attr(MP_UNREACH, _OPTIONAL, _AFI_NUM[family].to_bytes(2, "big") + bytes((_SAFI_UNICAST,)))
    return _message(b"\0\0" + len(mp).to_bytes(2, "big") + mp)


class UpdateEncoder:
    """``Attrs`` and prefixes -> UPDATE messages no larger than ``max_size``. The encoded
    attributes of each (``Attrs``, 4-octet AS) pair are kept, so a bulk announcement encodes them
    once."""

    def __init__(self, max_size: int = MAX_MESSAGE, limit: int = 1 << 16) -> None:
        self.max_size = max_size
        self._attrs: dict[tuple[Attrs, bool], bytes] = {}
        self._limit = limit

    def path_attributes(self, a: Attrs, asn4: bool = True) -> bytes:
        """Every attribute but NEXT_HOP and the MP ones, in type-code order."""
        key = (a, asn4)
        cached = self._attrs.get(key)
        if cached is not None:
            return cached
        parts = [_attr(ORIGIN, _TRANSITIVE, bytes((a.origin,)))]
        as4_path = b""
        if asn4:
            path = _segments(a.as_path, _SEQUENCE, 4) + (_segments(a.as_set, _SET, 4) if a.as_set else b"")
        else:
            big = any(x > 0xFFFF for x in (*a.as_path, *a.as_set))
            seq2 = [x if x <= 0xFFFF else AS_TRANS for x in a.as_path]
            set2 = [x if x <= 0xFFFF else AS_TRANS for x in a.as_set]
            path = _segments(seq2, _SEQUENCE, 2) + (_segments(set2, _SET, 2) if set2 else b"")
            if big:
                as4_path = _segments(a.as_path, _SEQUENCE, 4) + (
                    _segments(a.as_set, _SET, 4) if a.as_set else b""
                )
        parts.append(_attr(AS_PATH, _TRANSITIVE, path))
        if a.med is not None:
            parts.append(_attr(MED, _OPTIONAL, a.med.to_bytes(4, "big")))
        if a.local_pref is not None:
            parts.append(_attr(LOCAL_PREF, _TRANSITIVE, a.local_pref.to_bytes(4, "big")))
        if a.atomic_aggregate:
            parts.append(_attr(ATOMIC_AGGREGATE, _TRANSITIVE, b""))
        as4_aggregator = b""
        if a.aggregator is not None:
            asn_text, _, ip = a.aggregator.partition(":")
            asn = int(asn_text)
            ip_bytes = bytes(int(x) for x in ip.split("."))
            if asn4:
                parts.append(_attr(AGGREGATOR, _OPTIONAL | _TRANSITIVE, asn.to_bytes(4, "big") + ip_bytes))
            else:
                asn2 = AS_TRANS if asn > 0xFFFF else asn
                parts.append(_attr(AGGREGATOR, _OPTIONAL | _TRANSITIVE, asn2.to_bytes(2, "big") + ip_bytes))
                if asn > 0xFFFF:
                    as4_aggregator = asn.to_bytes(4, "big") + ip_bytes
        if a.communities:
            value = b"".join(
                int(x).to_bytes(2, "big") + int(y).to_bytes(2, "big")
                for x, _, y in (c.partition(":") for c in a.communities)
            )
            parts.append(_attr(COMMUNITY, _OPTIONAL | _TRANSITIVE, value))
        if a.originator_id is not None:
            parts.append(_attr(ORIGINATOR_ID, _OPTIONAL, bytes(int(x) for x in a.originator_id.split("."))))
        if a.cluster_list:
            value = b"".join(bytes(int(x) for x in c.split(".")) for c in a.cluster_list)
            parts.append(_attr(CLUSTER_LIST, _OPTIONAL, value))
        if a.ext_communities:
            value = b"".join(bytes.fromhex(x[2:] if x.startswith("0x") else x) for x in a.ext_communities)
            parts.append(_attr(EXT_COMMUNITY, _OPTIONAL | _TRANSITIVE, value))
        if as4_path:
            parts.append(_attr(AS4_PATH, _OPTIONAL | _TRANSITIVE, as4_path))
        if as4_aggregator:
            parts.append(_attr(AS4_AGGREGATOR, _OPTIONAL | _TRANSITIVE, as4_aggregator))
        if a.large_communities:
            value = b"".join(int(x).to_bytes(4, "big") for c in a.large_communities for x in c.split(":"))
            parts.append(_attr(LARGE_COMMUNITY, _OPTIONAL | _TRANSITIVE, value))
        for code, flags, payload in a.unknown:
            parts.append(_attr(code, flags, bytes.fromhex(payload)))
        out = b"".join(parts)
        if len(self._attrs) >= self._limit:
            self._attrs.clear()
        self._attrs[key] = out
        return out

    def announce(self, a: Attrs, prefixes: Sequence[Prefix], asn4: bool = True) -> list[bytes]:
        """UPDATEs announcing ``prefixes`` (keys of one family) with ``a``."""
        if not prefixes:
            return []
        base = self.path_attributes(a, asn4)
        v6 = prefixes[0][0] == V6
        nlris = [p[1:] for p in prefixes] if v6 else prefixes
        if not v6 and ":" not in a.next_hop:
            attrs = base + _attr(NEXT_HOP, _TRANSITIVE, bytes(int(x) for x in a.next_hop.split(".")))
            head = b"\0\0" + len(attrs).to_bytes(2, "big") + attrs
            room = self.max_size - _HEADER - len(head)
            return [_message(head + chunk) for chunk in _chunks(nlris, room)]
        nh = _next_hop_bytes(a.next_hop)
        afi = 2 if v6 else 1
        mp_head = afi.to_bytes(2, "big") + bytes((_SAFI_UNICAST, len(nh))) + nh + b"\0"
        # MP_REACH_NLRI is written with the extended length always, so its header is 4 octets
        room = self.max_size - _HEADER - 4 - len(base) - 4 - len(mp_head)
        out = []
        for chunk in _chunks(nlris, room):
            mp = bytes((_OPTIONAL | _EXTENDED, MP_REACH)) + (len(mp_head) + len(chunk)).to_bytes(2, "big")
            attrs = mp + mp_head + chunk + base
            out.append(_message(b"\0\0" + len(attrs).to_bytes(2, "big") + attrs))
        return out

    def withdraw(self, prefixes: Sequence[Prefix]) -> list[bytes]:
        """UPDATEs withdrawing ``prefixes`` (keys of one family)."""
        if not prefixes:
            return []
        v6 = prefixes[0][0] == V6
        nlris = [p[1:] for p in prefixes] if v6 else prefixes
        if not v6:
            room = self.max_size - _HEADER - 4
            return [
                _message(len(chunk).to_bytes(2, "big") + chunk + b"\0\0") for chunk in _chunks(nlris, room)
            ]
        room = self.max_size - _HEADER - 4 - 4 - 3
        out = []
        for chunk in _chunks(nlris, room):
            value = (2).to_bytes(2, "big") + bytes((_SAFI_UNICAST,)) + chunk
            mp = bytes((_OPTIONAL | _EXTENDED, MP_UNREACH)) + len(value).to_bytes(2, "big") + value
            out.append(_message(b"\0\0" + len(mp).to_bytes(2, "big") + mp))
        return out


def _next_hop_bytes(text: str) -> bytes:
    if ":" in text:
        return ipaddress.IPv6Address(text).packed
    return bytes(int(x) for x in text.split("."))


def _chunks(nlris: Sequence[bytes], room: int) -> list[bytes]:
    """Join NLRI into pieces of at most ``room`` octets."""
    if room < 17:
        raise ValueError("attributes too large for one UPDATE")
    out: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for x in nlris:
        if size + len(x) > room:
            out.append(b"".join(current))
            current, size = [], 0
        current.append(x)
        size += len(x)
    if current:
        out.append(b"".join(current))
    return out
