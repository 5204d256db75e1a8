"""What the reflector is told (events) and what it asks the speaker to do (commands) (pure).

``exabgp_api`` turns ExaBGP's JSON into events and commands into ExaBGP's API; ``rib`` consumes
events and produces commands. Peers are named by their session address, prefixes are keys of
``bgp.reflector.core.prefix``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bgp.reflector.core.prefix import Prefix
from bgp.reflector.core.route import Attrs

__all__ = [
    "Announce",
    "Command",
    "EndOfRib",
    "Event",
    "Malformed",
    "PeerDown",
    "PeerOpen",
    "PeerUp",
    "RouteRefresh",
    "SendEndOfRib",
    "SpeakerAck",
    "SpeakerShutdown",
    "Teardown",
    "Update",
    "Withdraw",
]


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerUp:
    peer: str


@dataclass(frozen=True, slots=True)
class PeerDown:
    peer: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PeerOpen:
    """The peer's OPEN: its BGP identifier and the unicast families it announced (``ipv4``,
    ``ipv6``; RFC 4760: no multiprotocol capability means IPv4 unicast only)."""

    peer: str
    router_id: str
    families: frozenset[str]


@dataclass(frozen=True, slots=True)
class Update:
    """One UPDATE: ``announce`` groups prefixes by their attributes (next hop included);
    ``unsupported`` counts NLRI of families the reflector does not carry; ``error`` says why
    announced NLRI were turned into withdrawals (RFC 7606 treat-as-withdraw)."""

    peer: str
    announce: tuple[tuple[Attrs, tuple[Prefix, ...]], ...] = ()
    withdraw: tuple[Prefix, ...] = ()
    unsupported: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class EndOfRib:
    peer: str
    family: str


@dataclass(frozen=True, slots=True)
class RouteRefresh:
    """The peer asked for our routes again (RFC 2918)."""

    peer: str
    family: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """An UPDATE from the peer that cannot be parsed (RFC 7606: the session must be reset)."""

    peer: str
    code: int
    subcode: int
    detail: str


@dataclass(frozen=True, slots=True)
class SpeakerAck:
    """ExaBGP's answer to one command: ``ok`` False when it rejected the command."""

    ok: bool


@dataclass(frozen=True, slots=True)
class SpeakerShutdown:
    """ExaBGP is shutting down."""


Event = (
    PeerUp | PeerDown | PeerOpen | Update | EndOfRib | RouteRefresh | Malformed | SpeakerAck | SpeakerShutdown
)


# -- commands ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Announce:
    """Send ``prefixes`` (one family) to ``peer`` with ``attrs``."""

    peer: str
    attrs: Attrs
    prefixes: tuple[Prefix, ...]


@dataclass(frozen=True, slots=True)
class Withdraw:
    peer: str
    prefixes: tuple[Prefix, ...]


@dataclass(frozen=True, slots=True)
class SendEndOfRib:
    peer: str
    family: str


@dataclass(frozen=True, slots=True)
class Teardown:
    """Close the session with a NOTIFICATION: Cease (6) with an RFC 4486 subcode, or an UPDATE
    Message Error (3) for a malformed UPDATE."""

    peer: str
    subcode: int
    code: int = 6


Command = Announce | Withdraw | SendEndOfRib | Teardown
