"""Renderers: a ``SpeakerConfig`` (or a whole plan) into a real speaker's configuration text.

Every module here is pure (no I/O): ``bird`` (BIRD 2), ``frr`` (FRR bgpd, plus the vtysh delta
between two configs), ``gobgp`` (GoBGP TOML plus the CLI commands that announce prefixes) and
``calico`` (Calico resources reproducing a plan's sessions).

All speakers follow one rule for address families: a session carries the family of its own
addresses only (IPv4 prefixes on IPv4 sessions, IPv6 on IPv6 ones), as Calico's BIRD and BIRD6
do. IPv6 routes learnt over an IPv4 session would have an IPv4(-mapped) next hop, which Linux
cannot install; and FRR 8.4, measured here, sends such routes with a next hop that depends on
when the session came up (IPv4-mapped when it came up with bgpd, the interface's link-local
address when added later, which BIRD rejects as "Invalid NEXT_HOP") and rewrites the next hop of
reflected ones to itself. A node's prefixes of the other family are still rendered (static
routes, ``network`` lines, GoBGP RIB entries) and reach nobody until it has sessions of that
family.
"""

from __future__ import annotations

import ipaddress

__all__ = ["family"]


def family(address_or_prefix: str) -> str:
    """``"ipv4"`` or ``"ipv6"``: the address family of an address or prefix."""
    return "ipv6" if ipaddress.ip_network(address_or_prefix, strict=False).version == 6 else "ipv4"
