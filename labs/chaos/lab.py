"""The chaos lab: namespaces, links, addresses and the real daemons in them (effects).

Topology (``R`` is the run id, ``nk`` + 4 hex; every name below carries it)::

    R-fab   bridge Rbr ──┬── Rpu ═ Rup   R-up (upstream side)
                         │                 198.18.0.1/24, proxies on 198.18.0.11-13/24
                         │                 faultproxy upN: 198.18.0.1N:53 -> unbound upN
                         │                 unbound up1-3 on lo 198.18.1.11-13:53, forwarding
                         │                   example.test + cluster.local to NSD and Knot
                         │                 NSD 198.18.1.1:53, Knot 198.18.1.2:53 (authoritative)
                         ├── Rp0 ═ Rn0   R-netkit    198.18.0.100/24, 169.254.20.10/32 on lo
                         ├── Rp1 ═ Rn1   R-unbound   198.18.0.101/24, 169.254.20.10/32 on lo
                         └── Rp2 ═ Rn2   R-dnsmasq   198.18.0.102/24, 169.254.20.10/32 on lo

Each node namespace runs one cache under test on 169.254.20.10:53 (the NodeLocal DNSCache
address; this kernel has no ``dummy`` link, so it sits on ``lo``) with the three fault proxies
as upstreams and as the stub servers of ``cluster.local``, plus a load generator. Every daemon is
started by ``ip netns exec`` (which execs, so the PID we hold is the daemon's), in its own
session, with its files under the per-run directory; :meth:`ChaosLab.cleanup` stops all of them
by PID, kills whatever else is still inside our namespaces, and deletes the namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import dns.exception
import dns.message
import dns.query
import dns.rcode

from labs.chaos.workload import CLUSTER, ORIGIN, ZoneRecord
from labs.dnspeers import (
    DaemonError,
    DnsDaemon,
    Dnsmasq,
    KnotServer,
    NsdServer,
    Record,
    UnboundForwarder,
    Zone,
    require_binary,
)
from netkit.base.netns import in_netns, netns_exec
from netkit.base.process import ManagedProcess

SYSTEMS = ("netkit", "unbound", "dnsmasq")
UPSTREAM_NAMES = ("up1", "up2", "up3")

UPSTREAM_GW = "198.18.0.1"
FABRIC_PREFIX = 24
PROXY_IPS = ("198.18.0.11", "198.18.0.12", "198.18.0.13")
NODE_IP_BASE = 100  # node i: 198.18.0.(100 + i)
NSD_IP = "198.18.1.1"
KNOT_IP = "198.18.1.2"
RESOLVER_IPS = ("198.18.1.11", "198.18.1.12", "198.18.1.13")
NODE_LOCAL = "169.254.20.10"
DNS_PORT = 53
METRICS_PORT = 9253

T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# Best equivalent settings of the caches under test (results.json "settings" lists them)
# --------------------------------------------------------------------------------------------

# Unbound as a node-local cache: serve-stale the RFC 8767 way (try upstream first, answer from
# the expired entry after 400 ms, like netkit's stale_answer_timeout), prefetch, forget a dead
# server's state after 60 s instead of 900 and keep probing it, room for many queries in flight
# and TCP clients, no per-client wait limit (the load generator is one address for many pods).
NODE_UNBOUND_EXTRA: dict[str, object] = {
    "access-control": "0.0.0.0/0 allow",
    "so-reuseport": True,  # Unbound's default, said: the upgrade window starts a second one beside
    "serve-expired": True,
    "serve-expired-ttl": 86400,
    "serve-expired-client-timeout": 400,
    "prefetch": True,
    "infra-host-ttl": 60,
    "infra-keep-probing": True,
    "msg-cache-size": "64m",
    "rrset-cache-size": "128m",
    "num-queries-per-thread": 4096,
    "outgoing-range": 8192,
    "incoming-num-tcp": 1024,
    "outgoing-num-tcp": 64,
    "wait-limit": 0,
}

# dnsmasq as a node-local cache, as the issue asks ("its cache and all servers"): every query to
# all servers at once, the first answer wins (dnsmasq >= 2.87 holds back only REFUSED; a fast
# SERVFAIL is passed on: without --all-servers it would retry a SERVFAIL elsewhere, but then it
# rides on one preferred server through loss and black holes; measured here, 120 s at 500 QPS:
# servfail window 235 vs 26 failures, loss window 1 vs 113, all windows 300 vs 196),
# its own retries from 250 ms on for up to 1 s (it does none by default and this client does not
# retry), expired entries served while refreshing, a big cache, room for many queries and TCP.
NODE_DNSMASQ_ARGS: tuple[str, ...] = (
    "--all-servers",
    "--fast-dns-retry=250,1000",
    "--use-stale-cache=86400",
    "--dns-forward-max=10000",
    "--max-tcp-connections=256",
)
NODE_DNSMASQ_CACHE = 200_000

NODE_NETKIT_CACHE = 200_000

# the upstream resolvers: plain forwarders to the authoritative servers (no serve-stale: when
# they fail, the caches must see it)
UPSTREAM_UNBOUND_EXTRA: dict[str, object] = {
    "access-control": "0.0.0.0/0 allow",
    "msg-cache-size": "32m",
    "rrset-cache-size": "64m",
    "num-queries-per-thread": 4096,
    "outgoing-range": 8192,
    "incoming-num-tcp": 1024,
    "wait-limit": 0,
}


# --------------------------------------------------------------------------------------------
# Namespaces
# --------------------------------------------------------------------------------------------


def ip_binary() -> str:
    return require_binary("ip", "iproute2")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([ip_binary(), *args], capture_output=True, text=True, timeout=30, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip() or res.stdout.strip()}")
    return res


def netns_list() -> list[str]:
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    out = ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def ns_socket(ns: str, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    return in_netns(ns, lambda: socket.socket(socket.AF_INET, kind))


def ns_query(
    ns: str,
    msg: dns.message.Message,
    host: str,
    port: int = DNS_PORT,
    timeout: float = 1.0,
    tcp: bool = False,
) -> dns.message.Message:
    """One DNS exchange from inside ``ns``."""
    if tcp:
        with ns_socket(ns, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect((host, port))
            return dns.query.tcp(msg, host, port=port, timeout=timeout, sock=sock)
    with ns_socket(ns) as sock:
        sock.connect((host, port))  # ECONNREFUSED at once while nothing listens
        return dns.query.udp(msg, host, port=port, timeout=timeout, sock=sock)


def ns_http_get(ns: str, host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """A minimal HTTP/1.0 GET from inside ``ns``: (status, body)."""
    with ns_socket(ns, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(f"GET {urllib.parse.quote(path)} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body.decode(errors="replace")


# --------------------------------------------------------------------------------------------
# Daemons inside a namespace (the dnspeers managers, started through ip netns exec)
# --------------------------------------------------------------------------------------------


def _ns_start(d: DnsDaemon, ns: str, ready: Callable[[], str | None] | None = None) -> None:
    """DnsDaemon.start for a daemon inside ``ns``: no bind check or probe from the host's namespace.

    ``ready`` returns None when ready or a reason; by default the daemon's own probes are sent.
    """
    if d.running:
        raise RuntimeError(f"{d.kind} in {ns} is already running")
    if d._proc is not None:
        d._kill_and_reap()
    exe = require_binary(d.binary)
    d.workdir.mkdir(parents=True, exist_ok=True)
    d._write_config()
    d._proc = ManagedProcess(d._command(exe), d.output_path, cwd=d.workdir)
    d._paused = False
    host, port = d.address

    def probe() -> str | None:
        for q in d._probes():
            try:
                r = ns_query(ns, q, host, port, timeout=0.5)
            except (dns.exception.DNSException, OSError) as e:
                return f"{type(e).__name__}: {e}"
            if not d._probe_ok(r):
                return f"{q.question[0].name}: rcode {dns.rcode.to_text(r.rcode())}"
        return None

    try:
        d._proc.wait_ready(ready or probe, d.start_timeout, f"{d.kind} in {ns}", d.log_tail, DaemonError)
    except BaseException:
        d.kill()
        raise


class NsNsd(NsdServer):
    def __init__(self, netns: str, zones: Sequence[Zone], listen: tuple[str, int], workdir: Path) -> None:
        super().__init__(zones, listen, workdir, start_timeout=60.0)
        self.netns = netns

    def _command(self, exe: str) -> list[str]:
        return netns_exec(self.netns, super()._command(exe))

    def start(self) -> NsNsd:
        _ns_start(self, self.netns)
        return self


class NsKnot(KnotServer):
    def __init__(self, netns: str, zones: Sequence[Zone], listen: tuple[str, int], workdir: Path) -> None:
        super().__init__(zones, listen, workdir, start_timeout=60.0)
        self.netns = netns

    def _command(self, exe: str) -> list[str]:
        return netns_exec(self.netns, super()._command(exe))

    def start(self) -> NsKnot:
        _ns_start(self, self.netns)
        return self


class NsUnbound(UnboundForwarder):
    def __init__(
        self,
        netns: str,
        forward_to: Sequence[tuple[str, int]],
        zones: Sequence[str],
        listen: tuple[str, int],
        workdir: Path,
        extra: dict[str, object],
    ) -> None:
        super().__init__(forward_to, zones, listen, workdir, extra, start_timeout=15.0)
        self.netns = netns

    def _command(self, exe: str) -> list[str]:
        return netns_exec(self.netns, super()._command(exe))

    def start(self) -> NsUnbound:
        _ns_start(self, self.netns)
        return self

    def beside(self) -> NsUnbound:
        """A second unbound with this configuration on the same address (SO_REUSEPORT, Unbound's
        default, lets it bind while this one runs), started and serving; its own directory."""
        assert self._root is not None
        n = sum(1 for _ in self._root.glob("surge-*")) + 1
        new = NsUnbound(self.netns, self.forward_to, self.zones, self.address, self._root / f"surge-{n}",
                        self.extra)  # fmt: skip

        def serving() -> str | None:  # a probe could be answered by this one: ask its log
            try:
                text = (new.workdir / "unbound.log").read_text()
            except FileNotFoundError:
                return "no log yet"
            return None if "start of service" in text else "not serving yet"

        _ns_start(new, new.netns, serving)
        return new


class NsDnsmasq(Dnsmasq):
    def __init__(
        self,
        netns: str,
        servers: Sequence[tuple[str, int]],
        listen: tuple[str, int],
        workdir: Path,
        cache_size: int,
        extra_args: Sequence[str],
    ) -> None:
        super().__init__(servers, listen, workdir, cache_size, extra_args, start_timeout=15.0)
        self.netns = netns

    def _command(self, exe: str) -> list[str]:
        return netns_exec(self.netns, super()._command(exe))

    def start(self) -> NsDnsmasq:
        _ns_start(self, self.netns)
        return self


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def terminate_pid(pid: int, must_contain: str, timeout: float = 5.0) -> bool:
    """SIGTERM (then SIGKILL) a process we started but do not parent, after checking that its
    command line still names ``must_contain`` (so a recycled PID is never hit). True if gone."""
    if not _pid_alive(pid):
        return True
    if must_contain not in _cmdline(pid):
        return True  # not ours any more
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return True
            time.sleep(0.05)
    return not _pid_alive(pid)


class NsNetkit(DnsDaemon):
    """``netkit dns serve`` on the node-local address, restartable by zero-gap handover."""

    binary = sys.executable
    kind = "netkit"

    def __init__(
        self,
        netns: str,
        upstreams: Sequence[str],
        workdir: Path,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__((NODE_LOCAL, DNS_PORT), workdir, start_timeout=30.0)
        self.netns = netns
        self.upstreams = list(upstreams)
        self.extra_args = list(extra_args)
        self.successors: list[int] = []  # PIDs started by handovers (own sessions, not our children)
        self._surge: list[ManagedProcess] = []  # takeover processes (our children)

    @property
    def control_path(self) -> Path:
        return self.workdir / "netkit.ctl"

    @property
    def cache_path(self) -> Path:
        return self.workdir / "netkit.cache"

    def _write_config(self) -> None:
        pass

    def _command(self, exe: str) -> list[str]:
        cmd = [exe, "-m", "netkit.cli", "dns", "serve", "--listen", f"{NODE_LOCAL}:{DNS_PORT}"]
        for u in self.upstreams:
            cmd += ["--upstream", f"{u}:{DNS_PORT}"]
        cmd += ["--zone", f"{CLUSTER.rstrip('.')}=" + ",".join(f"{u}:{DNS_PORT}" for u in self.upstreams)]
        cmd += [
            "--metrics", f"{NODE_LOCAL}:{METRICS_PORT}",
            "--control", str(self.control_path),
            "--cache-file", str(self.cache_path),
            "--cache-size", str(NODE_NETKIT_CACHE),
            "--log-level", "info",
            "--keeper", "true",  # as deploy/dnscache runs it
            *self.extra_args,
        ]  # fmt: skip
        return netns_exec(self.netns, cmd)

    def _probes(self) -> list[dns.message.Message]:
        return []

    def ready_reason(self) -> str | None:
        try:
            status, _ = ns_http_get(self.netns, NODE_LOCAL, METRICS_PORT, "/readyz", timeout=1.0)
        except OSError as e:
            return f"/readyz: {e}"
        return None if status == 200 else f"/readyz: HTTP {status}"

    def start(self) -> NsNetkit:
        _ns_start(self, self.netns, self.ready_reason)
        return self

    @property
    def serving_pid(self) -> int | None:
        if self.successors:
            return self.successors[-1]
        return self.pid

    def handover(self, timeout: float = 15.0) -> dict[str, Any]:
        """``netkit dns restart --control``: returns its JSON (old_pid, new_pid); raises on failure."""
        res = subprocess.run(
            [sys.executable, "-m", "netkit.cli", "dns", "restart", "--control", str(self.control_path),
             "--timeout", f"{timeout:g}"],
            capture_output=True, text=True, timeout=timeout + 15, check=False,
        )  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"netkit dns restart failed ({res.returncode}): {res.stderr.strip()}")
        out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
        self.successors.append(int(out["new_pid"]))
        return out

    def take_over(self, timeout: float = 30.0) -> dict[str, Any]:
        """As kubelet runs a surge pod: a new process of its own (same flags, ``--takeover true``,
        its own ready file) takes over; once it is ready, SIGTERM to the old one."""
        old = self.serving_pid
        ready = self.workdir / f"ready-{len(self.successors) + 1}"
        ready.unlink(missing_ok=True)
        cmd = [*self._command(self.binary), "--takeover", "true", "--ready-file", str(ready)]
        proc = ManagedProcess(cmd, self.output_path, cwd=self.workdir)
        self._surge.append(proc)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.returncode is not None:
                raise RuntimeError(f"the new netkit exited with status {proc.returncode} before serving")
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the new netkit was not ready within {timeout:g} s")
            time.sleep(0.02)
        self.successors.append(proc.pid)
        self._terminate(old)
        return {"old_pid": old, "new_pid": proc.pid}

    def status(self) -> dict[str, Any]:
        """``status`` on the control socket: the worker's ``pid``, its keeper (``supervisor``)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5.0)
            conn.connect(str(self.control_path))
            conn.sendall(b'{"cmd": "status"}\n')
            reply: dict[str, Any] = json.loads(conn.makefile("rb").readline())
        return reply

    def crash(self, timeout: float = 10.0) -> dict[str, Any]:
        """SIGKILL the process that resolves (the worker; the keeper that holds its sockets forks
        a new one at once); returns the old and new worker PIDs once the new one answers."""
        old = int(self.status()["pid"])
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError):
                new = int(self.status()["pid"])
                if new != old:
                    return {"old_pid": old, "new_pid": new}
            if time.monotonic() > deadline:
                raise RuntimeError(f"no new worker within {timeout:g} s after SIGKILL to {old}")
            time.sleep(0.02)

    def _terminate(self, pid: int | None) -> None:
        if pid is None:
            return
        ours = [p for p in [self._proc, *self._surge] if p is not None and p.pid == pid]
        if ours:  # SIGTERM to the process alone, as kubelet sends it; then its group is reaped
            ours[0].stop(10.0, group=False)
            return
        terminate_pid(pid, str(self.control_path), timeout=10.0)  # a handover's: not our child

    def metrics(self) -> dict[str, float]:
        status, body = ns_http_get(self.netns, NODE_LOCAL, METRICS_PORT, "/metrics", timeout=3.0)
        if status != 200:
            raise OSError(f"/metrics: HTTP {status}")
        out: dict[str, float] = {}
        for line in body.splitlines():
            if line.startswith("netkit_dns_") and "_bucket" not in line:
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    def stop_all(self) -> None:
        self.stop()
        for pid in self.successors:
            terminate_pid(pid, str(self.control_path))
        for proc in self._surge:
            proc.stop(5.0, group=False)


