"""Raw rtnetlink for the L2 agent (effects): sockets in a namespace, requests encoded with
``struct``, dumps and notifications parsed without pyroute2's message objects.

Why not pyroute2 for the hot paths: pyroute2 0.9's ``IPRoute`` builds, sends and waits for one
message at a time through an asyncio loop, ~250 µs per FDB write and ~200 µs to encode a message
even without sending it (``IPBatch``); decoding a dump costs about as much per message. 1,000
networks x 50 VTEPs are 50,000 FDB entries: minutes of Python per full read or apply. Here:

- **requests** are encoded from the same ``(method, command, kwargs)`` tuples that
  ``kernel.op_requests`` produces for pyroute2, into the same messages (``tests/unit/
  test_l2_netlink.py`` decodes both encodings with pyroute2 and compares them), and are
  *pipelined*: many messages per ``sendmsg`` without ``NLM_F_ACK``, then one ``NLMSG_NOOP`` with
  ``NLM_F_ACK`` as a barrier. The kernel processes rtnetlink requests synchronously inside
  ``sendmsg``, in order, and answers only the ones that failed (an error is always reported),
  so when the barrier's ack arrives every earlier request has been processed and every failure
  is in the receive queue, tagged with its sequence number.
- **dumps and notifications** are parsed straight from the bytes into ``state`` values, only
  the attributes the agent uses.

Link requests that name a link (``set``, ``del``, bridge-port flags) address it by name
(``ifi_index`` 0 + ``IFLA_IFNAME``), so a batch can create a link and configure it without a
round trip to learn its index; only references to other links (``master``, the VXLAN/VLAN lower
device, FDB/neighbour entries) need an index.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from netkit.base.netns import in_netns

# netlink
NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
NFNLGRP_NFTABLES = 7  # nftables changes (nfnetlink multicast group)
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
NLM_F_ACK_TLVS = 0x200  # on an NLMSG_ERROR: extended ack attributes follow
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270
NETLINK_CAP_ACK, NETLINK_EXT_ACK = 10, 11
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33

# rtnetlink
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
AF_UNSPEC, AF_INET, AF_BRIDGE, AF_INET6 = 0, 2, 7, 10
IFF_UP = 0x1

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_AF_SPEC = 18, 20, 26
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING = 1, 3, 4, 7
IFLA_VXLAN_PORT, IFLA_VXLAN_LOCAL6 = 15, 17
IFLA_VLAN_ID = 1
IFLA_BRPORT_NEIGH_SUPPRESS = 32
IFLA_INET6_ADDR_GEN_MODE = 8
IN6_ADDR_GEN_MODE_EUI64, IN6_ADDR_GEN_MODE_NONE = 0, 1
IFLA_INET_CONF = 1
IPV4_DEVCONF = {"rp_filter": 8, "arp_ignore": 19}  # include/uapi/linux/ip.h (1-based ids)
NDA_DST, NDA_LLADDR, NDA_PORT, NDA_VNI = 1, 2, 6, 7
IFA_ADDRESS = 1

NUD_REACHABLE, NUD_STALE, NUD_NOARP, NUD_PERMANENT = 0x02, 0x04, 0x40, 0x80
NTF_SELF, NTF_MASTER = 0x02, 0x04

EVENT_GROUPS = 0x1 | 0x4 | 0x10 | 0x100  # RTMGRP_LINK | RTMGRP_NEIGH | IPV4_IFADDR | IPV6_IFADDR

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFI = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_ND = struct.Struct("=BxxxiHBB")  # ndmsg: family, ifindex, state, flags, type
_IFA = struct.Struct("=BBBBi")  # ifaddrmsg: family, prefixlen, flags, scope, index
_NLA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")
_BE16 = struct.Struct("!H")
_ERR = struct.Struct("=i")

MAX_SEND = 256 * 1024  # bytes per sendmsg
RCVBUF = 32 * 1024 * 1024
SNDBUF = 4 * 1024 * 1024


class NetlinkFailure(OSError):
    """A request the kernel refused: ``errno``, the kernel's extended message if any."""

    def __init__(self, code: int, message: str = "") -> None:
        text = os.strerror(code) + (f" ({message})" if message else "")
        super().__init__(code, text)
        self.code = code
        self.message = message


