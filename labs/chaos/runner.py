"""One chaos run end to end: build the lab, start the load, play the fault schedule, score, report,
and remove everything even on failure, Ctrl-C or SIGTERM (effects)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from labs.chaos import report
from labs.chaos.lab import (
    UPSTREAM_NAMES,
    ChaosLab,
    NsNetkit,
    NsProcess,
    make_zones,
    proxy_command,
)
from labs.chaos.loadgen import read_records
from labs.chaos.schedule import Score, Window, build_schedule, harness_problems, score
from labs.chaos.workload import Mix, build_names, build_stream, zone_records
from labs.runid import make_run_dir, new_run_id


@dataclass
class Options:
    duration: float = 600.0
    qps: float = 2000.0
    seed: int = 1
    systems: list[str] = field(default_factory=lambda: ["netkit", "unbound", "dnsmasq"])
    out: Path = Path("chaos-out")
    deadline: float = 1.0
    mix: Mix = field(default_factory=Mix)
    sockets: int = 64
    progress_every: float = 5.0
    plots: bool = True
    command: str = ""


class Interrupted(Exception):
    pass


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class GenReader:
    """Reads one load generator's JSON lines on a thread."""

    def __init__(self, system: str, proc: NsProcess) -> None:
        self.system = system
        self.proc = proc
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.ready: dict[str, Any] | None = None
        self.last: dict[str, Any] = {}
        self.summary: dict[str, Any] | None = None
        self.interval_done = 0
        self.interval_ok = 0
        self.interval_sent = 0
        self.late_max_ms = 0.0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, name=f"gen-{system}", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        stdout = self.proc.proc.stdout
        assert stdout is not None
        for raw in stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            ev = msg.get("event")
            with self.lock:
                if ev == "ready":
                    self.ready = msg
                elif ev == "progress":
                    self.last = msg
                    self.interval_done += msg["interval_done"]
                    self.interval_ok += msg["interval_ok"]
                    self.interval_sent += msg["interval_sent"]
                    self.late_max_ms = max(self.late_max_ms, msg["late_max_ms"])
                elif ev == "done":
                    self.summary = msg

    def take_interval(self) -> tuple[int, int, int, float]:
        with self.lock:
            out = (self.interval_sent, self.interval_done, self.interval_ok, self.late_max_ms)
            self.interval_done = self.interval_ok = self.interval_sent = 0
            self.late_max_ms = 0.0
        return out

    def start(self, t0: float) -> None:
        stdin = self.proc.proc.stdin
        assert stdin is not None
        stdin.write(f"start {t0!r}\n".encode())
        stdin.flush()