# --------------------------------------------------------------------------------------------
# Plain processes of ours in a namespace (fault proxies, load generators)
# --------------------------------------------------------------------------------------------


class NsProcess:
    """A Python helper run with ``ip netns exec``, in its own session, stopped by its PID."""

    def __init__(self, name: str, netns: str, argv: Sequence[str], log: Path, pipe: bool = False) -> None:
        self.name = name
        self.netns = netns
        self.log = log
        self.process = ManagedProcess(argv, log, netns=netns, cwd=log.parent, pipe=pipe)
        self.proc = self.process.popen  # its pipes, when ``pipe``

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.running

    def stop(self, timeout: float = 5.0) -> int | None:
        return self.process.stop(timeout)


def proxy_command(path: str | Path, command: str, timeout: float = 3.0) -> dict[str, Any]:
    """Send one line to a fault proxy's control socket and return its JSON reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            data = s.recv(65536)
            if not data:
                break
            buf += data
    reply: dict[str, Any] = json.loads(buf)
    return reply


# --------------------------------------------------------------------------------------------
# The lab
# --------------------------------------------------------------------------------------------


def make_zones(records: dict[str, list[ZoneRecord]]) -> list[Zone]:
    zones = []
    for origin, recs in records.items():
        z = Zone(origin)
        z.records = [Record(owner, rtype, rdata, ttl) for owner, rtype, rdata, ttl in recs]
        zones.append(z)
    return zones


class ChaosLab:
    """Builds and tears down the whole topology of one run."""

    def __init__(self, run_id: str, rundir: Path, systems: Sequence[str], log: Callable[[str], None]) -> None:
        for s in systems:
            if s not in SYSTEMS:
                raise ValueError(f"unknown system {s!r}; known: {', '.join(SYSTEMS)}")
        self.rid = run_id
        self.rundir = rundir
        self.systems = list(systems)
        self.log = log
        self.ns_fabric = f"{run_id}-fab"
        self.ns_up = f"{run_id}-up"
        self.ns_node = {s: f"{run_id}-{s}" for s in self.systems}
        self.created: list[str] = []
        self.authoritative: list[DnsDaemon] = []
        self.resolvers: dict[str, NsUnbound] = {}
        self.proxies: dict[str, NsProcess] = {}
        self.proxy_ctl: dict[str, Path] = {}
        self.caches: dict[str, DnsDaemon] = {}
        self.helpers: list[NsProcess] = []

    # -- network -------------------------------------------------------------------------------

    def _ns_add(self, name: str) -> None:
        ip("netns", "add", name)
        self.created.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def build_network(self) -> None:
        r = self.rid
        self._ns_add(self.ns_fabric)
        self._ns_add(self.ns_up)
        for s in self.systems:
            self._ns_add(self.ns_node[s])
        br = f"{r}br"
        fab = self.ns_fabric
        ip("-n", fab, "link", "add", br, "type", "bridge")
        ip("-n", fab, "link", "set", br, "up")

        def port(fab_end: str, ns: str, ns_end: str) -> None:
            ip("-n", fab, "link", "add", fab_end, "type", "veth", "peer", "name", ns_end, "netns", ns)
            ip("-n", fab, "link", "set", fab_end, "master", br, "up")
            ip("-n", ns, "link", "set", ns_end, "up")

        up_if = f"{r}up"
        port(f"{r}pu", self.ns_up, up_if)
        for a in (UPSTREAM_GW, *PROXY_IPS):
            ip("-n", self.ns_up, "addr", "add", f"{a}/{FABRIC_PREFIX}", "dev", up_if)
        for a in (NSD_IP, KNOT_IP, *RESOLVER_IPS):
            ip("-n", self.ns_up, "addr", "add", f"{a}/32", "dev", "lo")
        for i, s in enumerate(self.systems):
            ns = self.ns_node[s]
            node_if = f"{r}n{i}"
            port(f"{r}p{i}", ns, node_if)
            ip("-n", ns, "addr", "add", f"198.18.0.{NODE_IP_BASE + i}/{FABRIC_PREFIX}", "dev", node_if)
            ip("-n", ns, "addr", "add", f"{NODE_LOCAL}/32", "dev", "lo")

    # -- upstream side -------------------------------------------------------------------------

    def start_upstreams(self, zones: list[Zone]) -> None:
        d = self.rundir
        self.authoritative.append(NsNsd(self.ns_up, zones, (NSD_IP, DNS_PORT), d / "nsd").start())
        self.authoritative.append(NsKnot(self.ns_up, zones, (KNOT_IP, DNS_PORT), d / "knot").start())
        auth = [(NSD_IP, DNS_PORT), (KNOT_IP, DNS_PORT)]
        for name, addr in zip(UPSTREAM_NAMES, RESOLVER_IPS, strict=True):
            u = NsUnbound(
                self.ns_up, auth, [ORIGIN, CLUSTER], (addr, DNS_PORT), d / name, UPSTREAM_UNBOUND_EXTRA
            )
            self.resolvers[name] = u.start()

    def start_proxies(self, seed: int) -> None:
        for k, (name, front, back) in enumerate(zip(UPSTREAM_NAMES, PROXY_IPS, RESOLVER_IPS, strict=True)):
            ctl = self.rundir / f"{name}.ctl"
            argv = [
                sys.executable, "-m", "labs.chaos.faultproxy",
                "--listen", f"{front}:{DNS_PORT}", "--backend", f"{back}:{DNS_PORT}",
                "--control", str(ctl), "--seed", str(seed * 10 + k),
            ]  # fmt: skip
            self.proxies[name] = NsProcess(
                f"proxy-{name}", self.ns_up, argv, self.rundir / f"proxy-{name}.log"
            )
            self.proxy_ctl[name] = ctl
        deadline = time.monotonic() + 20
        for name, ctl in self.proxy_ctl.items():
            while True:
                try:
                    proxy_command(ctl, "stats")
                    break
                except OSError as e:
                    if not self.proxies[name].running() or time.monotonic() > deadline:
                        raise RuntimeError(f"fault proxy {name} did not start: {e}\n"
                                           + _tail(self.proxies[name].log)) from None  # fmt: skip
                    time.sleep(0.05)

    # -- caches under test ---------------------------------------------------------------------

    def make_cache(self, system: str) -> DnsDaemon:
        ns = self.ns_node[system]
        wd = self.rundir / system
        proxies = [(p, DNS_PORT) for p in PROXY_IPS]
        if system == "netkit":
            return NsNetkit(ns, PROXY_IPS, wd)
        if system == "unbound":
            return NsUnbound(ns, proxies, [ORIGIN, CLUSTER], (NODE_LOCAL, DNS_PORT), wd, NODE_UNBOUND_EXTRA)
        stub = [f"--server=/{CLUSTER.rstrip('.')}/{p}#{DNS_PORT}" for p in PROXY_IPS]
        return NsDnsmasq(
            ns, proxies, (NODE_LOCAL, DNS_PORT), wd, NODE_DNSMASQ_CACHE, [*NODE_DNSMASQ_ARGS, *stub]
        )

    def start_caches(self) -> None:
        for s in self.systems:
            cache = self.make_cache(s)
            self.caches[s] = cache
            cache.start()

    def restart_cache(self, system: str, how: str = "cache_restart") -> dict[str, Any]:
        """Restart the system's cache ``how`` (a schedule kind); returns what happened (method,
        PIDs, seconds).

        ``cache_restart``: its own restart (netkit: ``netkit dns restart``, the in-tree handover;
        the others: SIGTERM, wait, start). ``upgrade``: as a DaemonSet with ``maxSurge`` rolls a
        new version, a new process beside the old one, then SIGTERM to the old one (netkit:
        takeover; Unbound: a second instance on the same address, SO_REUSEPORT; dnsmasq cannot
        share its address: SIGTERM, then start). ``crash_restart``: SIGKILL to the process that
        resolves (netkit: its worker, which the keeper forks again; the others: their only
        process, then start it again)."""
        cache = self.caches[system]
        t = time.monotonic()
        old = cache.serving_pid if isinstance(cache, NsNetkit) else cache.pid
        old_worker = cache.status()["pid"] if isinstance(cache, NsNetkit) else None
        if how == "crash_restart" and isinstance(cache, NsNetkit):
            cache.crash()
            info: dict[str, Any] = {
                "method": "SIGKILL to the worker; its keeper forks a new one on the same sockets"
            }
        elif how == "crash_restart":
            cache.kill()
            cache.start()
            info = {"method": "SIGKILL, start again", "old_pid": old}
        elif how == "upgrade" and isinstance(cache, NsNetkit):
            taken = cache.take_over()
            info = {"method": "a new process with takeover: true, then SIGTERM to the old", **taken}
        elif how == "upgrade" and isinstance(cache, NsUnbound):
            new = cache.beside()
            cache.stop()
            self.caches[system] = new
            info = {"method": "a second unbound on the address (SO_REUSEPORT), then SIGTERM to the old"}
        elif how == "cache_restart" and isinstance(cache, NsNetkit):
            info = {"method": "netkit dns restart (zero-gap handover)", **cache.handover()}
            with contextlib.suppress(OSError):  # the snapshot handed over, kept for forensics
                shutil.copyfile(cache.cache_path, self.rundir / "netkit-handover.cache")
        else:
            cache.stop()
            cache.start()
            info = {"method": "SIGTERM, wait for exit, start again (cold cache)", "old_pid": old}
        info.setdefault("old_pid", old)
        new_cache = self.caches[system]
        info["new_pid"] = new_cache.serving_pid if isinstance(new_cache, NsNetkit) else new_cache.pid
        if isinstance(new_cache, NsNetkit):  # the keeper may stay; the resolving process changes
            info["old_worker"], info["new_worker"] = old_worker, new_cache.status()["pid"]
        info["seconds"] = round(time.monotonic() - t, 3)
        return info

    def probe_caches(self, qname: str) -> dict[str, str]:
        """One query for ``qname`` through every cache (UDP and TCP); {system: problem} if any."""
        problems = {}
        for s in self.systems:
            for tcp in (False, True):
                try:
                    r = ns_query(
                        self.ns_node[s], dns.message.make_query(qname, "A"), NODE_LOCAL, tcp=tcp, timeout=3
                    )
                    if r.rcode() != dns.rcode.NOERROR or not r.answer:
                        problems[s] = (
                            f"{qname}: rcode {dns.rcode.to_text(r.rcode())}, {len(r.answer)} answers"
                        )
                except (dns.exception.DNSException, OSError) as e:
                    problems[s] = f"{qname} over {'TCP' if tcp else 'UDP'}: {type(e).__name__}: {e}"
        return problems

    def spawn(self, name: str, netns: str, argv: Sequence[str], pipe: bool = False) -> NsProcess:
        p = NsProcess(name, netns, argv, self.rundir / f"{name}.log", pipe=pipe)
        self.helpers.append(p)
        return p

    # -- cleanup -------------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Stop everything by PID, delete the namespaces; returns what could not be removed."""
        problems: list[str] = []

        def attempt(what: str, fn: Callable[[], object]) -> None:
            try:
                fn()
            except Exception as e:  # keep going: everything else must still go
                problems.append(f"{what}: {type(e).__name__}: {e}")

        for p in self.helpers:
            attempt(p.name, p.stop)
        for s, cache in self.caches.items():
            attempt(s, cache.stop_all if isinstance(cache, NsNetkit) else cache.stop)
        for name, p in self.proxies.items():
            attempt(f"proxy {name}", p.stop)
        for name, u in self.resolvers.items():
            attempt(f"resolver {name}", u.stop)
        for a in self.authoritative:
            attempt(a.kind, a.stop)
        # anything still inside a namespace of this run was started by this run: kill it by PID
        for ns in self.created:
            for pid in netns_pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                problems.append(f"killed leftover PID {pid} ({_cmdline(pid)[:80]!r}) in {ns}")
        for ns in reversed(self.created):
            res = ip("netns", "del", ns, check=False)
            if res.returncode != 0 and ns in netns_list():
                problems.append(f"ip netns del {ns}: {res.stderr.strip()}")
        left = [n for n in netns_list() if n.startswith(self.rid)]
        if left:
            problems.append(f"namespaces left: {left}")
        return problems

    def leftover_processes(self) -> list[int]:
        """PIDs whose command line names this run's directory (should be none after cleanup)."""
        mark = str(self.rundir)
        out = []
        for entry in os.listdir("/proc"):
            pid = int(entry) if entry.isdigit() else 0
            if pid and pid != os.getpid() and mark in _cmdline(pid) and _pid_alive(pid):
                out.append(pid)
        return out

    def collect_logs(self, dest: Path) -> None:
        """Copy the daemons' logs and netkit's cache snapshots (not zone files or databases) into
        ``dest``; after :meth:`cleanup`, the snapshot netkit wrote when it stopped is among them."""
        dest.mkdir(parents=True, exist_ok=True)
        for path in self.rundir.rglob("*"):
            if (
                path.is_file()
                and path.suffix in (".log", ".out", ".cache")
                and path.stat().st_size < 200 << 20
            ):
                rel = path.relative_to(self.rundir)
                target = dest / str(rel).replace(os.sep, "__")
                with contextlib.suppress(OSError):
                    shutil.copyfile(path, target)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