class DumpInterrupted(RuntimeError):
    """The table changed while it was being dumped (``NLM_F_DUMP_INTR``): read it again."""


# ------------------------------------------------------------------------------------------
# Sockets in a namespace
# ------------------------------------------------------------------------------------------

T = TypeVar("T")


def _bufsize(sock: socket.socket, force: int, plain: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:  # not root (CAP_NET_ADMIN): capped by net.core.[rw]mem_max
        sock.setsockopt(socket.SOL_SOCKET, plain, size)


def open_socket(
    netns: str | None, groups: int = 0, rcvbuf: int = RCVBUF, protocol: int = NETLINK_ROUTE
) -> socket.socket:
    """A netlink socket (``NETLINK_ROUTE`` unless ``protocol``) in ``netns`` (None: this one),
    subscribed to ``groups``."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        try:
            _bufsize(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, rcvbuf)
            _bufsize(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, SNDBUF)
            for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                with contextlib.suppress(OSError):  # older kernels: plain acks
                    sock.setsockopt(SOL_NETLINK, opt, 1)
            sock.bind((0, groups))
        except BaseException:
            sock.close()
            raise
        return sock

    return in_netns(netns, make)


# ------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------


def _nla(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return _NLA.pack(n, kind) + payload + b"\0" * (-n % 4)


def _str(text: str) -> bytes:
    return text.encode() + b"\0"


_mac_bytes: dict[str, bytes] = {}
_ip_bytes: dict[str, bytes] = {}


def mac_to_bytes(mac: str) -> bytes:
    b = _mac_bytes.get(mac)
    if b is None:
        b = _mac_bytes[mac] = bytes.fromhex(mac.replace(":", ""))
    return b


def ip_to_bytes(ip: str) -> bytes:
    b = _ip_bytes.get(ip)
    if b is None:
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        b = _ip_bytes[ip] = socket.inet_pton(fam, ip)
    return b


def _header(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _HDR.pack(16 + len(body), kind, flags, seq, 0) + body


def _req_flags(command: str, ack: bool) -> int:
    base = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
    return base | {
        "add": NLM_F_CREATE | NLM_F_EXCL,
        "append": NLM_F_CREATE | NLM_F_APPEND,
        "replace": NLM_F_CREATE | NLM_F_REPLACE,
    }.get(command, 0)


def _af_spec(spec: Any, ipv4_conf: dict[str, int] | None = None) -> bytes:
    """``IFLA_AF_SPEC``: AF_INET6 address generation in pyroute2's nested-dict form, and IPv4
    device settings (``IFLA_INET_CONF``: nested attributes, type = the ``IPV4_DEVCONF`` id)."""
    out = b""
    if ipv4_conf:
        conf = b"".join(_nla(IPV4_DEVCONF[k], _U32.pack(v)) for k, v in ipv4_conf.items())
        out += _nla(AF_INET, _nla(IFLA_INET_CONF, conf))
    for name, inner in (spec or {"attrs": []})["attrs"]:
        if name != "AF_INET6":
            raise ValueError(f"IFLA_AF_SPEC: {name} is not supported here")
        body = b""
        for iname, value in inner["attrs"]:
            if iname != "IFLA_INET6_ADDR_GEN_MODE":
                raise ValueError(f"IFLA_AF_SPEC: {iname} is not supported here")
            body += _nla(IFLA_INET6_ADDR_GEN_MODE, bytes([value]))
        out += _nla(AF_INET6, body)
    return _nla(IFLA_AF_SPEC, out)


_LINK_KEYS = {
    "ifname", "index", "kind", "mtu", "state", "master", "address", "link", "ifalias",
    "IFLA_AF_SPEC", "vxlan_id", "vxlan_port", "vxlan_learning", "vxlan_local", "vxlan_local6",
    "vxlan_link", "vlan_id", "ipv4_conf",
}  # fmt: skip


def encode_link(command: str, spec: dict[str, Any], seq: int, ack: bool = False) -> bytes:
    """``link add|set|del`` as pyroute2 would send it; a link without ``index`` is named."""
    unknown = set(spec) - _LINK_KEYS
    if unknown:
        raise ValueError(f"link {command}: unsupported keys {sorted(unknown)}")
    kind = {"add": RTM_NEWLINK, "set": RTM_NEWLINK, "del": RTM_DELLINK}[command]
    flags = change = 0
    if "state" in spec:
        flags = IFF_UP if spec["state"] == "up" else 0
        change = 1
    attrs = b""
    if "ifname" in spec:
        attrs += _nla(IFLA_IFNAME, _str(spec["ifname"]))
    if "mtu" in spec:
        attrs += _nla(IFLA_MTU, _U32.pack(spec["mtu"]))
    if "master" in spec:
        attrs += _nla(IFLA_MASTER, _U32.pack(spec["master"]))
    if "link" in spec:
        attrs += _nla(IFLA_LINK, _U32.pack(spec["link"]))
    if "address" in spec:
        attrs += _nla(IFLA_ADDRESS, mac_to_bytes(spec["address"]))
    if "ifalias" in spec:
        attrs += _nla(IFLA_IFALIAS, _str(spec["ifalias"]))
    if "IFLA_AF_SPEC" in spec or "ipv4_conf" in spec:
        attrs += _af_spec(spec.get("IFLA_AF_SPEC"), spec.get("ipv4_conf"))
    if "kind" in spec:
        data = b""
        if spec["kind"] == "vxlan":
            data += _nla(IFLA_VXLAN_ID, _U32.pack(spec["vxlan_id"]))
            if "vxlan_port" in spec:
                data += _nla(IFLA_VXLAN_PORT, _BE16.pack(spec["vxlan_port"]))
            if "vxlan_learning" in spec:
                data += _nla(IFLA_VXLAN_LEARNING, bytes([spec["vxlan_learning"]]))
            if "vxlan_local" in spec:
                data += _nla(IFLA_VXLAN_LOCAL, ip_to_bytes(spec["vxlan_local"]))
            if "vxlan_local6" in spec:
                data += _nla(IFLA_VXLAN_LOCAL6, ip_to_bytes(spec["vxlan_local6"]))
            if "vxlan_link" in spec:
                data += _nla(IFLA_VXLAN_LINK, _U32.pack(spec["vxlan_link"]))
        elif spec["kind"] == "vlan":
            data += _nla(IFLA_VLAN_ID, _U16.pack(spec["vlan_id"]))
        info = _nla(IFLA_INFO_KIND, _str(spec["kind"]))
        if data:
            info += _nla(IFLA_INFO_DATA, data)
        attrs += _nla(IFLA_LINKINFO, info)
    body = _IFI.pack(AF_UNSPEC, 0, spec.get("index", 0), flags, change) + attrs
    return _header(kind, _req_flags(command, ack), seq, body)


def encode_brport(spec: dict[str, Any], seq: int, ack: bool = False) -> bytes:
    """``brport set``: bridge-port flags, as pyroute2 sends them (``kind`` ``bridge_slave``)."""
    unknown = set(spec) - {"ifname", "index", "neigh_suppress"}
    if unknown:
        raise ValueError(f"brport set: unsupported keys {sorted(unknown)}")
    slave = _nla(IFLA_BRPORT_NEIGH_SUPPRESS, bytes([spec["neigh_suppress"]]))
    info = _nla(IFLA_INFO_KIND, _str("bridge_slave")) + _nla(IFLA_INFO_SLAVE_DATA, slave)
    attrs = _nla(IFLA_IFNAME, _str(spec["ifname"])) if "ifname" in spec else b""
    body = _IFI.pack(AF_UNSPEC, 0, spec.get("index", 0), 0, 0) + attrs + _nla(IFLA_LINKINFO, info)
    return _header(RTM_NEWLINK, _req_flags("set", ack), seq, body)


_ND_HEAD = struct.Struct("=IHHIIBxxxiHBB")  # nlmsghdr + ndmsg, packed in one go
_LLADDR_HDR = _NLA.pack(10, NDA_LLADDR)
_DST4_HDR = _NLA.pack(8, NDA_DST)
_DST6_HDR = _NLA.pack(20, NDA_DST)
_PAD2 = b"\0\0"


def encode_neigh(family: int, command: str, spec: dict[str, Any], seq: int, ack: bool = False) -> bytes:
    """``fdb append|replace|del`` (``family`` AF_BRIDGE) and ``neigh replace|del``, as pyroute2
    sends them (attribute order: NDA_LLADDR, NDA_DST, NDA_PORT, NDA_VNI for the FDB;
    NDA_DST, NDA_LLADDR for neighbours; a neighbour request defaults to ``state`` permanent)."""
    kind = RTM_DELNEIGH if command == "del" else RTM_NEWNEIGH
    parts: list[bytes] = []
    lladdr = spec.get("lladdr")
    dst = spec.get("dst")
    if family == AF_BRIDGE:
        return encode_fdb(
            command, spec["ifindex"], lladdr, dst, spec.get("port"), spec.get("vni"),
            spec.get("state", 0), spec.get("flags", 0), seq, ack,
        )  # fmt: skip
    else:
        flags = spec.get("flags", 0)
        family = spec.get("family", family)
        if dst is not None:
            raw = ip_to_bytes(dst)
            parts += (_DST4_HDR if len(raw) == 4 else _DST6_HDR, raw)
        if lladdr is not None:
            parts += (_LLADDR_HDR, mac_to_bytes(lladdr), _PAD2)
        state = spec.get("state", NUD_PERMANENT)
    attrs = b"".join(parts)
    return (
        _ND_HEAD.pack(
            28 + len(attrs), kind, _req_flags(command, ack), seq, 0,
            family, spec["ifindex"], state, flags, 0,
        )
        + attrs
    )  # fmt: skip


_FLAGS_CACHE: dict[tuple[str, bool], int] = {}


def encode_fdb(
    command: str,
    ifindex: int,
    lladdr: str | None,
    dst: str | None,
    port: int | None,
    vni: int | None,
    state: int,
    flags: int,
    seq: int,
    ack: bool = False,
) -> bytes:
    """``fdb append|replace|del`` (the hot path: 50,000 of these in a full converge)."""
    if command in ("add", "append", "del") and not state & NUD_NOARP:
        # pyroute2's fdb(): noarp always, permanent unless reachable, self unless master
        state |= NUD_NOARP
        if not state & (NUD_PERMANENT | NUD_REACHABLE):
            state |= NUD_PERMANENT
        if not flags & (NTF_SELF | NTF_MASTER):
            flags |= NTF_SELF
    parts: list[bytes] = []
    if lladdr is not None:
        parts += (_LLADDR_HDR, mac_to_bytes(lladdr), _PAD2)
    if dst is not None:
        raw = ip_to_bytes(dst)
        parts += (_DST4_HDR if len(raw) == 4 else _DST6_HDR, raw)
    if port is not None:
        parts += (_NLA.pack(6, NDA_PORT), _BE16.pack(port), _PAD2)
    if vni is not None:
        parts += (_NLA.pack(8, NDA_VNI), _U32.pack(vni))
    attrs = b"".join(parts)
    key = (command, ack)
    rflags = _FLAGS_CACHE.get(key)
    if rflags is None:
        rflags = _FLAGS_CACHE[key] = _req_flags(command, ack)
    kind = RTM_DELNEIGH if command == "del" else RTM_NEWNEIGH
    return _ND_HEAD.pack(28 + len(attrs), kind, rflags, seq, 0, AF_BRIDGE, ifindex, state, flags, 0) + attrs


def encode_request(method: str, command: str, spec: dict[str, Any], seq: int, ack: bool = False) -> bytes:
    """One ``kernel.Request`` as bytes."""
    if method == "link":
        return encode_link(command, spec, seq, ack)
    if method == "brport":
        return encode_brport(spec, seq, ack)
    if method == "fdb":
        return encode_neigh(AF_BRIDGE, command, spec, seq, ack)
    if method == "neigh":
        return encode_neigh(spec.get("family", AF_INET), command, spec, seq, ack)
    raise ValueError(f"unsupported request {method} {command}")


def encode_dump(kind: int, family: int, seq: int) -> bytes:
    if kind == RTM_GETLINK:
        body = _IFI.pack(family, 0, 0, 0, 0)
    elif kind == RTM_GETNEIGH:
        body = _ND.pack(family, 0, 0, 0, 0)
    else:
        body = _IFA.pack(family, 0, 0, 0, 0)
    return _header(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


# ------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, flags, seq, offset of the payload, end) of each message in a datagram."""
    off, total = 0, len(data)
    unpack = _HDR.unpack_from
    while off + 16 <= total:
        length, kind, flags, seq, _ = unpack(data, off)
        if length < 16:
            break
        yield kind, flags, seq, off + 16, off + length
        off += (length + 3) & ~3


def attrs(data: bytes, off: int, end: int) -> dict[int, tuple[int, int]]:
    """Attribute type (flags masked) -> (payload offset, payload end)."""
    out: dict[int, tuple[int, int]] = {}
    unpack = _NLA.unpack_from
    while off + 4 <= end:
        length, kind = unpack(data, off)
        if length < 4:
            break
        out[kind & 0x3FFF] = (off + 4, off + length)
        off += (length + 3) & ~3
    return out


def _cstr(data: bytes, span: tuple[int, int]) -> str:
    raw = data[span[0] : span[1]]
    nul = raw.find(b"\0")
    return (raw if nul < 0 else raw[:nul]).decode(errors="replace")


def _u32(data: bytes, span: tuple[int, int] | None) -> int:
    return _U32.unpack_from(data, span[0])[0] if span is not None else 0


_mac_text: dict[bytes, str] = {}
_ip_text: dict[bytes, str] = {}


def mac_text(raw: bytes) -> str:
    s = _mac_text.get(raw)
    if s is None:
        s = _mac_text[raw] = ":".join(f"{b:02x}" for b in raw)
    return s


def ip_text(raw: bytes) -> str:
    s = _ip_text.get(raw)
    if s is None:
        s = _ip_text[raw] = socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)
    return s


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """A link as parsed, with other links referred to by index (resolved into a ``Link`` by
    the reader, which knows every name)."""

    index: int
    name: str
    kind: str
    mtu: int
    up: bool
    alias: str | None
    master: int
    address: str | None
    addrgen: bool | None
    arp_ignore: int | None
    rp_filter: int | None
    neigh_suppress: bool | None
    vxlan: tuple[int, str | None, int, bool, int] | None  # vni, local, port, learning, lower
    vlan: tuple[int, int] | None  # id, lower
    family: int = AF_UNSPEC


