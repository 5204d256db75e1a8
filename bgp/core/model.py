"""What one BGP speaker is told to run: the unit every renderer and the lab consume.

The planner (``bgp.core.planner``) decides the topology as a set of sessions; ``speaker_configs``
turns a topology into one ``SpeakerConfig`` per node; renderers (``bgp.core.render``) turn a
``SpeakerConfig`` into BIRD, FRR, GoBGP, Calico or ExaBGP syntax. Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Neighbor",
    "NodeInfo",
    "Role",
    "Session",
    "SessionKind",
    "SpeakerConfig",
    "Timers",
    "speaker_configs",
]


class SessionKind(StrEnum):
    PEER = "peer"  # plain iBGP: neither side reflects to the other (mesh, reflector<->reflector)
    RR = "rr"  # ``a`` reflects to ``b``: a is the reflector, b its client


class Role(StrEnum):
    """The neighbour's role as seen from the speaker being configured."""

    PEER = "peer"  # plain iBGP peer
    CLIENT = "client"  # this speaker reflects to the neighbour (``rr client`` in BIRD)
    REFLECTOR = "reflector"  # the neighbour reflects to this speaker


@dataclass(frozen=True, order=True)
class Session:
    """One BGP session between two nodes, by name.

    For ``PEER`` sessions ``a < b`` (use ``Session.peer``); for ``RR`` sessions ``a`` is the
    reflector and ``b`` its client. ``alt``: the session runs between the two nodes' alternate
    addresses. BIRD and FRR reset a session whose reflector-client flag changes, so a hitless
    migration never flips a session: it builds the new one beside the old on the other address
    pair, then removes the old one.
    """

    a: str
    b: str
    kind: SessionKind = SessionKind.PEER
    alt: bool = False

    @staticmethod
    def peer(x: str, y: str, alt: bool = False) -> Session:
        a, b = sorted((x, y))
        return Session(a, b, SessionKind.PEER, alt)

    @staticmethod
    def rr(reflector: str, client: str, alt: bool = False) -> Session:
        return Session(reflector, client, SessionKind.RR, alt)

    @property
    def slot(self) -> tuple[frozenset[str], bool]:
        """What identifies a session on the wire: the node pair and the address pair used."""
        return (frozenset((self.a, self.b)), self.alt)

    def on(self, alt: bool) -> Session:
        return Session(self.a, self.b, self.kind, alt)

    @property
    def pair(self) -> frozenset[str]:
        return frozenset((self.a, self.b))

    def involves(self, node: str) -> bool:
        return node in (self.a, self.b)

    def other(self, node: str) -> str:
        return self.b if node == self.a else self.a

    def role_of(self, node: str) -> Role:
        """The role of the *other* end, seen from ``node``."""
        if self.kind is SessionKind.PEER:
            return Role.PEER
        return Role.CLIENT if node == self.a else Role.REFLECTOR

    def __str__(self) -> str:
        arrow = "--" if self.kind is SessionKind.PEER else "->"
        return f"{self.a} {arrow} {self.b}" + (" (alt)" if self.alt else "")


@dataclass(frozen=True)
class Timers:
    """Session timers in seconds. Defaults are the RFC 4271 suggestions; labs use short ones."""

    hold: int = 90
    keepalive: int = 30
    connect_retry: int = 5

    @staticmethod
    def lab() -> Timers:
        return Timers(hold=9, keepalive=3, connect_retry=1)


@dataclass(frozen=True)
class NodeInfo:
    """What the renderers need to know about one node (a subset of the inventory entry)."""

    name: str
    address: str  # the session address (and, for IPv4, usually the router id)
    asn: int
    router_id: str
    prefixes: tuple[str, ...] = ()  # originated, e.g. the node's pod CIDR
    alt_address: str | None = None  # a second address, for sessions built beside old ones


@dataclass(frozen=True)
class Neighbor:
    name: str
    address: str
    asn: int
    role: Role
    password: str | None = None  # TCP MD5 (RFC 2385)
    local_address: str | None = None  # None: the speaker's own address (SpeakerConfig.address)

    @property
    def ident(self) -> str:
        """A name usable as a protocol/peer-group identifier in every speaker's syntax."""
        base = "n_" + "".join(c if c.isalnum() else "_" for c in self.name)
        return base + "_alt" if self.local_address is not None else base


@dataclass(frozen=True)
class SpeakerConfig:
    node: str
    router_id: str
    address: str
    asn: int
    neighbors: tuple[Neighbor, ...]
    prefixes: tuple[str, ...] = ()
    cluster_id: str | None = None  # set when the speaker reflects to at least one client
    timers: Timers = field(default_factory=Timers)
    install_routes: bool = True  # put learnt routes into the kernel FIB

    @property
    def is_reflector(self) -> bool:
        return any(n.role is Role.CLIENT for n in self.neighbors)

    @property
    def prefixes_v4(self) -> tuple[str, ...]:
        return tuple(p for p in self.prefixes if ipaddress.ip_network(p).version == 4)

    @property
    def prefixes_v6(self) -> tuple[str, ...]:
        return tuple(p for p in self.prefixes if ipaddress.ip_network(p).version == 6)

    def neighbor(self, name: str) -> Neighbor:
        for n in self.neighbors:
            if n.name == name:
                return n
        raise KeyError(f"{self.node} has no neighbour {name!r}")


def speaker_configs(
    nodes: Iterable[NodeInfo],
    sessions: Iterable[Session],
    cluster_ids: Mapping[str, str],
    timers: Timers | None = None,
    passwords: Mapping[frozenset[str], str] | None = None,
    install_routes: bool = True,
) -> dict[str, SpeakerConfig]:
    """One config per node, from a session set (a plan, or a migration step between two plans).

    ``cluster_ids`` maps each reflector to its cluster id; a node reflecting in ``sessions``
    without one gets its router id (RFC 4456's default). An ``alt`` session needs both nodes'
    ``alt_address``.
    """
    by_name = {n.name: n for n in nodes}
    neighbours: dict[str, list[Neighbor]] = {name: [] for name in by_name}
    for s in sorted(set(sessions)):
        for me in (s.a, s.b):
            if me not in by_name or s.other(me) not in by_name:
                missing = me if me not in by_name else s.other(me)
                raise ValueError(f"session {s} names unknown node {missing!r}")
            other, mine = by_name[s.other(me)], by_name[me]
            pw = (passwords or {}).get(s.pair)
            if not s.alt:
                neighbours[me].append(Neighbor(other.name, other.address, other.asn, s.role_of(me), pw))
                continue
            if other.alt_address is None or mine.alt_address is None:
                lacking = other.name if other.alt_address is None else me
                raise ValueError(f"session {s} runs on alternate addresses, but {lacking} has none")
            neighbours[me].append(
                Neighbor(other.name, other.alt_address, other.asn, s.role_of(me), pw, mine.alt_address)
            )
    out: dict[str, SpeakerConfig] = {}
    for name, info in by_name.items():
        nbrs = tuple(sorted(neighbours[name], key=lambda n: (n.name, n.local_address is not None)))
        reflects = any(n.role is Role.CLIENT for n in nbrs)
        out[name] = SpeakerConfig(
            node=name,
            router_id=info.router_id,
            address=info.address,
            asn=info.asn,
            neighbors=nbrs,
            prefixes=info.prefixes,
            cluster_id=(cluster_ids.get(name) or info.router_id) if reflects else None,
            timers=timers or Timers(),
            install_routes=install_routes,
        )
    return out
