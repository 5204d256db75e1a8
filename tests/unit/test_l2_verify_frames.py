"""``netkit l2 verify`` builds its frames with struct (scapy is only a development dependency):
scapy decodes them as intended."""

from __future__ import annotations

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from labs.l2verify import (
    ETH_P_TEST,
    Captured,
    arp_reply_of,
    arp_request,
    ether,
    frame_vlan,
    ipv4_udp,
    vxlan_header,
    vxlan_of,
)


def test_tagged_broadcast_and_padding() -> None:
    frame = ether("ff:ff:ff:ff:ff:ff", "02:00:00:00:01:01", ETH_P_TEST, b"MARK", vlan=20)
    pkt = Ether(frame)
    assert pkt.dst == "ff:ff:ff:ff:ff:ff" and pkt.src == "02:00:00:00:01:01"
    assert pkt[Dot1Q].vlan == 20 and pkt[Dot1Q].type == ETH_P_TEST
    assert len(frame) == 60 and bytes(pkt[Dot1Q].payload).startswith(b"MARK")
    assert frame_vlan(Captured(frame, None)) == 20 and frame_vlan(Captured(frame[:12] + frame[16:], 7)) == 7


def test_arp_request_and_reply_parsing() -> None:
    frame = ether(
        "ff:ff:ff:ff:ff:ff",
        "02:00:00:00:01:01",
        0x0806,
        arp_request("02:00:00:00:01:01", "198.19.1.1", "198.18.0.1"),
    )
    arp = Ether(frame)[ARP]
    assert (arp.op, arp.hwsrc, arp.psrc, arp.pdst) == (1, "02:00:00:00:01:01", "198.19.1.1", "198.18.0.1")
    reply = bytes(
        Ether(dst="02:00:00:00:01:01", src="02:aa:00:00:00:01")
        / ARP(
            op=2, hwsrc="02:aa:00:00:00:01", psrc="198.18.0.1", hwdst="02:00:00:00:01:01", pdst="198.19.1.1"
        )
    )
    assert arp_reply_of(reply, "198.19.1.1", "198.18.0.1") == "02:aa:00:00:00:01"
    assert arp_reply_of(reply, "198.19.1.1", "198.18.0.2") is None
    assert arp_reply_of(frame, "198.19.1.1", "198.18.0.1") is None  # a request is no reply


def test_multicast_udp_checksum_and_vxlan() -> None:
    packet = ipv4_udp("198.19.1.2", "239.1.2.3", 5000, 5000, b"MARK")
    ip = IP(packet)
    assert ip.dst == "239.1.2.3" and ip.ttl == 1 and ip[UDP].dport == 5000
    assert IP(bytes(ip.__class__(packet))).chksum == ip.chksum
    rebuilt = IP(packet)
    del rebuilt.chksum
    assert IP(bytes(rebuilt)).chksum == ip.chksum  # scapy computes the same checksum
    inner = ether("ff:ff:ff:ff:ff:ff", "02:66:66:66:66:66", ETH_P_TEST, b"MARK")
    outer = bytes(
        Ether()
        / IP(src="198.18.0.99", dst="198.18.0.1")
        / UDP(sport=1234, dport=4789)
        / Raw(vxlan_header(300) + inner)
    )
    assert Ether(outer)[VXLAN].vni == 300
    assert vxlan_of(outer) == ("198.18.0.99", 300)
