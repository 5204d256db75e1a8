"""Crash-restart: from exec to the first answer, netkit vs Unbound vs dnsmasq, side by side.

    .venv/bin/python benchmarks/dns_startup.py [--runs 15] [--out DIR]

What a node sees after its cache was SIGKILLed and started again: the time from exec of the
daemon to the first answered query. A client sends one query for a name it has not asked
before (a cache miss: the answer needs the upstream) every millisecond from the moment of exec;
the figure is when the first answer arrives. Each system is started ``--runs`` times, in turns
(netkit, unbound, dnsmasq, netkit, ...), each time on a fresh port in front of the same NSD on
127.0.0.1, then SIGKILLed. Reported: median, p90 and max per system, and netkit's median as a
ratio to each other system's. Results: ``dns_startup.{txt,json,png}`` in ``--out`` (default
``benchmarks/results/``).

netkit's start-up path: ``netkit dns serve`` imports only the dns plane's commands, binds its
listen sockets before it imports the resolver (queries wait in the socket queue, never meet a
closed port), then starts the event loop.

``netkit-keeper`` is the crash as deployed (``keeper: true``): the worker is SIGKILLed under the
keeper that holds its sockets, which forks a new one; the figure is from the SIGKILL to the first
answered miss, and no query meets a closed port.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dns.message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.results_io import save_results
from labs.dnspeers import Dnsmasq, NsdServer, UnboundForwarder, Zone, generate_zone, require_binary
from labs.runid import RunDir, free_port

SYSTEMS = ("netkit", "unbound", "dnsmasq", "netkit-keeper")


def zone() -> Zone:
    return generate_zone("example.test", 2000, seed=1, ttl=300, negative_ttl=60)


def command(system: str, port: int, upstream: tuple[str, int], workdir: Path) -> list[str]:
    """The daemon's foreground command line on 127.0.0.1:``port`` (configs written to ``workdir``)."""
    if system == "netkit":
        return [sys.executable, "-m", "netkit.cli", "dns", "serve", "--listen", f"127.0.0.1:{port}",
                "--upstream", f"{upstream[0]}:{upstream[1]}", "--log-level", "warning"]  # fmt: skip
    daemon: UnboundForwarder | Dnsmasq
    if system == "unbound":
        daemon = UnboundForwarder([upstream], ["."], ("127.0.0.1", port), workdir)
    else:
        daemon = Dnsmasq([upstream], ("127.0.0.1", port), workdir)
    daemon.workdir.mkdir(parents=True, exist_ok=True)
    daemon._write_config()
    return daemon._command(require_binary(daemon.binary))


def first_answer(argv: list[str], port: int, name: str, timeout: float = 10.0) -> float:
    """Seconds from exec to the first answer for ``name``, queried every millisecond."""
    query = dns.message.make_query(name, "A").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        start = time.monotonic()
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            while time.monotonic() - start < timeout:
                with_error = False
                try:
                    sock.sendto(query, ("127.0.0.1", port))
                except ConnectionRefusedError:  # the ICMP of an earlier query: not listening yet
                    with_error = True
                time.sleep(0.001)
                try:
                    sock.recv(4096)
                    return time.monotonic() - start
                except (BlockingIOError, ConnectionRefusedError):
                    pass
                if proc.poll() is not None and not with_error:
                    raise RuntimeError(f"{argv[0]} exited with status {proc.returncode}")
            raise RuntimeError(f"no answer within {timeout} s: {' '.join(argv)}")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # a crash: nothing saved, nothing drained
            proc.wait()


def worker_pid(control: Path) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(str(control))
        conn.sendall(b'{"cmd": "status"}\n')
        return int(json.loads(conn.makefile("rb").readline())["pid"])


class Keeper:
    """A ``netkit dns serve --keeper true`` whose worker is killed."""

    def __init__(self, upstream: tuple[str, int], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.control = workdir / "keeper.ctl"
        argv = [*command("netkit", self.port, upstream, workdir), "--keeper", "true",
                "--control", str(self.control)]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 15
        while not self.control.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("netkit --keeper did not start")
            time.sleep(0.01)

    def crash_to_answer(self, name: str, timeout: float = 10.0) -> float:
        """Seconds from SIGKILL of the worker to the first answer for ``name``."""
        query = dns.message.make_query(name, "A").to_wire()
        old = worker_pid(self.control)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            start = time.monotonic()
            os.kill(old, signal.SIGKILL)
            while time.monotonic() - start < timeout:
                sock.sendto(query, ("127.0.0.1", self.port))  # never refused: the keeper holds it
                time.sleep(0.001)
                try:
                    sock.recv(4096)
                    return time.monotonic() - start
                except BlockingIOError:
                    pass
        raise RuntimeError(f"no answer within {timeout} s after killing worker {old}")

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def run(runs: int, systems: tuple[str, ...]) -> dict[str, Any]:
    times: dict[str, list[float]] = {s: [] for s in systems}
    with RunDir() as rd, NsdServer([zone()], workdir=rd.path) as nsd:
        for i in range(runs):
            for system in systems:
                name = f"h{i * len(systems) + systems.index(system)}.example.test"
                if system == "netkit-keeper":
                    # a keeper of its own each time: more than 5 deaths in 30 s end a keeper
                    keeper = Keeper(nsd.address, rd.path / f"{system}-{i}")
                    try:
                        t = keeper.crash_to_answer(name)
                    finally:
                        keeper.close()
                else:
                    port = free_port()
                    argv = command(system, port, nsd.address, rd.path / f"{system}-{i}")
                    t = first_answer(argv, port, name)
                times[system].append(t)
                print(f"[{i + 1}/{runs}] {system:<14} {t * 1000:7.1f} ms", file=sys.stderr, flush=True)
                print(f"[{i + 1}/{runs}] {system:<8} {t * 1000:7.1f} ms", file=sys.stderr, flush=True)
    summary = {
        s: {
            "median_ms": statistics.median(v) * 1000,
            "p90_ms": sorted(v)[max(0, int(0.9 * len(v)) - 1)] * 1000,
            "max_ms": max(v) * 1000,
            "runs_ms": [round(x * 1000, 2) for x in v],
        }
        for s, v in times.items()
    }
    ratios = {
        f"{n}/{s}": summary[n]["median_ms"] / summary[s]["median_ms"]
        for n in ("netkit", "netkit-keeper")
        for s in ("unbound", "dnsmasq")
        if n in summary and s in summary
    }
    return {"runs": runs, "systems": summary, "ratios_of_medians": ratios}


def table(r: dict[str, Any]) -> str:
    lines = [
        f"exec to first answered miss, {r['runs']} runs each (ms)",
        f"{'system':<15}{'median':>9}{'p90':>9}{'max':>9}",
    ]
    for s, v in r["systems"].items():
        lines.append(f"{s:<15}{v['median_ms']:>9.1f}{v['p90_ms']:>9.1f}{v['max_ms']:>9.1f}")
    if "netkit-keeper" in r["systems"]:
        lines.append("netkit-keeper: from SIGKILL of the worker; its queries wait, none is refused")
    lines += [f"{k}: {v:.2f}" for k, v in r["ratios_of_medians"].items()]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(r["systems"])
    ax.boxplot([r["systems"][s]["runs_ms"] for s in names], tick_labels=names)
    ax.set_ylabel("exec (keeper: SIGKILL) to first answer, ms")
    ax.set_title("crash-restart: SIGKILL to the first answered miss")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    r = run(args.runs, tuple(args.systems.split(",")))
    text = table(r)
    print(text)
    save_results(args.out, "dns_startup", text, r, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
