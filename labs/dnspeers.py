"""Process managers for real DNS servers (NSD, Knot, Unbound, dnsmasq) used as lab peers.

Tests, benchmarks and the demo use these as authoritative upstreams, forwarders and baseline
caches. Every daemon:

- runs in the foreground as a child of this process, in its own session/process group, so that
  signals (stop, pause, kill) reach it and any worker processes it forked, and nothing else;
- keeps all its files (config, zone files, pid file, logs, databases) in its own directory
  ``<workdir>/<kind>-<port>``, so several daemons can share one per-run dir;
- is ready when :meth:`DnsDaemon.start` returns: it answers a DNS probe on its address;
- registers nothing global (no atexit hooks, no signal handlers): use it as a context manager
  or call :meth:`DnsDaemon.stop` in a finalizer.

A missing binary raises :class:`RuntimeError` naming the Debian package (never a skip).
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from labs.runid import free_port, make_run_dir
from netkit.base.process import ManagedProcess, ProcessError, live_group_members

__all__ = [
    "DaemonError",
    "DnsDaemon",
    "Dnsmasq",
    "KnotServer",
    "NsdServer",
    "Record",
    "UnboundForwarder",
    "Zone",
    "generate_zone",
    "live_group_members",
    "require_binary",
    "zone_text",
]

Address = tuple[str, int]

# Debian package that ships each binary this module (and its users) may need.
PACKAGES: dict[str, str] = {
    "nsd": "nsd",
    "knotd": "knot",
    "knotc": "knot",
    "unbound": "unbound",
    "dnsmasq": "dnsmasq",
    "dnsperf": "dnsperf",
    "dig": "bind9-dnsutils",
}

# Daemons run from /usr/sbin, which a non-root PATH often lacks.
_EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def require_binary(name: str, package: str | None = None) -> str:
    """Return the full path of executable ``name`` or raise a RuntimeError saying how to install it."""
    path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_EXTRA_PATH))
    if path is None:
        pkg = package or PACKAGES.get(name, name)
        raise RuntimeError(f"{name} not installed: run `make setup` (apt package {pkg})")
    return path


# --------------------------------------------------------------------------------------------
# Zones
# --------------------------------------------------------------------------------------------

LAB_V4 = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking range (lab convention)
LAB_V6 = ipaddress.IPv6Network("2001:db8::/32")  # documentation range (lab convention)


@dataclass(frozen=True)
class Record:
    """One resource record; ``name`` is relative to the zone origin (``@`` for the apex) or absolute."""

    name: str
    rtype: str
    rdata: str
    ttl: int | None = None  # None: the zone's default TTL

    def line(self) -> str:
        """Render as one master-file line (class IN)."""
        ttl = "" if self.ttl is None else f"{self.ttl} "
        return f"{self.name} {ttl}IN {self.rtype} {self.rdata}"


@dataclass
class Zone:
    """An authoritative zone: origin, default TTL and records (must include SOA and NS)."""

    origin: str
    records: list[Record] = field(default_factory=list)
    ttl: int = 300

    def __post_init__(self) -> None:
        if not self.origin.endswith("."):
            self.origin += "."

    def absolute(self, name: str) -> str:
        """Absolute form of a record name as written in this zone."""
        if name == "@":
            return self.origin
        return name if name.endswith(".") else f"{name}.{self.origin}"

    def rdata(self, name: str, rtype: str = "A") -> list[str]:
        """The rdata strings of ``name``/``rtype`` (name absolute or relative), for checking answers."""
        want = self.absolute(name).lower()
        return [r.rdata for r in self.records if r.rtype == rtype and self.absolute(r.name).lower() == want]

    def names(self, rtype: str = "A") -> list[str]:
        """Absolute owner names holding ``rtype`` records, in zone order (e.g. for dnsperf inputs)."""
        seen: dict[str, None] = {}
        for r in self.records:
            if r.rtype == rtype:
                seen.setdefault(self.absolute(r.name), None)
        return list(seen)

    @property
    def filename(self) -> str:
        """File name used for this zone inside a server's zone dir."""
        return (self.origin.rstrip(".") or "root") + ".zone"


