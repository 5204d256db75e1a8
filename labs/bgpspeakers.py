"""Real BGP speakers (BIRD 2, FRR, GoBGP) in lab network namespaces, driven by ``SpeakerConfig``.

Each manager is built with (namespace, workdir, config) and:

- renders its config with ``bgp.core.render`` and keeps every file in ``<workdir>/<kind>-<node>``;
- starts its daemon(s) in the foreground as children of this process, each in its own process
  group, so stop/kill reach exactly what it started; ``start`` returns once the daemon answers
  its control channel (not once sessions are up: see :meth:`BgpSpeaker.wait_established`);
- reads state back as plain data: :meth:`BgpSpeaker.sessions` (neighbour address -> FSM state
  name as in RFC 4271, e.g. ``"Established"``) and :meth:`BgpSpeaker.routes` (prefix ->
  :class:`PathInfo` list); BIRD and FRR are read through ``bgp.control``, all three with the pure parsers of
  ``bgp.core.speakerstate``;
- moves to a new config without a restart with :meth:`BgpSpeaker.apply`: BIRD rewrites
  ``bird.conf`` and runs ``birdc configure``; FRR sends ``bgp.core.render.frr.frr_delta`` through
  vtysh; GoBGP rewrites its TOML and gets SIGHUP (gobgpd adds and deletes neighbours; a changed
  one is deleted and re-added, see :class:`GoBgpSpeaker`), and its originated prefixes change
  through the gobgp CLI.

Which changes restart a session (measured here, BIRD reflector or FRR reflector, BIRD client):
BIRD restarts a protocol whose ``rr client``, ``rr cluster id`` or timers change (the peer sees
it Active for 0.8-1 s); FRR resets a session whose ``route-reflector-client`` flips and every
iBGP session on a ``bgp cluster-id`` change, but takes new timers without a reset (they apply
from the next session); GoBGP (through this class) restarts a changed neighbour. Adding or
removing other neighbours, or prefixes, touches no session anywhere.

FRR's daemons run as root (``-u root -g frrvty``): per-run dirs are private to root (mode 0700),
so user ``frr`` could not reach a runtime dir inside one. A failure raises
:class:`~labs.dnspeers.DaemonError` with the tail of the daemon's logs; a missing binary
raises RuntimeError naming the Debian package (never a skip).
"""

from __future__ import annotations

import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self, TypeVar

from bgp.control import BirdControl, ControlError, FrrControl
from bgp.core.model import SpeakerConfig
from bgp.core.render.bird import render_bird
from bgp.core.render.frr import render_frr
from bgp.core.render.gobgp import gobgp_announce_commands, gobgp_withdraw_commands, render_gobgp
from bgp.core.speakerstate import PathInfo, parse_gobgp_neighbors, parse_gobgp_rib
from labs.dnspeers import DaemonError, require_binary
from labs.runid import free_port
from netkit.base.netns import netns_exec
from netkit.base.process import ManagedProcess

__all__ = [
    "BgpSpeaker",
    "BirdSpeaker",
    "FrrSpeaker",
    "GoBgpSpeaker",
    "PathInfo",
    "check_bird_config",
    "check_frr_config",
    "check_gobgp_config",
    "wait_for",
]

T = TypeVar("T")

# A UNIX socket path must fit sockaddr_un.sun_path (108 bytes with the NUL).
_MAX_SOCKET_PATH = 107


# --------------------------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------------------------


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``check`` until it returns something truthy and return that; raise TimeoutError
    naming ``what`` (and the last value seen) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:.1f} s (last: {value!r})")
        time.sleep(interval)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _frr_daemon(name: str) -> str:
    path = Path("/usr/lib/frr") / name
    return str(path) if path.is_file() else require_binary(name, "frr")


def _check_output(
    argv: Sequence[str], what: str, bad: Callable[[subprocess.CompletedProcess[str]], bool]
) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if bad(r):
        raise DaemonError(f"{what} rejected by {Path(argv[0]).name}:\n{(r.stdout + r.stderr).strip()}")


