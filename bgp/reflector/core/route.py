"""Path attributes and peers as the reflector keeps them (pure).

``Attrs`` is immutable and hashes once: thousands of prefixes share one object (ExaBGP hands an
UPDATE's attributes over once for all its NLRI, and the decoder interns them), so the hot paths
compare attributes by identity and group prefixes by attribute object.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

__all__ = [
    "EGP",
    "IGP",
    "INCOMPLETE",
    "ORIGIN_NAMES",
    "Attrs",
    "Peer",
    "address_key",
    "ipv4_int",
]

IGP, EGP, INCOMPLETE = 0, 1, 2
ORIGIN_NAMES = ("igp", "egp", "incomplete")


def ipv4_int(text: str) -> int:
    """A dotted quad as an integer (router ids, originator ids, cluster ids); ValueError if not one."""
    parts = text.split(".")
    if len(parts) != 4:
        raise ValueError(f"not an IPv4 address: {text!r}")
    value = 0
    for part in parts:
        if not part.isdigit() or len(part) > 3:
            raise ValueError(f"not an IPv4 address: {text!r}")
        octet = int(part)
        if octet > 255:
            raise ValueError(f"not an IPv4 address: {text!r}")
        value = value << 8 | octet
    return value


def address_key(text: str) -> tuple[int, int]:
    """Sort key of a peer address: IPv4 before IPv6, then numerically (RFC 4271 9.1.2.2 g)."""
    ip = ipaddress.ip_address(text)
    return (ip.version, int(ip))


@dataclass(frozen=True, slots=True)
class Attrs:
    """The path attributes of a route, next hop included.

    ``as_path`` is the AS_SEQUENCE, ``as_set`` the AS_SET (counted as one AS in the path length).
    Communities are kept in the text ExaBGP's command syntax takes (``65000:1``, ``1:2:3``,
    ``0x0002fde800000001``); ``unknown`` holds optional transitive attributes this speaker does not
    interpret, as (type code, flags, payload hex), passed on with the Partial bit set (RFC 4271
    5, 9.1.3).
    """

    next_hop: str
    origin: int = IGP
    as_path: tuple[int, ...] = ()
    as_set: tuple[int, ...] = ()
    med: int | None = None
    local_pref: int | None = None
    originator_id: str | None = None
    cluster_list: tuple[str, ...] = ()
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    ext_communities: tuple[str, ...] = ()
    atomic_aggregate: bool = False
    aggregator: str | None = None
    unknown: tuple[tuple[int, int, str], ...] = ()
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "_hash",
            hash(
                (
                    self.next_hop,
                    self.origin,
                    self.as_path,
                    self.as_set,
                    self.med,
                    self.local_pref,
                    self.originator_id,
                    self.cluster_list,
                    self.communities,
                    self.large_communities,
                    self.ext_communities,
                    self.atomic_aggregate,
                    self.aggregator,
                    self.unknown,
                )
            ),
        )

    def __hash__(self) -> int:
        return self._hash

    @property
    def as_path_length(self) -> int:
        """RFC 4271 9.1.2.2 a: an AS_SET counts as one, whatever its size."""
        return len(self.as_path) + (1 if self.as_set else 0)

    @property
    def neighbor_as(self) -> int | None:
        """The first AS of the path (None: empty path, a route from inside the local AS)."""
        return self.as_path[0] if self.as_path else None

    def evolve(self, **changes: object) -> Attrs:
        """A copy with some fields changed (the hash is recomputed)."""
        return replace(self, **changes)  # type: ignore[arg-type]


class Peer:
    """One configured neighbour and what the session told us about it.

    Compared and hashed by identity: a ``Peer`` is a dict key on every hot path.
    """

    __slots__ = (
        "addr_key",
        "address",
        "asn",
        "client",
        "ebgp",
        "established",
        "name",
        "router_id",
        "router_id_int",
    )

    def __init__(self, name: str, address: str, asn: int, client: bool, ebgp: bool) -> None:
        self.name = name
        self.address = address
        self.addr_key = address_key(address)
        self.asn = asn
        self.client = client  # we reflect to it (RFC 4456 client); False: non-client or eBGP
        self.ebgp = ebgp
        self.established = False
        self.router_id: str | None = None  # BGP identifier from its OPEN
        self.router_id_int = 0

    def set_router_id(self, router_id: str) -> None:
        self.router_id = router_id
        self.router_id_int = ipv4_int(router_id)

    def __repr__(self) -> str:
        kind = "ebgp" if self.ebgp else ("client" if self.client else "non-client")
        return f"<Peer {self.name} {self.address} {kind}>"