def parse_link(data: bytes, off: int, end: int) -> LinkRecord:
    family, _, index, flags, _ = _IFI.unpack_from(data, off)
    a = attrs(data, off + _IFI.size, end)
    kind = "device"
    vxlan = vlan = None
    neigh_suppress = None
    info_span = a.get(IFLA_LINKINFO)
    if info_span is not None:
        info = attrs(data, *info_span)
        if IFLA_INFO_KIND in info:
            kind = _cstr(data, info[IFLA_INFO_KIND]) or "device"
        dspan = info.get(IFLA_INFO_DATA)
        if dspan is not None and kind == "vxlan":
            d = attrs(data, *dspan)
            local = None
            for key in (IFLA_VXLAN_LOCAL, IFLA_VXLAN_LOCAL6):
                if key in d:
                    s, e = d[key]
                    local = ip_text(data[s:e])
                    break
            port = _BE16.unpack_from(data, d[IFLA_VXLAN_PORT][0])[0] if IFLA_VXLAN_PORT in d else 0
            learning = data[d[IFLA_VXLAN_LEARNING][0]] if IFLA_VXLAN_LEARNING in d else 0
            vxlan = (_u32(data, d.get(IFLA_VXLAN_ID)), local, port or 4789, bool(learning),
                     _u32(data, d.get(IFLA_VXLAN_LINK)))  # fmt: skip
        elif dspan is not None and kind == "vlan":
            d = attrs(data, *dspan)
            vid = _U16.unpack_from(data, d[IFLA_VLAN_ID][0])[0] if IFLA_VLAN_ID in d else 0
            vlan = (vid, _u32(data, a.get(IFLA_LINK)))
        if IFLA_INFO_SLAVE_KIND in info and _cstr(data, info[IFLA_INFO_SLAVE_KIND]) == "bridge":
            sspan = info.get(IFLA_INFO_SLAVE_DATA)
            neigh_suppress = False
            if sspan is not None:
                sd = attrs(data, *sspan)
                if IFLA_BRPORT_NEIGH_SUPPRESS in sd:
                    neigh_suppress = bool(data[sd[IFLA_BRPORT_NEIGH_SUPPRESS][0]])
    addrgen = arp_ignore = rp_filter = None
    af = a.get(IFLA_AF_SPEC)
    if af is not None:
        families = attrs(data, *af)
        four = families.get(AF_INET)
        if four is not None:
            conf = attrs(data, *four).get(IFLA_INET_CONF)
            if conf is not None:  # an array of u32, index = id - 1
                values = struct.unpack_from(f"={(conf[1] - conf[0]) // 4}I", data, conf[0])
                if len(values) >= IPV4_DEVCONF["arp_ignore"]:
                    arp_ignore = values[IPV4_DEVCONF["arp_ignore"] - 1]
                    rp_filter = values[IPV4_DEVCONF["rp_filter"] - 1]
        six = families.get(AF_INET6)
        if six is not None:
            mode = attrs(data, *six).get(IFLA_INET6_ADDR_GEN_MODE)
            if mode is not None:
                addrgen = data[mode[0]] != IN6_ADDR_GEN_MODE_NONE
    alias = _cstr(data, a[IFLA_IFALIAS]) if IFLA_IFALIAS in a else None
    address = None
    if IFLA_ADDRESS in a:
        s, e = a[IFLA_ADDRESS]
        address = mac_text(data[s:e])
    return LinkRecord(
        index=index,
        name=_cstr(data, a[IFLA_IFNAME]) if IFLA_IFNAME in a else "",
        kind=kind,
        mtu=_u32(data, a.get(IFLA_MTU)),
        up=bool(flags & IFF_UP),
        alias=alias or None,
        master=_u32(data, a.get(IFLA_MASTER)),
        address=address,
        addrgen=addrgen,
        arp_ignore=arp_ignore,
        rp_filter=rp_filter,
        neigh_suppress=neigh_suppress,
        vxlan=vxlan,
        vlan=vlan,
        family=family,
    )


