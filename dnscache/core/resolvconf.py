"""Reading upstreams from resolv.conf, the embedded default when no --upstream is given (pure)."""

from __future__ import annotations

from netkit.base.addr import AddressError, HostPort, parse_hostport


def parse_resolv_conf(text: str) -> list[HostPort]:
    """``nameserver`` lines in order, port 53; scoped (``%eth0``) and invalid entries are skipped."""
    servers: list[HostPort] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) < 2 or fields[0] != "nameserver" or "%" in fields[1]:
            continue
        try:
            hp = parse_hostport(fields[1], default_port=53)
        except AddressError:
            continue
        if hp not in servers:
            servers.append(hp)
    return servers
