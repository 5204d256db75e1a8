"""A CPU quota for processes a benchmark started: a cgroup of its own with a CFS bandwidth limit.

Two servers are only compared on their efficiency when both are saturated. On a small machine the
load generator shares the cores with the server and cannot saturate it; capping each server at
the same fraction of a core (``cpu.max`` on cgroup v2, ``cpu.cfs_quota_us`` on v1) and giving the
load generator the rest makes its QPS the server's capacity at that CPU budget.

The cgroup is created next to the caller's own (so it works inside a container), named by the
caller (a per-run prefix), and removed on exit, moving whatever is still in it back to the
caller's cgroup first.
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from types import TracebackType
from typing import Self

CGROUP_ROOT = Path("/sys/fs/cgroup")


class CpuCapError(RuntimeError):
    """No usable cgroup CPU controller, or the quota could not be set."""


def _own_path(proc_cgroup: str, controller: str | None) -> str:
    """The caller's cgroup path from /proc/self/cgroup: the v2 line (controller None) or the v1
    line that lists the controller."""
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller is None and controllers == "") or (
            controller is not None and controller in controllers.split(",")
        ):
            return path.lstrip("/")
    raise CpuCapError(f"no {'cgroup v2' if controller is None else controller} line in /proc/self/cgroup")


class CpuCap:
    """``with CpuCap("nk1234-unbound", 0.5) as cap: cap.add(pid)`` runs pid (and the threads and
    children it makes later) on at most half a core, measured per ``period_us``."""

    def __init__(
        self,
        name: str,
        cores: float,
        *,
        period_us: int = 10_000,
        root: Path = CGROUP_ROOT,
        proc_cgroup: str | None = None,  # what /proc/self/cgroup says (None: read it)
    ) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad cgroup name {name!r}")
        if not 0.01 <= cores <= 1024:
            raise ValueError(f"cores must be between 0.01 and 1024, not {cores}")
        self.name = name
        self.cores = cores
        self.period_us = period_us
        self.root = root
        self.proc_cgroup = proc_cgroup
        self.path: Path | None = None
        self._parent: Path | None = None

    def __enter__(self) -> Self:
        quota = max(1000, round(self.cores * self.period_us))
        proc = self.proc_cgroup if self.proc_cgroup is not None else Path("/proc/self/cgroup").read_text()
        v2_controllers = self.root / "cgroup.controllers"
        if v2_controllers.exists() and "cpu" in v2_controllers.read_text().split():
            parent = self.root / _own_path(proc, None)
            subtree = parent / "cgroup.subtree_control"
            try:
                if "cpu" not in subtree.read_text().split():
                    subtree.write_text("+cpu")
            except OSError as e:
                raise CpuCapError(
                    f"cannot enable the cpu controller below {parent} ({e.strerror}); on cgroup v2 "
                    "a cgroup that holds processes cannot delegate it: run from a cgroup of its own"
                ) from e
            settings = {"cpu.max": f"{quota} {self.period_us}"}
        elif (self.root / "cpu" / "cpu.cfs_quota_us").exists():
            parent = self.root / "cpu" / _own_path(proc, "cpu")
            settings = {"cpu.cfs_period_us": str(self.period_us), "cpu.cfs_quota_us": str(quota)}
        else:
            raise CpuCapError(
                f"no cgroup cpu controller under {self.root} (neither cgroup v2 with 'cpu' in "
                "cgroup.controllers nor a v1 'cpu' hierarchy): CPU-capped measurements need one"
            )
        path = parent / self.name
        try:
            path.mkdir()
        except OSError as e:
            raise CpuCapError(f"cannot create cgroup {path}: {e.strerror}") from e
        self.path, self._parent = path, parent
        try:
            for key, value in settings.items():
                (path / key).write_text(value)
        except OSError as e:
            self._remove()
            raise CpuCapError(f"cannot set {key} = {value} in {path}: {e.strerror}") from e
        return self

    def add(self, pid: int) -> None:
        """Move process pid (all its threads) into the cgroup."""
        if self.path is None:
            raise CpuCapError("CpuCap.add outside its with block")
        try:
            (self.path / "cgroup.procs").write_text(str(pid))
        except OSError as e:
            if e.errno == errno.ESRCH:
                return  # it has exited: nothing left to cap
            raise CpuCapError(f"cannot move process {pid} into {self.path}: {e.strerror}") from e

    def pids(self) -> list[int]:
        if self.path is None:
            return []
        with contextlib.suppress(OSError):
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        return []

    def _remove(self) -> None:
        if self.path is None or self._parent is None:
            return
        for pid in self.pids():  # still running: back to where we run
            with contextlib.suppress(OSError):
                (self._parent / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(FileNotFoundError):
            self.path.rmdir()
        self.path = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._remove()