# (ifindex, self?, mac, dst, port, vni, state) of a bridge-family neighbour message
FdbRecord = tuple[int, bool, str, str | None, int | None, int | None, int]


def parse_fdb(data: bytes, off: int, end: int) -> FdbRecord | None:
    _, ifindex, state, flags, _ = _ND.unpack_from(data, off)
    a = attrs(data, off + _ND.size, end)
    ll = a.get(NDA_LLADDR)
    if ll is None or ll[1] - ll[0] != 6:
        return None
    dst = a.get(NDA_DST)
    port = a.get(NDA_PORT)
    vni = a.get(NDA_VNI)
    return (
        ifindex,
        bool(flags & NTF_SELF),
        mac_text(data[ll[0] : ll[1]]),
        ip_text(data[dst[0] : dst[1]]) if dst is not None else None,
        _BE16.unpack_from(data, port[0])[0] if port is not None else None,
        _U32.unpack_from(data, vni[0])[0] if vni is not None else None,
        state,
    )


# (ifindex, ip, mac, state) of an ARP/ND message
NeighRecord = tuple[int, str, str | None, int]


def parse_neigh(data: bytes, off: int, end: int) -> NeighRecord | None:
    family, ifindex, state, _, _ = _ND.unpack_from(data, off)
    if family not in (AF_INET, AF_INET6):
        return None
    a = attrs(data, off + _ND.size, end)
    dst = a.get(NDA_DST)
    if dst is None:
        return None
    ll = a.get(NDA_LLADDR)
    mac = mac_text(data[ll[0] : ll[1]]) if ll is not None else None
    return ifindex, ip_text(data[dst[0] : dst[1]]), mac, state


