"""Import policy per peer: which prefixes a peer may announce, and how many (pure).

- ``PrefixFilter``: a peer may announce only prefixes inside its allowed blocks (each block with
  an optional longest length, ``198.19.0.0/16 le 24``), and a default route (``0.0.0.0/0``,
  ``::/0``) only when ``allow_default`` is set. No blocks configured: any prefix but the default
  route.
- ``MaxPrefix``: at most ``limit`` accepted prefixes from the peer. On a breach the reflector
  either keeps the session and rejects the prefixes beyond the limit (``keep``), or tears the
  session down with a Cease NOTIFICATION, subcode 1, "Maximum Number of Prefixes Reached"
  (``teardown``, RFC 4486).

Rejections carry a reason, which is a label value of ``netkit_bgp_prefixes_rejected_total``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from bgp.reflector.core.prefix import V6, Prefix

__all__ = [
    "DEFAULT_ROUTES",
    "MaxPrefix",
    "MaxPrefixAction",
    "PeerPolicy",
    "PolicyError",
    "PrefixFilter",
    "Reject",
    "parse_block",
]


class PolicyError(ValueError):
    """A filter entry that cannot be parsed."""


class Reject(StrEnum):
    """Why a route was not accepted (label values of the rejected-prefixes metric)."""

    MALFORMED = "malformed"  # not a prefix
    FAMILY = "family"  # an address family the reflector does not carry
    DEFAULT_ROUTE = "default_route"  # 0.0.0.0/0 or ::/0 from a peer not allowed to send one
    NOT_ALLOWED = "not_allowed"  # outside the peer's allowed blocks
    MAX_PREFIX = "max_prefix"  # over the peer's limit (action keep)
    CLUSTER_LOOP = "cluster_loop"  # our cluster id is in the CLUSTER_LIST (RFC 4456 8)
    ORIGINATOR_LOOP = "originator_loop"  # ORIGINATOR_ID is our router id (RFC 4456 8)
    AS_LOOP = "as_loop"  # our AS in the AS_PATH of an eBGP route (RFC 4271 9.1.2)


class MaxPrefixAction(StrEnum):
    KEEP = "keep"
    TEARDOWN = "teardown"


@dataclass(frozen=True, slots=True)
class MaxPrefix:
    limit: int
    action: MaxPrefixAction = MaxPrefixAction.KEEP


# One allowed block: (version, network as int, block length, longest accepted length)
Block = tuple[int, int, int, int]


def parse_block(text: str) -> Block:
    """``198.19.0.0/16`` or ``198.19.0.0/16 le 24`` -> a block; PolicyError if malformed."""
    words = text.split()
    if len(words) not in (1, 3) or (len(words) == 3 and words[1] != "le"):
        raise PolicyError(f"{text!r}: expected PREFIX or 'PREFIX le LENGTH'")
    try:
        net = ipaddress.ip_network(words[0], strict=True)
    except ValueError as exc:
        raise PolicyError(f"{text!r}: {exc}") from None
    longest: int = net.max_prefixlen
    if len(words) == 3:
        if not words[2].isdigit() or not net.prefixlen <= int(words[2]) <= net.max_prefixlen:
            raise PolicyError(f"{text!r}: le must be between {net.prefixlen} and {net.max_prefixlen}")
        longest = int(words[2])
    return (net.version, int(net.network_address), net.prefixlen, longest)


DEFAULT_ROUTES = (b"\x00", bytes((V6, 0)))  # 0.0.0.0/0 and ::/0 as prefix keys


class PrefixFilter:
    """Allowed blocks and the default-route rule for one peer."""

    __slots__ = ("allow_default", "blocks", "texts")

    def __init__(self, allowed: Iterable[str] | None = None, allow_default: bool = False) -> None:
        self.texts = tuple(allowed) if allowed is not None else None
        self.blocks = tuple(parse_block(b) for b in self.texts) if self.texts is not None else None
        self.allow_default = allow_default

    def check(self, prefix: Prefix) -> Reject | None:
        """None if ``prefix`` (a key of ``bgp.reflector.core.prefix``) may be accepted, else the reason.

        Without blocks (the common case, on the hot path) only the default route is refused."""
        if self.blocks is None:
            if prefix in DEFAULT_ROUTES and not self.allow_default:
                return Reject.DEFAULT_ROUTE
            return None
        if not prefix:
            return Reject.MALFORMED
        v6 = prefix[0] == V6
        body = prefix[1:] if v6 else prefix
        size = 16 if v6 else 4
        if not body or len(body) != 1 + ((body[0] + 7) >> 3) or body[0] > 8 * size:
            return Reject.MALFORMED
        length = body[0]
        if length == 0:
            return None if self.allow_default else Reject.DEFAULT_ROUTE
        bits = 8 * size
        value = int.from_bytes(body[1:], "big") << (8 * (size + 1 - len(body)))
        version = 6 if v6 else 4
        for b_version, b_value, b_length, b_longest in self.blocks:
            if (
                b_version == version
                and b_length <= length <= b_longest
                and value >> (bits - b_length) == b_value >> (bits - b_length)
            ):
                return None
        return Reject.NOT_ALLOWED

    def __repr__(self) -> str:
        return f"PrefixFilter({self.texts!r}, allow_default={self.allow_default})"


@dataclass(frozen=True)
class PeerPolicy:
    """What the reflector accepts from one peer."""

    prefixes: PrefixFilter
    max_prefix: MaxPrefix | None = None

    @staticmethod
    def open() -> PeerPolicy:
        """No blocks, no limit, no default route."""
        return PeerPolicy(PrefixFilter())
