"""The kernel side of the L2 agent (effects): read a namespace into ``state`` values, apply plans.

One place reads netlink messages into the model (``link_from_msg``, ``fdb_from_msg``,
``neighbour_from_msg``) and one place turns model values into netlink requests
(``create_link_requests``, ``set_link_requests``, ``fdb_request``, ``neighbour_request``), so that
"is it already so?" is a comparison of two ``state`` values, and what is written is exactly what
is read back.

Every request that changes the kernel is one counted *write*; reads (dumps, lookups) are not.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkDumpInterrupted, NetlinkError
from pyroute2.netlink.rtnl import (
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
)

from netkit.l2.plan import (
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
from netkit.l2.state import (
    FdbEntry,
    FdbState,
    Link,
    Neighbour,
    NeighState,
    ObservedState,
    VlanInfo,
    VxlanInfo,
)

log = logging.getLogger("netkit.l2.kernel")

AF_INET, AF_INET6, AF_BRIDGE = 2, 10, 7
IFF_UP = 0x1
IN6_ADDR_GEN_MODE_EUI64, IN6_ADDR_GEN_MODE_NONE = 0, 1
NTF_SELF, NTF_MASTER = 0x02, 0x04
NUD_REACHABLE, NUD_STALE, NUD_NOARP, NUD_PERMANENT = 0x02, 0x04, 0x40, 0x80

Request = tuple[str, str, dict[str, Any]]  # (method, command, kwargs) of a pyroute2 IPRoute call


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
    writes: int = 0
    writes_by_op: Counter[str] = field(default_factory=Counter)


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


def link_from_msg(msg: Any, names: dict[int, str]) -> Link:
    """An ``RTM_NEWLINK`` message (from a dump or an event) as a ``Link``."""
    kind = "device"
    vxlan = vlan = None
    neigh_suppress = None
    info = msg.get_attr("IFLA_LINKINFO")
    if info is not None:
        kind = info.get_attr("IFLA_INFO_KIND") or "device"
        data = info.get_attr("IFLA_INFO_DATA")
        if kind == "vxlan" and data is not None:
            lower = data.get_attr("IFLA_VXLAN_LINK")
            vxlan = VxlanInfo(
                vni=data.get_attr("IFLA_VXLAN_ID"),
                local=data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6"),
                port=data.get_attr("IFLA_VXLAN_PORT") or 4789,
                learning=bool(data.get_attr("IFLA_VXLAN_LEARNING")),
                underlay=names.get(lower) if lower else None,
            )
        elif kind == "vlan" and data is not None:
            lower = msg.get_attr("IFLA_LINK")
            vlan = VlanInfo(data.get_attr("IFLA_VLAN_ID"), names.get(lower) if lower else None)
        if info.get_attr("IFLA_INFO_SLAVE_KIND") == "bridge":
            slave = info.get_attr("IFLA_INFO_SLAVE_DATA")
            neigh_suppress = slave is not None and bool(slave.get_attr("IFLA_BRPORT_NEIGH_SUPPRESS"))
    addrgen = None
    af_spec = msg.get_attr("IFLA_AF_SPEC")
    inet6 = af_spec.get_attr("AF_INET6") if af_spec is not None else None
    if inet6 is not None and inet6.get_attr("IFLA_INET6_ADDR_GEN_MODE") is not None:
        addrgen = inet6.get_attr("IFLA_INET6_ADDR_GEN_MODE") != IN6_ADDR_GEN_MODE_NONE
    master = msg.get_attr("IFLA_MASTER")
    return Link(
        name=msg.get_attr("IFLA_IFNAME"),
        kind=kind,
        mtu=msg.get_attr("IFLA_MTU") or 0,
        up=bool(msg["flags"] & IFF_UP),
        alias=msg.get_attr("IFLA_IFALIAS") or None,
        master=names.get(master) if master else None,
        vxlan=vxlan,
        vlan=vlan,
        neigh_suppress=neigh_suppress,
        address=msg.get_attr("IFLA_ADDRESS"),
        addrgen=addrgen,
    )


def fdb_from_msg(msg: Any, names: dict[int, str]) -> FdbEntry | None:
    """A bridge-family neighbour message as an ``FdbEntry`` (None if it has no MAC/link)."""
    ifname = names.get(msg["ifindex"])
    mac = msg.get_attr("NDA_LLADDR")
    if ifname is None or not mac:
        return None
    return FdbEntry(
        ifname=ifname,
        mac=mac,
        dst=msg.get_attr("NDA_DST"),
        master=not (msg["flags"] & NTF_SELF),
        state=_fdb_state(msg["state"]),
        port=msg.get_attr("NDA_PORT"),
        vni=msg.get_attr("NDA_VNI"),
    )


def neighbour_from_msg(msg: Any, names: dict[int, str]) -> Neighbour | None:
    ifname = names.get(msg["ifindex"])
    ip = msg.get_attr("NDA_DST")
    if ifname is None or ip is None or msg["family"] not in (AF_INET, AF_INET6):
        return None
    return Neighbour(ifname, ip, msg.get_attr("NDA_LLADDR"), _neigh_state(msg["state"]))


# ------------------------------------------------------------------------------------------
# Writing: state values -> netlink requests
# ------------------------------------------------------------------------------------------


def _addrgen_spec(on: bool) -> dict[str, Any]:
    mode = IN6_ADDR_GEN_MODE_EUI64 if on else IN6_ADDR_GEN_MODE_NONE
    return {"attrs": [["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", mode]]}]]}


def create_link_requests(link: Link, index: Callable[[str], int]) -> list[Request]:
    """The requests that create ``link`` as it is described.

    Create it down (enslaved, with its MTU and MAC), then set the alias and the IPv6 address
    generation mode (the kernel ignores ``IFLA_IFALIAS`` in a create request and refuses
    ``IFLA_AF_SPEC`` there; a link that came up first would already have a link-local address),
    then bring it up, then the bridge-port flags.
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