def parse_addr(data: bytes, off: int, end: int) -> tuple[int, str] | None:
    _, _, _, _, index = _IFA.unpack_from(data, off)
    span = attrs(data, off + _IFA.size, end).get(IFA_ADDRESS)
    if span is None:
        return None
    return index, ip_text(data[span[0] : span[1]])


def neigh_family(data: bytes, off: int) -> int:
    return data[off]


def error_of(data: bytes, off: int, end: int, flags: int) -> tuple[int, str]:
    """(positive errno or 0, extended ack message) of an ``NLMSG_ERROR``."""
    code = -_ERR.unpack_from(data, off)[0]
    message = ""
    if flags & NLM_F_ACK_TLVS:
        # with NETLINK_CAP_ACK only the request's header follows the error code
        tlv = attrs(data, off + 4 + 16, end)
        if NLMSGERR_ATTR_MSG in tlv:
            message = _cstr(data, tlv[NLMSGERR_ATTR_MSG])
    return code, message


# ------------------------------------------------------------------------------------------
# A request/dump channel
# ------------------------------------------------------------------------------------------


class Channel:
    """Requests and dumps on one netlink socket: pipelined batches, dumps, single requests."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0
        self._buf = bytearray(1 << 20)

    def close(self) -> None:
        self.sock.close()

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF or 1
        return self.seq

    def _recv(self) -> bytes:
        n = self.sock.recv_into(self._buf)
        return bytes(self._buf[:n])

    def batch(self, messages: list[bytes]) -> dict[int, tuple[int, str]]:
        """Send ``messages`` (encoded without ``NLM_F_ACK``) and a barrier; the failures,
        by sequence number: (errno, message)."""
        chunk: list[bytes] = []
        size = 0
        for m in messages:
            if size + len(m) > MAX_SEND and chunk:
                self.sock.send(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(m)
            size += len(m)
        barrier = self.next_seq()
        chunk.append(_header(NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, barrier, b""))
        self.sock.send(b"".join(chunk))
        failures: dict[int, tuple[int, str]] = {}
        while True:
            data = self._recv()
            for kind, flags, seq, off, end in iter_messages(data):
                if kind != NLMSG_ERROR:
                    continue
                code, message = error_of(data, off, end, flags)
                if seq == barrier:
                    return failures
                if code:
                    failures[seq] = (code, message)

    def request(self, message: bytes, seq: int) -> list[tuple[bytes, int, int, int]]:
        """One request with ``NLM_F_ACK`` (or a get): its replies (data, type, offset, end);
        raises ``NetlinkFailure``."""
        self.sock.send(message)
        out: list[tuple[bytes, int, int, int]] = []
        while True:
            data = self._recv()
            for kind, flags, rseq, off, end in iter_messages(data):
                if rseq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    code, text = error_of(data, off, end, flags)
                    if code:
                        raise NetlinkFailure(code, text)
                    return out
                out.append((data, kind, off, end))
                if not flags & NLM_F_MULTI:
                    return out

    def dump(self, kind: int, family: int) -> Iterator[tuple[bytes, int, int, int]]:
        """Every message of a dump: (datagram, type, payload offset, end).

        Raises ``DumpInterrupted`` (after reading the dump to its end) if the kernel flagged it.
        """
        seq = self.next_seq()
        self.sock.send(encode_dump(kind, family, seq))
        interrupted = False
        while True:
            data = self._recv()
            for mkind, flags, mseq, off, end in iter_messages(data):
                if mseq != seq:
                    continue
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if mkind == NLMSG_DONE:
                    if interrupted:
                        raise DumpInterrupted(f"dump {kind} interrupted")
                    return
                if mkind == NLMSG_ERROR:
                    code, text = error_of(data, off, end, flags)
                    if code:
                        raise NetlinkFailure(code, text)
                    return
                yield data, mkind, off, end


class Subscription:
    """A socket subscribed to notifications, read without blocking (``drain``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self._buf = bytearray(1 << 20)

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> tuple[list[bytes], bool]:
        """Every datagram pending, and whether notifications were lost (``ENOBUFS``)."""
        out: list[bytes] = []
        lost = False
        while True:
            try:
                n = self.sock.recv_into(self._buf)
            except BlockingIOError:
                return out, lost
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    lost = True
                    continue
                raise
            out.append(bytes(self._buf[:n]))

    def wait(self, timeout: float, wake_fd: int | None = None) -> bool:
        """Wait until readable (True) or ``timeout``/a byte on ``wake_fd`` (False)."""
        fds = [self.sock.fileno()] + ([wake_fd] if wake_fd is not None else [])
        ready, _, _ = select.select(fds, [], [], timeout)
        return self.sock.fileno() in ready
