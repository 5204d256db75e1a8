"""The few rtnetlink requests ``netkit-cni`` makes, on the L2 agent's raw netlink channel
(``netkit.l2.netlink``) rather than pyroute2: importing pyroute2 alone takes ~200 ms, most of a
plugin invocation a runtime waits for on every pod start (``benchmarks/cni_attach.py``).

A ``Netlink`` is one socket in one namespace (a name under /run/netns, a path such as a
runtime's ``/proc/<pid>/ns/net``, or None: this one). Failures raise ``NetlinkFailure`` (an
``OSError`` with the kernel's errno and extended-ack message).
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

from netkit.l2.netlink import (
    _HDR,
    _IFA,
    _IFI,
    AF_INET,
    AF_INET6,
    AF_UNSPEC,
    IFA_ADDRESS,
    IFLA_IFNAME,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    Channel,
    LinkRecord,
    NetlinkFailure,
    _nla,
    _str,
    attrs,
    encode_link,
    ip_text,
    ip_to_bytes,
    open_socket,
    parse_link,
)

__all__ = ["Netlink", "NetlinkFailure"]

IFLA_NET_NS_FD = 28
VETH_INFO_PEER = 1
IFA_LOCAL = 2
RTM_NEWROUTE = 24
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
_RTM = struct.Struct(
    "=BBBBBBBBI"
)  # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_U32 = struct.Struct("=I")


@dataclass(frozen=True)
class Address:
    index: int
    address: str
    prefixlen: int

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


class Netlink:
    def __init__(self, netns: str | None = None) -> None:
        self.ch = Channel(open_socket(netns, rcvbuf=1 << 20))

    def close(self) -> None:
        self.ch.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _do(self, kind: int, flags: int, body: bytes) -> list[tuple[bytes, int, int, int]]:
        seq = self.ch.next_seq()
        return self.ch.request(_HDR.pack(16 + len(body), kind, flags | NLM_F_REQUEST, seq, 0) + body, seq)

    # -- links ---------------------------------------------------------------------------------

    def link(self, name: str) -> LinkRecord | None:
        """The link called ``name``, or None."""
        body = _IFI.pack(AF_UNSPEC, 0, 0, 0, 0) + _nla(IFLA_IFNAME, _str(name))
        try:
            replies = self._do(RTM_GETLINK, 0, body)
        except NetlinkFailure as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        for data, kind, off, end in replies:
            if kind == RTM_NEWLINK:
                return parse_link(data, off, end)
        return None

    def add_veth(self, name: str, peer: str, peer_netns_fd: int) -> None:
        """A veth pair: ``name`` here, ``peer`` created straight in the namespace of the fd."""
        peer_info = _IFI.pack(AF_UNSPEC, 0, 0, 0, 0) + _nla(IFLA_IFNAME, _str(peer))
        peer_info += _nla(IFLA_NET_NS_FD, _U32.pack(peer_netns_fd))
        info = _nla(IFLA_INFO_KIND, _str("veth")) + _nla(IFLA_INFO_DATA, _nla(VETH_INFO_PEER, peer_info))
        body = _IFI.pack(AF_UNSPEC, 0, 0, 0, 0) + _nla(IFLA_IFNAME, _str(name)) + _nla(IFLA_LINKINFO, info)
        self._do(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, body)

    def set_link(self, name: str, **spec: object) -> None:
        """``ip link set NAME ...``: mtu, master (an index), state ("up"), ifalias."""
        seq = self.ch.next_seq()
        self.ch.request(encode_link("set", {"ifname": name, **spec}, seq, ack=True), seq)

    def delete_link(self, name: str) -> bool:
        """Deleted (True), or there was no such link (False)."""
        seq = self.ch.next_seq()
        try:
            self.ch.request(encode_link("del", {"ifname": name}, seq, ack=True), seq)
        except NetlinkFailure as exc:
            if exc.errno == errno.ENODEV:
                return False
            raise
        return True

    # -- addresses and routes ------------------------------------------------------------------------

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        family = AF_INET6 if ":" in address else AF_INET
        raw = ip_to_bytes(address)
        body = _IFA.pack(family, prefixlen, 0, 0, index) + _nla(IFA_LOCAL, raw) + _nla(IFA_ADDRESS, raw)
        self._do(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, body)

    def addresses(self, index: int) -> list[Address]:
        out = []
        for family in (AF_INET, AF_INET6):
            for data, _kind, off, end in self.ch.dump(RTM_GETADDR, family):
                fam, prefixlen, _, _, idx = _IFA.unpack_from(data, off)
                if idx != index:
                    continue
                span = attrs(data, off + _IFA.size, end).get(IFA_ADDRESS)
                if span is not None and fam == family:
                    out.append(Address(idx, ip_text(data[span[0] : span[1]]), prefixlen))
        return out

    def replace_route(self, dst: str, dst_len: int, oif: int, gateway: str | None = None) -> None:
        family = AF_INET6 if ":" in dst else AF_INET
        body = _RTM.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        if dst_len:
            body += _nla(RTA_DST, socket.inet_pton(family, dst))
        if gateway:
            body += _nla(RTA_GATEWAY, ip_to_bytes(gateway))
        body += _nla(RTA_OIF, _U32.pack(oif))
        self._do(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK, body)
