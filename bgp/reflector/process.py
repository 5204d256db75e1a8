"""The API process ExaBGP runs: JSON lines in on stdin, commands out on stdout (effects).

Two threads around one ``rib.Reflector``, never one: a single-threaded process that writes many
commands while ExaBGP writes JSON to it blocks both ends on full pipes until the hold timer
kills the sessions (measured; see ../shared/notes/real-peers.md).

- the reader (main thread) reads a line, decodes it (``exabgp_api``) and applies it under the
  lock, then wakes the writer. It never writes to ExaBGP;
- the writer waits to be woken, takes the lock only to ask the reflector for the next batch of
  commands (``flush`` with a budget, so the first commands leave while later ones are still
  computed), releases it, and writes the batch. While it writes, the reader keeps applying
  updates, which the next flush coalesces (a prefix that changed ten times is sent once).

A line that cannot be decoded, or an event the reflector cannot apply, is logged and counted
(``netkit_bgp_bad_messages_total``) and skipped: nothing ExaBGP or a peer sends ends this
process. It ends when ExaBGP closes its stdin, or when it cannot write to ExaBGP any more.

ExaBGP respawns an API process that died. The new one knows nothing of the sessions ExaBGP
kept up, so it tears them all down (Cease, Administrative Reset) at start: every peer
reconnects and sends its table again. It knows it is a respawn from a marker file in the state
directory the launcher gave it (``NETKIT_REFLECTOR_STATE``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bgp.reflector.core.config import ReflectorConfig, load_config
from bgp.reflector.core.events import Announce, Command, Update, Withdraw
from bgp.reflector.core.exabgp_api import DecodeError, WireCodec, make_codec
from bgp.reflector.core.rib import Reflector
from bgp.reflector.metrics import LATENCY_BUCKETS, endpoints
from netkit.base import logs
from netkit.base.fields import ConfigError

__all__ = ["ApiProcess", "main"]

log = logging.getLogger("netkit.bgp.reflector")

CONFIG_ENV = "NETKIT_REFLECTOR_CONFIG"
STATE_ENV = "NETKIT_REFLECTOR_STATE"
LOG_LEVEL_ENV = "NETKIT_REFLECTOR_LOG_LEVEL"
LOG_FORMAT_ENV = "NETKIT_REFLECTOR_LOG_FORMAT"
MARKER = "api-process-started"
_LOG_FIRST = 20  # bad lines logged per reason before logging only every 1000th


class ApiProcess:
    """Reader and writer around a ``Reflector``; ``run`` returns when input ends."""

    def __init__(
        self,
        reflector: Reflector,
        inp: IO[bytes],
        out: IO[bytes],
        *,
        mode: str = "wire",
        budget: int = 4000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reflector = reflector
        self.codec = make_codec(mode)
        self.inp = inp
        self.out = out
        self.budget = budget
        self.clock = clock
        self.lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._update_times: list[float] = []  # read times of UPDATEs not yet fully flushed
        self.bad_messages: Counter[str] = Counter()
        self._bad_lock = threading.Lock()  # the reader and the writer both count
        self.commands_written = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.write_failed = False
        self._writer = threading.Thread(target=self._write_loop, name="writer", daemon=True)

    # -- reader --------------------------------------------------------------------------------

    def handle_line(self, line: bytes) -> None:
        """Decode and apply one line from ExaBGP; never raises for bad input."""
        t = self.clock()
        try:
            event = self.codec.decode(line.decode("utf-8", errors="replace"))
        except DecodeError as exc:
            self._bad(exc.reason, str(exc), line)
            return
        except Exception as exc:  # a bug in a decoder: skip the line (escaping, it would end the process)
            self._bad("internal_error", f"{type(exc).__name__}: {exc}", line, exc_info=True)
            return
        if event is None:
            return
        with self.lock:
            try:
                self.reflector.handle(event)
            except Exception as exc:  # a bug must not take every session down with it
                self._bad("internal_error", f"{type(exc).__name__}: {exc}", line, exc_info=True)
                return
            if isinstance(event, Update):
                self._update_times.append(t)
        self._wake.set()

    def _count_bad(self, reason: str) -> int:
        with self._bad_lock:
            self.bad_messages[reason] += 1
            return self.bad_messages[reason]

    def _bad(self, reason: str, detail: str, line: bytes, exc_info: bool = False) -> None:
        n = self._count_bad(reason)
        if n <= _LOG_FIRST or n % 1000 == 0:
            log.warning(
                "ignored a message from ExaBGP",
                extra={
                    "reason": reason,
                    "detail": detail,
                    "line": line[:200].decode("utf-8", "replace"),
                    "count": n,
                },
                exc_info=exc_info,
            )

    def run(self) -> int:
        """Read until ExaBGP closes the pipe; returns the exit status."""
        self._writer.start()
        self._wake.set()  # commands queued before the first line (a respawn's teardowns)
        try:
            for line in self.inp:
                self.handle_line(line)
                if self.write_failed:
                    return 1
        except (OSError, ValueError) as exc:
            log.error("reading from ExaBGP failed", extra={"error": str(exc)})
        finally:
            self._stop.set()
            self._wake.set()
            self._writer.join(timeout=5)
        log.info("ExaBGP closed the API pipe: exiting")
        return 1 if self.write_failed else 0

    # -- writer --------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self._drain()
            except OSError as exc:  # ExaBGP is gone (EPIPE) or its pipe broke
                log.error("writing to ExaBGP failed", extra={"error": str(exc)})
                self.write_failed = True
                return
            except Exception:
                log.exception("computing commands failed")
                self._count_bad("internal_error")
            if self._stop.is_set():
                return

    def _drain(self) -> None:
        while True:
            with self.lock:
                commands = self.reflector.flush(self.budget)
                done = not self.reflector.pending
                times: list[float] = []
                if done:
                    times, self._update_times = self._update_times, []
            if commands:
                data = self._encode(commands).encode()
                self.out.write(data)
                self.out.flush()
                self.commands_written += len(commands)
            if times:
                now = self.clock()
                for t in times:
                    d = now - t
                    self.latency_counts[bisect_left(LATENCY_BUCKETS, d)] += 1
                    self.latency_sum += d
            if done:
                return

    def _encode(self, commands: list[Command]) -> str:
        """The batch as API lines. A command that cannot be encoded (attributes too large for one
        UPDATE once reflected) is logged and counted, and an announcement becomes a withdrawal
        (the peer must not keep an older path); the rest of the batch still goes out, as the
        Adj-RIB-Out already says it did."""
        try:
            return self.codec.encode(commands)
        except Exception:
            pass
        lines = []
        for command in commands:
            try:
                lines.append(self.codec.encode([command]))
            except Exception as exc:
                self._count_bad("internal_error")
                log.error(
                    "cannot encode a command",
                    extra={"command": type(command).__name__, "peer": command.peer, "error": str(exc)},
                )
                if isinstance(command, Announce):
                    lines.append(self.codec.encode([Withdraw(command.peer, command.prefixes)]))
        return "".join(lines)

    # -- state for metrics ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            s = self.reflector.snapshot()
        with self._bad_lock:
            s["bad_messages"] = dict(self.bad_messages)
        s["commands_written"] = self.commands_written
        s["latency_counts"] = list(self.latency_counts)
        s["latency_sum"] = self.latency_sum
        codec = self.codec
        s["ignored_attributes"] = codec.ignored if isinstance(codec, WireCodec) else codec.ignored_attributes
        return s

    def ready(self) -> bool:
        with self.lock:
            return bool(self.reflector.established())


def _respawned(state_dir: str | None) -> bool:
    """True if an API process already ran for this ExaBGP (marker file); creates the marker."""
    if not state_dir:
        return False
    marker = Path(state_dir) / MARKER
    seen = marker.exists()
    try:
        marker.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        log.warning("cannot write the API process marker", extra={"path": str(marker), "error": str(exc)})
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="netkit reflector: the ExaBGP API process (run by ExaBGP)")
    parser.add_argument(
        "--config", default=os.environ.get(CONFIG_ENV), help=f"reflector YAML (env {CONFIG_ENV})"
    )
    args = parser.parse_args(argv)
    if not args.config:
        print(f"netkit reflector API process: no --config and no {CONFIG_ENV}", file=sys.stderr)
        return 2
    try:
        cfg: ReflectorConfig = load_config(Path(args.config).read_text(), args.config)
    except (OSError, ConfigError) as exc:
        print(f"netkit reflector API process: {exc}", file=sys.stderr)
        return 2
    logs.setup(os.environ.get(LOG_LEVEL_ENV, cfg.log_level), os.environ.get(LOG_FORMAT_ENV, "json"))
    reflector = cfg.reflector()
    if _respawned(os.environ.get(STATE_ENV)):
        log.warning("API process restarted by ExaBGP: resetting every session so peers resend their routes")
        reflector.teardown_all()
    app = ApiProcess(
        reflector, sys.stdin.buffer, sys.stdout.buffer, mode=cfg.exabgp.api, budget=4 * cfg.exabgp.chunk
    )
    metrics = None
    if cfg.metrics is not None:
        metrics = endpoints(cfg.metrics, app.snapshot, app.ready)
        try:
            metrics.start_in_thread()
        except OSError as exc:
            # The launcher checked the address before starting ExaBGP; taken since, this process
            # exits rather than run without /health (ExaBGP respawns it, then gives up and exits).
            log.error("API process not started", extra={"error": exc.strerror})
            return 1
    log.info(
        "API process started",
        extra={
            "router_id": cfg.router_id,
            "cluster_id": cfg.effective_cluster_id,
            "neighbors": len(cfg.neighbors),
        },
    )
    try:
        return app.run()
    finally:
        if metrics is not None:
            metrics.stop_thread()


if __name__ == "__main__":
    sys.exit(main())
