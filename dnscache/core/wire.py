"""DNS wire format: a small, strict walker over messages (pure).

It records where things are (names, TTLs, record boundaries) instead of building objects, so the
cache can keep the upstream's bytes and patch them in place. Every malformation raises
``WireError``; nothing here trusts a length or a pointer it has not checked.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

HEADER_LEN = 12
MAX_POINTER_HOPS = 64
MAX_NAME_LEN = 255

# flags (16-bit header word)
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010
OPCODE_MASK = 0x7800

# rcodes
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16
RCODE_NAMES = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSET",
    9: "NOTAUTH",
    10: "NOTZONE",
    16: "BADVERS",
}

# types
T_A, T_NS, T_CNAME, T_SOA, T_PTR, T_MX, T_TXT, T_AAAA = 1, 2, 5, 6, 12, 15, 16, 28
T_SRV, T_DNAME, T_OPT, T_RRSIG, T_IXFR, T_AXFR, T_ANY = 33, 39, 41, 46, 251, 252, 255
C_IN = 1

ANSWER, AUTHORITY, ADDITIONAL = 1, 2, 3

DO_BIT = 0x8000  # in the OPT TTL's low 16 bits
EDNS_UDP_SIZE = 1232  # what we advertise and the most we send over UDP (DNS flag day 2020)

_HDR = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")

Name = tuple[bytes, ...]  # lower-cased labels, root = ()


class WireError(ValueError):
    """A message that is not valid DNS wire format."""


@dataclass(slots=True)
class Record:
    name: Name
    rtype: int
    rclass: int
    ttl: int
    section: int
    start: int  # offset of the owner name
    ttl_off: int
    rdata_off: int
    end: int  # offset just past the record


@dataclass(slots=True)
class Edns:
    udp_size: int
    ext_rcode: int
    version: int
    do: bool
    options: bytes = b""


@dataclass(slots=True)
class Message:
    id: int
    flags: int
    qname: Name
    qname_wire: bytes  # exactly as on the wire (case preserved)
    qtype: int
    qclass: int
    question_end: int
    records: list[Record] = field(default_factory=list)
    edns: Edns | None = None
    opt_start: int = -1  # offset of the OPT record, -1 if none

    @property
    def rcode(self) -> int:
        """The full rcode: header bits plus the OPT's extended bits."""
        ext = self.edns.ext_rcode if self.edns else 0
        return (ext << 4) | (self.flags & 0xF)

    def section(self, which: int) -> list[Record]:
        return [r for r in self.records if r.section == which]


def read_name(buf: bytes, off: int) -> tuple[Name, int]:
    """Decode a possibly compressed name at ``off``; return labels (lower-cased) and the offset after it."""
    labels: list[bytes] = []
    end = -1
    hops = 0
    total = 1
    n = len(buf)
    while True:
        if off >= n:
            raise WireError("name runs past the end of the message")
        length = buf[off]
        if length == 0:
            off += 1
            break
        if length & 0xC0 == 0xC0:
            if off + 1 >= n:
                raise WireError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | buf[off + 1]
            if end < 0:
                end = off + 2
            hops += 1
            if hops > MAX_POINTER_HOPS or target >= off:
                raise WireError("compression pointer loop or forward pointer")
            off = target
            continue
        if length & 0xC0:
            raise WireError(f"unsupported label type 0x{length:02x}")
        total += length + 1
        if total > MAX_NAME_LEN:
            raise WireError("name longer than 255 octets")
        if off + 1 + length > n:
            raise WireError("label runs past the end of the message")
        labels.append(buf[off + 1 : off + 1 + length].lower())
        off += 1 + length
    return tuple(labels), (end if end >= 0 else off)


def question_end(buf: bytes) -> int:
    """Offset just past the single question; -1 if the name is malformed or compressed (fast path)."""
    i = HEADER_LEN
    n = len(buf)
    while i < n:
        length = buf[i]
        if length == 0:
            end = i + 5
            return end if end <= n and end - HEADER_LEN <= MAX_NAME_LEN + 4 else -1
        if length > 63:
            return -1
        i += length + 1
    return -1


def parse_message(buf: bytes) -> Message:
    """Parse a whole message (query or reply) with exactly one question."""
    if len(buf) < HEADER_LEN:
        raise WireError("shorter than a DNS header")
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(buf, 0)
    if qd != 1:
        raise WireError(f"expected one question, got {qd}")
    qstart = HEADER_LEN
    qname, off = read_name(buf, qstart)
    if off + 4 > len(buf):
        raise WireError("truncated question")
    qtype, qclass = struct.unpack_from("!HH", buf, off)
    off += 4
    msg = Message(qid, flags, qname, bytes(buf[qstart : off - 4]), qtype, qclass, off)
    for section, count in ((ANSWER, an), (AUTHORITY, ns), (ADDITIONAL, ar)):
        for _ in range(count):
            start = off
            if buf[off : off + 2] == b"\xc0\x0c":  # the usual owner: a pointer to the question
                name, off = qname, off + 2
            else:
                name, off = read_name(buf, off)
            if off + 10 > len(buf):
                raise WireError("truncated resource record header")
            rtype, rclass, ttl, rdlen = _RR.unpack_from(buf, off)
            ttl_off = off + 4
            rdata_off = off + 10
            off = rdata_off + rdlen
            if off > len(buf):
                raise WireError("resource record data runs past the end of the message")
            if rtype == T_OPT:
                if section != ADDITIONAL or msg.edns is not None or name:
                    raise WireError("misplaced or duplicate OPT record")
                msg.edns = Edns(
                    udp_size=rclass,
                    ext_rcode=ttl >> 24,
                    version=(ttl >> 16) & 0xFF,
                    do=bool(ttl & DO_BIT),
                    options=bytes(buf[rdata_off:off]),
                )
                msg.opt_start = start
                continue
            if ttl & 0x80000000:
                ttl = 0  # RFC 2181 8: a TTL with the top bit set is treated as zero
            msg.records.append(Record(name, rtype, rclass, ttl, section, start, ttl_off, rdata_off, off))
    if off != len(buf):
        raise WireError(f"{len(buf) - off} trailing octets after the last record")
    return msg