def check_bird_config(path: str | Path) -> None:
    """Raise DaemonError unless ``bird -p`` accepts the config file (the message names the line)."""
    _check_output(
        [require_binary("bird", "bird2"), "-p", "-c", str(path)], str(path), lambda r: r.returncode != 0
    )


def check_frr_config(path: str | Path) -> None:
    """Raise DaemonError unless ``bgpd --dryrun`` accepts every line of the config file (bgpd exits 0
    even when lines fail, so its output is read)."""

    def bad(r: subprocess.CompletedProcess[str]) -> bool:
        out = r.stdout + r.stderr
        return r.returncode != 0 or "Config Failed" in out or any(x.startswith("%") for x in out.splitlines())

    _check_output([_frr_daemon("bgpd"), "-C", "-f", str(path), "-u", "root", "-g", "frrvty"], str(path), bad)


def check_gobgp_config(path: str | Path) -> None:
    """Raise DaemonError unless ``gobgpd --dry-run`` accepts the TOML file."""
    argv = [require_binary("gobgpd", "gobgpd"), "-d", "-f", str(path)]
    _check_output(argv, str(path), lambda r: r.returncode != 0)


class BgpSpeaker(ABC):
    """One speaker (one or more daemons) in a namespace; see the module docstring."""

    kind: ClassVar[str]

    def __init__(
        self, netns: str, workdir: str | Path, cfg: SpeakerConfig, start_timeout: float = 20.0
    ) -> None:
        self.netns = netns
        self.cfg = cfg
        self.start_timeout = start_timeout
        self.dir = Path(workdir) / f"{self.kind}-{cfg.node}"
        self._procs: list[ManagedProcess] = []
        self._names: dict[int, str] = {}  # pid -> daemon name, for messages

    # -- subclass hooks ----------------------------------------------------------------------

    @abstractmethod
    def _start(self) -> None:
        """Write the config and start the daemon(s) with :meth:`_spawn`; wait until they answer."""

    @abstractmethod
    def _apply(self, new: SpeakerConfig) -> None:
        """Move the running speaker from ``self.cfg`` to ``new``."""

    @abstractmethod
    def sessions(self) -> dict[str, str]:
        """{neighbour address: FSM state}, for the neighbours the speaker has configured."""

    @abstractmethod
    def routes(self, family: str = "ipv4") -> dict[str, list[PathInfo]]:
        """{prefix: paths} in the speaker's RIB for ``family`` (``ipv4`` or ``ipv6``)."""

    @abstractmethod
    def _logs(self) -> list[Path]:
        """Files worth showing when something fails."""

    # -- public API --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether every daemon this speaker started is alive."""
        return bool(self._procs) and all(p.running for p in self._procs)

    @property
    def pids(self) -> list[int]:
        """PIDs (also process-group ids) of the daemons this speaker started."""
        return [p.pid for p in self._procs]

    def start(self) -> Self:
        """Render and write the config, start the daemon(s), wait until they answer."""
        if self._procs:
            raise RuntimeError(f"{self!r} already started")
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every daemon (last started first), SIGKILL after ``timeout`` s; reap. Idempotent."""
        procs, self._procs = self._procs, []
        for proc in reversed(procs):
            proc.stop(timeout)

    def kill(self) -> None:
        """SIGKILL every daemon at once, as a crash would (routes it put in the kernel stay)."""
        procs, self._procs = self._procs, []
        for proc in procs:
            proc.signal_group(signal.SIGKILL)
        for proc in procs:
            proc.kill()

    def apply(self, new: SpeakerConfig) -> None:
        """Reconfigure the running speaker to ``new`` without restarting it."""
        if not self.running:
            raise RuntimeError(f"{self!r} is not running")
        if new.node != self.cfg.node:
            raise ValueError(f"config for {new.node!r} applied to speaker {self.cfg.node!r}")
        self._apply(new)
        self.cfg = new

    def wait_established(self, timeout: float = 20.0, neighbors: Sequence[str] | None = None) -> None:
        """Wait until every session (or those to ``neighbors``, by address) is Established."""
        want = list(neighbors) if neighbors is not None else [n.address for n in self.cfg.neighbors]

        def check() -> bool:
            states = self.sessions()
            return all(states.get(a) == "Established" for a in want)

        try:
            wait_for(check, timeout, f"{self.cfg.node}: sessions Established")
        except TimeoutError as e:
            raise DaemonError(f"{e}; states {self.sessions()}\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the daemons' logs, for error messages."""
        parts = [f"--- {p}\n{t}" for p in self._logs() if (t := _tail(p, lines))]
        return "\n".join(parts) or f"(no log output in {self.dir})"

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.cfg.node} in {self.netns} pids={self.pids} dir={self.dir}>"

    # -- helpers for subclasses --------------------------------------------------------------

    def _socket_path(self, name: str) -> Path:
        path = self.dir / name
        if len(str(path)) > _MAX_SOCKET_PATH:
            raise ValueError(f"socket path too long for AF_UNIX ({len(str(path))} bytes): {path}")
        return path

    def _spawn(self, argv: Sequence[str], output: Path) -> ManagedProcess:
        proc = ManagedProcess(argv, output, netns=self.netns, cwd=self.dir)
        self._procs.append(proc)
        self._names[proc.pid] = Path(argv[0]).name
        return proc

    def _run(self, argv: Sequence[str], timeout: float = 15.0, check: bool = True) -> str:
        """Run a control command in the namespace; return stdout, raise DaemonError on failure."""
        cmd = netns_exec(self.netns, argv)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise DaemonError(f"{self.cfg.node}: {' '.join(argv)} timed out\n{self.log_tail()}") from e
        if check and r.returncode != 0:
            raise DaemonError(
                f"{self.cfg.node}: {' '.join(argv)} exited {r.returncode}: {(r.stderr or r.stdout).strip()}\n"
                + self.log_tail()
            )
        return r.stdout

    def _wait_ready(self, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            for proc in self._procs:
                if proc.returncode is not None:
                    raise DaemonError(
                        f"{self.kind} for {self.cfg.node}: {self._names[proc.pid]} exited with status "
                        f"{proc.returncode} during start-up\n{self.log_tail()}"
                    )
            if check():
                return
            if time.monotonic() >= deadline:
                raise DaemonError(
                    f"{self.kind} for {self.cfg.node}: {what} not ready within {self.start_timeout:.1f} s\n"
                    + self.log_tail()
                )
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# BIRD
# --------------------------------------------------------------------------------------------


class BirdSpeaker(BgpSpeaker):
    """BIRD 2 in the foreground (``bird -f``); ``apply`` rewrites bird.conf and runs ``birdc configure``."""

    kind = "bird"

    @property
    def conf_path(self) -> Path:
        return self.dir / "bird.conf"

    @property
    def ctl_path(self) -> Path:
        return self._socket_path("bird.ctl")

    @property
    def out_path(self) -> Path:
        return self.dir / "bird.out"

    def _logs(self) -> list[Path]:
        return [self.out_path]

    def _write(self, cfg: SpeakerConfig) -> None:
        # log to stderr, which goes to bird.out
        self.conf_path.write_text("log stderr all;\n" + render_bird(cfg))

    def birdc(self, *args: str, check: bool = True) -> str:
        """Run one ``birdc`` command against this instance and return its output."""
        return self._run([require_binary("birdc", "bird2"), "-s", str(self.ctl_path), *args], check=check)

    def _start(self) -> None:
        exe = require_binary("bird", "bird2")
        self._write(self.cfg)
        check_bird_config(self.conf_path)  # a config error shows here, with its line
        self._spawn(
            [
                exe,
                "-f",
                "-c",
                str(self.conf_path),
                "-s",
                str(self.ctl_path),
                "-P",
                str(self.dir / "bird.pid"),
            ],
            self.out_path,
        )

        def ready() -> bool:
            return "Daemon is up and running" in self.birdc("show", "status", check=False)

        self._wait_ready(ready, "birdc show status")

    def _apply(self, new: SpeakerConfig) -> None:
        self._write(new)
        out = self.birdc("configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise DaemonError(f"{self.cfg.node}: birdc configure failed: {out.strip()}\n{self.log_tail()}")

    def _control(self) -> BirdControl:
        return BirdControl(self.cfg, str(self.ctl_path), str(self.conf_path), self.netns)

    def sessions(self) -> dict[str, str]:
        return self._control().sessions()

    def routes(self, family: str = "ipv4") -> dict[str, list[PathInfo]]:
        return self._control().routes(family)


# --------------------------------------------------------------------------------------------
# FRR
# --------------------------------------------------------------------------------------------


class FrrSpeaker(BgpSpeaker):
    """FRR: zebra and bgpd with a per-instance runtime dir (pid files, zserv.api, vty sockets);
    ``apply`` sends :func:`bgp.core.render.frr.frr_delta` through vtysh."""

    kind = "frr"

    @property
    def conf_path(self) -> Path:
        return self.dir / "frr.conf"

    def _logs(self) -> list[Path]:
        return [self.dir / "bgpd.log", self.dir / "bgpd.out", self.dir / "zebra.log", self.dir / "zebra.out"]

    def vtysh(self, *commands: str, check: bool = True) -> str:
        """Run vtysh commands (one ``-c`` each) against this instance and return the output."""
        argv = [require_binary("vtysh", "frr"), "--vty_socket", str(self.dir)]
        for c in commands:
            argv += ["-c", c]
        return self._run(argv, check=check)

    def _start(self) -> None:
        d = self.dir
        api = self._socket_path("zserv.api")
        self._socket_path("bgpd.vty")
        self.conf_path.write_text(render_frr(self.cfg))
        check_frr_config(self.conf_path)  # bgpd itself would run on, skipping the failed lines
        common = ["-z", str(api), "--vty_socket", str(d), "-u", "root", "-g", "frrvty"]
        self._spawn(
            [
                _frr_daemon("zebra"),
                "-i",
                str(d / "zebra.pid"),
                *common,
                "-f",
                "/dev/null",
                "--log",
                f"file:{d}/zebra.log",
            ],
            d / "zebra.out",
        )
        self._wait_ready(api.exists, "zebra (zserv.api)")
        bgpd = [_frr_daemon("bgpd"), "-i", str(d / "bgpd.pid"), *common, "-f", str(self.conf_path), "-P", "0"]
        self._spawn([*bgpd, "--log", f"file:{d}/bgpd.log"], d / "bgpd.out")

        def ready() -> bool:
            out = self.vtysh("show bgp summary json", check=False)
            return out.lstrip().startswith("{")

        self._wait_ready(ready, "bgpd (vtysh)")

    def _apply(self, new: SpeakerConfig) -> None:
        try:
            self._control().apply(new)  # frr_delta through vtysh
        except ControlError as exc:
            raise DaemonError(f"{exc}\n{self.log_tail()}") from exc
        self.conf_path.write_text(render_frr(new))  # what bgpd now runs, for a later restart

    def _control(self) -> FrrControl:
        return FrrControl(self.cfg, str(self.dir), self.netns)

    def sessions(self) -> dict[str, str]:
        return self._control().sessions()

    def routes(self, family: str = "ipv4") -> dict[str, list[PathInfo]]:
        return self._control().routes(family)


# --------------------------------------------------------------------------------------------
# GoBGP
# --------------------------------------------------------------------------------------------


class GoBgpSpeaker(BgpSpeaker):
    """gobgpd with its gRPC API on 127.0.0.1:``api_port`` inside the namespace; prefixes are
    announced with the gobgp CLI. ``apply`` rewrites the TOML and sends SIGHUP: gobgpd adds and
    deletes neighbours from it, but its in-place update of a changed neighbour misses settings
    (measured on 3.10: route-reflector-client stayed on), so a changed neighbour is removed by
    one reload and added back by a second (its session restarts). Prefixes change through the
    CLI."""

    kind = "gobgp"

    def __init__(
        self,
        netns: str,
        workdir: str | Path,
        cfg: SpeakerConfig,
        start_timeout: float = 20.0,
        api_port: int | None = None,
    ) -> None:
        super().__init__(netns, workdir, cfg, start_timeout)
        self.api = ("127.0.0.1", api_port or free_port())

    @property
    def conf_path(self) -> Path:
        return self.dir / "gobgpd.toml"

    def _logs(self) -> list[Path]:
        return [self.dir / "gobgpd.log"]

    def gobgp(self, *args: str, check: bool = True) -> str:
        """Run one gobgp CLI command against this instance and return its output."""
        exe = require_binary("gobgp", "gobgpd")
        return self._run([exe, "-u", self.api[0], "-p", str(self.api[1]), *args], check=check)

    def _start(self) -> None:
        exe = require_binary("gobgpd", "gobgpd")
        self.conf_path.write_text(render_gobgp(self.cfg))
        check_gobgp_config(self.conf_path)
        host, port = self.api
        argv = [exe, "-f", str(self.conf_path), "--api-hosts", f"{host}:{port}", "--pprof-disable", "-p"]
        self._spawn(argv, self.dir / "gobgpd.log")

        def ready() -> bool:
            return self.gobgp("global", check=False).strip() != ""

        self._wait_ready(ready, "gobgpd API")
        self._rib(gobgp_announce_commands(self.cfg))

    def _rib(self, commands: list[list[str]]) -> None:
        for argv in commands:
            self.gobgp(*argv[1:])

    def _apply(self, new: SpeakerConfig) -> None:
        old = self.cfg
        gone = [p for p in old.prefixes if p not in new.prefixes]
        added = [p for p in new.prefixes if p not in old.prefixes]
        self._rib(gobgp_withdraw_commands(_with_prefixes(old, gone)))
        olds = {n.address: n for n in old.neighbors}
        changed = [
            n
            for n in new.neighbors
            if n.address in olds
            and render_gobgp(replace(new, neighbors=(n,)))
            != render_gobgp(replace(old, neighbors=(olds[n.address],)))
        ]
        if changed:
            # gobgpd's reload "updates" a changed neighbour without applying e.g. its
            # route-reflector-client flag: take it out first, then add it back
            kept = tuple(n for n in new.neighbors if n not in changed and n.address in olds)
            self._reload(replace(new, neighbors=kept))
        if render_gobgp(new) != render_gobgp(old) or changed:
            self._reload(new)
        self._rib(gobgp_announce_commands(_with_prefixes(new, added)))

    def _reload(self, cfg: SpeakerConfig) -> None:
        """Write ``cfg``'s TOML, SIGHUP gobgpd, wait until its neighbours are exactly ``cfg``'s."""
        self.conf_path.write_text(render_gobgp(cfg))
        check_gobgp_config(self.conf_path)
        self._procs[0].signal_leader(signal.SIGHUP)
        want = {n.address for n in cfg.neighbors}
        wait_for(lambda: set(self._neighbors()) == want, 10.0, f"{cfg.node}: gobgpd reloaded neighbours")

    def _neighbors(self) -> dict[str, str]:
        return parse_gobgp_neighbors(self.gobgp("neighbor", "-j"))

    def sessions(self) -> dict[str, str]:
        return self._neighbors()

    def routes(self, family: str = "ipv4") -> dict[str, list[PathInfo]]:
        return parse_gobgp_rib(self.gobgp("global", "rib", "-a", family, "-j"))


def _with_prefixes(cfg: SpeakerConfig, prefixes: Sequence[str]) -> SpeakerConfig:
    return replace(cfg, prefixes=tuple(prefixes))
