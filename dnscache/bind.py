"""Listening sockets for ``netkit dns serve``, bound exclusively (effects).

Apart from the server so that ``netkit dns serve`` can bind first, before it imports the
resolver: queries that arrive while the rest starts wait in the socket's queue instead of
meeting ICMP port unreachable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from dnscache.core.listeners import KernelSocket, conflicts, parse_table
from netkit.base.addr import HostPort

SO_RCVBUFFORCE = 33  # needs CAP_NET_ADMIN
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


def make_socket(addr: HostPort, kind: socket.SocketKind, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if addr.family_is_v6 else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            # TCP only: restart over TIME_WAIT. On UDP, SO_REUSEADDR would let a second process
            # bind the same address and take the datagrams (Linux allows it when both set it).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET:
            # bind before the node-local address exists (it may be added to its link later)
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            # a deep queue: what arrives while a worker restarts waits (FORCE passes rmem_max)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
            except OSError:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((addr.host, addr.port))
        sock.setblocking(False)
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
    except OSError as exc:
        sock.close()
        proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
        raise OSError(exc.errno, f"cannot listen on {addr} ({proto}): {exc.strerror}") from None
    return sock


Listeners = dict[HostPort, tuple[socket.socket, socket.socket]]  # address -> (udp, tcp)


def kernel_sockets() -> list[KernelSocket]:
    """Every UDP and TCP socket of this network namespace, from ``/proc/net``."""
    out: list[KernelSocket] = []
    for proto in ("udp", "tcp"):
        for v6 in (False, True):
            try:
                text = Path(f"/proc/net/{proto}{'6' if v6 else ''}").read_text()
            except FileNotFoundError:  # no IPv6 in this kernel
                continue
            out += parse_table(text, proto, v6)
    return out


def socket_owners(inodes: set[int]) -> dict[int, list[int]]:
    """inode -> PIDs holding a descriptor of that socket (those this process may look at)."""
    owners: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in inodes and int(proc.name) not in owners.setdefault(inode, []):
                    owners[inode].append(int(proc.name))
    return owners


def refuse_shared(found: list[KernelSocket]) -> None:
    if not found:
        return
    owners = socket_owners({s.inode for s in found})
    first = found[0]
    pids = sorted({p for s in found for p in owners.get(s.inode, [])})
    by = f" by pid {', '.join(map(str, pids))}" if pids else " by another process"
    raise OSError(
        errno.EADDRINUSE,
        f"cannot listen on {first.local} ({first.proto}): address already in use{by} (another "
        "netkit dns serve? it is never joined by accident, also not with --workers)",
    )


def bind_exclusive(addresses: Sequence[HostPort], copies: int) -> list[Listeners]:
    """``copies`` sets of SO_REUSEPORT listen sockets (one set per worker) for ``addresses``, or
    EADDRINUSE when a socket this process does not own serves one of them: checked before
    binding (so an accidental second instance never takes a datagram) and after (two starting
    at once both refuse)."""
    refuse_shared(conflicts(kernel_sockets(), addresses))
    made: list[socket.socket] = []
    groups: list[Listeners] = []
    try:
        for _ in range(copies):
            group: Listeners = {}
            for addr in addresses:
                udp = make_socket(addr, socket.SOCK_DGRAM, True)
                made.append(udp)
                tcp = make_socket(addr, socket.SOCK_STREAM, True)
                made.append(tcp)
                group[addr] = (udp, tcp)
            groups.append(group)
        own = frozenset(os.fstat(s.fileno()).st_ino for s in made)
        refuse_shared(conflicts(kernel_sockets(), addresses, own))
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return groups
