"""``netkit l2``: apply, status and the node agent for per-tenant L2 segments."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

L2_HELP = """\
Give tenants their own L2 segments, stitched across nodes: per network a Linux bridge and a VXLAN
device (or an 802.1Q sub-interface of a physical underlay) on every member node, with the pods'
host-side veths attached, the way kubernetes-nmstate and flannel's VXLAN backend do it. A frame of
one tenant network never reaches another: different VNIs (or VLAN ids), different bridges.

  netkit l2 apply    make the node's kernel match the file once; prints the plan first
  netkit l2 status   each network's state on the node: ok, missing, drifted, conflict, error
  netkit l2 agent    keep it so: repair drift from netlink events, resync periodically
  netkit l2 verify   prove the isolation with real frames in a lab of namespaces

What is built per VXLAN network on a node: bridge nkbr-<hash of the name> and VXLAN device
nkvx-<VNI> (learning off, local = this node's VTEP, enslaved to the bridge, MTU = underlay MTU -
50 over IPv4, - 70 over IPv6, unless set); head-end replication: one all-zero FDB entry per remote
VTEP for broadcast/unknown/multicast; for each known remote endpoint a static FDB entry (MAC ->
VTEP), a static bridge entry and a permanent neighbour entry on the bridge, with neigh_suppress on
the VXLAN port, so ARP/ND for known IPs is answered on the node. VLAN networks get nkvl<id>-<hash>
(a tagged sub-interface of the underlay) instead of the VXLAN device.

The node stays off tenant segments: the bridges have no IPv6 link-local address, do not answer
ARP (arp_ignore 8) and accept no IPv4 (rp_filter 1). Underlay filter: an nftables table
netkit_l2 in the node's namespace lets only a VXLAN network's member VTEPs send its VNI (Linux
accepts any source); --no-underlay-filter if the underlay is trusted.

Ownership: everything the agent creates carries the alias netkit:l2:<network>; only such links
(and FDB/neighbour entries on them) are ever changed or deleted. A link with one of its names but
without the alias is reported as a conflict and left alone. Networks no longer in the file (or no
longer listing the node) are removed, FDB entries with them.

Configuration (-f FILE, YAML):

    networks:
      - name: blue
        vni: 100
        members: {n1: 198.18.0.1, n2: 198.18.0.2, n3: 198.18.0.3}
        ports: {n1: [veth-pod-a], n2: [veth-pod-b]}
        endpoints: [{mac: "02:00:00:00:01:02", ip: 198.19.1.2, node: n2}]
      - name: green
        kind: vlan
        vlan: 200
        underlay: eth1
        members: [n1, n2]

Errors in the file name the field (networks[1].vni: 16777216 is out of range 1-16777215) and
exit with status 2; nothing is applied.

Metrics (agent --metrics ADDR:PORT, at /metrics): netkit_l2_reconcile_seconds{trigger},
netkit_l2_netlink_writes_total{op}, netkit_l2_drift_repairs_total{trigger},
netkit_l2_reconcile_errors_total, netkit_l2_networks{status}.

Examples:
  netkit l2 apply -f networks.yaml --node n1 --dry-run
  netkit l2 apply -f networks.yaml --node n1 --probe pod-a/198.19.1.2 --rollback-timeout 10
  netkit l2 status -f networks.yaml --node n1 --netns node1
  netkit l2 agent -f networks.yaml --node n1 --metrics 127.0.0.1:9254
"""

APPLY_HELP = """\
Read the node's kernel (links, bridge FDB, neighbours, addresses; with --netns inside that network
namespace), compute the operations that make it match the networks of -f FILE that apply to
--node, print them like `terraform plan`, and apply them. A node that already matches needs zero
netlink writes. Networks in conflict (a link the agent does not own is in the way) or in error
(underlay missing, MTU too large for the underlay) are reported and left untouched; the others are
applied.

