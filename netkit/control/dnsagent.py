"""The node agent's DNS part: its NodeState's ``spec.dns`` to a running ``netkit dns serve``
(a child process in the node's network namespace), and what it runs back out.

- A configuration is checked by the cache's own loader before anything is touched: one it
  refuses is Failed and the cache serves on with what it has.
- A change of upstreams, zones or cache limits is a reload (SIGHUP): no query is dropped and the
  cache is kept. A change of listen addresses needs new sockets: the cache is restarted.
- The cache runs with ``takeover: true`` on a control socket in the state directory: an agent
  that starts while another one's cache serves (a DaemonSet surge, an agent restarted) takes its
  sockets and cache over without a gap, and then stops the old process (its PID is in the state
  directory; it is one this agent's predecessor started).
- ``spec.dns`` gone (the DNSCache deleted or no longer selecting the node): the cache is stopped
  and reported Removed. The NodeState unreadable (the API unreachable) is not that: the cache
  runs on.
- A cache that fails (a non-zero exit) is started again with the configuration it had; one that
  exits 0 was taken over by a successor (it exits 0 only on SIGTERM, which the successor sends):
  this agent then leaves DNS to the successor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from dnscache.core.config import load
from netkit.base.fields import ConfigError
from netkit.base.process import ManagedProcess, ProcessError

__all__ = ["NodeDns"]

log = logging.getLogger("netkit.control.agent.dns")
Obj = dict[str, Any]


class NodeDns:
    """The cache of one node. ``update`` is called with each ``spec.dns`` (from the informer's
    thread, returning at once); ``report`` is called with each change of what it runs."""

    def __init__(
        self,
        node: str,
        state_dir: Path,
        report: Callable[[], None],
        *,
        netns: str | None = None,
        metrics: str | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.node, self.dir, self.report, self.netns = node, state_dir, report, netns
        self.metrics, self.start_timeout = metrics, start_timeout
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file, self.control = self.dir / "dns.yaml", str(self.dir / "dns.ctl")
        self.pid_file, self.log_file = self.dir / "dns.pid", self.dir / "dns.log"
        self.process: ManagedProcess | None = None
        self._ready_file: Path | None = None  # the running cache's (one per start)
        self.taken_over = False  # a successor's cache took this one's sockets over
        self.running: Obj | None = None  # the spec.dns entry the cache runs
        self.applied: list[Obj] = []  # status.applied entries of kind DNSCache
        self.serving = False
        self._wanted: Obj | None = None
        self._tried: Obj | None = None  # the last entry acted on (applied or refused)
        self._known = False  # spec.dns read at least once
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"dns-{node}", daemon=True)

    def start(self) -> NodeDns:
        self._thread.start()
        return self

    def update(self, entry: Mapping[str, Any] | None) -> None:
        self._wanted, self._known = (dict(entry) if entry else None), True
        self._wake.set()

    def stop(self) -> None:
        """The agent stops: the cache with it (a successor's cache has taken it over, or the node
        is being drained; a pod's processes end with it in any case)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        if self.process is not None:
            self.process.stop(timeout=10)

    # -- the worker --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self._known:
                continue
            try:
                self._converge(self._wanted)
            except Exception as exc:  # never the agent's end: said, and tried again
                log.exception("dns step failed", extra={"node": self.node})
                self._set(self._wanted, "Failed", f"{type(exc).__name__}: {exc}")

    def _document(self, entry: Mapping[str, Any]) -> Obj:
        doc = dict(entry.get("config") or {})
        doc.update(control=self.control, takeover=True)
        if self._ready_file is not None:
            doc["ready_file"] = str(self._ready_file)
        if self.metrics is not None:
            doc["metrics"] = self.metrics
        return doc

    def _converge(self, wanted: Obj | None) -> None:
        if self.taken_over:
            return  # a successor's cache serves now: this agent is on its way out
        if self.process is not None and not self.process.running:
            status = self.process.returncode
            self.process = None
            self.serving = False
            if status == 0:  # it exits 0 only on SIGTERM: after a successor took its sockets over
                log.info(
                    "the cache was taken over by a successor: not started again", extra={"node": self.node}
                )
                self.taken_over = True
                return
            log.error("the cache exited: starting it again", extra={"node": self.node, "status": status})
            if self.running is not None and wanted == self.running:
                self._start(self._document(wanted))
                self._set(wanted, "Applied", "restarted after it exited")
                return
        if wanted is None:
            if self.process is not None or self.running is not None:
                self._remove()
            return
        if wanted in (self.running, self._tried) and self.process is not None:
            return  # as it runs, or refused already (said once, not every second)
        self._tried = wanted
        doc = self._document(wanted)
        try:
            load(doc, f"DNSCache {wanted.get('name')}")
        except ConfigError as exc:
            self._set(wanted, "Failed", f"refused, the cache serves on as it was: {exc}")
            return
        old = self.running
        self._write(doc)
        if self.process is None:
            self._start(doc)
            self._set(wanted, "Applied", "started")
        elif old is not None and (old.get("config") or {}).get("listen") != doc.get("listen"):
            self.process.stop(timeout=10)
            self.process = None
            self._start(doc)
            self._set(wanted, "Applied", "restarted: the listen addresses changed")
        else:
            self.process.signal_leader(signal.SIGHUP)
            self._set(wanted, "Applied", "reloaded")

    def _write(self, doc: Obj) -> None:
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=True))
        os.replace(tmp, self.config_file)

    def _start(self, doc: Obj) -> None:
        # Ready when its own ready file exists: a PID from the control socket could be another
        # pod's (a surge pod has a PID namespace of its own), and the one it took over removes
        # its own file.
        ready_file = self._ready_file = self.dir / f"dns.ready.{uuid.uuid4().hex[:12]}"
        self._write({**doc, "ready_file": str(ready_file)})
        argv = [sys.executable, "-m", "netkit.cli", "dns", "serve", "--file", str(self.config_file)]
        proc = ManagedProcess(argv, self.log_file, netns=self.netns)

        def ready() -> str | None:
            return None if ready_file.exists() else "its ready file is not there yet"

        try:
            proc.wait_ready(ready, self.start_timeout, "netkit dns serve", lambda: self._tail())
        except ProcessError:
            proc.stop(timeout=5)
            raise
        self.process = proc
        self.serving = True
        old_pid = self._pid_of_file()  # a cache an agent before us started, in this PID namespace
        if old_pid is not None and old_pid != proc.pid and self._is_our_cache(old_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(old_pid, signal.SIGTERM)  # handed over: it waits for this
            log.info("took over from the cache before", extra={"node": self.node, "old_pid": old_pid})
        self.pid_file.write_text(str(proc.pid))

    def cache_pid(self) -> int | None:
        """The cache this agent runs (or took over from its predecessor), by pid; None when
        there is none or the pid is not a cache of ours."""
        if self.process is not None and self.process.running:
            return self.process.pid
        pid = self._pid_of_file()
        return pid if pid is not None and self._is_our_cache(pid) else None

    def listen(self) -> list[str]:
        """The listen addresses of the cache it runs (``ADDR:PORT``)."""
        return [str(a) for a in ((self.running or {}).get("config") or {}).get("listen") or []]

    def _pid_of_file(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None

    def _is_our_cache(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(self.config_file).encode() in cmdline

    def _remove(self) -> None:
        name = (self.running or {}).get("name")
        if self.process is not None:
            self.process.stop(timeout=10)
            self.process = None
        self.serving = False
        for f in (self.config_file, self.pid_file):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        self.running = None
        self.applied = (
            [{"kind": "DNSCache", "name": name, "state": "Removed", "message": "the cache is stopped"}]
            if name
            else []
        )
        log.info("cache removed", extra={"node": self.node, "dnscache": name})
        self.report()

    def _tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _set(self, entry: Obj | None, state: str, message: str) -> None:
        if entry is None:
            return
        if state == "Applied":
            self.running = entry
        self.applied = [
            {
                "kind": "DNSCache",
                "name": entry.get("name"),
                "generation": entry.get("generation"),
                "state": state,
                "message": message[:4000],
            }
        ]
        log.info(
            "dns " + state.lower(), extra={"node": self.node, "dnscache": entry.get("name"), "why": message}
        )
        self.report()

    def ready(self) -> bool:
        """Serving what is published (or nothing is: no cache wanted here)."""
        if not self._known:
            return False
        return self._wanted is None or (self.running is not None and self.observed()["serving"])

    def observed(self) -> Obj:
        """``status.dns``."""
        out: Obj = {"serving": bool(self.serving and self.process is not None and self.process.running)}
        if self.running is not None:
            out["configGeneration"] = self.running.get("generation")
        return out
