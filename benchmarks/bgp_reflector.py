"""Route reflector benchmark: BIRD, GoBGP and the netkit reflector in the same lab, in one run.

    .venv/bin/python benchmarks/bgp_reflector.py [--sizes 10000,100000] [--repeat 3]
                                                 [--systems bird,gobgp,netkit] [--out DIR]

Lab (one fresh L2Lab of three namespaces per system and size, all configs from the planner's
``speaker_configs``): n1 is a BIRD client announcing N /32s (a static protocol), n3 a BIRD
client receiving, n2 the reflector: BIRD 2 (``rr client``), GoBGP (``route-reflector-client``)
or ``netkit bgp reflector`` (ExaBGP 4.2.25 + the API process, wire API), each with both
clients. Per cycle: the sender's static protocol is enabled (t0); **announce** is the time until
the receiver's BGP table holds all N; then it is disabled; **withdraw** is the time until the
receiver holds none. The receiver is polled on its control socket (a persistent connection,
every ~2 ms). Reflector **CPU** is user+system time of every reflector process over a cycle;
**RSS** is their resident memory with the table loaded, and its growth over idle per 100,000
prefixes; **idle CPU** is their CPU use over 3 s with the sessions up and nothing to do. Each
figure is the median of ``--repeat`` cycles.

Targets (issue 7): netkit >= 1.0 x GoBGP's throughput (GoBGP's time / netkit's time) and within
5 x BIRD's (netkit's time / BIRD's time <= 5), at 10k and 100k prefixes.

Output in --out (default benchmarks/results/): bgp_reflector.txt (the table), .json (every
cycle), .png. Namespaces carry a per-run prefix and are deleted at the end, also on an error
or SIGTERM; daemons are stopped by the PIDs the lab started.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml
from results_io import save_results

from bgp.core.model import NodeInfo, Session, SpeakerConfig, Timers, speaker_configs
from bgp.core.render.bird import STATIC_PROTOCOLS
from bgp.core.render.exabgp import render_reflector_config
from bgp.reflector.exabgp_main import PINNED
from labs.bgpspeakers import BirdSpeaker, GoBgpSpeaker
from labs.dnspeers import live_group_members, require_binary
from labs.l2lab import L2Lab
from labs.reflector import NetkitReflector
from labs.runid import RunDir

ASN = 64512
FIRST = int(ipaddress.IPv4Address("198.18.16.0"))  # N /32s from here, clear of the nodes' /24
SYSTEMS = ("bird", "gobgp", "netkit")
TIMEOUT = 300.0
IDLE_S = 3.0  # idle CPU is measured over this long, sessions up and nothing to do


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BirdControl:
    """A persistent connection to a BIRD control socket (what birdc speaks), for fast polling."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.buf = b""
        self._reply()  # "0001 BIRD 2.0.12 ready."

    def _reply(self) -> str:
        lines = []
        while True:
            while b"\n" not in self.buf:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("BIRD closed its control socket")
                self.buf += data
            raw, self.buf = self.buf.split(b"\n", 1)
            text = raw.decode(errors="replace")
            lines.append(text)
            # "NNNN text" ends a reply, "NNNN-text" and " text" continue it
            if len(text) > 4 and text[:4].isdigit() and text[4] == " ":
                return "\n".join(lines)

    def query(self, command: str) -> str:
        self.sock.sendall(command.encode() + b"\n")
        return self._reply()

    def close(self) -> None:
        self.sock.close()


_COUNT = re.compile(r"(\d+) of \d+ routes")


def route_count(ctl: BirdControl, protocol: str) -> int:
    m = _COUNT.search(ctl.query(f"show route protocol {protocol} count"))
    return int(m.group(1)) if m else 0


