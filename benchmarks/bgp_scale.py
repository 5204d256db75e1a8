#!/usr/bin/env python3
"""BGP control-plane scale: full iBGP mesh vs route reflectors, n = 10 ... 5,000 nodes.

    .venv/bin/python benchmarks/bgp_scale.py [--out DIR] [--no-lab] [--lab-peers 1,10,25,50]
                                             [--lab-prefixes 10,100,300] [--sizes 10,20,...]

Every figure in the output says where it comes from:

- **planned** (exact): the real planner (``bgp.core.planner.plan`` / ``mesh_plan``) run on generated
  inventories (3 zones, racks of about 20 nodes, 198.18.0.0/16 node addresses, one pod CIDR per
  node from 198.19.0.0/16: a /26 while 1,024 fit, else the longest that fits). Total sessions,
  most sessions on one client node, on one reflector, and the planning time. The full mesh is
  materialised up to 1,000 nodes and counted as n(n-1)/2 above (12.5 M sessions at 5,000).
  Topologies: ``mesh``; ``rr-k2`` = Policy(redundancy=2, reflectors_per_domain=1) (one reflector
  per zone, each client on 2); ``rr-k3`` = redundancy 3; ``hier`` = Policy(levels=2,
  failure_domain=rack, redundancy=2, top=TopPolicy(zone, 1)) (a leaf reflector per rack, clients
  on 2 leaves, leaves on 2 of 3 meshed top reflectors).
- **measured** (one lab run, real BIRD 2 in network namespaces on one bridge): one central BIRD
  that reflects for N BIRD clients (N from --lab-peers), each client announcing P prefixes (P from
  --lab-prefixes, plus one point N=10 x P=1000), no kernel FIB. For each (N, P), from a fresh
  central BIRD: VmRSS (/proc/PID/status), USS (smaps_rollup private pages), BIRD's own ``show
  memory`` total and the CPU time it spent (utime+stime from /proc/PID/stat) from "daemon up"
  until every client holds all N x P routes and the central CPU counter stands still. Linear least
  squares then gives the **fitted** constants: RSS = base + per_session x N + per_route x (paths
  in its RIB), and CPU = c0 + per_session x N + per_update x (routes received + routes sent).
- **modelled**: per topology and n, route propagation over the *planned* session graph (one
  route per node; RFC 4271 iBGP + RFC 4456 reflection, best path = shortest CLUSTER_LIST then
  lowest sender, as ``bgp.core.propagation``), counting every path each speaker accepts (its
  Adj-RIB-In) and every UPDATE sent when one pod CIDR changes. Exact for n <= 300; above, every
  reflector's route plus 40 sampled clients' routes (scaled up). Memory and CPU of the busiest
  reflector (for the mesh: any node) then come from the fitted constants. Modelled figures are
  estimates: BIRD packs many prefixes into one UPDATE during a bulk convergence, which the
  per-update CPU constant averages over; a single pod-CIDR change is one prefix per UPDATE.

``--no-lab`` skips the measurement and uses the default constants below (from a lab run on the
2-CPU development VM, BIRD 2.0.12); the output says so. Needs root, iproute2 and bird2 for the lab.

Output in --out (default benchmarks/results/): bgp_scale.txt (the markdown tables), bgp_scale.json
(everything) and bgp_scale.png (sessions, sessions per node, modelled memory and update fan-out).
Namespaces carry a per-run prefix (``nkXXXX-``) and are deleted, and every BIRD killed, at the
end, also on an error or SIGTERM. A full run takes about 2 minutes.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from results_io import save_results

from bgp.core.inventory import Inventory, Node, Policy, TopPolicy
from bgp.core.model import NodeInfo, Session, SessionKind, SpeakerConfig, Timers, speaker_configs
from bgp.core.planner import SessionPlan, mesh_plan, plan

SIZES = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
TOPOLOGIES = ("mesh", "rr-k2", "rr-k3", "hier")
POLICIES = {
    "rr-k2": Policy(redundancy=2, reflectors_per_domain=1),
    "rr-k3": Policy(redundancy=3, reflectors_per_domain=1),
    "hier": Policy(levels=2, failure_domain="rack", redundancy=2, top=TopPolicy("zone", 1)),
}
MESH_MATERIALISE_MAX = 1000  # above: n(n-1)/2 counted, not built
EXACT_MODEL_MAX = 300  # above: propagation from every reflector + a sample of clients
CLIENT_SAMPLE = 40
ASN = 64512

# Constants used with --no-lab (fitted from a lab run on the 2-CPU VM, BIRD 2.0.12; see README).
DEFAULT_CONSTANTS = {
    "mem_base_bytes": 4_650_000.0,
    "mem_per_session_bytes": 38_700.0,
    "mem_per_route_bytes": 248.0,
    "cpu_base_s": 0.0,
    "cpu_per_session_s": 0.0,
    "cpu_per_update_s": 3.0e-7,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# Planned: inventories and the real planner
# ------------------------------------------------------------------------------------------


def pod_prefix_len(n: int) -> int:
    """/26 per node while they fit in 198.19.0.0/16, else the longest prefix that does."""
    return max(26, 16 + math.ceil(math.log2(max(n, 2))))


def inventory(n: int, policy: Policy) -> Inventory:
    """n nodes, 3 zones, racks of ~20 (at least 3 racks), one pod CIDR each."""
    racks = max(3, math.ceil(n / 20))
    plen = pod_prefix_len(n)
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    pods = ipaddress.IPv4Network("198.19.0.0/16").subnets(new_prefix=plen)
    nodes = []
    for i in range(n):
        rack = i * racks // n
        addr = str(ipaddress.IPv4Address(base + i + 1))
        nodes.append(
            Node(
                name=f"node-{i:04d}",
                address=addr,
                router_id=addr,
                asn=ASN,
                labels={"zone": f"z{rack % 3}", "rack": f"r{rack:03d}"},
                prefixes=(str(next(pods)),),
            )
        )
    return Inventory(tuple(nodes), policy)


@dataclass
class Planned:
    n: int
    topology: str
    sessions: int
    reflectors: int
    top_reflectors: int
    max_client: int
    max_reflector: int  # level-1 (or only-level) reflectors; mesh: same as max_client
    max_top: int  # level-2 reflectors (hier only)
    plan_seconds: float
    materialised: bool
    plan: SessionPlan | None = field(default=None, repr=False)


def run_planner(n: int, topology: str) -> Planned:
    if topology == "mesh":
        if n > MESH_MATERIALISE_MAX:
            return Planned(n, "mesh", n * (n - 1) // 2, 0, 0, n - 1, n - 1, 0, 0.0, False)
        inv = inventory(n, Policy())
        t = time.perf_counter()
        p = mesh_plan(inv)
        dt = time.perf_counter() - t
        counts = p.per_node_counts()
        assert len(p.sessions) == n * (n - 1) // 2
        return Planned(
            n, "mesh", len(p.sessions), 0, 0, max(counts.values()), max(counts.values()), 0, dt, True
        )
    inv = inventory(n, POLICIES[topology])
    t = time.perf_counter()
    p = plan(inv)
    dt = time.perf_counter() - t
    counts = p.per_node_counts()
    leaf = [r for r, info in p.reflectors.items() if info.level == 1]
    top = [r for r, info in p.reflectors.items() if info.level == 2]
    clients = [c for name, c in counts.items() if name not in p.reflectors]
    return Planned(
        n,
        topology,
        len(p.sessions),
        len(p.reflectors),
        len(top),
        max(clients, default=0),
        max((counts[r] for r in leaf), default=0),
        max((counts[r] for r in top), default=0),
        dt,
        True,
        p,
    )


# ------------------------------------------------------------------------------------------
# Modelled: route propagation over the planned sessions
# ------------------------------------------------------------------------------------------


@dataclass
class Propagation:
    """Adj-RIB-In paths per node (all n routes) and UPDATEs for one route change."""

    paths_in: list[float]  # per node index, over every node's route (estimated above EXACT_MODEL_MAX)
    sent_per_change_max_reflector: float  # UPDATEs the busiest reflector sends for one client route
    total_per_change: float  # UPDATEs cluster-wide for one client route (mean over client origins)
    originator_sends: float  # UPDATEs the originating client sends
    full_table_sent: list[float]  # per node: UPDATEs sent if every route is announced once
    exact: bool


def _graph(p: SessionPlan, names: Sequence[str]) -> tuple[list[list[int]], list[set[int]]]:
    index = {name: i for i, name in enumerate(names)}
    nbrs: list[list[int]] = [[] for _ in names]
    clients: list[set[int]] = [set() for _ in names]
    for s in p.sessions:
        a, b = index[s.a], index[s.b]
        nbrs[a].append(b)
        nbrs[b].append(a)
        if s.kind is SessionKind.RR:
            clients[a].add(b)
    for lst in nbrs:
        lst.sort()
    return nbrs, clients


def _one_route(
    origin: int,
    nbrs: list[list[int]],
    clients: list[set[int]],
    weight: float,
    recv: list[float],
    sent: list[float],
) -> tuple[int, list[int]]:
    """Propagate ``origin``'s route (BFS = cluster-list length); add to recv/sent; (total, sent-by-node)."""
    path: dict[int, tuple[tuple[int, ...], int]] = {origin: ((), -1)}
    frontier = [origin]
    total = 0
    sent_here: dict[int, int] = {}
    while frontier:
        cand: dict[int, tuple[tuple[int, ...], int]] = {}
        for x in frontier:
            cl, sender = path[x]
            if sender == -1:
                targets: Sequence[int] | set[int] = nbrs[x]
                new_cl: tuple[int, ...] = ()
            elif not clients[x]:
                continue  # plain iBGP speaker: never re-advertises an iBGP route
            else:
                new_cl = (x, *cl)  # per-reflector cluster ids: the reflector's own identity
                targets = [z for z in nbrs[x] if z != sender] if sender in clients[x] else clients[x]
            count = 0
            for z in targets:
                if z == origin or z in new_cl:
                    continue  # ORIGINATOR_ID / CLUSTER_LIST loop: dropped on receipt
                count += 1
                recv[z] += weight
                if z not in path and (z not in cand or x < cand[z][1]):
                    cand[z] = (new_cl, x)
            if count:
                sent[x] += weight * count
                sent_here[x] = count
                total += count
        path.update(cand)
        frontier = sorted(cand)
    return total, [sent_here.get(i, 0) for i in range(len(nbrs))]