def local_rcode(qtype: int, qclass: int) -> int | None:
    """The rcode to answer at once for questions a forwarding cache must not pass on, else None.

    Only class IN is forwarded (a node-local cache serves IN; other classes get REFUSED, as an
    upstream serving only IN would answer). QTYPE 0 and OPT are malformed (FORMERR); zone
    transfers are refused; the other meta-types (TSIG, TKEY, MAILA, MAILB, ...) are NOTIMP. ANY
    and every data type, known or not (RFC 3597), are forwarded.
    """
    if qtype in (0, T_OPT):
        return FORMERR
    if qclass != C_IN or qtype in (T_AXFR, T_IXFR):
        return REFUSED
    if 128 <= qtype < T_ANY:
        return NOTIMP
    return None


def name_to_wire(name: Name) -> bytes:
    return b"".join(bytes((len(label),)) + label for label in name) + b"\x00"


def name_from_text(text: str) -> Name:
    text = text.rstrip(".")
    if not text:
        return ()
    labels = tuple(label.encode("ascii").lower() for label in text.split("."))
    if any(not 0 < len(label) < 64 for label in labels) or len(name_to_wire(labels)) > MAX_NAME_LEN:
        raise WireError(f"invalid domain name {text!r}")
    return labels


def name_to_text(name: Name) -> str:
    return ".".join(label.decode("ascii", "backslashreplace") for label in name) + "."


def is_subdomain(name: Name, zone: Name) -> bool:
    """True if ``name`` equals ``zone`` or lies below it (labels are already lower-cased)."""
    return len(name) >= len(zone) and (not zone or name[len(name) - len(zone) :] == zone)


def opt_record(udp_size: int, do: bool, ext_rcode: int = 0, version: int = 0, options: bytes = b"") -> bytes:
    ttl = (ext_rcode << 24) | (version << 16) | (DO_BIT if do else 0)
    return b"\x00" + _RR.pack(T_OPT, udp_size, ttl, len(options)) + options


def build_query(
    qid: int,
    qname_wire: bytes,
    qtype: int,
    qclass: int,
    *,
    rd: bool = True,
    cd: bool = False,
    edns_size: int | None = 1232,
    do: bool = False,
) -> bytes:
    flags = (RD if rd else 0) | (CD if cd else 0)
    ar = 1 if edns_size is not None else 0
    out = _HDR.pack(qid, flags, 1, 0, 0, ar) + qname_wire + struct.pack("!HH", qtype, qclass)
    if edns_size is not None:
        out += opt_record(edns_size, do)
    return out


def header(qid: int, flags: int, qd: int, an: int, ns: int, ar: int) -> bytes:
    return _HDR.pack(qid, flags, qd, an, ns, ar)


def error_reply(query: bytes, rcode: int, question_end_off: int | None, edns: Edns | None) -> bytes:
    """A reply carrying only the question (when it was parseable) and our OPT when the client used EDNS."""
    qid, flags = struct.unpack_from("!HH", query, 0)
    out_flags = QR | RA | (flags & (RD | CD | OPCODE_MASK)) | (rcode & 0xF)
    question = query[HEADER_LEN:question_end_off] if question_end_off else b""
    opt = opt_record(1232, edns.do, ext_rcode=rcode >> 4) if edns is not None else b""
    return _HDR.pack(qid, out_flags, 1 if question else 0, 0, 0, 1 if opt else 0) + question + opt


def rebuild(buf: bytes, keep: Callable[[int, Name, int], bool] | None = None) -> tuple[bytes, Message]:
    """Re-encode a message through dnspython, keeping the records ``keep(section, name, rtype)``
    allows; the OPT record comes out last. Names are decompressed and compressed again, so no
    pointer can dangle into a dropped record. A rare path: dnspython is imported only here (it
    costs the serving process 6 MiB of memory)."""
    import dns.exception
    import dns.message

    try:
        m = dns.message.from_wire(buf, one_rr_per_rrset=True)
        if keep is not None:
            for section, rrsets in ((ANSWER, m.answer), (AUTHORITY, m.authority), (ADDITIONAL, m.additional)):
                rrsets[:] = [
                    r
                    for r in rrsets
                    if keep(section, tuple(label.lower() for label in r.name.labels[:-1]), int(r.rdtype))
                ]
        wire = m.to_wire(max_size=65535)
    except dns.exception.DNSException as exc:
        raise WireError(f"message could not be rebuilt: {exc}") from None
    return wire, parse_message(wire)