def proc_stats(pids: list[int]) -> tuple[float, int]:
    """(user+system CPU seconds, RSS bytes) summed over ``pids`` (gone ones count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    cpu, rss = 0.0, 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / tick
        rss += int(fields[21]) * page
    return cpu, rss


def lab_configs(lab: L2Lab, n: int) -> dict[str, SpeakerConfig]:
    prefixes = tuple(f"{ipaddress.IPv4Address(FIRST + i)}/32" for i in range(n))
    nodes = [
        NodeInfo("n1", lab.vtep["n1"], ASN, lab.vtep["n1"], prefixes),
        NodeInfo("n2", lab.vtep["n2"], ASN, lab.vtep["n2"]),
        NodeInfo("n3", lab.vtep["n3"], ASN, lab.vtep["n3"]),
    ]
    sessions = [Session.rr("n2", "n1"), Session.rr("n2", "n3")]
    return speaker_configs(nodes, sessions, {"n2": lab.vtep["n2"]}, timers=Timers.lab(), install_routes=False)


def reflector_pids(kind: str, rr: Any) -> list[int]:
    if kind != "netkit":
        return list(rr.pids)
    pids = list(live_group_members(rr.pids[0])) if rr.pids else []  # launcher + ExaBGP
    api = rr._api_process()
    return pids + ([api] if api is not None else [])


def measure(kind: str, n: int, repeat: int, speed: float | None = None) -> dict[str, Any]:
    """One system at one size: a fresh lab, ``repeat`` announce/withdraw cycles."""
    with ExitStack() as stack:
        lab = stack.enter_context(L2Lab(nodes=3))
        workdir = stack.enter_context(RunDir(lab.run_id)).path
        cfgs = lab_configs(lab, n)
        sender = stack.enter_context(BirdSpeaker(lab.ns("n1"), workdir, cfgs["n1"], start_timeout=60))
        send_ctl = BirdControl(sender.ctl_path)
        stack.callback(send_ctl.close)
        static = STATIC_PROTOCOLS["ipv4"]
        send_ctl.query(f"disable {static}")  # before any session is up: nothing announced yet
        rr: Any
        if kind == "bird":
            rr = stack.enter_context(BirdSpeaker(lab.ns("n2"), workdir, cfgs["n2"]))
        elif kind == "gobgp":
            rr = stack.enter_context(GoBgpSpeaker(lab.ns("n2"), workdir, cfgs["n2"]))
        else:
            doc = yaml.safe_load(render_reflector_config(cfgs["n2"], metrics="198.18.0.2:9179"))
            if speed is not None:
                doc["exabgp"] = {"reactor_speed": speed}
            rr = NetkitReflector(lab.ns("n2"), workdir, yaml.safe_dump(doc))
            stack.callback(rr.stop)
            rr.start()
        receiver = stack.enter_context(BirdSpeaker(lab.ns("n3"), workdir, cfgs["n3"]))
        recv_ctl = BirdControl(receiver.ctl_path)
        stack.callback(recv_ctl.close)
        proto = cfgs["n3"].neighbors[0].ident
        for sp in (sender, receiver):
            sp.wait_established(timeout=30)
        rr.wait_established(timeout=30)
        time.sleep(1.0)  # let start-up work settle
        pids = reflector_pids(kind, rr)
        cpu_a, _ = proc_stats(pids)
        time.sleep(IDLE_S)
        cpu_b, rss_idle = proc_stats(pids)
        cycles = []
        for k in range(repeat):
            cpu0, _ = proc_stats(pids)
            t0 = time.perf_counter()
            send_ctl.query(f"enable {static}")
            while route_count(recv_ctl, proto) < n:
                if time.perf_counter() - t0 > TIMEOUT:
                    raise TimeoutError(f"{kind}: {n} prefixes not all received within {TIMEOUT} s")
                time.sleep(0.002)
            announce = time.perf_counter() - t0
            _, rss_loaded = proc_stats(pids)
            t1 = time.perf_counter()
            send_ctl.query(f"disable {static}")
            while route_count(recv_ctl, proto) > 0:
                if time.perf_counter() - t1 > TIMEOUT:
                    raise TimeoutError(f"{kind}: withdrawals not all received within {TIMEOUT} s")
                time.sleep(0.002)
            withdraw = time.perf_counter() - t1
            cpu1, _ = proc_stats(pids)
            cycles.append(
                {"announce": announce, "withdraw": withdraw, "cpu": cpu1 - cpu0, "rss_loaded": rss_loaded}
            )
            log(
                f"  {kind:>6} {n:>7}: cycle {k + 1}: announce {announce:.3f} s, withdraw {withdraw:.3f} s, "
                f"CPU {cpu1 - cpu0:.2f} s"
            )
            time.sleep(0.5)
        # the reflector still holds every session: nothing was reset along the way
        states = rr.sessions()
        if set(states.values()) != {"Established"}:
            raise RuntimeError(f"{kind}: sessions after the run: {states}")
    assert lab.leftovers() == []

    def med(key: str) -> float:
        return statistics.median(c[key] for c in cycles)

    rss_loaded = med("rss_loaded")
    return {
        "system": kind,
        "prefixes": n,
        "announce": med("announce"),
        "withdraw": med("withdraw"),
        "cpu": med("cpu"),
        "rss_idle": rss_idle,
        "idle_cpu": (cpu_b - cpu_a) / IDLE_S,
        "rss_loaded": rss_loaded,
        "rss_per_100k": (rss_loaded - rss_idle) / n * 100_000,
        "cycles": cycles,
    }


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        r = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else "?"

    return {
        "bird": first_line([require_binary("bird", "bird2"), "--version"]),
        "gobgpd": first_line([require_binary("gobgpd", "gobgpd"), "--version"]),
        "exabgp": PINNED,
        "python": platform.python_version(),
    }


def table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    mib = 1 << 20
    lines = [
        f"Route reflector benchmark ({result['host']}; load before {result['load_before']})",
        f"versions: {result['versions']}",
        "",
        "| prefixes | reflector | announce (s) | withdraw (s) | reflector CPU (s) | idle CPU "
        "| RSS loaded (MiB) | RSS per 100k (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['prefixes']:,} | {r['system']} | {r['announce']:.3f} | {r['withdraw']:.3f} "
            f"| {r['cpu']:.2f} | {100 * r['idle_cpu']:.1f} % "
            f"| {r['rss_loaded'] / mib:.1f} | {r['rss_per_100k'] / mib:.1f} |"
        )
    lines += [
        "",
        "| prefixes | phase | netkit vs GoBGP (throughput, target >= 1.0) "
        "| netkit vs BIRD (time, target <= 5.0) |",
        "|---:|---|---:|---:|",
    ]
    by = {(r["system"], r["prefixes"]): r for r in rows}
    verdicts = []
    for n in result["sizes"]:
        nk = by.get(("netkit", n))
        if nk is None:
            continue
        for phase in ("announce", "withdraw"):
            cells = []
            gb, bd = by.get(("gobgp", n)), by.get(("bird", n))
            if gb is not None:
                ratio = gb[phase] / nk[phase]
                ok = ratio >= 1.0
                verdicts.append(ok)
                cells.append(f"{ratio:.2f} x {'PASS' if ok else 'FAIL'}")
            else:
                cells.append("-")
            if bd is not None:
                ratio = nk[phase] / bd[phase]
                ok = ratio <= 5.0
                verdicts.append(ok)
                cells.append(f"{ratio:.2f} x {'PASS' if ok else 'FAIL'}")
            else:
                cells.append("-")
            lines.append(f"| {n:,} | {phase} | {cells[0]} | {cells[1]} |")
    lines += ["", f"median of {result['repeat']} cycles per row; {sum(verdicts)}/{len(verdicts)} targets met"]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = result["sizes"]
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in result["rows"])]
    by = {(r["system"], r["prefixes"]): r for r in result["rows"]}
    fig, axes = plt.subplots(1, len(sizes) + 1, figsize=(5 * (len(sizes) + 1), 4))
    colors = {"bird": "tab:green", "gobgp": "tab:orange", "netkit": "tab:blue"}
    for ax, n in zip(axes, sizes, strict=False):
        width = 0.8 / max(len(systems), 1)
        for k, s in enumerate(systems):
            r = by.get((s, n))
            if r is None:
                continue
            xs = [i + k * width for i in range(2)]
            ax.bar(xs, [r["announce"], r["withdraw"]], width, label=s, color=colors[s])
        ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(2)], ["announce", "withdraw"])
        ax.set_yscale("log")
        ax.set_ylabel("seconds until the receiver has it all (log)")
        ax.set_title(f"{n:,} prefixes")
        ax.legend(fontsize=8)
    ax = axes[-1]
    for s in systems:
        xs = [n for n in sizes if (s, n) in by]
        ax.plot(xs, [by[(s, n)]["rss_loaded"] / (1 << 20) for n in xs], marker="o", label=s, color=colors[s])
    ax.set_xscale("log")
    ax.set_xlabel("prefixes")
    ax.set_ylabel("reflector RSS with the table loaded (MiB)")
    ax.set_title("memory")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="prefix counts, comma-separated")
    ap.add_argument("--repeat", type=int, default=3, help="announce/withdraw cycles per system and size")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="subset of bird,gobgp,netkit")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument(
        "--netkit-speed",
        type=float,
        help="exabgp.reactor_speed for the netkit reflector (default: the config's)",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bgp_reflector: needs root (network namespaces)", file=sys.stderr)
        return 2
    sizes = [int(x) for x in args.sizes.split(",")]
    systems = [s for s in args.systems.split(",") if s]
    if not set(systems) <= set(SYSTEMS) or not sizes or min(sizes) < 1 or max(sizes) > 1_000_000:
        print(f"bgp_reflector: systems from {SYSTEMS}, sizes 1..1,000,000", file=sys.stderr)
        return 2
    for name, pkg in (("bird", "bird2"), ("gobgpd", "gobgpd"), ("gobgp", "gobgpd")):
        require_binary(name, pkg)

    main_pid = os.getpid()

    def on_term(signum: int, _frame: object) -> None:
        if os.getpid() != main_pid:
            os._exit(128 + signum)
        raise SystemExit(128 + signum)  # unwinds the labs' ExitStacks: daemons stopped, namespaces deleted

    signal.signal(signal.SIGTERM, on_term)
    result: dict[str, Any] = {
        "sizes": sizes,
        "repeat": args.repeat,
        "netkit_speed": args.netkit_speed,
        "host": f"{platform.node()}, Linux {platform.release()}, {os.cpu_count()} CPUs",
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "versions": versions(),
        "command": " ".join([".venv/bin/python", "benchmarks/bgp_reflector.py", *sys.argv[1:]]),
        "rows": [],
    }
    started = time.perf_counter()
    for n in sizes:
        for kind in systems:
            log(f"{kind}: {n:,} prefixes ...")
            result["rows"].append(measure(kind, n, args.repeat, args.netkit_speed))
    result["seconds"] = time.perf_counter() - started
    result["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = table(result)
    save_results(args.out, "bgp_reflector", text, result, plot)
    print(text)
    print(f"\n(command: {result['command']}; {result['seconds']:.0f} s; output in {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