Safe rollout: with --probe [NETNS/]IP (repeatable), after applying, each target is pinged
(`ping -c1 -W1`, from NETNS, e.g. a pod's namespace on the new segment) until it answers or
--rollback-timeout seconds pass. If a probe fails, or a netlink request fails half-way, the owned
objects go back to the state read before applying (a checkpoint, as nmstate does).

Exit status: 0 applied (or nothing to do), 1 a network in conflict or error, a failed request
(rolled back) or an unreadable namespace, 2 invalid file or usage, 3 a probe failed (rolled back).

Underlay filter (default on): nftables table inet netkit_l2 in the namespace lets only each VXLAN
network's member VTEPs send its VNI (needs nft, Debian package nftables); --no-underlay-filter
when the underlay is trusted.

Examples:
  netkit l2 apply -f networks.yaml --node n1 --dry-run
  netkit l2 apply -f networks.yaml --node n1 --netns node1
  netkit l2 apply -f networks.yaml --node n1 --probe pod-a/198.19.1.2 --rollback-timeout 10
"""

STATUS_HELP = """\
Show each network of -f FILE on --node: ok (the kernel matches), missing (none of its links
exist), drifted (some changes pending: `netkit l2 apply --dry-run` lists them), conflict (an
unowned link is in the way), error (cannot be built here), and owned networks no longer desired
(orphaned). Exit status 0 when every network is ok, 1 otherwise, 2 for an invalid file.

Example:
  netkit l2 status -f networks.yaml --node n1 --netns node1
"""

AGENT_HELP = """\
Converge once, then keep the kernel matching: netlink notifications for links, FDB entries,
neighbours and addresses (someone deleted the VXLAN device, flushed the FDB, changed an MTU,
a pod's veth appeared) trigger a reconcile after a short debounce (50 ms of quiet, at most 250 ms
after the first event, so a storm costs one round per 250 ms); dynamic FDB/ARP churn is ignored.
Every --resync seconds (default 30) the whole state is compared anyway, as a safety net; after a
failed round it retries sooner (0.5 s doubling). SIGHUP re-reads the file (an invalid file is
logged and the old networks kept); SIGTERM/SIGINT stop. Logs are JSON lines on stderr.

Metrics at http://ADDR:PORT/metrics with --metrics:
  netkit_l2_reconcile_seconds{trigger}    histogram of rounds (start, event, resync, reload)
  netkit_l2_netlink_writes_total{op}      requests that changed the kernel (link_create, link_set,
                                          link_delete, port_attach, port_detach, fdb_add, fdb_del,
                                          neigh_add, neigh_del)
  netkit_l2_drift_repairs_total{trigger}  rounds after the first that had to change something
  netkit_l2_reconcile_errors_total        rounds that failed
  netkit_l2_networks{status}              networks by state after the last round

Example:
  netkit l2 agent -f /etc/netkit/l2.yaml --node "$NODE_NAME" --metrics 0.0.0.0:9254
"""

VERIFY_HELP = """\
Prove tenant isolation with real frames. Builds a lab of network namespaces (3 nodes on an
underlay bridge; networks blue and red on every node, green on n1 and n2; 9 pods in their own
namespaces, all networks using 198.19.1.0/24, b1 and r1 sharing a MAC), lets the agent's own code
build the segments, then sends broadcast, ARP (for unknown, existing and declared addresses and
for the nodes' underlay addresses), unknown and known unicast, multicast, frames tagged with
another network's VLAN id and, for VXLAN, packets injected on the underlay with another tenant's
VNI from a non-member address. Raw AF_PACKET sockets on every pod and underlay record who saw each
frame's marker, which ARP reply the sender got and which segment (VNI, VLAN id) carried it
between nodes. Prints a matrix (ok / LEAK / MISS per pod) and exits 1 on any difference.

--kind vxlan, vlan, all, or auto (default: vxlan, plus vlan when this kernel has 802.1Q). This
host kernel may lack 8021q; run the VLAN path in User-Mode Linux:
  python -m netkit.uml -- netkit l2 verify --kind vlan

Needs root. Everything it creates carries a per-run prefix and is removed at the end.

Examples:
  netkit l2 verify
  netkit l2 verify --kind vxlan --json
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", type=Path, required=True, metavar="FILE", help="networks file (YAML)")
    p.add_argument(
        "--node",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        metavar="NAME",
        help="this node's name in the file (default: $NODE_NAME, else the hostname)",
    )
    p.add_argument(
        "--netns",
        metavar="NS",
        help="work inside this network namespace (/run/netns/NS) instead of the current one",
    )
    p.add_argument("--log-level", default=None, metavar="LEVEL", help="debug, info, warning (default)")


def add_parser(sub: Any) -> None:
    l2 = sub.add_parser(
        "l2",
        help="per-tenant L2 segments (VXLAN/802.1Q): apply, status, node agent",
        description=L2_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lsub = l2.add_subparsers(dest="l2_command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    p = lsub.add_parser("apply", help="plan and apply once", description=APPLY_HELP, formatter_class=raw)
    _common(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument(
        "--probe",
        action="append",
        default=[],
        metavar="[NETNS/]IP",
        help="after applying, ping IP (from NETNS); roll back if it does not answer (repeatable)",
    )
    p.add_argument(
        "--rollback-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="how long the probes may take to succeed before rolling back (default 10)",
    )
    p.add_argument(
        "--no-underlay-filter",
        dest="underlay_filter",
        action="store_false",
        help="do not manage the nftables filter of VXLAN sources (underlay trusted)",
    )
    p.set_defaults(func=cmd_apply)

    p = lsub.add_parser(
        "status", help="each network's state on the node", description=STATUS_HELP, formatter_class=raw
    )
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_status)

    p = lsub.add_parser(
        "agent", help="repair drift continuously", description=AGENT_HELP, formatter_class=raw
    )
    _common(p)
    p.add_argument(
        "--metrics", metavar="ADDR:PORT", help="serve Prometheus metrics at http://ADDR:PORT/metrics"
    )
    p.add_argument(
        "--resync", type=float, default=30.0, metavar="S", help="full comparison every S seconds (default 30)"
    )
    p.add_argument(
        "--no-underlay-filter",
        dest="underlay_filter",
        action="store_false",
        help="do not manage the nftables filter of VXLAN sources (underlay trusted)",
    )
    p.set_defaults(func=cmd_agent)

    p = lsub.add_parser(
        "verify", help="prove isolation with real frames (lab)", description=VERIFY_HELP, formatter_class=raw
    )
    p.add_argument("--kind", choices=["auto", "vxlan", "vlan", "all"], default="auto", help="which path")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--settle", type=float, default=None, metavar="S", help="time to wait for strays")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="time to wait for a frame")
    p.add_argument("--log-level", default=None, metavar="LEVEL", help="debug, info, warning (default)")
    p.set_defaults(func=cmd_verify)


# ------------------------------------------------------------------------------------------


def _load(path: Path) -> list[Any] | None:
    from netkit.fields import ConfigError
    from netkit.l2.model import load_networks

    try:
        text = path.read_text()
    except OSError as exc:
        print(f"{path}: {exc.strerror or exc}", file=sys.stderr)
        return None
    try:
        return load_networks(text)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{path}: {line}", file=sys.stderr)
        return None


def _logs(args: argparse.Namespace, default: str) -> None:
    from netkit import logs

    logs.setup(args.log_level or default)


def cmd_apply(args: argparse.Namespace) -> int:
    from netkit.l2.agent import ApplyOutcome, apply_with_rollback, ping_probe, reconcile_once
    from netkit.l2.kernel import Kernel, KernelError

    _logs(args, "warning")
    networks = _load(args.file)
    if networks is None:
        return 2
    try:
        probes = [ping_probe(t, args.netns) for t in args.probe]
    except FileNotFoundError as exc:
        print(f"--probe: {exc}", file=sys.stderr)
        return 2
    try:
        kernel = Kernel(args.netns)
    except KernelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with kernel:
        try:
            if args.dry_run:
                pl, _, _ = reconcile_once(
                    kernel, networks, args.node, dry_run=True, underlay_filter=args.underlay_filter
                )
                print(pl.render())
                print("Dry run: nothing applied.")
                return 1 if pl.failed else 0
            outcome: ApplyOutcome = apply_with_rollback(
                kernel,
                networks,
                args.node,
                probes,
                args.rollback_timeout,
                underlay_filter=args.underlay_filter,
            )
        except KernelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(outcome.plan.render())
    applied = f"{outcome.applied.ops} operations ({outcome.applied.writes} netlink writes)"
    if outcome.applied.filter_writes:
        applied += " and the underlay filter"
    if outcome.error:
        print(f"Apply failed after {applied}: {outcome.error}", file=sys.stderr)
    elif outcome.probe_failures:
        print(f"Applied {applied}; probe failed: {', '.join(outcome.probe_failures)}", file=sys.stderr)
    else:
        print(f"Applied {applied}." + (f" Probes passed: {len(probes)}." if probes else ""))
    if outcome.rollback_plan is not None:
        n = len(outcome.rollback_plan.ops)
        print(f"Rolled back: {n} operations ({outcome.rollback_writes} netlink writes).", file=sys.stderr)
    if outcome.rollback_error:
        print(f"Rollback failed: {outcome.rollback_error}", file=sys.stderr)
        return 1
    if outcome.error:
        return 1
    if outcome.probe_failures:
        return 3
    return 1 if outcome.plan.failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    from netkit.l2.kernel import Kernel, KernelError
    from netkit.l2.plan import network_status, plan

    _logs(args, "warning")
    networks = _load(args.file)
    if networks is None:
        return 2
    try:
        with Kernel(args.netns) as kernel:
            observed = kernel.read()
    except KernelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pl = plan(networks, args.node, observed)
    statuses = network_status(pl, observed)
    by_name = {n.name: n for n in networks}
    rows = []
    for s in statuses:
        net = by_name.get(s.network)
        kind = net.kind if net else "-"
        seg = str(net.segment) if net else "-"
        bridge = net.bridge if net else "-"
        rows.append(
            {
                "network": s.network,
                "kind": kind,
                "id": seg,
                "bridge": bridge,
                "status": s.status,
                "detail": s.detail,
            }
        )
    if args.json:
        print(json.dumps({"node": args.node, "networks": rows}, indent=2))
    else:
        cols = ["network", "kind", "id", "bridge", "status", "detail"]
        widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in cols}
        print("  ".join(c.upper().ljust(widths[c]) for c in cols).rstrip())
        for r in rows:
            print("  ".join(r[c].ljust(widths[c]) for c in cols).rstrip())
    return 0 if all(s.status == "ok" for s in statuses) else 1


def cmd_agent(args: argparse.Namespace) -> int:
    import logging

    from netkit.addr import AddressError, parse_hostport
    from netkit.l2.agent import Agent, L2Metrics
    from netkit.l2.kernel import KernelError

    _logs(args, "info")
    log = logging.getLogger("netkit.l2")
    networks = _load(args.file)
    if networks is None:
        return 2
    metrics = L2Metrics()
    server = None
    if args.metrics:
        try:
            hp = parse_hostport(args.metrics)
        except AddressError as exc:
            print(f"--metrics: {exc}", file=sys.stderr)
            return 2
        from prometheus_client import start_http_server

        server, _ = start_http_server(hp.port, hp.host, registry=metrics.registry)
    agent = Agent(
        networks,
        args.node,
        args.netns,
        metrics=metrics,
        resync=args.resync,
        underlay_filter=args.underlay_filter,
    )
    stop = threading.Event()

    # Signal handlers run on the main thread between bytecodes, possibly while it holds the
    # agent queue's lock: they hand the work to a short-lived thread instead of queueing it.
    def on_stop(signum: int, _frame: object) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()
        threading.Thread(target=agent.stop, daemon=True).start()

    def reload() -> None:
        new = _load(args.file)
        if new is None:
            log.error("reload: invalid file, keeping the current networks", extra={"file": str(args.file)})
            return
        log.info("reload", extra={"file": str(args.file), "networks": len(new)})
        agent.reload(new)

    def on_hup(_signum: int, _frame: object) -> None:
        threading.Thread(target=reload, daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        first = agent.start()
    except KernelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        agent.close()
        return 1
    log.info(
        "agent started",
        extra={
            "node": args.node,
            "netns": args.netns,
            "networks": len(networks),
            "ops": len(first.plan.ops),
            "writes": first.writes,
            "metrics": args.metrics,
        },
    )
    try:
        agent.run(stop)
    finally:
        agent.close()
        if server is not None:
            server.shutdown()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from netkit.l2.verify import VerifyError, run_verify

    _logs(args, "warning")

    main_pid = os.getpid()

    def on_term(signum: int, _frame: object) -> None:
        if os.getpid() != main_pid:  # a forked helper (pyroute2) inherited this handler
            os._exit(128 + signum)
        raise SystemExit(128 + signum)  # unwinds through the lab's cleanup

    signal.signal(signal.SIGTERM, on_term)
    try:
        return run_verify(args.kind, as_json=args.json, settle=args.settle, timeout=args.timeout)
    except VerifyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
