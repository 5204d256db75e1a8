"""L2 agent reconcile benchmark: 1,000 VXLAN networks x 50 remote VTEPs on one node.

    .venv/bin/python benchmarks/l2_reconcile.py [--networks 1000] [--vteps 50] [--out DIR]

In a fresh network namespace (an underlay veth with 198.18.0.1/24), measured, not modelled:

1. **converge**: from empty to 1,000 bridges + 1,000 VXLAN devices + 50,000 head-end
   replication FDB entries (plus the bridges' IPv4 settings and the underlay filter), with the
   agent's own code: ``Kernel.read`` -> ``plan`` -> ``Kernel.apply`` -> underlay filter;
2. **no-op reconcile** of the converged node: the first round right after converging (it
   re-reads every table its own 56,000 writes announced), then a steady one (nothing announced
   since), then one with a forced full read (what the periodic resync does); writes must be 0;
3. **drift repair**: the agent runs (netlink monitor, debounce, reconcile loop) while all
   50,000 FDB entries are deleted with ``bridge -batch``; the time from the end of that flush
   until the agent's round that re-added them has finished (and a full read confirms the node
   matches again).

Side by side in the same run, in a second fresh namespace: iproute2's batch mode applying the
same objects (``ip -batch``: links with MTU, MAC, alias, addrgenmode, up; ``bridge -batch``:
the FDB entries; ``sysctl -p``: the bridges' arp_ignore/rp_filter; ``nft -f``: the same filter
table). Targets: converge <= 10 s and >= 0.5 x the baseline's speed (netkit's time <= 2 x the
baseline's), no-op 0 writes and <= 0.5 s, drift repaired <= 1 s.

Output in --out (default benchmarks/results/): l2_reconcile.txt (the table), .json, .png.
Namespaces carry a per-run prefix and are deleted at the end, also on an error or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from results_io import save_results

from labs.runid import new_run_id
from netkit.l2 import filter as underlay
from netkit.l2.agent import Agent, L2Metrics, ensure_filter, filter_text, reconcile_once
from netkit.l2.core.model import L2Network, parse_networks
from netkit.l2.core.plan import plan
from netkit.l2.kernel import Kernel

LOCAL = "198.18.0.1"


def sh(*args: str, stdin: str | None = None) -> float:
    """Run a command; its wall time."""
    t = time.perf_counter()
    subprocess.run(args, input=stdin, text=True, check=True, capture_output=True)
    return time.perf_counter() - t


def make_node(ns: str, rid: str) -> str:
    """A namespace with an underlay veth (both ends inside) holding the VTEP address."""
    sh("ip", "netns", "add", ns)
    ul = f"{rid}-u1"
    sh("ip", "-n", ns, "link", "add", ul, "type", "veth", "peer", "name", f"{rid}-u2")
    sh("ip", "-n", ns, "addr", "add", f"{LOCAL}/24", "dev", ul)
    sh("ip", "-n", ns, "link", "set", ul, "up")
    sh("ip", "-n", ns, "link", "set", f"{rid}-u2", "up")
    return ul


def wait_rtnl_quiet(ns: str, rid: str, timeout: float = 120.0) -> float:
    """Wait until creating and deleting a veth pair in ``ns`` is quick three times in a row.

    Deleting a namespace with thousands of devices (a previous run, the other half of this
    one) makes the kernel unregister them in the background holding the rtnl lock for
    seconds; a measurement taken meanwhile would time that, not the tool. Returns the wait.
    """
    start = time.perf_counter()
    quick = 0
    while quick < 3 and time.perf_counter() - start < timeout:
        t = sh("ip", "-n", ns, "link", "add", f"{rid}-qa", "type", "veth", "peer", "name", f"{rid}-qb")
        t += sh("ip", "-n", ns, "link", "del", f"{rid}-qa")
        quick = quick + 1 if t < 0.05 else 0
        if quick < 3:
            time.sleep(0.1)
    return time.perf_counter() - start


def networks(n: int, vteps: int) -> list[L2Network]:
    members = {"n0": LOCAL, **{f"r{v:03d}": f"198.18.{1 + v // 250}.{v % 250 + 1}" for v in range(vteps)}}
    doc = {"networks": [{"name": f"net{i:04d}", "vni": 10000 + i, "members": members} for i in range(n)]}
    return parse_networks(doc)


# ------------------------------------------------------------------------------------------
# netkit
# ------------------------------------------------------------------------------------------


def netkit_run(ns: str, nets: list[L2Network]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Kernel(ns) as k:
        t0 = time.perf_counter()
        observed = k.read()
        t1 = time.perf_counter()
        pl = plan(nets, "n0", observed)
        t2 = time.perf_counter()
        result = k.apply(pl)
        t3 = time.perf_counter()
        filter_writes = ensure_filter(k, nets, "n0", pl)
        t4 = time.perf_counter()
        out["converge"] = {
            "seconds": t4 - t0,
            "read": t1 - t0,
            "plan": t2 - t1,
            "apply": t3 - t2,
            "filter": t4 - t3,
            "ops": len(pl.ops),
            "writes": result.writes,
            "writes_by_op": dict(result.writes_by_op),
            "filter_writes": filter_writes,
        }
        noop = {}
        for name, full in (("first", False), ("steady", False), ("full_read", True)):
            t = time.perf_counter()
            pl2, _, r2 = reconcile_once(k, nets, "n0", full=full)
            noop[name] = {
                "seconds": time.perf_counter() - t,
                "ops": len(pl2.ops),
                "writes": r2.writes,
                "filter_writes": r2.filter_writes,
                "tables_read": dict(k.table_reads),
            }
        out["noop"] = noop
        state = k.read(full=True)
        out["objects"] = {
            "links": sum(1 for lk in state.links.values() if lk.owner),
            "fdb": len(state.owned_fdb()),
        }
    out["repair"] = repair(ns, nets)
    return out


def repair(ns: str, nets: list[L2Network]) -> dict[str, Any]:
    """The agent running; every FDB entry deleted with bridge -batch; time until repaired."""
    agent = Agent(nets, "n0", ns, metrics=L2Metrics(), resync=3600.0)
    first = agent.start()
    if first.error:
        raise RuntimeError(first.error)
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    try:
        time.sleep(1.0)  # let the start round's own notifications pass
        settled = agent.rounds
        lines = [
            f"fdb del 00:00:00:00:00:00 dev {net.uplink} dst {vtep} self"
            for net in nets
            for _, vtep in net.remote_vteps("n0")
        ]
        with tempfile.NamedTemporaryFile("w", dir="/dev/shm", suffix=".batch") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            start = time.perf_counter()
            sh("bridge", "-n", ns, "-batch", f.name)
            flushed = time.perf_counter()
        deadline = flushed + 30
        repaired = None
        rounds = []
        while time.perf_counter() < deadline:
            last = agent.last
            if agent.rounds > settled and last is not None and last is not (rounds[-1] if rounds else None):
                rounds.append(last)
            if sum(r.writes for r in rounds) >= len(lines) and rounds[-1].error is None:
                repaired = time.perf_counter()
                break
            time.sleep(0.002)
        with Kernel(ns) as k:
            left = plan(nets, "n0", k.read(full=True))
        return {
            "deleted": len(lines),
            "flush_seconds": flushed - start,
            "repaired_after_flush": None if repaired is None else repaired - flushed,
            "repaired_after_start": None if repaired is None else repaired - start,
            "rounds": [{"seconds": r.seconds, "writes": r.writes, "ops": len(r.plan.ops)} for r in rounds],
            "pending_after": len(left.ops),
        }
    finally:
        agent.stop()
        runner.join(10)
        agent.close()


# ------------------------------------------------------------------------------------------
# iproute2 batch mode
# ------------------------------------------------------------------------------------------


def baseline_run(ns: str, ul: str, nets: list[L2Network]) -> dict[str, Any]:
    """The same objects with iproute2's batch mode, sysctl and nft, from the agent's plan."""
    with Kernel(ns) as k:
        pl = plan(nets, "n0", k.read())
    links: list[str] = []
    fdb: list[str] = []
    sysctl: list[str] = []
    for net in nets:
        br, vx = net.bridge, net.uplink
        bridge_link = next(op.link for op in pl.ops if getattr(op, "link", None) and op.link.name == br)
        links.append(f"link add {br} mtu 1450 address {bridge_link.address} type bridge")
        links.append(f"link set {br} alias netkit:l2:{net.name} addrgenmode none up")
        links.append(
            f"link add {vx} mtu 1450 master {br} type vxlan id {net.segment} local {LOCAL} "
            f"dstport 4789 dev {ul} nolearning"
        )
        links.append(f"link set {vx} alias netkit:l2:{net.name} addrgenmode none up")
        sysctl.append(f"net.ipv4.conf.{br}.arp_ignore = 8")
        sysctl.append(f"net.ipv4.conf.{br}.rp_filter = 1")
        for _, vtep in net.remote_vteps("n0"):
            fdb.append(f"fdb append 00:00:00:00:00:00 dev {vx} dst {vtep} self permanent")
    text = filter_text(nets, "n0", pl)
    assert text is not None
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        paths = {}
        for name, body in (("links", links), ("fdb", fdb), ("sysctl", sysctl)):
            paths[name] = Path(tmp) / name
            paths[name].write_text("\n".join(body) + "\n")
        t_links = sh("ip", "-n", ns, "-batch", str(paths["links"]))
        t_fdb = sh("bridge", "-n", ns, "-batch", str(paths["fdb"]))
        t_sysctl = sh("ip", "netns", "exec", ns, "sysctl", "-q", "-p", str(paths["sysctl"]))
        t_nft = sh("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=text)
        # the same repair, by hand: delete and re-add every FDB entry with bridge -batch
        dels = Path(tmp) / "del"
        dels.write_text(
            "\n".join(line.replace("fdb append", "fdb del").replace(" permanent", "") for line in fdb) + "\n"
        )
        sh("bridge", "-n", ns, "-batch", str(dels))
        t_readd = sh("bridge", "-n", ns, "-batch", str(paths["fdb"]))
    with Kernel(ns) as k:
        left = plan(nets, "n0", k.read(full=True))
    return {
        "links": t_links,
        "fdb": t_fdb,
        "sysctl": t_sysctl,
        "nft": t_nft,
        "seconds": t_links + t_fdb + t_sysctl + t_nft,
        "netlink_seconds": t_links + t_fdb,
        "lines": {"ip": len(links), "bridge": len(fdb), "sysctl": len(sysctl)},
        "fdb_readd": t_readd,
        "agent_plan_after": len(left.ops),  # what the agent would still change: 0 = same objects
    }


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def table(r: dict[str, Any]) -> str:
    nk, bl = r["netkit"], r["baseline"]
    c, noop, rep = nk["converge"], nk["noop"], nk["repair"]
    first, steady, full = noop["first"], noop["steady"], noop["full_read"]
    after = rep["repaired_after_flush"]
    phases = f"{c['read']:.2f} / {c['plan']:.2f} / {c['apply']:.2f} / {c['filter']:.2f} s"
    speed = bl["seconds"] / c["seconds"]
    nl_speed = bl["netlink_seconds"] / (c["read"] + c["plan"] + c["apply"])
    rows = [
        ("converge: netkit (read+plan+apply+filter)", f"{c['seconds']:.2f} s",
         f"<= 10 s; {c['writes']} netlink writes + {c['filter_writes']} nft", c["seconds"] <= 10),
        ("  read / plan / apply / filter", phases, f"{c['ops']} operations", None),
        ("converge: ip -batch + bridge -batch + sysctl + nft", f"{bl['seconds']:.2f} s",
         f"{bl['links']:.2f} + {bl['fdb']:.2f} + {bl['sysctl']:.2f} + {bl['nft']:.2f} s", None),
        ("speed vs batch baseline", f"{speed:.2f} x", ">= 0.5 x", speed >= 0.5),
        ("  netlink part only (links + FDB)", f"{nl_speed:.2f} x",
         f"netkit {c['read'] + c['plan'] + c['apply']:.2f} s vs {bl['netlink_seconds']:.2f} s", None),
        ("no-op reconcile, first after converge", f"{noop['first']['seconds']:.3f} s",
         f"<= 0.5 s, 0 writes (got {first['writes']}+{first['filter_writes']})",
         first["seconds"] <= 0.5 and first["writes"] == 0 and first["filter_writes"] == 0),
        ("no-op reconcile, steady", f"{noop['steady']['seconds']:.3f} s",
         f"<= 0.5 s, 0 writes (got {steady['writes']}+{steady['filter_writes']})",
         steady["seconds"] <= 0.5 and steady["writes"] == 0 and steady["filter_writes"] == 0),
        ("no-op reconcile, forced full read (resync)", f"{full['seconds']:.3f} s",
         f"0 writes (got {full['writes']}+{full['filter_writes']})",
         full["writes"] + full["filter_writes"] == 0),
        (f"drift: {rep['deleted']} FDB entries deleted (bridge -batch)", f"{rep['flush_seconds']:.2f} s", "",
         None),
        ("drift repaired, from the end of the flush",
         "n/a" if after is None else f"{after:.2f} s",
         f"<= 1 s; {len(rep['rounds'])} round(s), {rep['pending_after']} pending after",
         after is not None and after <= 1 and rep["pending_after"] == 0),
        ("  from the start of the flush",
         "n/a" if rep["repaired_after_start"] is None else f"{rep['repaired_after_start']:.2f} s", "", None),
        ("  same re-add with bridge -batch", f"{bl['fdb_readd']:.2f} s", "", None),
    ]  # fmt: skip
    w0 = max(len(x[0]) for x in rows)
    w1 = max(len(x[1]) for x in rows)
    lines = [
        f"L2 reconcile: {r['networks']} VXLAN networks x {r['vteps']} remote VTEPs "
        f"({nk['objects']['fdb']} FDB entries, {nk['objects']['links']} links) on one node",
        f"{r['host']}; load average before {r['load_before']}; waited for a quiet rtnl lock "
        f"{' / '.join(f'{w:.1f}' for w in r['rtnl_wait'])} s",
        "",
    ]
    for name, value, note, ok in rows:
        mark = "" if ok is None else ("PASS" if ok else "FAIL")
        lines.append(f"{name.ljust(w0)}  {value.rjust(w1)}  {mark:4}  {note}".rstrip())
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nk, bl = r["netkit"], r["baseline"]
    c = nk["converge"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    ax = axes[0]
    parts = [("read", c["read"]), ("plan", c["plan"]), ("apply", c["apply"]), ("filter", c["filter"])]
    bottom = 0.0
    for name, v in parts:
        ax.bar(["netkit"], [v], bottom=bottom, label=name)
        bottom += v
    bottom = 0.0
    for name, v in (("ip -batch", bl["links"]), ("bridge -batch", bl["fdb"]), ("sysctl", bl["sysctl"]),
                    ("nft", bl["nft"])):  # fmt: skip
        ax.bar(["iproute2 batch"], [v], bottom=bottom, label=name, hatch="//", alpha=0.7)
        bottom += v
    ax.axhline(2 * bl["seconds"], color="red", ls="--", lw=1, label="0.5 x baseline speed")
    ax.set_title(f"converge: {r['networks']} nets x {r['vteps']} VTEPs")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7)
    ax = axes[1]
    names = ["first", "steady", "full_read"]
    ax.bar(names, [nk["noop"][n]["seconds"] for n in names], color="tab:green")
    ax.axhline(0.5, color="red", ls="--", lw=1, label="target 0.5 s")
    ax.set_title("no-op reconcile (0 writes)")
    ax.legend(fontsize=7)
    ax = axes[2]
    rep = nk["repair"]
    vals = [rep["flush_seconds"], rep["repaired_after_flush"] or 0, bl["fdb_readd"]]
    ax.bar(["flush\n(bridge -batch)", "repaired\nafter flush", "re-add with\nbridge -batch"], vals,
           color=["grey", "tab:blue", "tab:orange"])  # fmt: skip
    ax.axhline(1.0, color="red", ls="--", lw=1, label="target 1 s")
    ax.set_title(f"drift: {rep['deleted']} FDB entries deleted")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", type=int, default=1000)
    ap.add_argument("--vteps", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("l2_reconcile: needs root (network namespaces)", file=sys.stderr)
        return 2
    if underlay.shutil.which("nft") is None:
        print("l2_reconcile: nft not found (Debian package nftables; make setup)", file=sys.stderr)
        return 2
    rid = new_run_id()
    created: list[str] = []
    main_pid = os.getpid()

    def on_term(signum: int, _frame: object) -> None:
        if os.getpid() != main_pid:
            os._exit(128 + signum)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        nets = networks(args.networks, args.vteps)
        load = os.getloadavg()
        result: dict[str, Any] = {
            "networks": args.networks,
            "vteps": args.vteps,
            "host": f"{platform.node()}, Linux {platform.release()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}",
            "load_before": " ".join(f"{x:.2f}" for x in load),
            "command": " ".join([".venv/bin/python", "benchmarks/l2_reconcile.py", *sys.argv[1:]]),
        }
        ns_b = f"{rid}-bl"
        created.append(ns_b)
        ul_b = make_node(ns_b, rid)
        result["rtnl_wait"] = [wait_rtnl_quiet(ns_b, rid)]
        print("baseline: iproute2 batch mode...", file=sys.stderr)
        result["baseline"] = baseline_run(ns_b, ul_b, nets)
        # kept until the end: deleting a namespace with 2,000 devices holds the rtnl lock for
        # seconds, and netkit's first dump would wait for it
        ns_a = f"{rid}-nk"
        created.append(ns_a)
        make_node(ns_a, rid)
        result["rtnl_wait"].append(wait_rtnl_quiet(ns_a, rid))
        print("netkit: converge, no-op, drift repair...", file=sys.stderr)
        result["netkit"] = netkit_run(ns_a, nets)
        result["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        if created:  # leave the kernel calm: the next run (or job) would time our teardown
            probe = f"{rid}-q"
            if (
                subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False).returncode
                == 0
            ):
                try:
                    wait_rtnl_quiet(probe, rid)
                finally:
                    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    text = table(result)
    save_results(args.out, "l2_reconcile", text, result, plot)
    print(text)
    print(f"\n(command: {result['command']}; output in {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