def model_propagation(p: SessionPlan, seed: int = 1) -> Propagation:
    names = sorted(p.nodes)
    nbrs, clients = _graph(p, names)
    refl = [i for i, name in enumerate(names) if name in p.reflectors]
    client_idx = [i for i, name in enumerate(names) if name not in p.reflectors]
    exact = len(names) <= EXACT_MODEL_MAX
    sample = client_idx if exact else sorted(random.Random(seed).sample(client_idx, CLIENT_SAMPLE))
    weight = len(client_idx) / max(len(sample), 1)
    recv = [0.0] * len(names)
    sent = [0.0] * len(names)
    totals: list[int] = []
    max_refl_sent: list[int] = []
    orig_sent: list[int] = []
    for o in refl:
        _one_route(o, nbrs, clients, 1.0, recv, sent)
    for o in sample:
        total, by_node = _one_route(o, nbrs, clients, weight, recv, sent)
        totals.append(total)
        max_refl_sent.append(max((by_node[r] for r in refl), default=0))
        orig_sent.append(by_node[o])
    mean = (lambda xs: sum(xs) / len(xs)) if sample else (lambda xs: 0.0)
    return Propagation(recv, max(max_refl_sent, default=0), mean(totals), mean(orig_sent), sent, exact)


@dataclass
class Modelled:
    n: int
    topology: str
    busiest: str  # what "busiest speaker" is: reflector level or mesh node
    busiest_sessions: int
    busiest_paths: float  # Adj-RIB-In paths at the busiest speaker
    client_paths: float  # mean Adj-RIB-In paths at a client
    originator_sends: float
    reflector_sends_per_change: float
    total_updates_per_change: float
    busiest_mem_bytes: float
    busiest_cpu_per_change_s: float
    busiest_full_table_cpu_s: float  # every route announced once (e.g. all nodes restarting)
    exact: bool


