"""CNI attach/detach time: ``netkit-cni`` vs the reference ``bridge`` plugin, side by side.

    .venv/bin/python benchmarks/cni_attach.py [--pods 200] [--out DIR]

One lab node (a network namespace) whose L2Network ``blue`` the agent's own reconcile builds;
``--pods`` empty pod namespaces. Each pod is attached three times, interleaved so every plugin
sees the same machine load: with the Python ``netkit-cni`` run directly, with the node-side shim
(``netkit/cni/shim.c``, compiled here) whose calls an agent's ``CniServer`` in this process runs,
both to ``blue``'s bridge, and with Debian's ``bridge`` plugin (to a bridge of its own), all with
``host-local`` IPAM, each invoked as a runtime invokes it (``ip netns exec NODE plugin``, environment and
configuration on stdin); then every attachment is deleted the same way. Reported per plugin and
command: median, p95 and mean wall time per invocation (process start included: what a runtime
waits for), and netkit's median as a multiple of the bridge plugin's.

Output in --out (default benchmarks/results/): cni_attach.txt, .json, .png. Everything carries a
per-run prefix and is removed at the end, also on an error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from results_io import save_results

from labs.l2lab import L2Lab
from netkit.base.netns import netns_exec
from netkit.cni.server import CniServer
from netkit.l2.agent import reconcile_once
from netkit.l2.core.model import load_networks
from netkit.l2.kernel import Kernel

PLUGINS = {
    "netkit-cni": str(Path(sys.prefix) / "bin" / "netkit-cni"),  # the Python plugin, run directly
    "netkit shim": "",  # the deployed path: the static shim, the call served by an agent's CniServer
    "bridge": "/usr/lib/cni/bridge",
}
SHIM_SOURCE = Path(__file__).resolve().parents[1] / "netkit" / "cni" / "shim.c"


def invoke(
    node_ns: str,
    plugin: str,
    command: str,
    conf: dict[str, Any],
    cid: str,
    netns: str,
    ifname: str,
    extra: dict[str, str] | None = None,
) -> float:
    env = {
        **(extra or {}),
        "PATH": os.environ["PATH"],
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": "/usr/lib/cni",
    }
    t = time.perf_counter()
    done = subprocess.run(
        netns_exec(node_ns, [plugin]),
        input=json.dumps(conf).encode(),
        env=env,
        capture_output=True,
        timeout=60,
    )
    took = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{plugin} {command} {cid}: {done.stdout.decode()} {done.stderr.decode()}")
    return took


def stats(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {
        "median_ms": statistics.median(s) * 1000,
        "p95_ms": s[max(0, int(len(s) * 0.95) - 1)] * 1000,
        "mean_ms": statistics.fmean(s) * 1000,
    }


def run(pods: int, work: Path) -> dict[str, Any]:
    times: dict[str, dict[str, list[float]]] = {p: {"ADD": [], "DEL": []} for p in PLUGINS}
    with L2Lab(nodes=1) as lab:
        node = lab.ns("n1")
        nets = [{"name": "blue", "kind": "vxlan", "vni": 100, "members": {"n1": lab.vtep["n1"]}}]
        with Kernel(node) as k:
            reconcile_once(k, load_networks(yaml.safe_dump({"networks": nets})), "n1")
        range_ = [[{"subnet": "10.96.0.0/16"}]]
        confs = {
            "netkit-cni": {
                "cniVersion": "1.0.0",
                "name": "blue",
                "type": "netkit-cni",
                "stateDir": str(work / "state"),
                "ipam": {"type": "host-local", "dataDir": str(work / "ipam-nk"), "ranges": range_},
            },
            "bridge": {
                "cniVersion": "1.0.0",
                "name": "reference",
                "type": "bridge",
                "bridge": f"{lab.run_id}-rbr",
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(work / "ipam-ref"),
                    "ranges": [[{"subnet": "10.97.0.0/16"}]],
                },
            },
        }
        shim_ipam = {
            "type": "host-local",
            "dataDir": str(work / "ipam-shim"),
            "ranges": [[{"subnet": "10.95.0.0/16"}]],
        }
        confs["netkit shim"] = {**confs["netkit-cni"], "ipam": shim_ipam}
        ifnames = {"netkit-cni": "eth0", "netkit shim": "net2", "bridge": "net1"}
        shim = work / "netkit-cni-shim"
        subprocess.run(["cc", "-O2", "-static", "-o", str(shim), str(SHIM_SOURCE)], check=True)
        plugins = {**PLUGINS, "netkit shim": str(shim)}
        server = CniServer(str(work / "cni.sock"), node).start()
        extra = {"netkit shim": {"NETKIT_CNI_SOCKET": str(work / "cni.sock")}}
        boxes = [lab.add_sandbox(f"p{i}") for i in range(pods)]
        try:
            for command in ("ADD", "DEL"):
                for i, box in enumerate(boxes):
                    for name, plugin in plugins.items():
                        took = invoke(
                            node, plugin, command, confs[name], f"c{i}", box, ifnames[name], extra.get(name)
                        )
                        times[name][command].append(took)
                    if (i + 1) % 20 == 0:
                        print(f"  {command} {i + 1}/{pods}", flush=True)
        finally:
            server.stop()
    out: dict[str, Any] = {
        "pods": pods,
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "plugins": {p: {c: stats(v) for c, v in t.items()} for p, t in times.items()},
        "raw_ms": {p: {c: [x * 1000 for x in v] for c, v in t.items()} for p, t in times.items()},
    }
    out["ratio"] = {
        f"{p} {c}": out["plugins"][p][c]["median_ms"] / out["plugins"]["bridge"][c]["median_ms"]
        for p in ("netkit-cni", "netkit shim")
        for c in ("ADD", "DEL")
    }
    return out


def table(r: dict[str, Any]) -> str:
    lines = [
        f"CNI attach/detach, {r['pods']} pods, {r['machine']['cpus']} CPUs, kernel {r['machine']['kernel']}"
    ]
    lines.append(f"{'plugin':<12} {'cmd':<4} {'median ms':>10} {'p95 ms':>8} {'mean ms':>8}")
    for p, cmds in r["plugins"].items():
        for c, s in cmds.items():
            lines.append(f"{p:<12} {c:<4} {s['median_ms']:>10.1f} {s['p95_ms']:>8.1f} {s['mean_ms']:>8.1f}")
    for p in ("netkit-cni", "netkit shim"):
        lines.append(
            f"{p} / bridge (median): ADD {r['ratio'][p + ' ADD']:.1f}x, DEL {r['ratio'][p + ' DEL']:.1f}x"
        )
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, c in zip(axes, ("ADD", "DEL"), strict=True):
        data = [r["raw_ms"][p][c] for p in PLUGINS]
        ax.boxplot(data, tick_labels=list(PLUGINS), showfliers=True)
        ax.set_title(f"{c}: wall time per invocation ({r['pods']} pods)")
        ax.set_ylabel("ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("cni_attach: needs root (network namespaces)", file=sys.stderr)
        return 2
    for name, plugin in PLUGINS.items():
        if plugin and not os.access(plugin, os.X_OK):
            print(f"cni_attach: {plugin} missing ({name}): run make setup", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="nk-cni-bench-") as work:
        r = run(args.pods, Path(work))
    text = table(r)
    print(text)
    save_results(args.out, "cni_attach", text, r, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
