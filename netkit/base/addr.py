"""Parsing of the address forms used on command lines and in config files (pure)."""

from __future__ import annotations

import ipaddress
from typing import NamedTuple


class AddressError(ValueError):
    """An address, port or host:port string that cannot be used."""


class HostPort(NamedTuple):
    """An IP address and a port. A tuple, so hashing (dict keys on hot paths) is cheap."""

    host: str
    port: int

    @property
    def family_is_v6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family_is_v6 else f"{self.host}:{self.port}"


def _check_ip(host: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise AddressError(f"{text!r}: {host!r} is not an IP address") from None


def parse_hostport(text: str, default_port: int | None = None) -> HostPort:
    """Parse ``ADDR``, ``ADDR:PORT``, ``[V6]:PORT`` or a bare ``V6``; the address must be an IP."""
    text = text.strip()
    if not text:
        raise AddressError("empty address")
    host: str
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"{text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise AddressError(f"{text!r}: expected ':PORT' after ']'")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None  # IPv4 without port, or bare IPv6
    host = _check_ip(host, text)
    if port_text is None:
        if default_port is None:
            raise AddressError(f"{text!r}: a port is required (ADDR:PORT)")
        return HostPort(host, default_port)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AddressError(f"{text!r}: port must be 1-65535")
    return HostPort(host, int(port_text))