def model(pl: Planned, c: dict[str, float]) -> Modelled:
    n = pl.n
    if pl.topology == "mesh":
        s = n - 1
        paths = float(n - 1)
        mem = c["mem_base_bytes"] + s * c["mem_per_session_bytes"] + paths * c["mem_per_route_bytes"]
        # one change: the originator (the busiest node for it) sends n-1; every other node gets 1
        return Modelled(
            n, "mesh", "any node", s, paths, paths, float(n - 1), 0.0, float(n - 1), mem,
            (n - 1) * c["cpu_per_update_s"], (n - 1) * c["cpu_per_update_s"] * 2, True,
        )  # fmt: skip
    assert pl.plan is not None
    prop = model_propagation(pl.plan)
    names = sorted(pl.plan.nodes)
    counts = pl.plan.per_node_counts()
    best_i = max(
        (i for i, nm in enumerate(names) if nm in pl.plan.reflectors),
        key=lambda i: (
            prop.paths_in[i] * c["mem_per_route_bytes"] + counts[names[i]] * c["mem_per_session_bytes"]
        ),
    )
    best = names[best_i]
    level = pl.plan.reflectors[best].level
    kind = "top reflector" if level == 2 else ("leaf reflector" if pl.topology == "hier" else "reflector")
    cl = [prop.paths_in[i] for i, nm in enumerate(names) if nm not in pl.plan.reflectors]
    s = counts[best]
    mem = (
        c["mem_base_bytes"]
        + s * c["mem_per_session_bytes"]
        + prop.paths_in[best_i] * c["mem_per_route_bytes"]
    )
    # CPU per change at the busiest reflector: the update(s) it receives + those it sends
    per_change = (1 + prop.sent_per_change_max_reflector) * c["cpu_per_update_s"]
    full = (prop.paths_in[best_i] + prop.full_table_sent[best_i]) * c["cpu_per_update_s"]
    return Modelled(
        n, pl.topology, kind, s, prop.paths_in[best_i], sum(cl) / max(len(cl), 1), prop.originator_sends,
        prop.sent_per_change_max_reflector, prop.total_per_change, mem, per_change, full, prop.exact,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------
# Measured: BIRD in namespaces
# ------------------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_mem(pid: int) -> tuple[int, int]:
    """(VmRSS, USS = Private_Clean + Private_Dirty from smaps_rollup) in bytes. USS, not Pss: the
    clients' BIRDs share the central's library pages, so its Pss falls as more of them start."""
    rss = uss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                uss += int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, uss


_UNITS = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3}


