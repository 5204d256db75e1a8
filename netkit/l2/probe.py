"""Probing a segment after a change (effects): an ARP request for an address, sent out of the
network's bridge, and its answer, which proves frames cross the segment (VXLAN or VLAN) both
ways. The bridge needs no IP address of its own: the request's sender address is a link-local
one (``SENDER``) that no host holds. Not an RFC 5227 probe (sender 0.0.0.0): a bridge with
``neigh_suppress`` on its VXLAN port (netkit's) never floods those out of it; the cost is a
neighbour entry for ``SENDER`` in the answering host, which expires on its own.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time

from netkit.base.netns import in_netns

__all__ = ["arp_probe"]

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
SENDER = ipaddress.IPv4Address("169.254.255.254").packed


def _request(mac: bytes, target: bytes) -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, SENDER, b"\0" * 6, target)
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp


def _is_reply_from(frame: bytes, target: bytes) -> bool:
    if len(frame) < 42 or frame[12:14] != struct.pack("!H", ETH_P_ARP):
        return False
    _htype, ptype, _hlen, _plen, op, _sha, spa = struct.unpack("!HHBBH6s4s", frame[14:32])
    return bool(ptype == 0x0800 and op == 2 and spa == target)


def arp_probe(ifname: str, address: str, timeout: float, netns: str | None = None) -> str | None:
    """None when ``address`` answers an ARP request sent out of ``ifname`` within ``timeout``
    seconds (one request every 0.5 s); else why not."""
    ip = ipaddress.ip_address(address)
    if ip.version != 4:
        return f"{address}: only IPv4 addresses are probed (ARP)"
    target = ip.packed
    try:
        sock = in_netns(
            netns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        )
    except OSError as exc:
        return f"no raw socket for the probe: {exc.strerror or exc} (the agent needs CAP_NET_RAW)"
    with sock:
        try:
            sock.bind((ifname, ETH_P_ARP))
        except OSError as exc:
            return f"{ifname}: {exc.strerror or exc}"
        mac = sock.getsockname()[4]
        deadline, next_send = time.monotonic() + timeout, 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_send:
                sock.send(_request(mac, target))
                next_send = now + 0.5
            ready, _, _ = select.select([sock], [], [], min(deadline, next_send) - now)
            if ready and _is_reply_from(sock.recv(2048), target):
                return None
    return f"{address} did not answer ARP on {ifname} within {timeout:g} s"
