"""Fuzz input for DNS servers, and TCP framing abuse, for the robustness tests and benchmarks.

Two halves:

- **Generators** (pure, no I/O, deterministic for a given ``random.Random`` or seed): valid
  queries, byte mutations of them (bit flips, inserts, truncations, extensions, compression-pointer
  bombs, label-length lies, huge header counts, odd flags, lying EDNS OPT records), random-length
  blobs, scapy ``fuzz()`` of DNS layers (DNSQR, DNSRR and EDNS0 OPT records), the mixes the UDP and
  TCP storms send (:func:`udp_fuzz`, :func:`tcp_fuzz`), and TCP frames that lie about their length.
- **TCP abuse** (small blocking functions taking a host and port, each returning an
  :class:`AbuseResult`): :func:`slowloris`, :func:`lying_prefixes`, :func:`tiny_frames`,
  :func:`pipelined_burst` and :func:`never_read`.

scapy is imported lazily (it is a dev dependency and takes a second to import). Its ``fuzz()``
draws from the global ``random`` module, so :func:`scapy_fuzz` seeds that module for the
duration of the call and restores its state afterwards: do not call it while another thread
relies on the global ``random`` sequence.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "MUTATIONS",
    "TCP_MIX",
    "UDP_MIX",
    "AbuseResult",
    "FuzzPacket",
    "frame",
    "lying_frame",
    "lying_prefixes",
    "mutate",
    "never_read",
    "pipelined_burst",
    "query_wire",
    "random_blob",
    "random_with_header",
    "scapy_fuzz",
    "slowloris",
    "split_frames",
    "tcp_fuzz",
    "tiny_frame",
    "tiny_frames",
    "udp_fuzz",
    "valid_queries",
]

_HEADER = struct.Struct("!HHHHHH")
_U16 = struct.Struct("!H")

QTYPES = ("A", "AAAA", "TXT", "MX", "NS", "SOA", "CNAME", "PTR", "SRV", "ANY")
_QTYPE_CODES = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33,
    "OPT": 41, "IXFR": 251, "AXFR": 252, "ANY": 255,
}  # fmt: skip


class FuzzPacket(NamedTuple):
    """One generated message: the generator that made it (``kind``) and its bytes."""

    kind: str
    data: bytes


# --------------------------------------------------------------------------------------------
# Valid queries
# --------------------------------------------------------------------------------------------


def encode_name(name: str) -> bytes:
    """Uncompressed wire form of a dotted name (no validation: the fuzzers want any bytes)."""
    labels = [lab for lab in name.rstrip(".").split(".") if lab]
    return b"".join(bytes([len(lab)]) + lab.encode() for lab in labels) + b"\x00"


def query_wire(
    qid: int,
    name: str,
    qtype: str | int = "A",
    *,
    edns: bool = False,
    do: bool = False,
    cd: bool = False,
    rd: bool = True,
    udp_size: int = 1232,
) -> bytes:
    """A standard query (QR clear, opcode QUERY, class IN), with an EDNS0 OPT record if ``edns``."""
    flags = (0x0100 if rd else 0) | (0x0010 if cd else 0)
    code = _QTYPE_CODES[qtype] if isinstance(qtype, str) else qtype
    out = _HEADER.pack(qid & 0xFFFF, flags, 1, 0, 0, 1 if edns else 0)
    out += encode_name(name) + struct.pack("!HH", code, 1)
    if edns:
        out += b"\x00" + struct.pack("!HHBBHH", 41, udp_size, 0, 0, 0x8000 if do else 0, 0)
    return out


def valid_queries(
    rng: random.Random,
    n: int,
    names: Sequence[str],
    qtypes: Sequence[str] = ("A", "AAAA", "TXT", "MX", "ANY"),
) -> list[bytes]:
    """``n`` well-formed queries for names drawn from ``names``, with and without EDNS (DO 20 %)."""
    out = []
    for _ in range(n):
        edns = rng.random() < 0.5
        out.append(
            query_wire(
                rng.randrange(1 << 16),
                rng.choice(names),
                rng.choice(qtypes),
                edns=edns,
                do=edns and rng.random() < 0.2,
                cd=rng.random() < 0.05,
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Byte mutations
# --------------------------------------------------------------------------------------------


def _pointer(offset: int) -> bytes:
    return _U16.pack(0xC000 | (offset & 0x3FFF))


def _name_span(b: bytes | bytearray, off: int = 12) -> int:
    """End offset of the (uncompressed) name at ``off``, or len(b) if it runs off the end."""
    i = off
    while i < len(b):
        length = b[i]
        if length == 0:
            return i + 1
        if length & 0xC0:
            return min(i + 2, len(b))
        i += length + 1
    return len(b)


def pointer_bomb(rng: random.Random, data: bytes) -> bytes:
    """Replace the question name with compression-pointer trouble: a self-loop, a two-step loop, a
    forward pointer, a pointer past the end, or up to 300 answer records whose owner names are one
    label plus a pointer to the previous owner (names that grow by a label per record)."""
    hdr = bytearray(data[:12].ljust(12, b"\x00"))
    rest = data[_name_span(data) :] if len(data) > 12 else b"\x00\x01\x00\x01"
    kind = rng.randrange(5)
    if kind == 0:  # the name is a pointer to itself
        body = _pointer(12) + rest
    elif kind == 1:  # a -> b -> a
        body = b"\x01a" + _pointer(15) + b"\x01b" + _pointer(12) + rest
    elif kind == 2:  # forward pointer into the question type/class (or beyond)
        body = _pointer(12 + rng.randrange(2, 64)) + rest
    elif kind == 3:  # beyond the end of the message
        body = _pointer(rng.randrange(len(data) + 1, 0x3FFF)) + rest
    else:  # the classic bomb: each answer's owner is one label plus a pointer to the previous owner
        body = data[12 : _name_span(data) + 4]
        records = rng.randrange(2, 300)
        prev = 12  # the question name
        for _ in range(records):
            here = 12 + len(body)
            body += b"\x01a" + _pointer(prev) + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x7f\x00\x00\x01"
            prev = here
        hdr[4:12] = struct.pack("!HHHH", 1, records, 0, 0)
    return bytes(hdr) + body


def label_lie(rng: random.Random, data: bytes) -> bytes:
    """Lie in the question name: a label length past the end, a reserved label type (0x40/0x80),
    a name longer than 255 octets, or a premature root label leaving the rest as trailing junk."""
    b = bytearray(data)
    if len(b) <= 12:
        return bytes(b) + bytes([rng.randrange(1, 64)]) + b"ab"
    labels = []  # offsets of the length octets in the question name
    i = 12
    while i < len(b) and b[i] and not b[i] & 0xC0:
        labels.append(i)
        i += b[i] + 1
    at = rng.choice(labels) if labels else 12
    kind = rng.randrange(4)
    if kind == 0:
        b[at] = rng.randrange(min(63, max(1, len(b) - at)), 64)  # longer than what follows
    elif kind == 1:
        b[at] = rng.choice((0x40, 0x41, 0x7F, 0x80, 0xBF))  # extended / reserved label types
    elif kind == 2:  # 5 x 63-octet labels: 320 octets, over the 255 limit
        b[12:12] = (b"\x3f" + bytes(rng.randrange(97, 123) for _ in range(63))) * rng.randrange(4, 6)
    else:
        b[at] = 0  # the name ends early; what is left is trailing data
    return bytes(b)


def huge_counts(rng: random.Random, data: bytes) -> bytes:
    """Set one or more of QDCOUNT/ANCOUNT/NSCOUNT/ARCOUNT to huge (or just wrong) values."""
    b = bytearray(data[:12].ljust(12, b"\x00")) + data[12:]
    for _ in range(rng.randint(1, 4)):
        idx = 4 + 2 * rng.randrange(4)
        b[idx : idx + 2] = _U16.pack(rng.choice((0xFFFF, 0x8000, 0x7FFF, 2, 3, 0, rng.randrange(1 << 16))))
    return bytes(b)


def odd_flags(rng: random.Random, data: bytes) -> bytes:
    """Random flags word: QR, opcodes 1..15, TC/AA/Z/AD bits, rcodes in a query."""
    b = bytearray(data[:12].ljust(12, b"\x00")) + data[12:]
    b[2:4] = _U16.pack(rng.randrange(1 << 16))
    return bytes(b)


def edns_lie(rng: random.Random, data: bytes) -> bytes:
    """Append an OPT record that lies: RDLENGTH past the end, version > 0, an option length lie,
    a second OPT, a non-root owner, a tiny UDP size; ARCOUNT adjusted to claim it."""
    b = bytearray(data[:12].ljust(12, b"\x00")) + data[12:]
    kind = rng.randrange(6)
    size = rng.choice((0, 1, 511, 512, 1232, 4096, 65535))
    if kind == 0:
        opt = b"\x00" + struct.pack("!HHBBHH", 41, size, 0, 0, 0, rng.randrange(5, 2000))
    elif kind == 1:
        opt = b"\x00" + struct.pack("!HHBBHH", 41, size, 0, rng.randrange(1, 256), 0, 0)
    elif kind == 2:
        option = struct.pack("!HH", rng.choice((8, 10, 12, 15, 65001)), rng.randrange(100, 65535)) + b"xx"
        opt = b"\x00" + struct.pack("!HHBBHH", 41, size, 0, 0, 0x8000, len(option)) + option
    elif kind == 3:
        one = b"\x00" + struct.pack("!HHBBHH", 41, size, 0, 0, 0, 0)
        opt = one + one
    elif kind == 4:
        opt = b"\x03foo\x00" + struct.pack("!HHBBHH", 41, size, 0, 0, 0, 0)
    else:
        opt = b"\x00" + struct.pack("!HHBBHH", 41, size, rng.randrange(256), 0, rng.randrange(1 << 16), 0)
    count = opt.count(b"\x00\x29") if kind == 3 else 1
    ar = _U16.unpack_from(b, 10)[0]
    b[10:12] = _U16.pack(min(0xFFFF, ar + count))
    return bytes(b + opt)


def odd_question(rng: random.Random, data: bytes) -> bytes:
    """Random QTYPE/QCLASS (AXFR, IXFR, OPT, meta types, classes CH/NONE/ANY) on the question."""
    b = bytearray(data)
    end = _name_span(b)
    if end + 4 > len(b):
        return bytes(b)
    qtype = rng.choice((0, 41, 251, 252, 253, 254, 255, 65535, rng.randrange(1 << 16)))
    qclass = rng.choice((1, 3, 4, 254, 255, 0, rng.randrange(1 << 16)))
    b[end : end + 4] = struct.pack("!HH", qtype, qclass)
    return bytes(b)


def _flip(rng: random.Random, b: bytearray) -> None:
    if b:
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)


def _set_byte(rng: random.Random, b: bytearray) -> None:
    if b:
        b[rng.randrange(len(b))] = rng.choice((0, 0xFF, 0xC0, 0x3F, 0x40, rng.randrange(256)))


def _insert(rng: random.Random, b: bytearray) -> None:
    at = rng.randrange(len(b) + 1)
    b[at:at] = rng.randbytes(rng.randint(1, 8))


def _delete(rng: random.Random, b: bytearray) -> None:
    if len(b) > 1:
        at = rng.randrange(len(b))
        del b[at : at + rng.randint(1, 8)]


def _truncate(rng: random.Random, b: bytearray) -> None:
    if b:
        del b[rng.randrange(len(b)) :]


def _extend(rng: random.Random, b: bytearray) -> None:
    b += rng.randbytes(rng.choice((1, 2, 4, rng.randrange(1, 64), rng.randrange(64, 700))))


def _whole(fn: Callable[[random.Random, bytes], bytes]) -> Callable[[random.Random, bytearray], None]:
    def apply(rng: random.Random, b: bytearray) -> None:
        b[:] = fn(rng, bytes(b))

    return apply


_OPS: dict[str, Callable[[random.Random, bytearray], None]] = {
    "flip": _flip,
    "byte": _set_byte,
    "insert": _insert,
    "delete": _delete,
    "truncate": _truncate,
    "extend": _extend,
    "pointer": _whole(pointer_bomb),
    "label": _whole(label_lie),
    "counts": _whole(huge_counts),
    "flags": _whole(odd_flags),
    "edns": _whole(edns_lie),
    "qtype": _whole(odd_question),
}
MUTATIONS: tuple[str, ...] = tuple(_OPS)


def mutate(
    rng: random.Random, data: bytes, ops: int | None = None, kinds: Sequence[str] = MUTATIONS
) -> bytes:
    """Apply ``ops`` (default 1..4) mutations drawn from ``kinds`` (names in :data:`MUTATIONS`)."""
    b = bytearray(data)
    for _ in range(ops if ops is not None else rng.randint(1, 4)):
        _OPS[rng.choice(kinds)](rng, b)
    return bytes(b)


# --------------------------------------------------------------------------------------------
# Random lengths
# --------------------------------------------------------------------------------------------


def random_blob(rng: random.Random, max_len: int, min_len: int = 0) -> bytes:
    """Random bytes of a length uniform in ``[min_len, max_len]``."""
    return rng.randbytes(rng.randint(min_len, max_len))


def random_with_header(rng: random.Random, max_len: int) -> bytes:
    """A plausible query header (QR clear, opcode QUERY, QDCOUNT 1) then random bytes, so the
    message gets past the first checks into the parser; total length uniform in 12..max_len."""
    flags = rng.choice((0x0000, 0x0100, 0x0110, 0x0120))
    hdr = _HEADER.pack(rng.randrange(1 << 16), flags, 1, 0, 0, rng.choice((0, 0, 1)))
    return hdr + rng.randbytes(rng.randint(0, max(0, max_len - 12)))


# --------------------------------------------------------------------------------------------
# scapy fuzz()
# --------------------------------------------------------------------------------------------

_scapy_lock = threading.Lock()


@contextlib.contextmanager
def _global_random_seeded(seed: int) -> Iterator[None]:
    with _scapy_lock:
        state = random.getstate()
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


def _scapy_templates(names: Sequence[str]) -> list[Callable[[random.Random], Any]]:
    from scapy.layers.dns import (
        DNS,
        DNSQR,
        DNSRR,
        DNSRROPT,
        EDNS0COOKIE,
        EDNS0TLV,
        EDNS0ExtendedDNSError,
    )

    def qname(rng: random.Random) -> str:
        return rng.choice(names)

    # Fields given explicitly are kept by fuzz(); the others get random values. "Query-shaped"
    # templates pin QR=0 and opcode QUERY so the fuzzed parts reach the parser and the cache.
    return [
        lambda r: DNS(qd=[DNSQR()]),
        lambda r: DNS(qr=0, opcode=0, qd=[DNSQR(qname=qname(r))]),
        lambda r: DNS(qr=0, opcode=0, qd=[DNSQR(qname=qname(r), qclass=1)]),
        lambda r: DNS(qd=[DNSQR()], an=[DNSRR()]),
        lambda r: DNS(qr=0, opcode=0, qd=[DNSQR(qname=qname(r))], ar=[DNSRROPT()]),
        lambda r: DNS(qr=0, opcode=0, qd=[DNSQR(qname=qname(r))], ar=[DNSRROPT(rdata=[EDNS0TLV()])]),
        lambda r: DNS(qr=0, qd=[DNSQR(qname=qname(r), qtype="A")], ar=[DNSRROPT(rdata=[EDNS0COOKIE()])]),
        lambda r: DNS(qr=0, qd=[DNSQR()], ar=[DNSRROPT(rdata=[EDNS0ExtendedDNSError()])]),
        lambda r: DNS(qd=[DNSQR(), DNSQR()], an=[DNSRR()], ns=[DNSRR()], ar=[DNSRR(), DNSRROPT()]),
        lambda r: DNS(qr=0, opcode=0, qd=[DNSQR(qname=qname(r))], an=[DNSRR(rrname=qname(r))]),
    ]


def scapy_fuzz(rng: random.Random, n: int, names: Sequence[str] = ("h1.example.test",)) -> list[bytes]:
    """``n`` messages from scapy's ``fuzz()`` of DNS layers (DNSQR, DNSRR, EDNS0 OPT records).

    Deterministic for a given ``rng`` state: the global ``random`` module that scapy draws from is
    seeded from ``rng`` for each message and restored afterwards. Combinations scapy cannot build
    are skipped (deterministically too)."""
    from scapy.compat import raw
    from scapy.packet import fuzz

    templates = _scapy_templates(names)
    out: list[bytes] = []
    failures = 0
    while len(out) < n:
        template = templates[(len(out) + failures) % len(templates)]
        with _global_random_seeded(rng.getrandbits(64)):
            try:
                out.append(bytes(raw(fuzz(template(rng)))))
            except Exception:  # scapy cannot build some of its own random combinations
                failures += 1
                if failures > 10 * n + 100:
                    raise RuntimeError("scapy keeps failing to build fuzzed DNS packets") from None
    return out


# --------------------------------------------------------------------------------------------
# Mixes for the storms
# --------------------------------------------------------------------------------------------

# kind -> weight. "valid" keeps real queries in the stream (and the cache busy).
UDP_MIX: dict[str, float] = {"mutated": 0.50, "scapy": 0.25, "random": 0.10, "header": 0.10, "valid": 0.05}
TCP_MIX: dict[str, float] = {"mutated": 0.55, "scapy": 0.15, "random": 0.10, "header": 0.10, "valid": 0.10}


def _mix(
    seed: int,
    n: int,
    names: Sequence[str],
    mix: dict[str, float],
    max_len: int,
    scapy_batch: int,
) -> Iterator[FuzzPacket]:
    rng = random.Random(seed)
    base = valid_queries(rng, 500, names)
    kinds = list(mix)
    weights = [mix[k] for k in kinds]
    scapy_rng = random.Random(rng.getrandbits(64))
    pending: list[bytes] = []
    for _ in range(n):
        kind = rng.choices(kinds, weights)[0]
        if kind == "mutated":
            data = mutate(rng, rng.choice(base))
        elif kind == "scapy":
            if not pending:
                pending = scapy_fuzz(scapy_rng, scapy_batch, names)[::-1]
            data = pending.pop()
        elif kind == "random":
            data = random_blob(rng, max_len)
        elif kind == "header":
            data = random_with_header(rng, rng.choice((64, 512, max_len)))
        else:
            data = rng.choice(base)
        yield FuzzPacket(kind, data[:max_len])


def udp_fuzz(
    seed: int, n: int, names: Sequence[str], mix: dict[str, float] = UDP_MIX, max_len: int = 4096
) -> Iterator[FuzzPacket]:
    """``n`` datagrams for a UDP storm (lazily generated): mutated valid queries for ``names``,
    scapy fuzz, random blobs of 0..``max_len`` octets, header + random, and some valid queries."""
    return _mix(seed, n, names, mix, max_len, 64)


def tcp_fuzz(
    seed: int, n: int, names: Sequence[str], mix: dict[str, float] = TCP_MIX, max_len: int = 65535
) -> Iterator[FuzzPacket]:
    """``n`` messages (unframed) for a TCP storm, as :func:`udp_fuzz` but random lengths up to 65535.
    Messages shorter than 12 octets make a server close the connection: see :func:`frame`."""
    return _mix(seed, n, names, mix, max_len, 64)


# --------------------------------------------------------------------------------------------
# TCP framing
# --------------------------------------------------------------------------------------------


def frame(msg: bytes) -> bytes:
    """Honest RFC 1035 4.2.2 framing: a two-octet length, then the message (at most 65535)."""
    return _U16.pack(len(msg)) + msg


def lying_frame(rng: random.Random, msg: bytes, longer: bool) -> bytes:
    """A length prefix that lies: ``longer`` claims more octets than follow (1..65535 - len more),
    otherwise fewer (the rest of the message then reads as the next length prefix and data)."""
    n = len(msg)
    claimed = rng.randint(min(n + 1, 65535), 65535) if longer else rng.randrange(0, max(1, n))
    return _U16.pack(claimed) + msg


def tiny_frame(length: int, rng: random.Random | None = None) -> bytes:
    """A frame of ``length`` (0..11) octets: shorter than a DNS header."""
    body = (rng or random.Random(length)).randbytes(length)
    return _U16.pack(length) + body


def split_frames(buf: bytearray) -> list[bytes]:
    """Remove and return the complete frames at the front of ``buf`` (a TCP receive buffer)."""
    out = []
    while len(buf) >= 2:
        length = _U16.unpack_from(buf)[0]
        if len(buf) < 2 + length:
            break
        out.append(bytes(buf[2 : 2 + length]))
        del buf[: 2 + length]
    return out


# --------------------------------------------------------------------------------------------
# TCP abuse (I/O)
# --------------------------------------------------------------------------------------------


@dataclass
class AbuseResult:
    """What one abuse pattern did and what the server did about it."""

    name: str
    connections: int = 0
    connect_errors: int = 0
    bytes_sent: int = 0
    frames_sent: int = 0
    answers: int = 0  # complete frames the server sent back
    server_closed: int = 0  # connections the server closed (EOF or reset)
    still_open: int = 0  # connections the server had not closed when we gave up
    lifetimes: list[float] = field(default_factory=list)  # open -> closed by the server, seconds
    notes: list[str] = field(default_factory=list)

    @property
    def max_lifetime(self) -> float:
        return max(self.lifetimes, default=0.0)

    def as_dict(self) -> dict[str, Any]:
        lt = sorted(self.lifetimes)
        return {
            "name": self.name,
            "connections": self.connections,
            "connect_errors": self.connect_errors,
            "bytes_sent": self.bytes_sent,
            "frames_sent": self.frames_sent,
            "answers": self.answers,
            "server_closed": self.server_closed,
            "still_open": self.still_open,
            "lifetime_s": {
                "min": round(lt[0], 3) if lt else None,
                "median": round(lt[len(lt) // 2], 3) if lt else None,
                "max": round(lt[-1], 3) if lt else None,
            },
            "notes": self.notes,
        }


def _connect(host: str, port: int, res: AbuseResult, timeout: float = 3.0) -> socket.socket | None:
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        res.connect_errors += 1
        if len(res.notes) < 5:
            res.notes.append(f"connect: {e}")
        return None
    res.connections += 1
    return s


def _send(s: socket.socket, data: bytes, res: AbuseResult) -> bool:
    try:
        s.sendall(data)
    except OSError:
        return False
    res.bytes_sent += len(data)
    return True


def _await_closes(socks: Sequence[tuple[socket.socket, float]], res: AbuseResult, timeout: float) -> None:
    """Read from every socket (counting answer frames) until the server closes it or ``timeout``
    passes; count each as ``server_closed`` (with its lifetime) or ``still_open``. Closes them."""
    sel = selectors.DefaultSelector()
    bufs: dict[socket.socket, tuple[float, bytearray]] = {}
    for s, opened in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = (opened, bytearray())
    end = time.monotonic() + timeout
    try:
        while bufs and (left := end - time.monotonic()) > 0:
            for key, _ in sel.select(timeout=min(left, 0.2)):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:  # reset
                    chunk = b""
                opened, buf = bufs[sock]
                if chunk:
                    buf += chunk
                    res.answers += len(split_frames(buf))
                    continue
                res.server_closed += 1
                res.lifetimes.append(time.monotonic() - opened)
                sel.unregister(sock)
                del bufs[sock]
        res.still_open += len(bufs)
    finally:
        sel.close()
        for s, _ in socks:
            s.close()


def slowloris(
    host: str,
    port: int,
    conns: int = 50,
    duration: float = 20.0,
    interval: float = 2.0,
    *,
    reopen: bool = True,
    stop: threading.Event | None = None,
) -> AbuseResult:
    """Hold ``conns`` connections open, trickling one octet of a valid framed query into each every
    ``interval`` seconds, for ``duration`` seconds (or until ``stop`` is set). With ``reopen`` a
    connection the server closes is replaced at once, keeping the pressure up. The lifetimes say
    how long the server let each one live."""
    res = AbuseResult("slowloris")
    payload = frame(query_wire(0x5105, "h1.example.test", "A"))
    sel = selectors.DefaultSelector()
    state: dict[socket.socket, tuple[float, int, float]] = {}  # sock -> (opened, next offset, next send)
    reopen_at: list[float] = []  # a refused connection is retried after `interval`, not in a busy loop
    start = time.monotonic()

    def open_one(stagger: float) -> None:
        s = _connect(host, port, res)
        if s is None:
            if reopen:
                reopen_at.append(time.monotonic() + interval)
            return
        s.setblocking(False)
        now = time.monotonic()
        state[s] = (now, 0, now + stagger)
        sel.register(s, selectors.EVENT_READ)

    def closed(s: socket.socket) -> None:
        opened = state.pop(s)[0]
        sel.unregister(s)
        s.close()
        now = time.monotonic()
        res.server_closed += 1
        res.lifetimes.append(now - opened)
        if reopen:
            reopen_at.append(now + (interval if now - opened < interval else 0.0))

    try:
        for i in range(conns):
            open_one(interval * i / max(1, conns))
        while time.monotonic() - start < duration and not (stop is not None and stop.is_set()):
            for key, _ in sel.select(timeout=0.05):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    res.answers += 1  # an answer to the trickled query: it completed in time
                else:
                    closed(s)
            now = time.monotonic()
            due_reopen = [t for t in reopen_at if t <= now]
            reopen_at[:] = [t for t in reopen_at if t > now]
            for _ in due_reopen:
                open_one(0.0)
            for s, (opened, off, due) in list(state.items()):
                if now < due:
                    continue
                try:
                    s.send(payload[off : off + 1])
                except OSError:
                    closed(s)
                    continue
                res.bytes_sent += 1
                off = (off + 1) % len(payload)
                if off == 0:
                    res.frames_sent += 1
                state[s] = (opened, off, now + interval)
    finally:
        res.still_open += len(state)
        for s in state:
            with contextlib.suppress(Exception):
                sel.unregister(s)
            s.close()
        sel.close()
    return res


def lying_prefixes(
    host: str,
    port: int,
    rng: random.Random,
    queries: Sequence[bytes],
    rounds: int = 10,
    timeout: float = 15.0,
) -> AbuseResult:
    """Per round, three connections: a prefix longer than the data after which the client closes;
    a prefix longer than the data with the client then waiting (the server must close within its
    message timeout); a prefix shorter than the message followed by a valid frame (the rest of the
    message then reads as the next frame). All rounds run at once; the waiting connections are
    watched together for up to ``timeout`` seconds."""
    res = AbuseResult("lying_prefixes")
    waiting: list[tuple[socket.socket, float]] = []
    try:
        for _ in range(rounds):
            msg = rng.choice(queries)
            s = _connect(host, port, res)  # longer, then close
            if s is not None:
                with s:
                    res.frames_sent += _send(s, lying_frame(rng, msg, True), res)
            s = _connect(host, port, res)  # longer, then wait for the server to give up
            if s is not None:
                waiting.append((s, time.monotonic()))
                res.frames_sent += _send(s, lying_frame(rng, msg, True), res)
            s = _connect(host, port, res)  # shorter, then a valid frame, then wait
            if s is not None:
                waiting.append((s, time.monotonic()))
                res.frames_sent += 2 * _send(
                    s, lying_frame(rng, msg, False) + frame(rng.choice(queries)), res
                )
    finally:
        _await_closes(waiting, res, timeout)
    return res


def tiny_frames(
    host: str, port: int, rng: random.Random, rounds: int = 2, timeout: float = 5.0
) -> AbuseResult:
    """For each length 0..11, ``rounds`` connections sending that frame and then a valid query:
    a frame shorter than a header should make the server close without answering anything."""
    res = AbuseResult("tiny_frames")
    valid = frame(query_wire(0x7171, "h1.example.test"))
    waiting: list[tuple[socket.socket, float]] = []
    try:
        for _ in range(rounds):
            for length in range(12):
                s = _connect(host, port, res)
                if s is not None:
                    waiting.append((s, time.monotonic()))
                    res.frames_sent += 2 * _send(s, tiny_frame(length, rng) + valid, res)
    finally:
        _await_closes(waiting, res, timeout)
    return res


def pipelined_burst(
    host: str, port: int, messages: Sequence[bytes], timeout: float = 10.0, expect: int | None = None
) -> AbuseResult:
    """Write every message framed in one go on one connection, then read answers until ``expect``
    (default: all of them) have arrived, the server closes, or ``timeout``."""
    res = AbuseResult("pipelined_burst")
    want = len(messages) if expect is None else expect
    s = _connect(host, port, res)
    if s is None:
        return res
    with s:
        payload = b"".join(frame(m) for m in messages)
        sender = threading.Thread(target=_send, args=(s, payload, res), daemon=True)
        sender.start()  # a burst can be larger than the socket buffers: read while writing
        res.frames_sent = len(messages)
        buf = bytearray()
        end = time.monotonic() + timeout
        while res.answers < want:
            left = end - time.monotonic()
            if left <= 0:
                res.still_open += 1
                res.notes.append(f"{res.answers} of {want} answers within {timeout} s")
                break
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                res.server_closed += 1
                break
            buf += chunk
            res.answers += len(split_frames(buf))
        sender.join(timeout=1.0)
    return res


def never_read(
    host: str,
    port: int,
    messages: Sequence[bytes],
    conns: int = 4,
    hold: float = 5.0,
    rcvbuf: int = 4096,
    drain_timeout: float = 10.0,
) -> AbuseResult:
    """Open ``conns`` connections with a small receive buffer, send every message framed on each
    and read nothing for ``hold`` seconds. Then drain each one: a server that gave up on the
    connection (answers piling up) ends it with EOF or a reset once its buffered answers are read
    (``server_closed``); one that kept it open goes quiet (``still_open``)."""
    res = AbuseResult("never_read")
    payload = b"".join(frame(m) for m in messages)
    socks: list[tuple[socket.socket, float]] = []
    for _ in range(conns):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.settimeout(3.0)
            s.connect((host, port))
        except OSError as e:
            s.close()
            res.connect_errors += 1
            res.notes.append(f"connect: {e}")
            continue
        res.connections += 1
        socks.append((s, time.monotonic()))
    try:
        for s, _ in socks:
            s.settimeout(hold)
            sent = 0
            try:  # a server that stops reading makes send block, then time out
                while sent < len(payload):
                    sent += s.send(payload[sent:])
                res.frames_sent += len(messages)
            except OSError as e:
                res.notes.append(f"send stopped after {sent} of {len(payload)} octets: {type(e).__name__}")
            res.bytes_sent += sent
        time.sleep(hold)
        for s, opened in socks:
            buf = bytearray()
            end = time.monotonic() + drain_timeout
            while True:
                s.settimeout(1.0)  # quiet for a second: the server still holds it open
                try:
                    chunk = s.recv(1 << 20)
                except TimeoutError:
                    res.still_open += 1
                    break
                except OSError:
                    chunk = b""
                if not chunk:
                    res.server_closed += 1
                    res.lifetimes.append(time.monotonic() - opened)
                    break
                buf += chunk
                res.answers += len(split_frames(buf))
                if time.monotonic() > end:
                    res.still_open += 1
                    res.notes.append(f"still sending after {drain_timeout} s of draining")
                    break
    finally:
        for s, _ in socks:
            s.close()
    return res
