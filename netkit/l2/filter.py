"""The underlay filter: only a network's member VTEPs may send its VNI to this node (effects).

Linux accepts a VXLAN packet for a configured VNI from *any* source address: learning off only
stops it from remembering the sender. Anyone who can reach a node's VTEP address on the
underlay (a compromised host, a node that is a member of other networks only) can inject frames
into any tenant network there, and ``netkit l2 verify`` shows it (``vxlan-inject``). So on every
node with VXLAN networks the agent keeps an nftables table in the node's namespace::

    table inet netkit_l2 {
        comment "netkit:l2"
        chain h_<hash> { }                       # the hash of this ruleset: "is it current?"
        chain vni_100 {
            ip saddr { 198.18.0.2, 198.18.0.3 } accept
            drop
        }
        chain input {
            type filter hook input priority filter - 10; policy accept;
            udp dport 4789 @th,96,24 vmap { 100 : jump vni_100, 200 : jump vni_200 }
        }
    }

``@th,96,24`` is the VNI (bits 32-55 of the VXLAN header after the 8-byte UDP header). Only
the VNIs of networks the agent built on the node are listed (not those in conflict or error):
other VXLAN traffic, e.g. an unowned device's, is not touched. The table is replaced in one
nftables transaction when its hash chain is not the desired one, and deleted when the node has no
VXLAN network left; a table of that name without the ``netkit:l2`` comment is not the agent's
and is never changed. Checking costs one ``nft list chain``: no write when it is current.
nftables changes raise no rtnetlink notification: drift (someone deleting the table) is found by
the next round (at the latest the periodic resync); edits inside the table are not detected.

``--no-underlay-filter`` turns it off, for an underlay that is trusted (as flannel assumes).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import shutil
import subprocess
from collections.abc import Sequence

from netkit.base.netns import netns_exec
from netkit.l2.core.model import L2Network, Member
from netkit.l2.core.plan import Plan

TABLE = "netkit_l2"
COMMENT = "netkit:l2"


class FilterError(RuntimeError):
    """The filter cannot be read or written (nft missing, a foreign table, nft failed)."""


def filtered_networks(networks: Sequence[L2Network], node: str, pl: Plan) -> list[L2Network]:
    """The VXLAN networks of ``pl`` that the agent built on ``node`` (not in conflict/error)."""
    failed = {p.network for p in pl.problems if p.kind != "waiting"}
    return [
        n
        for n in networks
        if n.kind == "vxlan" and n.applies_to(node) and n.name in pl.networks and n.name not in failed
    ]


@functools.lru_cache(maxsize=4096)
def _peers(members: tuple[Member, ...], node: str) -> str:
    """The other members' VTEPs, sorted, as an nft set body (networks often share members)."""
    vteps = sorted((m.vtep for m in members if m.node != node and m.vtep), key=ipaddress.ip_address)
    return ", ".join(vteps)


def render(networks: Sequence[L2Network], node: str) -> str | None:
    """The table for ``networks`` on ``node``, or None when there is nothing to filter."""
    by_port: dict[int, list[tuple[int, str, str]]] = {}
    for net in sorted((n for n in networks if n.kind == "vxlan"), key=lambda n: n.segment):
        family = "ip6" if net.vtep_family == 6 else "ip"
        by_port.setdefault(net.port, []).append((net.segment, family, _peers(net.members, node)))
    if not by_port:
        return None
    body: list[str] = []
    rules: list[str] = []
    for port, nets in sorted(by_port.items()):
        vmap = ", ".join(f"{vni} : jump vni_{vni}" for vni, _, _ in nets)
        rules.append(f"\t\tudp dport {port} @th,96,24 vmap {{ {vmap} }}")
        for vni, family, peers in nets:
            body.append(f"\tchain vni_{vni} {{")
            if peers:
                body.append(f"\t\t{family} saddr {{ {peers} }} accept")
            body.append("\t\tdrop")
            body.append("\t}")
    body += [
        "\tchain input {",
        "\t\ttype filter hook input priority filter - 10; policy accept;",
        *rules,
        "\t}",
    ]
    digest = hashlib.sha256("\n".join(body).encode()).hexdigest()[:16]
    head = [f"table inet {TABLE} {{", f'\tcomment "{COMMENT}"', f"\tchain h_{digest} {{", "\t}"]
    return "\n".join([*head, *body, "}"]) + "\n"


def marker(text: str) -> str:
    """The hash chain's name in a rendered table."""
    for line in text.splitlines():
        if line.strip().startswith("chain h_"):
            return line.split()[1]
    raise ValueError("no hash chain in the ruleset")


def _nft(netns: str | None, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    nft = shutil.which("nft")
    if nft is None:
        raise FilterError(
            "nft not found (Debian package nftables; make setup installs it); without it VXLAN "
            "packets from non-members reach tenant networks: install it, or run with "
            "--no-underlay-filter if the underlay is trusted"
        )
    cmd = [nft, *args]
    if netns is not None:
        cmd = netns_exec(netns, cmd)
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60, check=False)


def current(netns: str | None) -> str | None:
    """The table as nft lists it, or None when it does not exist."""
    res = _nft(netns, "list", "table", "inet", TABLE)
    if res.returncode != 0:
        return None
    return res.stdout


def ensure(netns: str | None, text: str | None) -> int:
    """Make the table ``text`` (None: no table); the number of writes (0 or 1)."""
    if text is None:
        try:
            have = current(netns)
        except FilterError:
            return 0  # no nft: there can be no table of ours to remove
        if have is None:
            return 0
        if f'comment "{COMMENT}"' not in have:
            raise FilterError(f"table inet {TABLE} exists and is not managed by netkit: left untouched")
        _write(netns, f"delete table inet {TABLE}\n")
        return 1
    if _nft(netns, "list", "chain", "inet", TABLE, marker(text)).returncode == 0:
        return 0
    have = current(netns)
    if have is not None and f'comment "{COMMENT}"' not in have:
        raise FilterError(f"table inet {TABLE} exists and is not managed by netkit: left untouched")
    # one transaction: create (so that the delete cannot fail), delete, define
    _write(netns, f"add table inet {TABLE}\ndelete table inet {TABLE}\n{text}")
    return 1


def restore(netns: str | None, listing: str | None) -> None:
    """Put back a table listed by ``current`` (rollback); None: remove ours."""
    if listing is None:
        ensure(netns, None)
    else:
        _write(netns, f"add table inet {TABLE}\ndelete table inet {TABLE}\n{listing}")


def _write(netns: str | None, script: str) -> None:
    res = _nft(netns, "-f", "-", stdin=script)
    if res.returncode != 0:
        raise FilterError(f"nft failed: {res.stderr.strip() or res.stdout.strip()}")