def bird_memory_total(text: str) -> int | None:
    """``birdc show memory`` -> the Total line's effective size in bytes (BIRD 2.0: 'Total: 1234 kB ...')."""
    for line in text.splitlines():
        m = re.match(r"\s*Total:\s+([\d.]+)\s+(B|kB|MB|GB)", line)
        if m:
            return int(float(m[1]) * _UNITS[m[2]])
    return None


def birdc_direct(ctl: Path, *args: str) -> str:
    """birdc needs only the control socket (a file), not the namespace: cheaper than ip netns exec."""
    r = subprocess.run(
        ["birdc", "-s", str(ctl), *args], capture_output=True, text=True, timeout=15, check=False
    )
    return r.stdout


def route_count(ctl: Path) -> int:
    m = re.search(r"(\d+) of (\d+) routes", birdc_direct(ctl, "show", "route", "count"))
    return int(m[2]) if m else -1


def lab_prefixes(peer: int, p: int) -> tuple[str, ...]:
    """Peer ``peer`` (1-based) announces p /30s from 198.19.0.0/16 (16,384 in all, N x P at most)."""
    base = int(ipaddress.IPv4Address("198.19.0.0")) + (peer - 1) * p * 4
    return tuple(f"{ipaddress.IPv4Address(base + 4 * j)}/30" for j in range(p))


def lab_configs(n_peers: int, max_peers: int, p: int, addr: Callable[[int], str]) -> dict[str, SpeakerConfig]:
    """Central ``rr`` (address of lab node 1) reflecting for ``n_peers`` clients ``p1..``."""
    infos = [NodeInfo("rr", addr(1), ASN, addr(1))]
    infos += [
        NodeInfo(f"p{i}", addr(i + 1), ASN, addr(i + 1), lab_prefixes(i, p)) for i in range(1, max_peers + 1)
    ]
    sessions = [Session.rr("rr", f"p{i}") for i in range(1, n_peers + 1)]
    return speaker_configs(infos, sessions, {"rr": addr(1)}, Timers.lab(), install_routes=False)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(interval)


def wait_routes(ctl: Path, want: int, timeout: float, who: str) -> None:
    wait_until(lambda: route_count(ctl) >= want, timeout, f"{who} has {want} routes")


def lab_points(peers: Sequence[int], prefixes: Sequence[int]) -> list[tuple[int, int]]:
    pts = [(0, 0)] + [(n, p) for p in prefixes for n in peers if n > 0]
    if 10 in peers or max(peers) >= 10:
        pts.append((10, 1000))
    return sorted(set(pts), key=lambda x: (x[1], x[0]))


