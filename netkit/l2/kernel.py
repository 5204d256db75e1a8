"""The kernel side of the L2 agent (effects): read a namespace into ``state`` values, apply plans.

One place turns model values into netlink requests (``create_link_requests``,
``set_link_requests``, ``fdb_request``, ``neighbour_request``: pyroute2-style request tuples) and
one place reads netlink messages into the model, so that "is it already so?" is a comparison of
two ``state`` values, and what is written is exactly what is read back. ``Kernel`` sends and
reads through ``netlink`` (raw rtnetlink, pipelined requests, fast parsers); a test reads the
same kernel through pyroute2's decoder and compares.

Every request that changes the kernel is one counted *write*; reads (dumps, lookups) are not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from netkit.l2 import netlink as nl
from netkit.l2.core.plan import (
    AddFdb,
    AddNeigh,
    AttachPort,
    Change,
    CreateLink,
    DeleteLink,
    DelFdb,
    DelNeigh,
    DetachPort,
    Op,
    Plan,
    SetLink,
)
from netkit.l2.core.state import (
    FdbEntry,
    FdbState,
    Link,
    Neighbour,
    NeighState,
    ObservedState,
    VlanInfo,
    VxlanInfo,
)
from netkit.l2.netlink import (
    AF_BRIDGE,
    AF_INET,
    AF_INET6,
    IN6_ADDR_GEN_MODE_EUI64,
    IN6_ADDR_GEN_MODE_NONE,
    NTF_MASTER,
    NTF_SELF,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_REACHABLE,
    NUD_STALE,
)

log = logging.getLogger("netkit.l2.kernel")


Request = tuple[str, str, dict[str, Any]]  # (method, command, kwargs), as a pyroute2 IPRoute call


class KernelError(RuntimeError):
    """The namespace cannot be opened or read."""


class ApplyError(RuntimeError):
    """An operation failed; ``result`` holds what was applied before it (ops, writes)."""

    def __init__(self, op: Op, error: BaseException, result: ApplyResult) -> None:
        super().__init__(f"{op.symbol} {op.render()}: {error}")
        self.op = op
        self.error = error
        self.result = result

    @property
    def writes(self) -> int:
        return self.result.writes


@dataclass
class ApplyResult:
    ops: int = 0
    writes: int = 0  # rtnetlink requests that changed the kernel
    writes_by_op: Counter[str] = field(default_factory=Counter)
    filter_writes: int = 0  # nftables transactions (the underlay filter), counted apart


# ------------------------------------------------------------------------------------------
# Reading: netlink messages -> state values
# ------------------------------------------------------------------------------------------


def _fdb_state(state: int) -> FdbState:
    if state & NUD_PERMANENT:
        return "permanent"
    if state & NUD_NOARP:
        return "static"
    return "dynamic"


def _neigh_state(state: int) -> NeighState:
    if state & NUD_PERMANENT:
        return "permanent"
    if state & NUD_NOARP:
        return "noarp"
    if state & NUD_REACHABLE:
        return "reachable"
    if state & NUD_STALE:
        return "stale"
    return "other"


# ------------------------------------------------------------------------------------------
# Writing: state values -> netlink requests
# ------------------------------------------------------------------------------------------


def _addrgen_spec(on: bool) -> dict[str, Any]:
    mode = IN6_ADDR_GEN_MODE_EUI64 if on else IN6_ADDR_GEN_MODE_NONE
    return {"attrs": [["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", mode]]}]]}


def create_link_requests(link: Link, index: Callable[[str], int]) -> list[Request]:
    """The requests that create ``link`` as it is described.

    Create it down (enslaved, with its MTU and MAC), then set the alias, the IPv6 address
    generation mode and the IPv4 settings (``ipv4_conf``: ``IFLA_AF_SPEC``/``AF_INET``; the
    kernel ignores ``IFLA_IFALIAS`` in a create request and refuses ``IFLA_AF_SPEC`` there; a
    link that came up first would already have a link-local address), then bring it up, then
    the bridge-port flags. (``ipv4_conf`` is this project's key: pyroute2 0.9 encodes
    ``AF_INET`` in the dump's flat layout, which the kernel refuses in a request.)
    """
    spec: dict[str, Any] = {"ifname": link.name, "kind": link.kind, "mtu": link.mtu, "state": "down"}
    if link.master:
        spec["master"] = index(link.master)
    if link.address:
        spec["address"] = link.address
    if link.vxlan:
        v = link.vxlan
        spec.update(vxlan_id=v.vni, vxlan_port=v.port, vxlan_learning=int(v.learning))
        if v.local:
            spec["vxlan_local6" if ":" in v.local else "vxlan_local"] = v.local
        if v.underlay:
            spec["vxlan_link"] = index(v.underlay)
    if link.vlan:
        spec["vlan_id"] = link.vlan.vlan_id
        if link.vlan.underlay:
            spec["link"] = index(link.vlan.underlay)
    out: list[Request] = [("link", "add", spec)]
    extra: dict[str, Any] = {}
    if link.alias:
        extra["ifalias"] = link.alias
    if link.addrgen is not None:
        extra["IFLA_AF_SPEC"] = _addrgen_spec(link.addrgen)
    conf = {
        k: v for k, v in (("arp_ignore", link.arp_ignore), ("rp_filter", link.rp_filter)) if v is not None
    }
    if conf:
        extra["ipv4_conf"] = conf
    if extra:
        out.append(("link", "set", {"ifname": link.name, **extra}))
    if link.up:
        out.append(("link", "set", {"ifname": link.name, "state": "up"}))
    if link.master and link.neigh_suppress:
        out.append(("brport", "set", {"ifname": link.name, "neigh_suppress": 1}))
    return out


def set_link_requests(name: str, changes: Iterable[Change], index: Callable[[str], int]) -> list[Request]:
    """One ``link set`` for mtu/up/alias/master, then the bridge-port flag (after a new master)."""
    spec: dict[str, Any] = {}
    port: dict[str, Any] = {}
    for c in changes:
        if c.field == "mtu":
            spec["mtu"] = c.new
        elif c.field == "up":
            spec["state"] = "up" if c.new else "down"
        elif c.field == "alias":
            spec["ifalias"] = c.new or ""
        elif c.field == "master":
            spec["master"] = index(c.new) if isinstance(c.new, str) else 0
        elif c.field == "address":
            spec["address"] = c.new
        elif c.field == "addrgen":
            spec["IFLA_AF_SPEC"] = _addrgen_spec(bool(c.new))
        elif c.field in ("arp_ignore", "rp_filter"):
            spec.setdefault("ipv4_conf", {})[c.field] = c.new
        elif c.field == "neigh_suppress":
            port["neigh_suppress"] = int(bool(c.new))
        else:
            raise ValueError(f"link {name}: cannot set {c.field}")
    out: list[Request] = []
    if spec:
        out.append(("link", "set", {"ifname": name, **spec}))
    if port:
        out.append(("brport", "set", {"ifname": name, **port}))
    return out


def fdb_request(entry: FdbEntry, command: str, index: Callable[[str], int]) -> Request:
    """``bridge fdb append|del``: ``self`` entries with their VTEP, ``master static`` entries."""
    spec: dict[str, Any] = {"ifindex": index(entry.ifname), "lladdr": entry.mac}
    if entry.master:
        spec["flags"] = NTF_MASTER
        spec["state"] = {"static": NUD_NOARP, "permanent": NUD_PERMANENT}.get(entry.state, NUD_REACHABLE)
        return ("fdb", "replace" if command == "add" else "del", spec)
    spec["flags"] = NTF_SELF
    spec["state"] = NUD_NOARP | NUD_PERMANENT if entry.state == "permanent" else NUD_NOARP
    if entry.dst:
        spec["dst"] = entry.dst
    if entry.port is not None:
        spec["port"] = entry.port
    if entry.vni is not None:
        spec["vni"] = entry.vni
    return ("fdb", "append" if command == "add" else "del", spec)


_NUD = {"permanent": NUD_PERMANENT, "noarp": NUD_NOARP, "reachable": NUD_REACHABLE, "stale": NUD_STALE}


def neighbour_request(entry: Neighbour, command: str, index: Callable[[str], int]) -> Request:
    spec: dict[str, Any] = {
        "ifindex": index(entry.ifname),
        "dst": entry.ip,
        "family": AF_INET6 if ":" in entry.ip else AF_INET,
    }
    if command == "add":
        spec["lladdr"] = entry.mac
        spec["state"] = _NUD.get(entry.state, NUD_PERMANENT)
        return ("neigh", "replace", spec)
    return ("neigh", "del", spec)


def op_requests(op: Op, index: Callable[[str], int]) -> list[Request]:
    """The netlink requests of one plan operation, in order."""
    if isinstance(op, CreateLink):
        return create_link_requests(op.link, index)
    if isinstance(op, SetLink):
        return set_link_requests(op.name, op.changes, index)
    if isinstance(op, DeleteLink):
        return [("link", "del", {"ifname": op.link.name})]
    if isinstance(op, AttachPort):
        return [("link", "set", {"ifname": op.port, "master": index(op.bridge)})]
    if isinstance(op, DetachPort):
        return [("link", "set", {"ifname": op.port, "master": 0})]
    if isinstance(op, AddFdb):
        return [fdb_request(op.entry, "add", index)]
    if isinstance(op, DelFdb):
        return [fdb_request(op.entry, "del", index)]
    if isinstance(op, AddNeigh):
        return [neighbour_request(op.entry, "add", index)]
    if isinstance(op, DelNeigh):
        return [neighbour_request(op.entry, "del", index)]
    raise TypeError(f"unknown operation {op!r}")


def op_label(op: Op) -> str:
    """The metric label of an operation (``link_create``, ``fdb_add``...)."""
    return {
        CreateLink: "link_create",
        SetLink: "link_set",
        DeleteLink: "link_delete",
        AttachPort: "port_attach",
        DetachPort: "port_detach",
        AddFdb: "fdb_add",
        DelFdb: "fdb_del",
        AddNeigh: "neigh_add",
        DelNeigh: "neigh_del",
    }[type(op)]


# ------------------------------------------------------------------------------------------
# A netlink session in one namespace
# ------------------------------------------------------------------------------------------


def _check_netns(netns: str | None) -> None:
    if netns is not None and ("/" in netns or not os.path.exists(f"/run/netns/{netns}")):
        raise KernelError(f"network namespace {netns!r} does not exist (/run/netns/{netns})")


_FDB_MODES: dict[tuple[bool, str, bool], tuple[str, int, int]] = {}


def _fdb_mode(master: bool, state: FdbState, add: bool) -> tuple[str, int, int]:
    """(command, NUD state, NTF flags) of ``fdb_request`` for such an entry (computed once)."""
    key = (master, state, add)
    mode = _FDB_MODES.get(key)
    if mode is None:
        entry = FdbEntry("-", "02:00:00:00:00:01", None, master, state)
        _, command, spec = fdb_request(entry, "add" if add else "del", lambda _name: 0)
        mode = _FDB_MODES[key] = (command, spec["state"], spec["flags"])
    return mode


TABLES = ("links", "fdb", "neigh", "addrs")
_UNKNOWN = object()
BATCH_MESSAGES = 8192  # requests per pipelined batch (one barrier round trip each)


def _table_of(kind: int, family: int) -> str | None:
    if kind in (nl.RTM_NEWLINK, nl.RTM_DELLINK):
        return "links"
    if kind in (nl.RTM_NEWNEIGH, nl.RTM_DELNEIGH):
        return "fdb" if family == AF_BRIDGE else "neigh"
    if kind in (nl.RTM_NEWADDR, nl.RTM_DELADDR):
        return "addrs"
    return None


class Kernel:
    """Reads and writes one namespace through raw rtnetlink sockets; counts writes.

    **Reading.** ``read()`` dumps links, the bridge FDB, IP neighbours and addresses. A
    subscription to the namespace's notifications (links, neighbours/FDB, addresses) tells which
    tables changed since the last read: only those are dumped again, the others are reused, and
    when nothing changed the previous ``ObservedState`` is returned as it is. Every change made
    through netlink (by anyone, the agent included) is announced, so a table that had no
    notification holds what was read. Lost notifications (``ENOBUFS``), a failed apply, a
    renamed or deleted link, or ``read(full=True)`` (the agent's periodic resync) dump
    everything. Not announced, and so only refreshed with the FDB table: the device
    address-list entries ``bridge fdb show`` also prints for non-VXLAN devices (multicast
    filters); they are never the agent's.

    **Writing.** ``apply()`` encodes the plan's requests (``op_requests``) and pipelines them
    (``netlink.Channel.batch``): up to ``BATCH_MESSAGES`` per round trip. A request that needs
    the index of a link created or replaced earlier in the same plan first flushes the batch.
    When a request fails, the rest of its batch has already been processed by the kernel:
    ``ApplyError`` names the first failed operation, ``result`` counts every request that
    succeeded, and the agent's rollback (a diff against the checkpoint) covers the rest.
    """

    def __init__(self, netns: str | None = None) -> None:
        _check_netns(netns)
        self.netns = netns
        try:
            # a burst that overflows it only means "read everything"; 16 MiB holds the
            # notifications of ~50,000 FDB changes (so a flushed FDB re-reads only the FDB)
            self.events = nl.Subscription(nl.open_socket(netns, nl.EVENT_GROUPS, rcvbuf=16 << 20))
            self.channel = nl.Channel(nl.open_socket(netns))
        except OSError as exc:
            raise KernelError(f"cannot open network namespace {netns!r}: {exc}") from exc
        try:  # nftables changes: whether the underlay filter needs a look
            nft_group = 1 << (nl.NFNLGRP_NFTABLES - 1)
            sock = nl.open_socket(netns, nft_group, rcvbuf=1 << 16, protocol=nl.NETLINK_NETFILTER)
            self.nft_events: nl.Subscription | None = nl.Subscription(sock)
        except OSError:  # no nfnetlink: the filter is looked at every round
            self.nft_events = None
        self._filter_known: object = _UNKNOWN
        self.writes = 0
        self.full_reads = 0
        self.table_reads: Counter[str] = Counter()
        self._index: dict[str, int] = {}
        self._records: dict[int, nl.LinkRecord] = {}
        self._fdb: list[FdbEntry] = []
        self._neigh: list[Neighbour] = []
        self._addrs: list[tuple[str, str]] = []
        self._dirty: set[str] = set(TABLES)
        self._observed: ObservedState | None = None

    def close(self) -> None:
        self.events.close()
        self.channel.close()
        if self.nft_events is not None:
            self.nft_events.close()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def invalidate(self) -> None:
        """Make the next ``read()`` dump every table (and look at the underlay filter)."""
        self._dirty = set(TABLES)
        self._filter_known = _UNKNOWN

    # -- the underlay filter (nftables): change detection only; ``filter`` does the work ----

    def filter_current(self, text: str | None) -> bool:
        """True when the underlay filter is known to be ``text`` (None: no table) and no
        nftables change has been announced in the namespace since."""
        if self.nft_events is None:
            return False
        try:
            datagrams, lost = self.nft_events.drain()
        except OSError:
            return False
        if datagrams or lost:
            self._filter_known = _UNKNOWN
        return self._filter_known is not _UNKNOWN and self._filter_known == text

    def filter_known(self, text: str | None) -> None:
        """The filter was just checked or written to be ``text``: our own write's
        notifications are swallowed (a change by someone else in that instant is found by the
        next full round)."""
        if self.nft_events is not None:
            with contextlib.suppress(OSError):
                self.nft_events.drain()
        self._filter_known = text

    # -- reading --------------------------------------------------------------------------

    def _drain(self) -> None:
        """Mark the tables that notifications say changed."""
        try:
            datagrams, lost = self.events.drain()
        except OSError as exc:
            raise KernelError(f"reading netlink notifications failed: {exc}") from exc
        if lost:
            self.invalidate()
            return
        for data in datagrams:
            if len(self._dirty) == len(TABLES):
                break  # (the rest only needed reading off the socket)
            for kind, _, _, off, _ in nl.iter_messages(data):
                table = _table_of(kind, data[off] if off < len(data) else 0)
                if table is not None:
                    self._dirty.add(table)

    def read(self, attempts: int = 3, *, full: bool = False) -> ObservedState:
        """Links, bridge FDB (``bridge fdb show``), IP neighbours and addresses of the namespace.

        A dump the kernel marks as interrupted (``NLM_F_DUMP_INTR``: the table changed while it
        was read) is read again, up to ``attempts`` times. ``full``: dump every table even if
        no notification announced a change.
        """
        if full:
            self.invalidate()
        for attempt in range(attempts):
            self._drain()
            try:
                return self._read()
            except nl.DumpInterrupted:
                self.invalidate()
                if attempt == attempts - 1:
                    raise KernelError("the kernel state kept changing while being read") from None
            except (nl.NetlinkFailure, OSError) as exc:
                self.invalidate()
                raise KernelError(f"reading the kernel state failed: {exc}") from exc
        raise AssertionError("unreachable")

    def _read(self) -> ObservedState:
        if not self._dirty and self._observed is not None:
            return self._observed
        if set(TABLES) <= self._dirty:
            self.full_reads += 1
        if "links" in self._dirty:
            self.table_reads["links"] += 1
            records = {}
            for data, _, off, end in self.channel.dump(nl.RTM_GETLINK, nl.AF_UNSPEC):
                rec = nl.parse_link(data, off, end)
                records[rec.index] = rec
            old = {i: r.name for i, r in self._records.items()}
            new = {i: r.name for i, r in records.items()}
            if any(new.get(i) != name for i, name in old.items()):
                # a link went away or was renamed: entries are read by name, read them all
                self._dirty.update(TABLES)
            self._records = records
            self._index = {r.name: i for i, r in records.items()}
        names = {i: r.name for i, r in self._records.items()}
        if "fdb" in self._dirty:
            self.table_reads["fdb"] += 1
            fdb = []
            for data, _, off, end in self.channel.dump(nl.RTM_GETNEIGH, AF_BRIDGE):
                frec = nl.parse_fdb(data, off, end)
                if frec is None or frec[0] not in names:
                    continue
                ifindex, self_, mac, dst, port, vni, state = frec
                fdb.append(FdbEntry(names[ifindex], mac, dst, not self_, _fdb_state(state), port, vni))
            self._fdb = fdb
        if "neigh" in self._dirty:
            self.table_reads["neigh"] += 1
            neigh = []
            for data, _, off, end in self.channel.dump(nl.RTM_GETNEIGH, nl.AF_UNSPEC):
                nrec = nl.parse_neigh(data, off, end)
                if nrec is None or nrec[0] not in names:
                    continue
                neigh.append(Neighbour(names[nrec[0]], nrec[1], nrec[2], _neigh_state(nrec[3])))
            self._neigh = neigh
        if "addrs" in self._dirty:
            self.table_reads["addrs"] += 1
            addrs = []
            for data, _, off, end in self.channel.dump(nl.RTM_GETADDR, nl.AF_UNSPEC):
                arec = nl.parse_addr(data, off, end)
                if arec is not None and arec[0] in names:
                    addrs.append((names[arec[0]], arec[1]))
            self._addrs = addrs
        links = [self._link(r, names) for r in self._records.values()]
        self._dirty.clear()
        self._observed = ObservedState.of(links, self._fdb, self._neigh, self._addrs)
        return self._observed

    @staticmethod
    def _link(r: nl.LinkRecord, names: dict[int, str]) -> Link:
        vxlan = vlan = None
        if r.vxlan is not None:
            vni, local, port, learning, lower = r.vxlan
            vxlan = VxlanInfo(vni, local, port, learning, names.get(lower) if lower else None)
        if r.vlan is not None:
            vid, lower = r.vlan
            vlan = VlanInfo(vid, names.get(lower) if lower else None)
        return Link(
            name=r.name,
            kind=r.kind,
            mtu=r.mtu,
            up=r.up,
            alias=r.alias,
            master=names.get(r.master) if r.master else None,
            vxlan=vxlan,
            vlan=vlan,
            neigh_suppress=r.neigh_suppress,
            address=r.address,
            addrgen=r.addrgen,
            arp_ignore=r.arp_ignore,
            rp_filter=r.rp_filter,
        )

    def index(self, name: str) -> int:
        if name not in self._index:
            try:
                replies = self._get_link(name)
            except OSError as exc:
                raise KernelError(f"link {name} not found ({exc})") from None
            if not replies:
                raise KernelError(f"link {name} not found")
            self._index[name] = replies[0]
        return self._index[name]

    def _get_link(self, name: str) -> list[int]:
        seq = self.channel.next_seq()
        msg = nl.encode_link("set", {"ifname": name}, seq, ack=True)
        msg = msg[:4] + struct.pack("=HH", nl.RTM_GETLINK, nl.NLM_F_REQUEST) + msg[8:]
        return [
            nl.parse_link(data, off, end).index
            for data, kind, off, end in self.channel.request(msg, seq)
            if kind == nl.RTM_NEWLINK
        ]

    # -- writing --------------------------------------------------------------------------

    def apply(self, ops: Plan | Iterable[Op]) -> ApplyResult:
        """Apply operations in order (pipelined); ``ApplyError`` names the first that failed."""
        result = ApplyResult()
        ops = list(ops.ops if isinstance(ops, Plan) else ops)
        messages: list[bytes] = []
        pending: list[tuple[int, int, str]] = []  # (seq, op position, label)
        gone: set[str] = set()  # links deleted in the unsent part of the batch

        def flush() -> None:
            if not messages:
                return
            try:
                failures = self.channel.batch(messages)
            except OSError as exc:
                self.invalidate()
                raise ApplyError(ops[pending[0][1]], exc, result) from exc
            first: tuple[int, int, str] | None = None
            for item in pending:
                seq, _, label = item
                if seq in failures:
                    first = first or item
                    continue
                result.writes += 1
                result.writes_by_op[label] += 1
                self.writes += 1
            messages.clear()
            done = list(pending)
            pending.clear()
            gone.clear()
            if first is not None:
                self.invalidate()
                seq, pos, _ = first
                code, text = failures[seq]
                result.ops = pos
                raise ApplyError(ops[pos], NetlinkError(code, text or os.strerror(code)), result)
            if done:
                result.ops = done[-1][1] + 1

        def index(name: str) -> int:
            if name in gone or name not in self._index:
                flush()
                self._index.pop(name, None)
            return self.index(name)

        debug = log.isEnabledFor(logging.DEBUG)
        for pos, op in enumerate(ops):
            try:
                if isinstance(op, (AddFdb, DelFdb)):
                    # the hot path: the same message as op_requests + encode_request
                    e = op.entry
                    command, state, flags = _fdb_mode(e.master, e.state, isinstance(op, AddFdb))
                    seq = self.channel.next_seq()
                    messages.append(
                        nl.encode_fdb(
                            command, index(e.ifname), e.mac, e.dst, e.port, e.vni, state, flags, seq
                        ),
                    )
                    pending.append((seq, pos, "fdb_add" if command != "del" else "fdb_del"))
                else:
                    for method, command, spec in op_requests(op, index):
                        seq = self.channel.next_seq()
                        messages.append(nl.encode_request(method, command, spec, seq))
                        pending.append((seq, pos, op_label(op)))
            except KernelError as exc:
                flush()
                self.invalidate()
                result.ops = pos
                raise ApplyError(op, exc, result) from exc
            if isinstance(op, DeleteLink):
                gone.add(op.link.name)
            if len(messages) >= BATCH_MESSAGES:
                flush()
            if debug:
                log.debug("queued", extra={"op": f"{op.symbol} {op.render()}", "network": op.network})
        flush()
        result.ops = len(ops)
        return result


# ------------------------------------------------------------------------------------------
# Events
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One netlink notification, reduced to what the agent needs to decide whether to look."""

    kind: str  # RTM_NEWLINK, RTM_DELNEIGH, ...
    ifindex: int
    family: int = 0
    state: int = 0


_EVENT_NAMES = {
    nl.RTM_NEWLINK: "RTM_NEWLINK",
    nl.RTM_DELLINK: "RTM_DELLINK",
    nl.RTM_NEWNEIGH: "RTM_NEWNEIGH",
    nl.RTM_DELNEIGH: "RTM_DELNEIGH",
    nl.RTM_NEWADDR: "RTM_NEWADDR",
    nl.RTM_DELADDR: "RTM_DELADDR",
}
_IFI_INDEX = struct.Struct("=4xi")
_ND_HEAD = struct.Struct("=Bxxxih")
_IFA_HEAD = struct.Struct("=B3xi")


def events_from_datagram(data: bytes) -> list[Event]:
    """The notifications of one datagram as ``Event`` values (headers only: no attributes)."""
    out = []
    for kind, _, _, off, end in nl.iter_messages(data):
        name = _EVENT_NAMES.get(kind)
        if name is None or end - off < 12:
            continue
        if kind in (nl.RTM_NEWLINK, nl.RTM_DELLINK):
            out.append(Event(name, _IFI_INDEX.unpack_from(data, off)[0]))
        elif kind in (nl.RTM_NEWNEIGH, nl.RTM_DELNEIGH):
            family, ifindex, state = _ND_HEAD.unpack_from(data, off)
            out.append(Event(name, ifindex, family, state & 0xFFFF))
        else:
            family, index = _IFA_HEAD.unpack_from(data, off)
            out.append(Event(name, index, family))
    return out


class Monitor:
    """Netlink notifications (links, FDB, neighbours, addresses) of a namespace, on a thread.

    A raw socket subscribed to the groups; only message headers are decoded, so a storm of
    50,000 FDB notifications costs milliseconds, not the seconds pyroute2's decoder takes, and
    the notifications read in one go are reported once per distinct ``Event`` value. A second
    socket listens to nftables changes (``NETLINK_NETFILTER``): any is reported as
    ``Event("NFT_CHANGE", 0)`` (the underlay filter may need a look).
    ``on_event(None)`` means "events may have been lost, resynchronise" (``ENOBUFS``).
    ``stop()`` wakes the thread through a pipe.
    """

    def __init__(self, netns: str | None, on_event: Callable[[Event | None], None]) -> None:
        self.netns = netns
        self.on_event = on_event
        self._sub: nl.Subscription | None = None
        self._nft: nl.Subscription | None = None
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"l2-monitor-{netns or 'self'}", daemon=True)

    def start(self, timeout: float = 5.0) -> None:
        _check_netns(self.netns)
        try:
            self._sub = nl.Subscription(nl.open_socket(self.netns, nl.EVENT_GROUPS, rcvbuf=8 << 20))
        except OSError as exc:
            raise KernelError(f"netlink monitor failed: {exc}") from exc
        with contextlib.suppress(OSError):  # no nfnetlink: the resync still looks
            group = 1 << (nl.NFNLGRP_NFTABLES - 1)
            self._nft = nl.Subscription(nl.open_socket(self.netns, group, 1 << 16, nl.NETLINK_NETFILTER))
        self._thread.start()

    def _run(self) -> None:
        sub = self._sub
        assert sub is not None
        while not self._stopping:
            try:
                extra = [self._nft.fileno()] if self._nft is not None else []
                ready, _, _ = select.select([sub.fileno(), self._wake_r, *extra], [], [], 1.0)
                if self._nft is not None and self._nft.fileno() in ready:
                    nft, nft_lost = self._nft.drain()
                    if (nft or nft_lost) and not self._stopping:
                        self.on_event(Event("NFT_CHANGE", 0))
                if sub.fileno() not in ready:
                    continue
                datagrams, lost = sub.drain()
            except (OSError, ValueError) as exc:
                if not self._stopping:
                    log.error("netlink monitor stopped", extra={"error": repr(exc)})
                    self.on_event(None)
                break
            if self._stopping:
                break
            # one event per distinct (kind, link, family, state) of a burst: 50 FDB entries
            # flushed from one device are one event for the agent, not 50
            seen: set[Event] = set()
            for data in datagrams:
                for ev in events_from_datagram(data):
                    if ev not in seen:
                        seen.add(ev)
                        self.on_event(ev)
            if lost:
                # ENOBUFS: the kernel dropped notifications (a storm); look at everything
                log.warning("netlink monitor: notifications lost; resynchronising")
                self.on_event(None)

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        if self._thread.is_alive():
            self._thread.join(5.0)
        if self._sub is not None:
            self._sub.close()
        if self._nft is not None:
            self._nft.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
