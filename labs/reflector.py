"""The netkit reflector as a lab daemon in a network namespace, for tests and benchmarks (effects).

``NetkitReflector(netns, workdir, config_yaml)`` runs ``python -m bgp.reflector --config FILE``
in the namespace, with every file under ``<workdir>/netkit-<name>`` (the config, ExaBGP's
config, the state dir, the output). Like the managers of ``labs.bgpspeakers``:

- ``start`` returns once the API process runs (its marker file exists), not once sessions are
  up (``wait_established``);
- ``stop`` sends SIGTERM (ExaBGP closes every session with a NOTIFICATION), ``kill`` SIGKILLs,
  as a crash would; both reach the launcher and ExaBGP (one process group) and the API process
  (ExaBGP starts it in a group of its own), by the PIDs this object started or read;
- ``status`` is the reflector's ``/status`` JSON (fetched inside the namespace), ``sessions``
  maps neighbour addresses to ``Established`` or the state the reflector knows, ``metrics`` is
  the ``/metrics`` text.

The config must have ``metrics:`` set (the lab reads the reflector through it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bgp.reflector.core.config import ReflectorConfig, load_config
from bgp.reflector.process import MARKER
from labs.dnspeers import DaemonError
from netkit.base.netns import netns_exec
from netkit.base.process import ManagedProcess

__all__ = ["NetkitReflector"]

_FETCH = """
import sys, urllib.request
try:
    sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
except Exception as exc:
    sys.stdout.write("ERROR " + str(exc)); sys.exit(1)
"""


class NetkitReflector:
    kind = "netkit"

    def __init__(
        self,
        netns: str,
        workdir: str | Path,
        config_yaml: str,
        *,
        name: str | None = None,
        start_timeout: float = 20.0,
        python: str = sys.executable,
    ) -> None:
        self.netns = netns
        self.config_yaml = config_yaml
        self.cfg: ReflectorConfig = load_config(config_yaml, "lab reflector config")
        if self.cfg.metrics is None:
            raise ValueError("the lab reads the reflector through its metrics endpoint: set metrics:")
        self.name = name or self.cfg.router_id
        self.dir = Path(workdir) / f"netkit-{self.name}"
        self.start_timeout = start_timeout
        self.python = python
        self._proc: ManagedProcess | None = None
        self._api_pid: int | None = None

    # -- files ---------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.dir / "reflector.yaml"

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    @property
    def out_path(self) -> Path:
        return self.dir / "reflector.out"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.out_path.read_text(errors="replace")
        except OSError:
            return f"(no output in {self.dir})"
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    @property
    def pids(self) -> list[int]:
        out = [self._proc.pid] if self._proc is not None else []
        return out + ([self._api_pid] if self._api_pid is not None else [])

    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError(f"{self!r} already started")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(exist_ok=True)
        self.config_path.write_text(self.config_yaml)
        marker = self.state_dir / MARKER
        marker.unlink(missing_ok=True)
        argv = [
            self.python, "-m", "bgp.reflector",
            "--config", str(self.config_path), "--state-dir", str(self.state_dir),
        ]  # fmt: skip
        self._proc = ManagedProcess(argv, self.out_path, netns=self.netns)
        deadline = time.monotonic() + self.start_timeout
        try:
            while True:
                if self._proc.returncode is not None:
                    raise DaemonError(
                        f"netkit reflector {self.name} exited with status {self._proc.returncode} "
                        f"during start-up\n{self.log_tail()}"
                    )
                with contextlib.suppress(OSError, ValueError):
                    self._api_pid = int(marker.read_text().split()[0])
                    break
                if time.monotonic() >= deadline:
                    raise DaemonError(
                        f"netkit reflector {self.name}: API process not started within "
                        f"{self.start_timeout:.1f} s\n{self.log_tail()}"
                    )
                time.sleep(0.05)
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (ExaBGP closes its sessions with a NOTIFICATION), SIGKILL after ``timeout``."""
        if self._proc is not None:
            self._proc.stop(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL everything at once, as a crash would."""
        proc, self._proc = self._proc, None
        api, self._api_pid = self._api_process(), None
        if proc is not None:
            proc.signal_group(signal.SIGKILL)
        if api is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(api, signal.SIGKILL)
        if proc is not None:
            proc.kill()
        if api is not None:
            deadline = time.monotonic() + 2.0
            while _alive(api) and time.monotonic() < deadline:
                time.sleep(0.01)

    def _api_process(self) -> int | None:
        """The PID the (last) API process wrote, if that process is still an API process of
        this reflector (ExaBGP may have respawned it; a PID may have been reused)."""
        try:
            pid = int((self.state_dir / MARKER).read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        return pid if b"bgp.reflector.process" in cmdline else None

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<NetkitReflector {self.name} in {self.netns} pids={self.pids} dir={self.dir}>"

    # -- state ---------------------------------------------------------------------------------

    def fetch(self, path: str) -> str:
        """GET ``path`` from the reflector's metrics endpoint, inside its namespace."""
        assert self.cfg.metrics is not None
        url = f"http://{self.cfg.metrics}{path}"
        r = subprocess.run(
            netns_exec(self.netns, [self.python, "-c", _FETCH, url]),
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
        if r.returncode != 0:
            raise DaemonError(
                f"netkit reflector {self.name}: GET {path}: {r.stdout.strip()}\n{self.log_tail()}"
            )
        return r.stdout

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.fetch("/status"))
        return data

    def metrics(self) -> str:
        return self.fetch("/metrics")

    def sessions(self) -> dict[str, str]:
        """{neighbour address: ``Established`` or the reflector's state name}."""
        out = {}
        for p in self.status()["peers"]:
            out[p["address"]] = "Established" if p["state"] == "established" else p["state"]
        return out

    def peer(self, address: str) -> dict[str, Any]:
        for p in self.status()["peers"]:
            if p["address"] == address:
                return dict(p)
        raise KeyError(address)

    def wait_established(self, timeout: float = 20.0, neighbors: list[str] | None = None) -> None:
        want = neighbors if neighbors is not None else [n.address for n in self.cfg.neighbors]
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(DaemonError):
                states = self.sessions()
                if all(states.get(a) == "Established" for a in want):
                    return
            time.sleep(0.1)
        raise DaemonError(
            f"netkit reflector {self.name}: sessions not Established: {states}\n{self.log_tail()}"
        )


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
