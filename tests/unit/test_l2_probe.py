"""The ARP probe's frames (pure parts): a broadcast who-has from the link-local sender, and only
an ARP reply from the probed address counts as an answer."""

from __future__ import annotations

import ipaddress
import struct

from netkit.l2.probe import SENDER, _is_reply_from, _request, arp_probe

MAC = bytes.fromhex("020000000101")
TARGET = ipaddress.IPv4Address("198.19.1.2").packed


def reply(op: int = 2, spa: bytes = TARGET, ethertype: int = 0x0806) -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, bytes(6), spa, MAC, SENDER)
    return MAC + bytes(6) + struct.pack("!H", ethertype) + arp + bytes(18)  # padded to 60


def test_the_request_is_a_broadcast_who_has_from_the_link_local_sender() -> None:
    frame = _request(MAC, TARGET)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == MAC and frame[12:14] == b"\x08\x06"
    _h, _p, _hl, _pl, op, sha, spa, _tha, tpa = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
    assert (op, sha, spa, tpa) == (1, MAC, SENDER, TARGET)


def test_only_a_reply_from_the_address_counts() -> None:
    assert _is_reply_from(reply(), TARGET)
    assert not _is_reply_from(reply(op=1), TARGET)  # a request, not an answer
    assert not _is_reply_from(reply(spa=SENDER), TARGET)  # someone else
    assert not _is_reply_from(reply(ethertype=0x0800), TARGET)
    assert not _is_reply_from(b"\x00" * 20, TARGET)  # too short: not an error, not an answer


def test_what_cannot_be_probed_says_why() -> None:
    assert "only IPv4" in (arp_probe("lo", "2001:db8::1", 1) or "")
    assert "nk-no-such" in (arp_probe("nk-no-such", "198.19.1.2", 1) or "")