def zone_text(zone: Zone) -> str:
    """Render ``zone`` as RFC 1035 master-file text."""
    lines = [f"$ORIGIN {zone.origin}", f"$TTL {zone.ttl}"]
    lines += [r.line() for r in zone.records]
    return "\n".join(lines) + "\n"


def generate_zone(
    origin: str,
    n_names: int,
    seed: int = 0,
    *,
    ttl: int = 300,
    negative_ttl: int = 60,
    aaaa_every: int = 4,
    serial: int = 1,
) -> Zone:
    """Build a deterministic test zone.

    Contents: SOA (MINIMUM = ``negative_ttl``, also used as the SOA record's own TTL so the
    negative-caching TTL of RFC 2308, min(SOA TTL, MINIMUM), is exactly ``negative_ttl``), one
    NS ``ns1`` with an A record, and ``h0`` .. ``h{n_names-1}`` with one A record each from
    198.18.0.0/15 (distinct, shuffled by ``seed``); every ``aaaa_every``-th name (0 = none) also
    gets an AAAA in 2001:db8::/32 mirroring its IPv4 offset.
    """
    hosts = LAB_V4.num_addresses - 2  # exclude network and broadcast addresses
    if not 0 <= n_names < hosts:
        raise ValueError(f"n_names must be in [0, {hosts - 1}]")
    zone = Zone(origin, ttl=ttl)
    o = zone.origin
    zone.records.append(
        Record("@", "SOA", f"ns1.{o} hostmaster.{o} {serial} 3600 600 86400 {negative_ttl}", negative_ttl)
    )
    zone.records.append(Record("@", "NS", f"ns1.{o}"))
    zone.records.append(Record("ns1", "A", str(LAB_V4.network_address + 1)))
    rng = random.Random(seed)
    offsets = rng.sample(range(2, hosts + 1), n_names)  # offset 1 is ns1
    v6base = int(LAB_V6.network_address)
    for i, off in enumerate(offsets):
        zone.records.append(Record(f"h{i}", "A", str(LAB_V4.network_address + off)))
        if aaaa_every and i % aaaa_every == 0:
            zone.records.append(Record(f"h{i}", "AAAA", str(ipaddress.IPv6Address(v6base + off))))
    return zone


# --------------------------------------------------------------------------------------------
# Lifecycle shared by all daemons
# --------------------------------------------------------------------------------------------


class DaemonError(ProcessError):
    """A daemon failed to start or become ready; the message carries the tail of its logs."""


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _check_bindable(address: Address, label: str) -> None:
    """Raise DaemonError if something already holds ``address`` on UDP or TCP.

    Without this, a daemon that fails to bind can look ready because the readiness probe is
    answered by whatever already listens there.
    """
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # tolerate TIME_WAIT
            try:
                sock.bind((host, port))
            except OSError as e:
                proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
                raise DaemonError(f"{label}: {proto} {host} port {port} is already in use: {e}") from e


