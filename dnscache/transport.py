"""One exchange with one upstream over UDP or TCP (effects).

Every UDP query gets a fresh connected socket, so the kernel picks a random source port and drops
datagrams from any other address or port; the reply must also carry our random ID and exactly our
question (case-exact when 0x20 randomisation is on). Anything else is counted and ignored while we
keep waiting for the real reply, as a resolver under a spoofing attack must.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass

from dnscache.stats import Stats
from dnscache.upstreams import Outcome
from dnscache.wire import NOERROR, NOTIMP, NXDOMAIN, QR, REFUSED, TC, Message, WireError, parse_message
from netkit.addr import HostPort

YXDOMAIN = 6


@dataclass(slots=True)
class Exchange:
    outcome: Outcome
    reply: bytes | None = None
    message: Message | None = None

    @property
    def truncated(self) -> bool:
        return self.message is not None and bool(self.message.flags & TC)


def classify(msg: Message) -> Outcome:
    rcode = msg.rcode
    if rcode in (NOERROR, NXDOMAIN, YXDOMAIN):
        return Outcome.SUCCESS
    if rcode in (REFUSED, NOTIMP):
        return Outcome.REFUSED
    return Outcome.SERVFAIL


def check_reply(
    data: bytes, qid: int, qname_wire: bytes, qtype: int, qclass: int, case_exact: bool
) -> Exchange | None:
    """None when the datagram is not the reply to our query (spoofed or stale); else the verdict."""
    if len(data) < 12 or struct.unpack_from("!H", data, 0)[0] != qid or not data[2] & (QR >> 8):
        return None
    try:
        msg = parse_message(data)
    except WireError:
        return Exchange(Outcome.MALFORMED)
    if msg.qtype != qtype or msg.qclass != qclass:
        return None
    if (msg.qname_wire != qname_wire) if case_exact else (msg.qname_wire.lower() != qname_wire.lower()):
        return None
    return Exchange(classify(msg), data, msg)


def _family(upstream: HostPort) -> socket.AddressFamily:
    return socket.AF_INET6 if upstream.family_is_v6 else socket.AF_INET


async def exchange_udp(
    upstream: HostPort,
    query: bytes,
    qname_wire: bytes,
    qtype: int,
    qclass: int,
    timeout: float,
    stats: Stats,
    case_exact: bool = False,
) -> Exchange:
    loop = asyncio.get_running_loop()
    qid = struct.unpack_from("!H", query, 0)[0]
    sock = socket.socket(_family(upstream), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((upstream.host, upstream.port))
        sock.send(query)
        async with asyncio.timeout(timeout):
            while True:
                data = await loop.sock_recv(sock, 65535)
                verdict = check_reply(data, qid, qname_wire, qtype, qclass, case_exact)
                if verdict is not None:
                    return verdict
                stats.spoofed_replies += 1
    except TimeoutError:
        return Exchange(Outcome.TIMEOUT)
    except OSError:
        return Exchange(Outcome.NETWORK_ERROR)  # e.g. ICMP port unreachable from a dead upstream
    finally:
        sock.close()


async def exchange_tcp(
    upstream: HostPort,
    query: bytes,
    qname_wire: bytes,
    qtype: int,
    qclass: int,
    timeout: float,
    stats: Stats,
    case_exact: bool = False,
) -> Exchange:
    qid = struct.unpack_from("!H", query, 0)[0]
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
            writer.write(struct.pack("!H", len(query)) + query)
            await writer.drain()
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                data = await reader.readexactly(length)
                verdict = check_reply(data, qid, qname_wire, qtype, qclass, case_exact)
                if verdict is not None:
                    return verdict
                stats.spoofed_replies += 1
    except TimeoutError:
        return Exchange(Outcome.TIMEOUT)
    except (OSError, asyncio.IncompleteReadError):
        return Exchange(Outcome.NETWORK_ERROR)
    finally:
        if writer is not None:
            writer.close()