def run_lab(points: Sequence[tuple[int, int]], stop_flag: list[bool]) -> list[dict[str, Any]]:
    from labs.bgpspeakers import BirdSpeaker
    from labs.l2lab import L2Lab
    from labs.runid import RunDir

    max_peers = max(n for n, _ in points)
    lab = L2Lab(nodes=max_peers + 1)
    results: list[dict[str, Any]] = []
    peers: dict[int, BirdSpeaker] = {}
    central: BirdSpeaker | None = None
    log(f"lab {lab.run_id}: {max_peers + 1} namespaces on one bridge")
    t0 = time.perf_counter()
    try:
        lab.build()
        log(f"  built in {time.perf_counter() - t0:.1f} s")
        with RunDir(run_id=lab.run_id) as rd:
            try:
                cur_p = None
                for n_peers, p in points:
                    if stop_flag[0]:
                        break
                    if p != cur_p:  # new prefix count: fresh clients
                        for sp in peers.values():
                            sp.stop()
                        peers.clear()
                        cur_p = p
                    cfgs = lab_configs(n_peers, max_peers, p, lambda i: lab.vtep[f"n{i}"])
                    for i in range(1, n_peers + 1):
                        if i not in peers:
                            peers[i] = BirdSpeaker(lab.ns(f"n{i + 1}"), rd.path, cfgs[f"p{i}"]).start()
                    central = BirdSpeaker(lab.ns("n1"), rd.path, cfgs["rr"])
                    t_start = time.perf_counter()
                    central.start()
                    pid = central.pids[0]
                    cpu_up = proc_cpu_seconds(pid)
                    mem_up = proc_mem(pid)
                    want = n_peers * p
                    ctl = central.ctl_path
                    timeout = 60.0
                    if n_peers:
                        central.wait_established(timeout=timeout)
                        wait_routes(ctl, want, timeout, "central")
                        for i in sorted(peers)[:n_peers]:
                            wait_routes(peers[i].ctl_path, want, timeout, f"client p{i}")
                    t_conv = time.perf_counter() - t_start
                    last, still = proc_cpu_seconds(pid), 0
                    while still < 4:  # the CPU counter stands still for 0.8 s
                        time.sleep(0.2)
                        now = proc_cpu_seconds(pid)
                        still = still + 1 if now == last else 0
                        last = now
                    rss, uss = proc_mem(pid)
                    bird_total = bird_memory_total(birdc_direct(ctl, "show", "memory"))
                    client_rss = proc_mem(peers[1].pids[0])[0] if n_peers else None
                    row = {
                        "peers": n_peers,
                        "prefixes_per_peer": p,
                        "routes_in": want,
                        "routes_out": n_peers * (n_peers - 1) * p,
                        "converge_s": t_conv,
                        "cpu_s": last - cpu_up,
                        "rss_bytes": rss,
                        "uss_bytes": uss,
                        "rss_at_start_bytes": mem_up[0],
                        "bird_memory_total_bytes": bird_total,
                        "client_rss_bytes": client_rss,
                    }
                    results.append(row)
                    log(
                        f"  N={n_peers:3d} P={p:5d}: {want:6d} routes in, {row['routes_out']:7d} out, "
                        f"converged {t_conv:5.1f} s, CPU {row['cpu_s']:.2f} s, RSS {rss / 2**20:.1f} MiB"
                    )
                    central.stop()
                    central = None
            finally:
                if central is not None:
                    central.stop()
                for sp in peers.values():
                    sp.stop()
    finally:
        lab.close()
        left = lab.leftovers()
        if left:
            log(f"  WARNING: namespaces left over: {left}")
    return results


def lstsq(rows: Sequence[Sequence[float]], y: Sequence[float]) -> tuple[list[float], float]:
    """Least squares via numpy with every coefficient >= 0 (a negative one is dropped, i.e. set to
    0, and the rest refitted: a cost cannot be negative, and 10 ms CPU ticks make small terms
    noisy); returns (coefficients, R^2)."""
    import numpy as np

    a = np.array(rows, dtype=float)
    b = np.array(y, dtype=float)
    keep = list(range(a.shape[1]))
    coef = np.zeros(a.shape[1])
    while keep:
        sub, *_ = np.linalg.lstsq(a[:, keep], b, rcond=None)
        if (sub >= 0).all():
            coef[keep] = sub
            break
        keep.pop(int(np.argmin(sub)))
    pred = a @ coef
    ss_res = float(((b - pred) ** 2).sum())
    ss_tot = float(((b - b.mean()) ** 2).sum()) or 1.0
    return [float(x) for x in coef], 1 - ss_res / ss_tot


