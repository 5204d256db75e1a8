"""The kernel's socket tables as the exclusive-bind check reads them: addresses in both families,
ports, states, inodes; which sockets would share a listen address."""

from __future__ import annotations

# ruff: noqa: E501 (kernel table rows as the kernel writes them)
from dnscache.core.listeners import KernelSocket, conflicts, parse_table
from netkit.base.addr import HostPort

UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 5183: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 340778 2 0000000051ba947f 0
 8268: 0100007F:A0F6 0100007F:0009 01 00000000:00000000 00:00000000 00000000     0        0 340780 2 00000000cf51b403 0
 9000: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 340790 2 00000000cf51b403 0
 garbage line
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:14E9 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 340779 1 000000003577bc4d 100 0 0 10 0
   1: 00000000000000000000000001000000:14EA 00000000000000000000000001000000:9999 01 00000000:00000000 00:00000000 00000000     0        0 340781 1 000000003577bc4d 100 0 0 10 0
"""


def test_parse_both_families() -> None:
    udp = parse_table(UDP, "udp", v6=False)
    assert udp == [
        KernelSocket("udp", HostPort("127.0.0.1", 5353), 0x07, 340778),
        KernelSocket("udp", HostPort("127.0.0.1", 41206), 0x01, 340780),
        KernelSocket("udp", HostPort("0.0.0.0", 53), 0x07, 340790),
    ]
    tcp = parse_table(TCP6, "tcp", v6=True)
    assert tcp[0] == KernelSocket("tcp", HostPort("::1", 5353), 0x0A, 340779)


def test_conflicts_same_address_or_wildcard_only_serving_sockets() -> None:
    table = parse_table(UDP, "udp", v6=False) + parse_table(TCP6, "tcp", v6=True)
    inodes = lambda addrs, allowed=frozenset(): [s.inode for s in conflicts(table, addrs, allowed)]  # noqa: E731
    assert inodes([HostPort("127.0.0.1", 5353)]) == [340778]
    assert inodes([HostPort("127.0.0.2", 5353)]) == []  # another address, same port
    assert inodes([HostPort("127.0.0.1", 5354)]) == []
    assert inodes([HostPort("0.0.0.0", 5353)]) == [340778]  # ours would be the wildcard
    assert inodes([HostPort("10.0.0.1", 53)]) == [340790]  # theirs is the wildcard
    assert inodes([HostPort("127.0.0.1", 41206)]) == []  # a connected UDP socket serves nobody
    assert inodes([HostPort("::1", 5353)]) == [340779]  # a listening TCP socket
    assert inodes([HostPort("::1", 5354)]) == []  # an established one does not count
    assert inodes([HostPort("::", 5353)]) == [340779]
    assert inodes([HostPort("127.0.0.1", 5353)], frozenset({340778})) == []  # allowed: a successor's
