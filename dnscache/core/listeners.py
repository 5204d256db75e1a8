"""Who else listens where we want to (pure): the kernel's socket tables (``/proc/net/udp``,
``udp6``, ``tcp``, ``tcp6``) parsed, and the sockets in them that would share a listen address.

Why: with ``--workers N`` the listen sockets are bound with SO_REUSEPORT, and Linux lets any
process of the same user join such a group, so an accidental second ``netkit dns serve`` would
silently take a share of the queries. Before binding, and again after (two instances starting at
the same instant both see each other and both give up), the supervisor looks for sockets it
does not own on the same port and address and refuses with EADDRINUSE.

A deliberate successor (the upgrade of the next issue) is the one case where sharing is wanted:
``conflicts`` takes the inodes that may be there (``allowed``), so a takeover names the
predecessor's sockets instead of switching the check off.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from netkit.base.addr import HostPort

TCP_LISTEN = 0x0A
UDP_UNCONNECTED = 0x07


@dataclass(frozen=True, slots=True)
class KernelSocket:
    proto: str  # udp or tcp
    local: HostPort
    state: int
    inode: int


def _address(text: str, v6: bool) -> str:
    """``0100007F`` (IPv4) or 32 hex digits (IPv6): 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.IPv6Address(words) if v6 else ipaddress.IPv4Address(words))


def parse_table(text: str, proto: str, v6: bool) -> list[KernelSocket]:
    """The rows of one ``/proc/net/{udp,tcp}[6]`` file; malformed rows are skipped."""
    out: list[KernelSocket] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or ":" not in fields[1]:
            continue
        host_hex, _, port_hex = fields[1].partition(":")
        try:
            local = HostPort(_address(host_hex, v6), int(port_hex, 16))
            out.append(KernelSocket(proto, local, int(fields[3], 16), int(fields[9])))
        except ValueError:
            continue
    return out


def _overlaps(a: HostPort, b: HostPort) -> bool:
    if a.port != b.port or a.family_is_v6 != b.family_is_v6:
        return False
    wildcard = ipaddress.ip_address(a.host).is_unspecified or ipaddress.ip_address(b.host).is_unspecified
    return wildcard or a.host == b.host


def conflicts(
    table: Iterable[KernelSocket], addresses: Sequence[HostPort], allowed: frozenset[int] = frozenset()
) -> list[KernelSocket]:
    """Sockets of ``table`` not in ``allowed`` that serve one of ``addresses``: UDP sockets that
    are not connected and listening TCP sockets, on the same port and address, or where one of
    the two is the wildcard address of the family."""
    out = []
    for s in table:
        serving = s.state == (TCP_LISTEN if s.proto == "tcp" else UDP_UNCONNECTED)
        if serving and s.inode not in allowed and any(_overlaps(s.local, a) for a in addresses):
            out.append(s)
    return out