def fit(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    mem_x = [[1.0, r["peers"], r["routes_in"]] for r in rows]
    (m0, ms, mr), r2m = lstsq(mem_x, [r["rss_bytes"] for r in rows])
    cpu_x = [[1.0, r["peers"], r["routes_in"] + r["routes_out"]] for r in rows]
    (c0, cs, cu), r2c = lstsq(cpu_x, [r["cpu_s"] for r in rows])
    # informational: the same memory fit with a term for routes sent (BIRD's allocator keeps the
    # pages its per-peer update buckets used at the peak); not used by the model
    mem4 = [[1.0, r["peers"], r["routes_in"], r["routes_out"]] for r in rows]
    (_, _, mr4, mt4), r2m4 = lstsq(mem4, [r["rss_bytes"] for r in rows])
    return {
        "mem_base_bytes": m0,
        "mem_per_session_bytes": ms,
        "mem_per_route_bytes": mr,
        "mem_r2": r2m,
        "cpu_base_s": c0,
        "cpu_per_session_s": cs,
        "cpu_per_update_s": cu,
        "cpu_r2": r2c,
        "alt_mem_per_route_in_bytes": mr4,
        "alt_mem_per_route_sent_bytes": mt4,
        "alt_mem_r2": r2m4,
    }


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------


def fmt_int(x: float) -> str:
    return f"{round(x):,}"


def fmt_bytes(x: float) -> str:
    if abs(x) >= 2**30:
        return f"{x / 2**30:.2f} GiB"
    if abs(x) >= 2**20:
        return f"{x / 2**20:.1f} MiB"
    return f"{x / 2**10:.1f} KiB"


def fmt_s(x: float) -> str:
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.1f} ms"
    if x >= 1e-5:
        return f"{x * 1e6:.0f} µs"
    if x >= 1e-6:
        return f"{x * 1e6:.1f} µs"
    return f"{x * 1e9:.0f} ns"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def report(r: dict[str, Any]) -> str:
    c = r["constants"]
    lines = [
        "# BGP scale: full mesh vs route reflectors",
        "",
        f"{r['host']}; {r['bird']}. Command: `{r['command']}`.",
        "",
        "Source of each figure: **planned** = output of the real planner (exact); **measured** = this "
        "run's lab (real BIRD); **fitted** = least squares over the measured points; **modelled** = "
        "route propagation over the planned sessions, priced with the fitted constants (an estimate).",
        "",
        "## Planned (exact, from `bgp.core.planner`)",
        "",
    ]
    rows = []
    for p in r["planned"]:
        refl = "-" if p["topology"] == "mesh" else str(p["reflectors"])
        if p["top_reflectors"]:
            refl += f" ({p['top_reflectors']} top)"
        rows.append(
            [
                fmt_int(p["n"]),
                p["topology"],
                refl,
                fmt_int(p["sessions"]) + ("" if p["materialised"] else " (n(n-1)/2)"),
                fmt_int(p["max_client"]),
                "-" if p["topology"] == "mesh" else fmt_int(p["max_reflector"]),
                fmt_int(p["max_top"]) if p["top_reflectors"] else "-",
                fmt_s(p["plan_seconds"]) if p["materialised"] else "not built",
                "planned",
            ]
        )
    lines += md_table(
        ["n", "topology", "reflectors", "sessions", "max/client", "max/reflector", "max/top", "plan time",
         "source"],
        rows,
    )  # fmt: skip
    lines += [
        "",
        "## Measured (lab, one central BIRD reflecting for N BIRD clients with P prefixes each)",
        "",
    ]
    if r["lab"]:
        rows = [
            [
                str(x["peers"]),
                str(x["prefixes_per_peer"]),
                fmt_int(x["routes_in"]),
                fmt_int(x["routes_out"]),
                f"{x['converge_s']:.1f} s",
                f"{x['cpu_s']:.2f} s",
                fmt_bytes(x["rss_bytes"]),
                fmt_bytes(x["uss_bytes"]),
                fmt_bytes(x["bird_memory_total_bytes"]) if x["bird_memory_total_bytes"] else "?",
                fmt_bytes(x["client_rss_bytes"]) if x["client_rss_bytes"] else "-",
                "measured",
            ]
            for x in r["lab"]
        ]
        lines += md_table(
            ["N", "P", "routes in", "routes sent", "converge (wall)", "CPU", "RSS", "USS", "BIRD show memory",
             "client RSS", "source"],
            rows,
        )  # fmt: skip
        lines += [
            "",
            "CPU: central BIRD's utime+stime from 'daemon up' to converged (10 ms ticks). Wall time includes "
            "BIRD's connect delay/retry timers (1 s lab timers), so it is not a speed figure.",
        ]
    else:
        lines.append("Not run (`--no-lab`): the constants below are the documented defaults, not this run's.")
    fitted = "mem_r2" in c
    src = "fitted from this run's lab" if fitted else "defaults (no lab fit; from an earlier lab run)"
    lines += ["", f"## Constants ({src})", ""]
    rows = [
        ["base memory", fmt_bytes(c["mem_base_bytes"])],
        ["memory per session", fmt_bytes(c["mem_per_session_bytes"])],
        ["memory per route (Adj-RIB-In path)", f"{c['mem_per_route_bytes']:.0f} B"],
        ["CPU per session (establish)", fmt_s(c["cpu_per_session_s"])],
        ["CPU per route update (received or sent)", fmt_s(c["cpu_per_update_s"])],
    ]
    if "mem_r2" in c:
        rows += [
            ["R² memory fit / CPU fit", f"{c['mem_r2']:.3f} / {c['cpu_r2']:.3f}"],
            [
                "informational, not in the model: memory fit with a routes-sent term",
                f"{c['alt_mem_per_route_in_bytes']:.0f} B per route in + "
                f"{c['alt_mem_per_route_sent_bytes']:.1f} B "
                f"per route sent (R² {c['alt_mem_r2']:.3f})",
            ],
        ]
    lines += md_table(["constant", "value"], [[a, b, "fitted" if fitted else "default"] for a, b in rows])
    lines[-len(rows) - 2] = "| constant | value | source |"
    lines[-len(rows) - 1] = "|---|---|---|"
    lines += [
        "",
        "## Modelled (propagation over the planned sessions x fitted constants; estimates)",
        "",
        "Per topology the busiest speaker: the reflector with the largest modelled memory (mesh: every "
        "node is alike). Paths = Adj-RIB-In paths (one per prefix per session it is learnt over), all "
        "n pod CIDRs announced. Per change = one pod CIDR announced or withdrawn. 'full table' = the "
        "busiest speaker's CPU to receive and send every route once (e.g. after it restarts).",
        "",
    ]
    rows = []
    for m in r["modelled"]:
        rows.append(
            [
                fmt_int(m["n"]),
                m["topology"],
                m["busiest"],
                fmt_int(m["busiest_sessions"]),
                fmt_int(m["busiest_paths"]),
                fmt_int(m["client_paths"]),
                fmt_bytes(m["busiest_mem_bytes"]),
                fmt_int(m["originator_sends"]),
                fmt_int(m["reflector_sends_per_change"]) if m["topology"] != "mesh" else "-",
                fmt_int(m["total_updates_per_change"]),
                fmt_s(m["busiest_cpu_per_change_s"]),
                fmt_s(m["busiest_full_table_cpu_s"]),
                "modelled" + ("" if m["exact"] else " (sampled)"),
            ]
        )
    lines += md_table(
        ["n", "topology", "busiest", "its sessions (planned)", "its paths", "paths/client", "its memory",
         "originator sends", "reflector sends", "updates cluster-wide", "its CPU/change",
         "its CPU full table", "source"],
        rows,
    )  # fmt: skip
    lines += ["", *r["notes"]]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"mesh": "tab:red", "rr-k2": "tab:blue", "rr-k3": "tab:green", "hier": "tab:purple"}
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for topo in TOPOLOGIES:
        ps = [p for p in r["planned"] if p["topology"] == topo]
        ms = [m for m in r["modelled"] if m["topology"] == topo]
        ns = [p["n"] for p in ps]
        axes[0][0].plot(ns, [p["sessions"] for p in ps], "o-", color=colors[topo], label=topo)
        axes[0][1].plot(ns, [p["max_client"] for p in ps], "o-", color=colors[topo], label=f"{topo}: client")
        if topo != "mesh":
            axes[0][1].plot(ns, [p["max_reflector"] for p in ps], "s--", color=colors[topo],
                            label=f"{topo}: reflector")  # fmt: skip
        if topo == "hier":
            axes[0][1].plot(ns, [p["max_top"] for p in ps], "^:", color=colors[topo], label="hier: top")
        mn = [m["n"] for m in ms]
        label = "mesh (any node)" if topo == "mesh" else f"{topo} (busiest reflector)"
        axes[1][0].plot(
            mn, [m["busiest_mem_bytes"] / 2**20 for m in ms], "o-", color=colors[topo], label=label
        )
        axes[1][1].plot(mn, [m["total_updates_per_change"] for m in ms], "o-", color=colors[topo],
                        label=f"{topo}: cluster-wide")  # fmt: skip
        axes[1][1].plot(mn, [max(m["originator_sends"], m["reflector_sends_per_change"]) for m in ms], "s--",
                        color=colors[topo], label=f"{topo}: busiest sender")  # fmt: skip
    titles = [
        ("total BGP sessions (planned)", "sessions"),
        ("sessions on one node (planned, max)", "sessions"),
        ("busiest speaker memory (modelled, BIRD constants)", "MiB"),
        ("UPDATEs per pod-CIDR change (modelled)", "UPDATE messages"),
    ]
    for ax, (title, ylabel) in zip([a for row in axes for a in row], titles, strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("nodes (n)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    src = "lab-fitted" if "mem_r2" in r["constants"] else "defaults, no lab fit"
    fig.suptitle(f"netkit BGP scale: mesh vs reflectors (constants: {src})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="output directory")
    ap.add_argument("--no-lab", action="store_true", help="skip the BIRD lab; use the default constants")
    ap.add_argument(
        "--lab-peers", type=int_list, default=[1, 10, 25, 50], help="client counts N (default 1,10,25,50)"
    )
    ap.add_argument(
        "--lab-prefixes",
        type=int_list,
        default=[10, 100, 300],
        help="prefixes per client P (default 10,100,300)",
    )
    ap.add_argument("--sizes", type=int_list, default=list(SIZES), help="cluster sizes n to plan and model")
    args = ap.parse_args()
    if not args.no_lab:
        if os.geteuid() != 0:
            print(
                "bgp_scale: the lab needs root (network namespaces); use --no-lab to skip it", file=sys.stderr
            )
            return 2
        if shutil.which("bird") is None or shutil.which("birdc") is None:
            print("bgp_scale: bird/birdc not found (Debian package bird2); or --no-lab", file=sys.stderr)
            return 2
        if max(args.lab_peers) > 250:
            print("bgp_scale: --lab-peers up to 250 (one /24 underlay)", file=sys.stderr)
            return 2
        if max(n * p for n, p in lab_points(args.lab_peers, args.lab_prefixes)) > 16384:
            print("bgp_scale: N x P up to 16,384 (/30s in 198.19.0.0/16)", file=sys.stderr)
            return 2
    stop_flag = [False]
    main_pid = os.getpid()

    def on_term(signum: int, _frame: object) -> None:
        if os.getpid() != main_pid:
            os._exit(128 + signum)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    t_all = time.perf_counter()
    bird_version = "BIRD not used"
    if shutil.which("bird"):
        v = subprocess.run(["bird", "--version"], capture_output=True, text=True, check=False)
        bird_version = (v.stdout + v.stderr).strip() or bird_version
    result: dict[str, Any] = {
        "host": f"{platform.node()}, Linux {platform.release()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        "bird": bird_version,
        "command": " ".join([".venv/bin/python", "benchmarks/bgp_scale.py", *sys.argv[1:]]),
        "notes": [],
    }
    lab_rows: list[dict[str, Any]] = []
    if not args.no_lab:
        log("measured: BIRD lab")
        lab_rows = run_lab(lab_points(args.lab_peers, args.lab_prefixes), stop_flag)
    result["lab"] = lab_rows
    constants = fit(lab_rows) if len(lab_rows) >= 4 else dict(DEFAULT_CONSTANTS)
    if lab_rows and len(lab_rows) < 4:
        result["notes"].append("Too few lab points to fit; the default constants were used.")
    result["constants"] = constants
    planned: list[Planned] = []
    modelled: list[Modelled] = []
    for n in args.sizes:
        for topo in TOPOLOGIES:
            t = time.perf_counter()
            pl = run_planner(n, topo)
            md = model(pl, constants)
            planned.append(pl)
            modelled.append(md)
            log(
                f"n={n:5d} {topo:6s}: {pl.sessions:>10,} sessions, max/client {pl.max_client}, "
                f"max/reflector {pl.max_reflector}, plan {pl.plan_seconds:.2f} s, model "
                f"{time.perf_counter() - t - pl.plan_seconds:.1f} s"
            )
            pl.plan = None  # free the sessions
    result["planned"] = [{k: v for k, v in vars(p).items() if k != "plan"} for p in planned]
    result["modelled"] = [vars(m) for m in modelled]
    if any(pod_prefix_len(n) > 26 for n in args.sizes):
        result["notes"].append(
            "Pod CIDRs are /26 up to 1,024 nodes and longer prefixes (/27 to /29) above (198.19.0.0/16 holds "
            "1,024 /26s); the planner and the model do not depend on the prefix length."
        )
    result["notes"].append(f"Total run time {time.perf_counter() - t_all:.0f} s.")
    text = report(result)
    save_results(args.out, "bgp_scale", text, result, plot)
    print(text)
    print(f"\n(output in {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