def open_iproute(netns: str | None) -> IPRoute:
    """An ``IPRoute`` in ``netns`` (None: this process's namespace). Never creates a namespace.

    pyroute2 0.9's ``IPRoute(netns=...)`` creates a missing namespace by default
    (``flags=os.O_CREAT``); ``flags=0`` makes a typo an error instead.
    """
    if netns is None:
        return IPRoute()
    if "/" in netns or not os.path.exists(f"/run/netns/{netns}"):
        raise KernelError(f"network namespace {netns!r} does not exist (/run/netns/{netns})")
    try:
        return IPRoute(netns=netns, flags=0)
    except OSError as exc:
        raise KernelError(f"cannot open network namespace {netns!r}: {exc}") from exc


class Kernel:
    """Reads and writes one namespace through one netlink socket; counts writes."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.ipr = open_iproute(netns)
        self.writes = 0
        self._index: dict[str, int] = {}

    def close(self) -> None:
        self.ipr.close()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------

    def read(self, attempts: int = 3) -> ObservedState:
        """Links, bridge FDB (``bridge fdb show``), IP neighbours and addresses of the namespace.

        A dump the kernel marks as interrupted (``NLM_F_DUMP_INTR``: the table changed while it
        was read) is read again, up to ``attempts`` times.
        """
        for attempt in range(attempts):
            try:
                return self._read()
            except NetlinkDumpInterrupted:
                if attempt == attempts - 1:
                    raise KernelError("the kernel state kept changing while being read") from None
            except NetlinkError as exc:
                raise KernelError(f"reading the kernel state failed: {exc}") from exc
        raise AssertionError("unreachable")

    def _read(self) -> ObservedState:
        msgs = list(self.ipr.link("dump"))
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs}
        self._index = {v: k for k, v in names.items()}
        links = [link_from_msg(m, names) for m in msgs]
        fdb = [e for m in self.ipr.fdb("dump") if (e := fdb_from_msg(m, names)) is not None]
        neigh = [n for m in self.ipr.neigh("dump") if (n := neighbour_from_msg(m, names)) is not None]
        addrs = [
            (names[m["index"]], m.get_attr("IFA_ADDRESS"))
            for m in self.ipr.addr("dump")
            if m["index"] in names and m.get_attr("IFA_ADDRESS")
        ]
        return ObservedState.of(links, fdb, neigh, addrs)

    def index(self, name: str) -> int:
        if name not in self._index:
            found = self.ipr.link_lookup(ifname=name)
            if not found:
                raise KernelError(f"link {name} not found")
            self._index[name] = found[0]
        return self._index[name]

    # -- writing --------------------------------------------------------------------------

    def _send(self, req: Request) -> None:
        method, command, spec = req
        spec = dict(spec)
        if method in ("link", "brport") and "ifname" in spec and command != "add":
            spec["index"] = self.index(spec.pop("ifname"))
        getattr(self.ipr, method)(command, **spec)
        self.writes += 1

    def apply(self, ops: Plan | Iterable[Op]) -> ApplyResult:
        """Apply operations in order; stop at the first failure with ``ApplyError``."""
        result = ApplyResult()
        for op in ops.ops if isinstance(ops, Plan) else ops:
            try:
                for req in op_requests(op, self.index):
                    self._send(req)
                    result.writes += 1
                    result.writes_by_op[op_label(op)] += 1
            except (NetlinkError, KernelError, OSError) as exc:
                raise ApplyError(op, exc, result) from exc
            finally:
                if isinstance(op, DeleteLink):
                    self._index.pop(op.link.name, None)
            result.ops += 1
            log.debug("applied", extra={"op": f"{op.symbol} {op.render()}", "network": op.network})
        return result


# ------------------------------------------------------------------------------------------
# Events
# ------------------------------------------------------------------------------------------

EVENT_GROUPS = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR


@dataclass(frozen=True, slots=True)
class Event:
    """One netlink notification, reduced to what the agent needs to decide whether to look."""

    kind: str  # RTM_NEWLINK, RTM_DELNEIGH, ...
    ifindex: int
    family: int = 0
    state: int = 0


def event_from_msg(msg: Any) -> Event | None:
    kind = msg.get("event") or ""
    if kind in ("RTM_NEWLINK", "RTM_DELLINK"):
        return Event(kind, msg["index"])
    if kind in ("RTM_NEWNEIGH", "RTM_DELNEIGH"):
        return Event(kind, msg["ifindex"], msg["family"], msg["state"])
    if kind in ("RTM_NEWADDR", "RTM_DELADDR"):
        return Event(kind, msg["index"], msg["family"])
    return None


class Monitor:
    """Netlink notifications (links, FDB, neighbours, addresses) of a namespace, on a thread.

    pyroute2 0.9's sync ``IPRoute.get()`` blocks until a datagram arrives and reads *all*
    pending datagrams into an internal queue: selecting on ``fileno()`` before calling it misses
    events. So a thread blocks in ``get()``; ``close()`` from another thread wakes it up.
    ``on_event(None)`` means "events may have been lost, resynchronise" (e.g. ``ENOBUFS``).
    """

    def __init__(self, netns: str | None, on_event: Callable[[Event | None], None]) -> None:
        self.netns = netns
        self.on_event = on_event
        self._ipr: IPRoute | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"l2-monitor-{netns or 'self'}", daemon=True)

    def start(self, timeout: float = 5.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise KernelError("netlink monitor did not start")
        if self._error is not None:
            raise KernelError(f"netlink monitor failed: {self._error}")

    def _run(self) -> None:
        try:
            self._ipr = open_iproute(self.netns)
            self._ipr.bind(groups=EVENT_GROUPS)
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        while not self._stopping:
            try:
                msgs = self._ipr.get()
            except NetlinkError as exc:
                if self._stopping:
                    break
                # ENOBUFS: the kernel dropped notifications (a storm); anything else: unknown.
                # Either way the agent must look at the whole state again.
                lost = "notifications lost" if exc.code == errno.ENOBUFS else "error"
                log.warning(f"netlink monitor: {lost}; resynchronising", extra={"error": str(exc)})
                self.on_event(None)
                continue
            except Exception as exc:
                if not self._stopping:
                    log.error("netlink monitor stopped", extra={"error": repr(exc)})
                    self.on_event(None)
                break
            if not msgs:  # the terminator close() sends
                break
            for msg in msgs:
                ev = event_from_msg(msg)
                if ev is not None:
                    self.on_event(ev)

    def stop(self) -> None:
        self._stopping = True
        if self._ipr is not None:
            self._ipr.close()
        self._thread.join(5.0)