class FaultPlayer:
    """Applies the schedule's windows at their times (relative to T0) on worker threads."""

    def __init__(self, lab: ChaosLab, windows: list[Window], t0: float) -> None:
        self.lab = lab
        self.t0 = t0
        self.log: list[dict[str, Any]] = []
        self.restarts: dict[str, dict[str, Any]] = {}
        self.metrics: list[dict[str, Any]] = []
        self.pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="fault")
        self.futures: list[Future[None]] = []
        # (time, phase, window): at one instant the previous fault ends, then netkit's metrics are
        # read, then the next fault starts
        self.events: list[tuple[float, int, int, Callable[[], None]]] = []
        for n, w in enumerate(windows):
            if w.is_fault:
                self.events.append((w.start, 2, n, self._action(w, True)))
                self.events.append((w.end, 0, n, self._action(w, False)))
            self.events.append((w.start, 1, n, self._snapshot(w.label, "start")))
        self.events.append((windows[-1].end, 1, len(windows), self._snapshot("end of run", "end")))
        self.events.sort(key=lambda e: (e[0], e[1], e[2]))
        self.next = 0
        self.lock = threading.Lock()

    def _record(
        self, what: str, due: float, started: float, result: Any = None, error: str | None = None
    ) -> None:
        entry: dict[str, Any] = {
            "t": round(started - self.t0, 3),
            "scheduled": round(due, 3),
            "lag_ms": round((started - self.t0 - due) * 1000, 1),
            "action": what,
            "took_s": round(time.monotonic() - started, 3),
        }
        if result is not None:
            entry["result"] = result
        if error is not None:
            entry["error"] = error
        with self.lock:
            self.log.append(entry)

    def _proxy(self, targets: list[str], command: str) -> dict[str, Any]:
        return {t: proxy_command(self.lab.proxy_ctl[t], command) for t in targets}

    def _action(self, w: Window, begin: bool) -> Callable[[], None]:
        lab = self.lab
        label = f"{'start' if begin else 'end'} {w.label}"
        target = w.target or ""
        due = w.start if begin else w.end

        def run() -> None:
            started = time.monotonic()
            try:
                result: Any = None
                if w.kind == "kill":
                    if begin:
                        pid = lab.resolvers[target].pid
                        lab.resolvers[target].kill()
                        result = {"sigkill_pid": pid}
                    else:
                        result = {"restarted_pid": lab.resolvers[target].start().pid}
                elif w.kind == "stop":
                    if begin:
                        lab.resolvers[target].pause()
                        result = {"sigstop_pid": lab.resolvers[target].pid}
                    else:
                        lab.resolvers[target].resume()
                        result = {"sigcont_pid": lab.resolvers[target].pid}
                elif w.kind in ("loss", "delay"):
                    result = self._proxy([target], f"{w.kind} {w.param:g}" if begin else "pass")
                elif w.kind in ("servfail", "garbage"):
                    result = self._proxy([target], w.kind if begin else "pass")
                elif w.kind == "all_down":
                    result = self._proxy(list(UPSTREAM_NAMES), "blackhole" if begin else "pass")
                elif w.kind == "loss_all":
                    result = self._proxy(list(UPSTREAM_NAMES), f"replyloss {w.param:g}" if begin else "pass")
                elif w.kind in ("cache_restart", "upgrade", "crash_restart") and begin:
                    result = self._restart_all(w.kind)
                self._record(label, due, started, result)
            except Exception as e:
                self._record(label, due, started, error=f"{type(e).__name__}: {e}")

        return run

    def _restart_all(self, how: str) -> dict[str, Any]:
        """Restart every cache at the same moment (one thread each), the way ``how`` says."""
        out: dict[str, Any] = {}

        def one(system: str) -> None:
            try:
                out[system] = self.lab.restart_cache(system, how)
            except Exception as e:
                out[system] = {"error": f"{type(e).__name__}: {e}"}

        threads = [threading.Thread(target=one, args=(s,)) for s in self.lab.systems]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for system, info in out.items():
            self.restarts.setdefault(system, {})[how] = info
        return out

    def _snapshot(self, label: str, edge: str) -> Callable[[], None]:
        def run() -> None:
            cache = self.lab.caches.get("netkit")
            if not isinstance(cache, NsNetkit):
                return
            t = time.monotonic() - self.t0
            try:
                m = cache.metrics()
            except Exception as e:
                m = {"error": f"{type(e).__name__}: {e}"}  # type: ignore[dict-item]
            with self.lock:
                self.metrics.append({"t": round(t, 3), "window": label, "edge": edge, "metrics": m})

        return run

    def due(self, now: float) -> None:
        while self.next < len(self.events) and self.t0 + self.events[self.next][0] <= now:
            fn = self.events[self.next][3]
            self.futures.append(self.pool.submit(fn))
            self.next += 1

    def next_time(self) -> float:
        if self.next < len(self.events):
            return self.t0 + self.events[self.next][0]
        return float("inf")

    def current(self, windows: list[Window], now: float) -> Window:
        t = now - self.t0
        for w in windows:
            if w.start <= t < w.end:
                return w
        return windows[-1]

    def finish(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for f in self.futures:
            f.exception(timeout=max(0.1, deadline - time.monotonic()))
        self.pool.shutdown(wait=False, cancel_futures=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signal.Signals(signum).name}")


def run(opts: Options) -> int:
    """The whole run; returns the exit status (0 ok, 3 harness self-check failed)."""
    windows = build_schedule(opts.duration, opts.seed)
    total = round(opts.qps * opts.duration)
    _log(f"workload: {total} queries per system, seed {opts.seed}")
    stream = build_stream(total, opts.mix, opts.seed)
    names = build_names(opts.mix, stream.n_cold)
    zones = make_zones(zone_records(names, opts.mix))
    digest = stream.digest()
    del stream
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "records").mkdir(exist_ok=True)

    rid = new_run_id()
    rundir = make_run_dir(rid)
    lab = ChaosLab(rid, rundir, opts.systems, _log)
    handlers = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    interrupted: str | None = None
    cleanup_problems: list[str] = []
    leftovers: list[int] = []
    status = 1
    try:
        lab.build_network()
        _log(f"run {rid}: namespaces {', '.join(lab.created)}; files in {rundir}")
        _log(f"upstreams: NSD + Knot ({len(names)} names, 2 zones), 3 Unbound resolvers")
        lab.start_upstreams(zones)
        lab.start_proxies(opts.seed)
        _log(f"caches under test: {', '.join(opts.systems)} on 169.254.20.10:53 in their own namespaces")
        lab.start_caches()
        problems = lab.probe_caches("www0.example.test.")
        problems.update(lab.probe_caches("svc0.ns0.svc.cluster.local."))
        if problems:
            raise RuntimeError(f"caches do not answer before the run: {problems}")
        gens: dict[str, GenReader] = {}
        for s in opts.systems:
            spec = {
                "system": s,
                "server": ["169.254.20.10", 53],
                "qps": opts.qps,
                "duration": opts.duration,
                "seed": opts.seed,
                "mix": opts.mix.to_dict(),
                "deadline": opts.deadline,
                "sockets": opts.sockets,
                "out": str(rundir / f"records-{s}.bin"),
            }
            path = rundir / f"loadgen-{s}.json"
            path.write_text(json.dumps(spec))
            argv = [sys.executable, "-m", "labs.chaos.loadgen", str(path)]
            gens[s] = GenReader(s, lab.spawn(f"loadgen-{s}", lab.ns_node[s], argv, pipe=True))
        deadline = time.monotonic() + 120
        while not all(g.ready for g in gens.values()):
            for g in gens.values():
                if not g.proc.running():
                    raise RuntimeError(
                        f"load generator {g.system} exited early:\n" + g.proc.log.read_text()[-2000:]
                    )
            if time.monotonic() > deadline:
                raise RuntimeError("load generators not ready after 120 s")
            time.sleep(0.05)
        digests = {s: g.ready["stream_digest"] for s, g in gens.items() if g.ready}
        if set(digests.values()) != {digest}:
            raise RuntimeError(f"load generators built different streams: {digests} (expected {digest})")
        t0 = time.monotonic() + 1.0
        for g in gens.values():
            g.start(t0)
        player = FaultPlayer(lab, windows, t0)
        _log(f"running {opts.duration:g} s at {opts.qps:g} QPS per system; {len(windows)} windows")
        next_progress = t0 + opts.progress_every
        end = t0 + opts.duration + opts.deadline + 60
        while time.monotonic() < end:
            now = time.monotonic()
            player.due(now)
            if all(g.summary is not None or not g.proc.running() for g in gens.values()):
                break
            if now >= next_progress:
                _progress(now - t0, opts, player.current(windows, now), gens)
                next_progress += opts.progress_every
            # wake up for the next fault on time (a few ms matter: see the self-check)
            time.sleep(max(0.0, min(0.05, player.next_time() - time.monotonic())))
        player.due(time.monotonic() + 3600)  # the end-of-run snapshot
        player.finish()
        for g in gens.values():
            g.proc.proc.wait(30)
            g.thread.join(5)
        missing = [s for s, g in gens.items() if g.summary is None]
        if missing:
            raise RuntimeError(f"load generators did not finish: {missing}")
        proxy_stats = {n: proxy_command(c, "stats") for n, c in lab.proxy_ctl.items()}

        _log("scoring")
        scores: dict[str, Score] = {}
        for s in opts.systems:
            src = rundir / f"records-{s}.bin"
            rec = read_records(src)
            scores[s] = score(
                rec.t_send, rec.status, rec.latency, rec.cls, windows, opts.deadline, keys=rec.key
            )
            shutil.move(str(src), opts.out / "records" / f"{s}.bin")
        hproblems = harness_problems(scores, windows, total)
        for s, g in gens.items():
            text = g.proc.log.read_text(errors="replace")
            if "Traceback" in text or "Error" in text:
                hproblems.append(f"load generator {s} logged errors: {text.strip().splitlines()[-1][:200]}")
        late = [f for f in player.log if f.get("lag_ms", 0) > 50 or "error" in f]
        hproblems += [f"fault action {f['action']!r} late by {f['lag_ms']} ms or failed: {f.get('error')}"
                      for f in late]  # fmt: skip
        results = report.build_results(
            opts=opts,
            run_id=rid,
            windows=windows,
            scores=scores,
            generators={s: g.summary or {} for s, g in gens.items()},
            stream_digest=digest,
            faults=sorted(player.log, key=lambda e: e["t"]),
            restarts=player.restarts,
            netkit_metrics=player.metrics,
            proxies=proxy_stats,
            harness_problems=hproblems,
            names=len(names),
        )
        report.write_all(results, scores, windows, opts.out, plots=opts.plots)
        print(report.terminal_table(results))
        for p in hproblems:
            _log(f"HARNESS PROBLEM: {p}")
        status = 3 if hproblems else 0
    except (KeyboardInterrupt, Interrupted) as e:
        interrupted = str(e) or "Ctrl-C"
        _log(f"interrupted ({interrupted}): cleaning up")
        status = 130
    finally:
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            cleanup_problems = lab.cleanup()
            lab.collect_logs(opts.out / "logs")
            leftovers = lab.leftover_processes()
            shutil.rmtree(rundir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old_int)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        for p in cleanup_problems:
            _log(f"cleanup: {p}")
        if leftovers:
            _log(f"cleanup: processes left: {leftovers}")
        _log(f"run {rid}: namespaces and processes removed" if not (cleanup_problems or leftovers)
             else f"run {rid}: cleanup incomplete")  # fmt: skip
        cleanup_file = opts.out / "cleanup.json"
        cleanup_file.write_text(
            json.dumps({"run_id": rid, "problems": cleanup_problems, "leftover_pids": leftovers,
                        "interrupted": interrupted}, indent=1) + "\n"
        )  # fmt: skip
    return status


def _progress(t: float, opts: Options, w: Window, gens: dict[str, GenReader]) -> None:
    parts = []
    rates = []
    late = 0.0
    for s, g in gens.items():
        sent, done, ok, lm = g.take_interval()
        avail = f"{100.0 * ok / done:8.3f}%" if done else "     -   "
        parts.append(f"{s} {avail}")
        rates.append(sent / opts.progress_every)
        late = max(late, lm)
    rate = "/".join(f"{r:.0f}" for r in rates)
    print(
        f"[{min(t, opts.duration):6.0f}/{opts.duration:.0f} s] {w.label:<22} "
        + "  ".join(parts)
        + f"  | sent {rate} q/s, late max {late:.1f} ms",
        file=sys.stderr,
        flush=True,
    )


def require_root() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, port 53): run as root"
    return None
