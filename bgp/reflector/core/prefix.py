"""Prefixes as the reflector keys them (pure).

A prefix is its NLRI encoding (RFC 4271 4.3: the length in bits, then just the octets it
covers) with the bits past the length cleared; an IPv6 prefix gets one more octet in front,
0xFF (no prefix length is 255), so the two families never collide. In wire mode prefixes go
from the received UPDATE to the sent ones without ever becoming text; text is made only for
logs, the status page, ExaBGP's text API and tests.

    >>> from_text("198.19.1.0/24")
    b'\\x18\\xc6\\x13\\x01'
    >>> to_text(from_text("2001:db8::/32"))
    '2001:db8::/32'
"""

from __future__ import annotations

import ipaddress

__all__ = ["V6", "Prefix", "family", "from_text", "to_text"]

Prefix = bytes
V6 = 0xFF  # first octet of an IPv6 prefix key


def family(p: Prefix) -> str:
    return "ipv6" if p[0] == V6 else "ipv4"


def from_text(text: str) -> Prefix:
    """``198.19.1.0/24`` or ``2001:db8::/48`` -> key; ValueError if it is not a prefix (host bits
    set included)."""
    net = ipaddress.ip_network(text, strict=True)
    length = net.prefixlen
    octets = net.network_address.packed[: (length + 7) >> 3]
    key = bytes((length,)) + octets
    return bytes((V6,)) + key if net.version == 6 else key


def to_text(p: Prefix) -> str:
    """Key -> ``198.19.1.0/24`` or ``2001:db8::/48``."""
    v6 = p[0] == V6
    body = p[1:] if v6 else p
    length = body[0]
    if v6:
        return f"{ipaddress.IPv6Address(body[1:].ljust(16, bytes(1)))}/{length}"
    o = body[1:].ljust(4, bytes(1))
    return f"{o[0]}.{o[1]}.{o[2]}.{o[3]}/{length}"