class DnsDaemon(ABC):
    """Lifecycle of one foreground DNS daemon: start/wait-ready/stop/pause/resume/kill/restart.

    Subclasses set ``binary`` and ``kind`` and implement :meth:`_write_config`,
    :meth:`_command` and :meth:`_probes` (and optionally :meth:`_probe_ok`, :meth:`_logs`).
    """

    binary: ClassVar[str]
    kind: ClassVar[str]

    def __init__(
        self,
        listen: Address | None = None,
        workdir: str | Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        host, port = listen if listen is not None else ("127.0.0.1", 0)
        self._address: Address = (host, port or free_port(host))
        # Without a workdir, a private run dir is made on first use and removed by close().
        self._root: Path | None = None if workdir is None else Path(workdir)
        self._own_root = workdir is None
        self.start_timeout = start_timeout
        self._proc: ManagedProcess | None = None
        self._paused = False

    # -- subclass hooks ----------------------------------------------------------------------

    @abstractmethod
    def _write_config(self) -> None:
        """Write the config (and zone files) into :attr:`workdir`."""

    @abstractmethod
    def _command(self, exe: str) -> list[str]:
        """The foreground command line, given the resolved binary path."""

    @abstractmethod
    def _probes(self) -> list[dns.message.Message]:
        """Queries the daemon answers by itself once it is ready (all must pass :meth:`_probe_ok`)."""

    def _probe_ok(self, response: dns.message.Message) -> bool:
        """Whether a probe response means ready (default: any response)."""
        return True

    def _logs(self) -> list[Path]:
        """The daemon's own log files (its stdout/stderr capture is added by the base class)."""
        return []

    # -- public API --------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        """This daemon's own directory ``<workdir>/<kind>-<port>``; every file it writes lives here."""
        if self._root is None:
            self._root = make_run_dir()
        return self._root / f"{self.kind}-{self._address[1]}"

    @property
    def address(self) -> Address:
        """(ip, port) the daemon listens on, UDP and TCP."""
        return self._address

    @property
    def pid(self) -> int | None:
        """PID of the running daemon (also its process-group id), or None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the daemon process exists (it may be paused)."""
        return self._proc is not None and self._proc.running

    @property
    def paused(self) -> bool:
        """Whether the daemon is running but stopped by :meth:`pause`."""
        return self._paused and self.running

    @property
    def output_path(self) -> Path:
        """File receiving the daemon's stdout and stderr."""
        return self.workdir / f"{self.kind}.out"

    def start(self) -> Self:
        """Write config, start the daemon and wait until it answers; raise DaemonError if it does not."""
        if self.running:
            raise RuntimeError(f"{self.kind} on {self._fmt_addr()} is already running")
        if self._proc is not None:  # it died on its own: reap it and any workers it left
            self._kill_and_reap()
        exe = require_binary(self.binary)
        _check_bindable(self._address, f"{self.kind} on {self._fmt_addr()}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        # own process group: signals reach its workers only
        self._proc = ManagedProcess(self._command(exe), self.output_path, cwd=self.workdir)
        self._paused = False
        try:
            self._wait_ready(self.start_timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM the daemon's process group, SIGKILL it after ``timeout`` s; reap it. Idempotent."""
        if self._proc is not None:
            self._proc.stop(timeout)
            self._proc = None
            self._paused = False

    def kill(self) -> None:
        """SIGKILL the daemon (and its workers) at once, as a crash would; reap it."""
        if self._proc is not None:
            self._kill_and_reap()

    def pause(self) -> None:
        """SIGSTOP the daemon and its workers: it stays bound but answers nothing."""
        self._require_running()
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._require_running()
        self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self) -> Self:
        """Stop (if running) and start again on the same address with the same files."""
        self.stop()
        return self.start()

    def query(
        self, qname: str, rdtype: str = "A", timeout: float = 1.0, tcp: bool = False
    ) -> dns.message.Message:
        """Send one query to this daemon (convenience for tests and demos)."""
        q = dns.message.make_query(qname, rdtype)
        host, port = self._address
        if tcp:
            return dns.query.tcp(q, host, port=port, timeout=timeout)
        return dns.query.udp(q, host, port=port, timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the daemon's output and logs, for error messages."""
        parts = []
        for path in [self.output_path, *self._logs()]:
            text = _tail(path, lines)
            if text:
                parts.append(f"--- {path}\n{text}")
        return "\n".join(parts) or "(no log output)"

    def close(self) -> None:
        """Stop the daemon; remove its temp dir if this object created it."""
        self.stop()
        if self._own_root and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._fmt_addr()} pid={self.pid} dir={self.workdir}>"

    # -- internals ---------------------------------------------------------------------------

    def _fmt_addr(self) -> str:
        host, port = self._address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _require_running(self) -> None:
        if not self.running:
            raise RuntimeError(f"{self.kind} on {self._fmt_addr()} is not running")

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        self._proc.signal_group(sig)

    def _kill_and_reap(self) -> None:
        assert self._proc is not None
        self._proc.kill()  # the group: also workers that outlived the main process
        self._proc = None
        self._paused = False

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        host, port = self._address
        deadline = time.monotonic() + timeout
        last = "no response"
        pending = self._probes()
        while True:
            rc = self._proc.returncode
            if rc is not None:
                raise DaemonError(
                    f"{self.kind} on {self._fmt_addr()} exited with status {rc} during start-up\n"
                    + self.log_tail()
                )
            try:
                # A connected socket gets ECONNREFUSED at once while nothing is bound yet,
                # instead of waiting out the timeout.
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                with socket.socket(family, socket.SOCK_DGRAM) as sock:
                    sock.connect((host, port))
                    response = dns.query.udp(pending[0], host, port=port, timeout=0.5, sock=sock)
            except (dns.exception.DNSException, OSError) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if self._probe_ok(response):
                    pending.pop(0)
                    if not pending and self._proc.running:
                        return
                    continue
                last = f"{pending[0].question[0].name}: rcode {dns.rcode.to_text(response.rcode())}"
            if time.monotonic() >= deadline:
                raise DaemonError(
                    f"{self.kind} on {self._fmt_addr()} did not answer within {timeout:.1f} s "
                    f"({last})\n" + self.log_tail()
                )
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Authoritative servers
# --------------------------------------------------------------------------------------------


class _Authoritative(DnsDaemon):
    """Common part of NSD and Knot: zone files under ``zones/``, ready when every SOA answers."""

    def __init__(
        self,
        zones: Sequence[Zone],
        listen: Address | None = None,
        workdir: str | Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        if not zones:
            raise ValueError("an authoritative server needs at least one zone")
        super().__init__(listen, workdir, start_timeout)
        self.zones = list(zones)

    @property
    def zonesdir(self) -> Path:
        return self.workdir / "zones"

    def _write_zone_files(self) -> None:
        self.zonesdir.mkdir(parents=True, exist_ok=True)
        for z in self.zones:
            (self.zonesdir / z.filename).write_text(zone_text(z))

    def _probes(self) -> list[dns.message.Message]:
        # Ready only once every zone is loaded and served, not merely when the socket is bound.
        return [dns.message.make_query(z.origin, "SOA") for z in self.zones]

    def _probe_ok(self, response: dns.message.Message) -> bool:
        return response.rcode() == dns.rcode.NOERROR and bool(response.answer)


def _q(value: str | Path) -> str:
    """Double-quote a config value (paths may contain spaces)."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class NsdServer(_Authoritative):
    """NSD authoritative server, one server process, no database, no remote control."""

    binary = "nsd"
    kind = "nsd"

    @property
    def conf_path(self) -> Path:
        return self.workdir / "nsd.conf"

    def _logs(self) -> list[Path]:
        return [self.workdir / "nsd.log"]

    def _write_config(self) -> None:
        self._write_zone_files()
        wd = self.workdir
        host, port = self._address
        (wd / "xfr").mkdir(exist_ok=True)
        lines = [
            "server:",
            f"    ip-address: {host}@{port}",
            f"    port: {port}",
            "    server-count: 1",
            # response rate limiting is on by default (200 answers/s per /24, NXDOMAIN bucketed
            # per zone): from 127.0.0.1 a burst of nonexistent names would look like failures
            "    rrl-ratelimit: 0",
            "    rrl-whitelist-ratelimit: 0",
            '    username: ""',
            '    chroot: ""',
            '    database: ""',
            f"    zonesdir: {_q(self.zonesdir)}",
            f"    zonelistfile: {_q(wd / 'zone.list')}",
            f"    xfrdfile: {_q(wd / 'xfrd.state')}",
            f"    xfrdir: {_q(wd / 'xfr')}",
            f"    pidfile: {_q(wd / 'nsd.pid')}",
            f"    logfile: {_q(wd / 'nsd.log')}",
            "    verbosity: 1",
            "remote-control:",
            "    control-enable: no",
        ]
        for z in self.zones:
            lines += ["zone:", f"    name: {_q(z.origin)}", f"    zonefile: {_q(z.filename)}"]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _command(self, exe: str) -> list[str]:
        return [exe, "-d", "-c", str(self.conf_path)]


class KnotServer(_Authoritative):
    """Knot DNS authoritative server (knotd), one worker of each kind, no journal, no zone-file sync.

    ``knotd -c FILE`` keeps its config database in a fresh ``/tmp/knot-confdb.*`` dir (removed on a
    clean exit, left behind by SIGKILL), so the text config is imported with ``knotc conf-import``
    into ``<workdir>/confdb`` and knotd runs from that (``-C``) instead.
    """

    binary = "knotd"
    kind = "knotd"

    @property
    def conf_path(self) -> Path:
        return self.workdir / "knot.conf"

    @property
    def confdb(self) -> Path:
        return self.workdir / "confdb"

    def _logs(self) -> list[Path]:
        return [self.workdir / "knotd.log"]

    def _write_config(self) -> None:
        self._write_zone_files()
        wd = self.workdir
        host, port = self._address
        (wd / "run").mkdir(exist_ok=True)
        (wd / "db").mkdir(exist_ok=True)
        sock = wd / "run" / "knot.sock"  # knotd exits (status 0!) if it cannot bind its control socket
        if len(os.fsencode(sock)) > 107:
            raise DaemonError(f"workdir too long for knotd's control socket (108-byte limit): {sock}")
        lines = [
            "server:",
            f"    rundir: {_q(wd / 'run')}",
            f"    listen: {host}@{port}",
            "    udp-workers: 1",
            "    tcp-workers: 1",
            "    background-workers: 1",
            "log:",
            f"  - target: {_q(wd / 'knotd.log')}",
            "    any: info",
            "database:",
            f"    storage: {_q(wd / 'db')}",
            "template:",
            "  - id: default",
            f"    storage: {_q(self.zonesdir)}",
            "    zonefile-sync: -1",
            "    journal-content: none",
            "zone:",
        ]
        for z in self.zones:
            lines += [f"  - domain: {_q(z.origin)}", f"    file: {_q(z.filename)}"]
        self.conf_path.write_text("\n".join(lines) + "\n")
        knotc = require_binary("knotc")
        shutil.rmtree(self.confdb, ignore_errors=True)  # knotc refuses to overwrite an existing DB
        res = subprocess.run(
            [knotc, "-C", str(self.confdb), "conf-import", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if res.returncode != 0:
            raise DaemonError(f"knotc conf-import {self.conf_path} failed:\n{res.stdout}{res.stderr}")

    def _command(self, exe: str) -> list[str]:
        return [exe, "-C", str(self.confdb)]


# --------------------------------------------------------------------------------------------
# Forwarders / caches
# --------------------------------------------------------------------------------------------


def _chaos_probe(name: str) -> dns.message.Message:
    return dns.message.make_query(name, dns.rdatatype.TXT, dns.rdataclass.CH)


# Unbound serves these as built-in local zones; forwarding below them needs ``nodefault``.
# Unbound answers these special-use names itself (RFC 6761/8375) and never forwards them, so a
# forward-zone at or below one needs ``local-zone: "<zone>" nodefault``. Forwarding "." lifts
# only "test." (lab zones); localhost, invalid and onion stay answered locally.
_UNBOUND_DEFAULT_ZONES = ("test.", "home.arpa.", "invalid.", "onion.", "localhost.")


def _fmt_server_addr(addr: Address, sep: str) -> str:
    return f"{addr[0]}{sep}{addr[1]}"


def _unbound_value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class UnboundForwarder(DnsDaemon):
    """Unbound forwarding ``zones`` to ``forward_to`` (iterator only, no DNSSEC validation).

    Put ``"."`` in ``zones`` to forward everything. ``extra`` adds ``server:`` options verbatim
    (bools become yes/no, lists repeat the option), e.g. ``{"serve-expired": True,
    "prefetch": True, "msg-cache-size": "64m"}`` to use it as a node-local cache baseline.
    """

    binary = "unbound"
    kind = "unbound"

    def __init__(
        self,
        forward_to: Sequence[Address],
        zones: Sequence[str] = (".",),
        listen: Address | None = None,
        workdir: str | Path | None = None,
        extra: Mapping[str, object] | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        if not forward_to:
            raise ValueError("forward_to must name at least one upstream")
        super().__init__(listen, workdir, start_timeout)
        self.forward_to = list(forward_to)
        self.zones = [z if z.endswith(".") else z + "." for z in zones]
        self.extra = dict(extra or {})

    @property
    def conf_path(self) -> Path:
        return self.workdir / "unbound.conf"

    def _logs(self) -> list[Path]:
        return [self.workdir / "unbound.log"]

    def _write_config(self) -> None:
        wd = self.workdir
        host, port = self._address
        server: list[tuple[str, object]] = [
            ("interface", f"{host}@{port}"),
            ("port", port),
            ("do-daemonize", False),
            ("username", '""'),
            ("chroot", '""'),
            ("directory", _q(wd)),
            ("pidfile", _q(wd / "unbound.pid")),
            ("logfile", _q(wd / "unbound.log")),
            ("use-syslog", False),
            ("verbosity", 1),
            ("num-threads", 1),
            ("module-config", '"iterator"'),
            ("do-not-query-localhost", False),
        ]
        nodefault = {
            d
            for z in self.zones
            for d in _UNBOUND_DEFAULT_ZONES
            if z.lower() == d or z.lower().endswith("." + d) or (z == "." and d == "test.")
        }
        server += [("local-zone", f"{_q(d)} nodefault") for d in sorted(nodefault)]
        server += [("domain-insecure", _q(z)) for z in self.zones]
        for key, value in self.extra.items():
            values: Iterable[object] = value if isinstance(value, list | tuple) else [value]
            server += [(key, v) for v in values]
        lines = ["server:"] + [f"    {k}: {_unbound_value(v)}" for k, v in server]
        lines += ["remote-control:", "    control-enable: no"]
        for z in self.zones:
            lines += ["forward-zone:", f"    name: {_q(z)}"]
            lines += [f"    forward-addr: {_fmt_server_addr(a, '@')}" for a in self.forward_to]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _command(self, exe: str) -> list[str]:
        return [exe, "-d", "-c", str(self.conf_path)]

    def _probes(self) -> list[dns.message.Message]:
        return [_chaos_probe("id.server.")]


class Dnsmasq(DnsDaemon):
    """dnsmasq as a caching forwarder to ``servers``; no config file, hosts file or resolv.conf."""

    binary = "dnsmasq"
    kind = "dnsmasq"

    def __init__(
        self,
        servers: Sequence[Address],
        listen: Address | None = None,
        workdir: str | Path | None = None,
        cache_size: int = 10000,
        extra_args: Sequence[str] = (),
        start_timeout: float = 20.0,
    ) -> None:
        if not servers:
            raise ValueError("servers must name at least one upstream")
        super().__init__(listen, workdir, start_timeout)
        self.servers = list(servers)
        self.cache_size = cache_size
        self.extra_args = list(extra_args)

    def _logs(self) -> list[Path]:
        return [self.workdir / "dnsmasq.log"]

    def _write_config(self) -> None:
        pass  # everything is on the command line

    def _command(self, exe: str) -> list[str]:
        host, port = self._address
        wd = self.workdir
        return [
            exe,
            "-k",
            "-C",
            "/dev/null",
            f"--port={port}",
            f"--listen-address={host}",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            *[f"--server={_fmt_server_addr(a, '#')}" for a in self.servers],
            f"--cache-size={self.cache_size}",
            "--user=root",
            f"--pid-file={wd / 'dnsmasq.pid'}",
            f"--log-facility={wd / 'dnsmasq.log'}",
            *self.extra_args,
        ]

    def _probes(self) -> list[dns.message.Message]:
        return [_chaos_probe("version.bind.")]
