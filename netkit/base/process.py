"""One managed process: a daemon of ours, started, waited for and stopped by its PID (effects).

It runs in a session of its own, so its PID is also its process group id: a signal to the group
reaches its children (workers, helpers) and nothing else, and the id stays reserved while any
member lives. Inside a network namespace it is started by ``ip netns exec``, which execs it: the
PID held is the daemon's. Stopping is SIGTERM (and SIGCONT, for a paused one) to the group,
SIGKILL after a timeout, reaped, and "stopped" means no live member is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from netkit.base.netns import netns_exec


class ProcessError(RuntimeError):
    """A managed process exited or did not become ready."""


def live_group_members(pgid: int) -> list[int]:
    """PIDs of the non-zombie processes in process group ``pgid`` (Linux ``/proc``)."""
    pids = []
    with os.scandir("/proc") as it:
        for entry in it:
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue  # exited meanwhile
            state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
            if int(pgrp) == pgid and state not in ("Z", "X"):
                pids.append(int(entry.name))
    return pids


class ManagedProcess:
    """``argv`` started now (in ``netns`` when given, in ``cwd``), its stdout and stderr appended
    to ``output``; ``pipe``: stdin and stdout are pipes instead (stderr still to ``output``)."""

    def __init__(
        self,
        argv: Sequence[str],
        output: Path,
        *,
        netns: str | None = None,
        cwd: Path | str | None = None,
        pipe: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.output = output
        self._out: IO[bytes] = open(output, "ab")  # noqa: SIM115 - closed once reaped
        try:
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(
                netns_exec(netns, argv),
                stdin=subprocess.PIPE if pipe else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe else self._out,
                stderr=self._out if pipe else subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
            )
        except BaseException:
            self._out.close()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited (reaped by this call), else None."""
        return self.popen.poll()

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: signal.Signals) -> None:
        """``sig`` to the whole process group (the daemon and its children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def signal_leader(self, sig: signal.Signals) -> None:
        """``sig`` to the daemon alone (its own handling reaches its children, or not)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        return self.popen.wait(timeout)

    def wait_ready(
        self,
        check: Callable[[], str | None],
        timeout: float,
        what: str,
        details: Callable[[], str] = lambda: "",
        error: type[Exception] = ProcessError,
    ) -> None:
        """Until ``check()`` returns None (ready); it returns why not, for the error. Raises
        ``error`` when the process exits first or ``timeout`` passes (the process is left to
        the caller)."""
        deadline = time.monotonic() + timeout
        while True:
            rc = self.popen.poll()
            if rc is not None:
                raise error(f"{what} exited with status {rc} during start-up\n{details()}")
            reason = check()
            if reason is None:
                return
            if time.monotonic() >= deadline:
                raise error(f"{what} not ready within {timeout:.1f} s ({reason})\n{details()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0, *, group: bool = True) -> int | None:
        """SIGTERM (to the group, or to the daemon alone) and SIGCONT, SIGKILL after ``timeout``
        seconds; reaped, no member left. Idempotent; returns the exit status."""
        if self.popen.poll() is None:
            if group:
                self.signal_group(signal.SIGTERM)
            else:
                self.signal_leader(signal.SIGTERM)
            self.signal_group(signal.SIGCONT)  # a paused daemon must run to handle SIGTERM
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        status = self.popen.poll()
        self.kill()
        return status

    def kill(self) -> None:
        """SIGKILL the group at once, as a crash would; reap; wait (2 s at most) until no live
        member is left (orphans reparented to init are reaped late; a zombie holds nothing)."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait()
        deadline = time.monotonic() + 2.0
        while live_group_members(self.popen.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._out.close()
