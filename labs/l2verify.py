"""``netkit l2 verify``: prove tenant isolation with real frames (effects).

A lab of namespaces (``L2Lab``): 3 nodes on an underlay bridge, 3 tenant networks (blue and red
on every node, green on n1 and n2 only), 9 pods in their own namespaces with *the same*
198.19.1.0/24 addresses in every network, and blue's b1 and red's r1 even share a MAC. The
agent's own code (``reconcile_once``) builds the segments on every node. Then each test frame is
sent from a pod (or injected on the underlay) with a unique marker in it, while raw ``AF_PACKET``
sockets listen on every pod's interface and on every node's underlay; the pods that saw the
marker are compared with the pods that should have, the ARP reply the sender got (if any) with
the one it should get, and the segments that carried the frame between nodes (VNI from the VXLAN
header, VLAN id from ``PACKET_AUXDATA``) with the expected ones. Any difference is a LEAK
(received, not expected) or a MISS (expected, not received): exit status 1.

Frames are built with ``struct`` (scapy is only a development dependency; tests cross-check
captured frames with it). Every namespace carries the run id and is removed at the end, also on
failure or SIGTERM.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from labs.l2lab import L2Lab
from netkit.base.netns import in_netns
from netkit.l2.agent import reconcile_once
from netkit.l2.core.model import L2Network, load_networks
from netkit.l2.kernel import Kernel

ETH_P_ALL = 0x0003
ETH_P_IP, ETH_P_ARP, ETH_P_8021Q = 0x0800, 0x0806, 0x8100
ETH_P_TEST = 0x88B5  # IEEE 802 local experimental ethertype 1
SOL_PACKET, PACKET_AUXDATA = 263, 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 1 << 4
_AUX = struct.Struct("=IIIHHHH")  # tpacket_auxdata
BROADCAST = "ff:ff:ff:ff:ff:ff"
UNKNOWN_MAC = "02:ee:ee:ee:ee:ee"
MCAST_IP, MCAST_MAC = "239.1.2.3", "01:00:5e:01:02:03"
ROGUE_IP = "198.18.0.99"
VXLAN_PORT = 4789

# name, network, node, MAC, address: the same addresses in every network on purpose, and b1
# and r1 even share a MAC
PODS: tuple[tuple[str, str, str, str, str], ...] = (
    ("b1", "blue", "n1", "02:00:00:00:01:01", "198.19.1.1/24"),
    ("b4", "blue", "n1", "02:00:00:00:01:04", "198.19.1.4/24"),
    ("b2", "blue", "n2", "02:00:00:00:01:02", "198.19.1.2/24"),
    ("b3", "blue", "n3", "02:00:00:00:01:03", "198.19.1.3/24"),
    ("r1", "red", "n1", "02:00:00:00:01:01", "198.19.1.1/24"),
    ("r2", "red", "n2", "02:00:00:00:02:02", "198.19.1.2/24"),
    ("r3", "red", "n3", "02:00:00:00:02:03", "198.19.1.3/24"),
    ("g1", "green", "n1", "02:00:00:00:03:01", "198.19.1.1/24"),
    ("g2", "green", "n2", "02:00:00:00:03:02", "198.19.1.2/24"),
)
SEGMENTS = {"vxlan": {"blue": 100, "red": 200, "green": 300}, "vlan": {"blue": 10, "red": 20, "green": 30}}
MEMBERS = {"blue": ("n1", "n2", "n3"), "red": ("n1", "n2", "n3"), "green": ("n1", "n2")}
ENDPOINTS = {"blue": ("b2", "b3")}  # declared endpoints: static FDB + ARP suppression


class VerifyError(RuntimeError):
    """The lab cannot be built here (not root, a kernel feature missing)."""


# ------------------------------------------------------------------------------------------
# Frames
# ------------------------------------------------------------------------------------------


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def ether(dst: str, src: str, ethertype: int, payload: bytes, vlan: int | None = None) -> bytes:
    head = mac_bytes(dst) + mac_bytes(src)
    if vlan is not None:
        head += struct.pack("!HH", ETH_P_8021Q, vlan & 0xFFF)
    frame = head + struct.pack("!H", ethertype) + payload
    return frame + b"\0" * max(0, 60 - len(frame))


def arp_request(src_mac: str, src_ip: str, target_ip: str) -> bytes:
    return struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1) + (
        mac_bytes(src_mac) + socket.inet_aton(src_ip) + b"\0" * 6 + socket.inet_aton(target_ip)
    )


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes, ttl: int = 1) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    head = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0x4000,
        ttl,
        17,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    head = head[:10] + struct.pack("!H", _checksum(head)) + head[12:]
    return head + udp


def vxlan_header(vni: int) -> bytes:
    return struct.pack("!II", 0x08000000, vni << 8)


# ------------------------------------------------------------------------------------------
# Listening
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Captured:
    data: bytes
    vlan: int | None  # the tag the kernel moved into the packet's metadata (PACKET_AUXDATA)


class Tap:
    """A raw ``AF_PACKET`` socket on ``ifname`` inside ``netns``: incoming frames, with their
    VLAN tag from ``PACKET_AUXDATA``; ``send`` transmits a frame on the interface."""

    def __init__(self, label: str, netns: str, ifname: str) -> None:
        self.label = label

        def make() -> socket.socket:
            s = socket.socket(
                socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.htons(ETH_P_ALL)
            )
            s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind((ifname, ETH_P_ALL))
            s.setblocking(False)
            return s

        self.sock = in_netns(netns, make)

    def close(self) -> None:
        self.sock.close()

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def drain(self) -> list[Captured]:
        out: list[Captured] = []
        while True:
            try:
                data, anc, _, addr = self.sock.recvmsg(65535, socket.CMSG_SPACE(_AUX.size))
            except BlockingIOError:
                return out
            if addr[2] == PACKET_OUTGOING:
                continue
            vlan = None
            for level, kind, cdata in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(cdata) >= _AUX.size:
                    status, _, _, _, _, tci, _ = _AUX.unpack_from(cdata)
                    if status & TP_STATUS_VLAN_VALID:
                        vlan = tci & 0xFFF
            out.append(Captured(data, vlan))


def frame_vlan(c: Captured) -> int | None:
    """The outer VLAN id of a captured frame (metadata, else an in-line 802.1Q header)."""
    if c.vlan is not None:
        return c.vlan
    if len(c.data) >= 16 and struct.unpack_from("!H", c.data, 12)[0] == ETH_P_8021Q:
        return int(struct.unpack_from("!H", c.data, 14)[0] & 0xFFF)
    return None


def vxlan_of(data: bytes) -> tuple[str, int] | None:
    """(source address, VNI) of an IPv4 VXLAN packet."""
    if len(data) < 14 + 20 + 16 or struct.unpack_from("!H", data, 12)[0] != ETH_P_IP:
        return None
    ihl = (data[14] & 0x0F) * 4
    if data[14 + 9] != 17:
        return None
    udp = 14 + ihl
    if struct.unpack_from("!H", data, udp + 2)[0] != VXLAN_PORT:
        return None
    return socket.inet_ntoa(data[26:30]), struct.unpack_from("!I", data, udp + 12)[0] >> 8


def arp_reply_of(data: bytes, sender_ip: str, target_ip: str) -> str | None:
    """The MAC an ARP reply for ``target_ip`` to ``sender_ip`` announces, else None."""
    off = 14
    kind = struct.unpack_from("!H", data, 12)[0] if len(data) >= 14 else 0
    if kind == ETH_P_8021Q:
        kind, off = struct.unpack_from("!H", data, 16)[0], 18
    if kind != ETH_P_ARP or len(data) < off + 28 or struct.unpack_from("!H", data, off + 6)[0] != 2:
        return None
    spa, tpa = socket.inet_ntoa(data[off + 14 : off + 18]), socket.inet_ntoa(data[off + 24 : off + 28])
    if spa != target_ip or tpa != sender_ip:
        return None
    return ":".join(f"{b:02x}" for b in data[off + 8 : off + 14])


# ------------------------------------------------------------------------------------------
# Probes
# ------------------------------------------------------------------------------------------

Wire = frozenset[tuple[int, str]]  # (segment, receiving node)


@dataclass
class Probe:
    kind: str  # broadcast, arp, unknown-unicast, known-unicast, multicast, vlan-escape, vxlan-inject
    sender: str  # a pod, "rogue" or a node
    network: str  # the sender's network, or the one the frame pretends to belong to
    description: str
    expected: frozenset[str]
    send: Callable[[bytes], None] = field(repr=False)
    build: Callable[[bytes], bytes] = field(repr=False)
    wire: Wire = frozenset()
    reply: str | None = None  # the MAC an ARP reply must announce; None: no reply at all
    arp: tuple[str, str] | None = None  # (sender IP, target IP) of an ARP probe


@dataclass
class Outcome:
    probe: Probe
    received: frozenset[str]
    wire: Wire
    reply: str | None
    seconds: float

    @property
    def leaks(self) -> frozenset[str]:
        return self.received - self.probe.expected

    @property
    def misses(self) -> frozenset[str]:
        return self.probe.expected - self.received

    @property
    def reply_ok(self) -> bool:
        return self.reply == self.probe.reply

    @property
    def wire_ok(self) -> bool:
        return self.wire == self.probe.wire

    @property
    def ok(self) -> bool:
        return not self.leaks and not self.misses and self.reply_ok and self.wire_ok


@dataclass
class PodInfo:
    name: str
    network: str
    node: str
    mac: str
    ip: str
    netns: str = ""
    port: str = ""

    @property
    def address(self) -> str:
        return self.ip.split("/")[0]


class Verifier:
    """Builds the lab for one kind (vxlan or vlan), runs the probes, tears it down."""

    def __init__(self, kind: str, *, settle: float | None = None, timeout: float | None = None) -> None:
        slow = os.environ.get("IN_UML") == "1"  # 1 CPU, HZ=100: give frames time
        self.kind = kind
        self.settle = settle if settle is not None else (0.6 if slow else 0.15)
        self.timeout = timeout if timeout is not None else (4.0 if slow else 1.5)
        self.lab = L2Lab(nodes=3)
        self.pods: dict[str, PodInfo] = {}
        self.taps: dict[str, Tap] = {}  # pod name or "u@<node>" -> tap
        self.timings: dict[str, float] = {}
        self.networks: list[L2Network] = []
        self.yaml = ""
        self.tag = secrets.token_bytes(6)
        self.writes: dict[str, int] = {}
        self._sockets: list[socket.socket] = []

    # -- the lab ----------------------------------------------------------------------------

    def segment(self, network: str) -> int:
        return SEGMENTS[self.kind][network]

    def build(self) -> None:
        if os.geteuid() != 0:
            raise VerifyError("netkit l2 verify needs root (network namespaces, raw sockets)")
        if self.kind == "vlan":
            self.lab.underlay_name = f"{self.lab.run_id}-ul"
        self.lab.build()
        if self.kind == "vlan" and not vlan_supported(self.lab.ns("n1"), self.lab.underlay["n1"]):
            raise VerifyError(
                "this kernel has no 802.1Q VLAN support (8021q); run the VLAN path in User-Mode "
                "Linux: python -m labs.uml -- netkit l2 verify --kind vlan"
            )
        if self.kind == "vxlan":
            self.lab.add_host("rogue", ROGUE_IP)
        for name, network, node, mac, ip in PODS:
            made = self.lab.add_pod(name, node, mac, ip)
            self.pods[name] = PodInfo(name, network, node, mac, ip, made.netns, made.port)
        self.yaml = self.networks_yaml()
        self.networks = load_networks(self.yaml)
        for node in self.lab.node_ns:
            with Kernel(self.lab.ns(node)) as k:
                pl, _, result = reconcile_once(k, self.networks, node)
            if pl.failed:
                raise VerifyError(f"the agent could not build node {node}:\n{pl.render()}")
            self.writes[node] = result.writes
        for name, pod in self.pods.items():
            self.taps[name] = Tap(name, pod.netns, f"{self.lab.run_id}-eth")
        for node in self.lab.node_ns:
            self.taps[f"u@{node}"] = Tap(f"u@{node}", self.lab.ns(node), self.lab.underlay[node])
        self.prime()

    def networks_yaml(self) -> str:
        nets: list[dict[str, Any]] = []
        for network, members in MEMBERS.items():
            ports = {
                n: [p.port for p in self.pods.values() if p.network == network and p.node == n]
                for n in members
            }
            net: dict[str, Any] = {"name": network, "kind": self.kind, "ports": ports}
            if self.kind == "vxlan":
                net.update(vni=self.segment(network), members={n: self.lab.vtep[n] for n in members})
            else:
                net.update(vlan=self.segment(network), underlay=self.lab.underlay_name, members=list(members))
            eps = [self.pods[p] for p in ENDPOINTS.get(network, ())]
            if eps:
                net["endpoints"] = [{"mac": p.mac, "ip": p.address, "node": p.node} for p in eps]
            nets.append(net)
        return yaml.safe_dump({"networks": nets}, sort_keys=False)

    def prime(self) -> None:
        """Every pod sends one unmarked broadcast, so every bridge (and the fabric) has learned
        where the pods are: "known unicast" then means known, not flooded."""
        for pod in self.pods.values():
            self.taps[pod.name].send(ether(BROADCAST, pod.mac, ETH_P_TEST + 1, b"netkit l2 verify: prime"))
        time.sleep(self.settle)
        for tap in self.taps.values():
            tap.drain()

    def close(self) -> None:
        for tap in self.taps.values():
            tap.close()
        self.taps.clear()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        self.lab.close()

    # -- the probes -------------------------------------------------------------------------

    def others(self, network: str, sender: str = "") -> frozenset[str]:
        return frozenset(p.name for p in self.pods.values() if p.network == network and p.name != sender)

    def local(self, network: str, node: str, sender: str) -> frozenset[str]:
        return frozenset(p for p in self.others(network, sender) if self.pods[p].node == node)

    def flood_wire(self, network: str, node: str) -> Wire:
        """Where a flooded frame crosses the underlay: VXLAN head-end replication to every
        other member; a VLAN frame goes to every other node on the trunk (those without the
        VLAN drop it)."""
        targets = MEMBERS[network] if self.kind == "vxlan" else tuple(self.lab.node_ns)
        return frozenset((self.segment(network), n) for n in targets if n != node)

    def pod_probe(
        self,
        kind: str,
        sender: str,
        description: str,
        frame: Callable[[PodInfo, bytes], bytes],
        expected: frozenset[str],
        wire: Wire,
        reply: str | None = None,
        arp: tuple[str, str] | None = None,
    ) -> Probe:
        pod = self.pods[sender]
        tap = self.taps[sender]
        return Probe(
            kind,
            sender,
            pod.network,
            description,
            expected,
            tap.send,
            lambda marker: frame(pod, marker),
            wire,
            reply,
            arp,
        )

    def probes(self) -> list[Probe]:
        p = self.pods
        seg = self.segment
        out: list[Probe] = []

        def bcast(pod: PodInfo, marker: bytes) -> bytes:
            return ether(BROADCAST, pod.mac, ETH_P_TEST, marker)

        for s in ("b1", "r2", "g1"):
            net, node = p[s].network, p[s].node
            out.append(
                self.pod_probe(
                    "broadcast",
                    s,
                    f"broadcast in {net}",
                    bcast,
                    self.others(net, s),
                    self.flood_wire(net, node),
                )
            )

        def arp_to(target: str) -> Callable[[PodInfo, bytes], bytes]:
            def build(pod: PodInfo, marker: bytes) -> bytes:
                return ether(
                    BROADCAST, pod.mac, ETH_P_ARP, arp_request(pod.mac, pod.address, target) + marker
                )

            return build

        def arp_probe(
            s: str, target: str, description: str, expected: frozenset[str], wire: Wire, reply: str | None
        ) -> Probe:
            return self.pod_probe(
                "arp", s, description, arp_to(target), expected, wire, reply, (p[s].address, target)
            )

        out.append(
            arp_probe(
                "b1",
                "198.19.1.99",
                "ARP for an address nobody has",
                self.others("blue", "b1"),
                self.flood_wire("blue", "n1"),
                None,
            )
        )
        out.append(
            arp_probe(
                "r1",
                p["r2"].address,
                f"ARP for r2's {p['r2'].address} (b2 and g2 have it too)",
                self.others("red", "r1"),
                self.flood_wire("red", "n1"),
                p["r2"].mac,
            )
        )
        out.append(
            arp_probe(
                "b1",
                p["b2"].address,
                "ARP for a declared endpoint: answered on n1",
                self.local("blue", "n1", "b1"),
                frozenset(),
                p["b2"].mac,
            )
        )
        for s, target_node in (("b1", "n1"), ("r3", "n3"), ("g2", "n1")):
            net = p[s].network
            out.append(
                arp_probe(
                    s,
                    self.lab.vtep[target_node],
                    f"ARP for node {target_node}'s underlay address",
                    self.others(net, s),
                    self.flood_wire(net, p[s].node),
                    None,
                )
            )

        def unicast(dst: str) -> Callable[[PodInfo, bytes], bytes]:
            return lambda pod, marker: ether(dst, pod.mac, ETH_P_TEST, marker)

        out.append(
            self.pod_probe(
                "unknown-unicast",
                "b1",
                "unicast to a MAC nobody has",
                unicast(UNKNOWN_MAC),
                self.others("blue", "b1"),
                self.flood_wire("blue", "n1"),
            )
        )
        out.append(
            self.pod_probe(
                "known-unicast",
                "b1",
                "unicast to b2 (declared endpoint, n2)",
                unicast(p["b2"].mac),
                frozenset({"b2"}),
                frozenset({(seg("blue"), "n2")}),
            )
        )
        out.append(
            self.pod_probe(
                "known-unicast",
                "b1",
                "unicast to b4 (same node, learned)",
                unicast(p["b4"].mac),
                frozenset({"b4"}),
                frozenset(),
            )
        )
        # red has never seen b2's MAC: flooded in red. On a VLAN trunk the fabric bridge has
        # learned that MAC behind n2 (where r2 sends from) and drops the frame there.
        cross: tuple[frozenset[str], Wire] = (
            (self.others("red", "r2"), self.flood_wire("red", "n2"))
            if self.kind == "vxlan"
            else (frozenset(), frozenset())
        )
        out.append(
            self.pod_probe(
                "known-unicast", "r2", "unicast to blue's b2 MAC from red", unicast(p["b2"].mac), *cross
            )
        )

        def mcast(pod: PodInfo, marker: bytes) -> bytes:
            return ether(MCAST_MAC, pod.mac, ETH_P_IP, ipv4_udp(pod.address, MCAST_IP, 5000, 5000, marker))

        out.append(
            self.pod_probe(
                "multicast",
                "b2",
                f"multicast to {MCAST_IP}",
                mcast,
                self.others("blue", "b2"),
                self.flood_wire("blue", "n2"),
            )
        )

        for s, other in (("b1", "red"), ("r3", "green")):
            tag = seg(other)

            def tagged(pod: PodInfo, marker: bytes, tag: int = tag) -> bytes:
                return ether(BROADCAST, pod.mac, ETH_P_TEST, marker, vlan=tag)

            net = p[s].network
            out.append(
                self.pod_probe(
                    "vlan-escape",
                    s,
                    f"tagged with {other}'s id {tag}",
                    tagged,
                    self.others(net, s),
                    self.flood_wire(net, p[s].node),
                )
            )

        if self.kind == "vxlan":
            out += self.injections()
        return out

    def injections(self) -> list[Probe]:
        """VXLAN packets on the underlay, from addresses that are no member of the VNI."""
        out = []
        cases = (
            ("rogue", self.lab.hosts["rogue"], ROGUE_IP, "n1", "red", BROADCAST),
            ("n3", self.lab.ns("n3"), self.lab.vtep["n3"], "n1", "green", BROADCAST),
            ("rogue", self.lab.hosts["rogue"], ROGUE_IP, "n2", "blue", self.pods["b2"].mac),
        )
        for sender, netns, src, target, network, dst in cases:
            vni = self.segment(network)
            sock = in_netns(
                netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            )
            self._sockets.append(sock)
            addr = (self.lab.vtep[target], VXLAN_PORT)

            def send(data: bytes, sock: socket.socket = sock, addr: tuple[str, int] = addr) -> None:
                sock.sendto(data, addr)

            def build(marker: bytes, vni: int = vni, dst: str = dst) -> bytes:
                return vxlan_header(vni) + ether(dst, "02:66:66:66:66:66", ETH_P_TEST, marker)

            # a node's own packet is seen on the target's underlay, the rogue's is not counted
            wire = frozenset({(vni, target)}) if sender in self.lab.node_ns else frozenset()
            what = "non-member node" if sender in self.lab.node_ns else f"rogue {src}"
            out.append(
                Probe(
                    "vxlan-inject",
                    sender,
                    network,
                    f"VNI {vni} from {what} to {target}",
                    frozenset(),
                    send,
                    build,
                    wire,
                )
            )
        return out

    # -- running ----------------------------------------------------------------------------

    def run_probe(self, n: int, probe: Probe) -> Outcome:
        marker = b"NKL2" + self.tag + struct.pack("!H", n) + secrets.token_bytes(8)
        for tap in self.taps.values():
            tap.drain()
        started = time.monotonic()
        probe.send(probe.build(marker))
        received: set[str] = set()
        wire: set[tuple[int, str]] = set()
        reply: str | None = None
        deadline = started + self.timeout
        quiet_until = started + self.settle
        while True:
            time.sleep(0.02)
            for label, tap in self.taps.items():
                for c in tap.drain():
                    if label.startswith("u@"):
                        if marker in c.data:
                            self._wire(label[2:], c, wire)
                        continue
                    if marker in c.data and label != probe.sender:
                        received.add(label)
                    if label == probe.sender and probe.arp is not None:
                        reply = reply or arp_reply_of(c.data, *probe.arp)
            now = time.monotonic()
            got_all = probe.expected <= received and probe.wire <= wire and (probe.reply is None or reply)
            if got_all and now >= quiet_until:
                break
            if now >= deadline:
                break
        return Outcome(probe, frozenset(received), frozenset(wire), reply, time.monotonic() - started)

    def _wire(self, node: str, c: Captured, wire: set[tuple[int, str]]) -> None:
        if self.kind == "vxlan":
            vx = vxlan_of(c.data)
            if vx is not None and vx[0] in self.lab.vtep.values():
                wire.add((vx[1], node))
        else:
            # bridged frames keep the pod's source MAC on the trunk: every tagged copy counts
            vid = frame_vlan(c)
            if vid is not None:
                wire.add((vid, node))

    def run(self) -> list[Outcome]:
        return [self.run_probe(i, probe) for i, probe in enumerate(self.probes(), 1)]


def vlan_supported(netns: str, underlay: str) -> bool:
    probe = "nkvlprobe"
    res = subprocess.run(
        ["ip", "-n", netns, "link", "add", "link", underlay, "name", probe, "type", "vlan", "id", "4094"],
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        return False
    subprocess.run(["ip", "-n", netns, "link", "del", probe], capture_output=True, check=False)
    return True


# ------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------


def _wire_text(wire: Wire) -> str:
    if not wire:
        return "-"
    by_seg: dict[int, list[str]] = {}
    for seg, node in sorted(wire):
        by_seg.setdefault(seg, []).append(node)
    return " ".join(f"{seg}>{','.join(nodes)}" for seg, nodes in sorted(by_seg.items()))


def _short_mac(mac: str | None) -> str:
    return "none" if mac is None else mac


def matrix(kind: str, outcomes: Sequence[Outcome], verifier: Verifier) -> str:
    pods = [name for name, *_ in PODS]
    head = ["#", "frame", "net", "from", *pods, "arp reply", "wire (seg>node)", "result"]
    rows: list[list[str]] = []
    for i, o in enumerate(outcomes, 1):
        cells = []
        for pod in pods:
            if pod == o.probe.sender:
                cells.append(">")
            elif pod in o.leaks:
                cells.append("LEAK")
            elif pod in o.misses:
                cells.append("MISS")
            elif pod in o.received:
                cells.append("ok")
            else:
                cells.append(".")
        if o.probe.arp is None:
            reply = ""
        elif o.reply_ok:
            reply = "none" if o.reply is None else f"ok {o.reply[-5:]}"
        else:
            reply = f"got {_short_mac(o.reply)}, want {_short_mac(o.probe.reply)}"
        wire = (
            _wire_text(o.wire) if o.wire_ok else f"got {_wire_text(o.wire)}, want {_wire_text(o.probe.wire)}"
        )
        rows.append(
            [
                str(i),
                o.probe.kind,
                o.probe.network,
                o.probe.sender,
                *cells,
                reply,
                wire,
                "PASS" if o.ok else "FAIL",
            ]
        )
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    lines = []
    nets = []
    for network, members in MEMBERS.items():
        word = "vni" if kind == "vxlan" else "vlan"
        nets.append(f"{network} {word} {SEGMENTS[kind][network]} on {','.join(members)}")
    lines.append(f"netkit l2 verify --kind {kind}: run {verifier.lab.run_id}, 3 nodes, " + "; ".join(nets))
    lines.append(
        "pods: "
        + " ".join(f"{p.name}@{p.node}" for p in verifier.pods.values())
        + "; every network uses 198.19.1.0/24, b1 and r1 share a MAC"
    )
    lines.append("")

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip()

    lines.append(fmt(head))
    lines.extend(fmt(r) for r in rows)
    for i, o in enumerate(outcomes, 1):
        lines.append(f"  {i:2d}. {o.probe.description}")
    leaks = sum(len(o.leaks) for o in outcomes) + sum(
        1 for o in outcomes if o.probe.reply is None and o.reply is not None
    )
    misses = sum(len(o.misses) for o in outcomes)
    bad = sum(1 for o in outcomes if not o.ok)
    lines.append("")
    lines.append(
        "legend: > sender, ok received as expected, . not received as expected, LEAK received but "
        "not expected, MISS expected but not received"
    )
    lines.append(
        f"{kind}: {len(outcomes)} frames, {leaks} leaks, {misses} misses, {bad} failed: "
        + ("PASS" if bad == 0 else "FAIL")
    )
    return "\n".join(lines)


def report(kind: str, outcomes: Sequence[Outcome], verifier: Verifier) -> dict[str, Any]:
    return {
        "kind": kind,
        "run_id": verifier.lab.run_id,
        "networks": yaml.safe_load(verifier.yaml)["networks"],
        "pods": [vars(p) for p in verifier.pods.values()],
        "writes": verifier.writes,
        "seconds": verifier.timings,
        "probes": [
            {
                "n": i,
                "kind": o.probe.kind,
                "network": o.probe.network,
                "sender": o.probe.sender,
                "description": o.probe.description,
                "expected": sorted(o.probe.expected),
                "received": sorted(o.received),
                "leaks": sorted(o.leaks),
                "misses": sorted(o.misses),
                "arp_reply": (
                    {"expected": o.probe.reply, "got": o.reply, "ok": o.reply_ok} if o.probe.arp else None
                ),
                "wire": {
                    "expected": sorted(o.probe.wire),
                    "got": sorted(o.wire),
                    "ok": o.wire_ok,
                },
                "seconds": round(o.seconds, 3),
                "ok": o.ok,
            }
            for i, o in enumerate(outcomes, 1)
        ],
        "ok": all(o.ok for o in outcomes),
    }


def verify(
    kind: str, *, settle: float | None = None, timeout: float | None = None
) -> tuple[str, dict[str, Any]]:
    """Build the lab for ``kind``, run every probe, tear down; (matrix text, JSON report)."""
    v = Verifier(kind, settle=settle, timeout=timeout)
    try:
        t0 = time.monotonic()
        v.build()
        t1 = time.monotonic()
        outcomes = v.run()
        v.timings = {"build": round(t1 - t0, 2), "frames": round(time.monotonic() - t1, 2)}
        return matrix(kind, outcomes, v), report(kind, outcomes, v)
    finally:
        v.close()


def run_verify(
    kind: str, *, settle: float | None = None, timeout: float | None = None
) -> tuple[list[str], dict[str, Any]]:
    """``netkit l2 verify``: every kind asked for (``auto``: VXLAN, and VLAN where the kernel
    has 802.1Q); the text matrices and the report (``ok`` when every frame behaved)."""
    kinds = {"auto": ["vxlan", "vlan?"], "all": ["vxlan", "vlan"]}.get(kind, [kind])
    texts, reports = [], []
    for k in kinds:
        optional = k.endswith("?")
        k = k.rstrip("?")
        try:
            text, rep = verify(k, settle=settle, timeout=timeout)
        except VerifyError as exc:
            if not optional:
                raise
            print(f"{k}: not run: {exc}", file=sys.stderr)
            continue
        texts.append(text)
        reports.append(rep)
    return texts, {"runs": reports, "ok": all(r["ok"] for r in reports)}
