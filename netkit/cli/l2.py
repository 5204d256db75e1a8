"""``netkit l2``: apply, status and the node agent for per-tenant L2 segments."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netkit.base.fields import ConfigError
from netkit.cli.cmdline import (
    CommandError,
    UsageError,
    add_file,
    add_output,
    command,
    emit,
    float_range,
    group,
    host_port,
    require_labs,
)

if TYPE_CHECKING:
    from netkit.l2.core.model import L2Network

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
longer listing the node) are removed, FDB entries with them. A --node the file does not name
(a typo, a short hostname where the file has the FQDN) is refused before anything is planned:
it would read as "no networks here". To remove every network from a node, list it under nodes:
and in no network.

Configuration (-f FILE, YAML):

    nodes: [n1, n2, n3]          # optional: the nodes this file is for
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

Errors in the file name the field (networks[1].vni: 16777216 is out of range: must be between 1
and 16777215) and exit with status 2; nothing is applied.

Metrics (agent --metrics ADDR:PORT, at /metrics): netkit_l2_reconcile_seconds{trigger},
netkit_l2_netlink_writes_total{op}, netkit_l2_drift_repairs_total{trigger},
netkit_l2_reconcile_errors_total, netkit_l2_networks{status}.

Each command's --help ends with examples; docs/l2.md has the whole story.
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

--dry-run reads the kernel and prints the plan without changing anything; --check only validates
the file and --node and prints the networks the node would get, without reading the kernel.

Exit status: 0 applied (or nothing to do), 1 a network in conflict or error, a failed request
(rolled back) or an unreadable namespace, 2 invalid file or usage (a node the file does not name
included: nothing is planned), 3 a probe failed (rolled back).

Underlay filter (default on): nftables table inet netkit_l2 in the namespace lets only each VXLAN
network's member VTEPs send its VNI (needs nft, Debian package nftables); --no-underlay-filter
when the underlay is trusted.
"""

STATUS_HELP = """\
Show each network of -f FILE on --node: ok (the kernel matches), missing (none of its links
exist), drifted (some changes pending: `netkit l2 apply --dry-run` lists them), conflict (an
unowned link is in the way), error (cannot be built here), and owned networks no longer desired
(orphaned). Exit status 0 when every network is ok, 1 otherwise, 2 for an invalid file or a node
it does not name.
"""

AGENT_HELP = """\
Converge once, then keep the kernel matching: netlink notifications for links, FDB entries,
neighbours and addresses (someone deleted the VXLAN device, flushed the FDB, changed an MTU,
a pod's veth appeared) trigger a reconcile after a short debounce (50 ms of quiet, at most 250 ms
after the first event, so a storm costs one round per 250 ms); dynamic FDB/ARP churn is ignored.
Every --resync seconds (default 30) the whole state is compared anyway, as a safety net; after a
failed round it retries sooner (0.5 s doubling). SIGHUP re-reads the file (an invalid file, or one
that no longer names --node, is logged and the old networks kept); SIGTERM/SIGINT stop. Logs go
to stderr (--log-format). Exit status: 0 stopped by a signal, 1 cannot start (kernel, metrics
port), 2 invalid file or usage.

Metrics at http://ADDR:PORT/metrics with --metrics:
  netkit_l2_reconcile_seconds{trigger}    histogram of rounds (start, event, resync, reload)
  netkit_l2_netlink_writes_total{op}      requests that changed the kernel (link_create, link_set,
                                          link_delete, port_attach, port_detach, fdb_add, fdb_del,
                                          neigh_add, neigh_del)
  netkit_l2_drift_repairs_total{trigger}  rounds after the first that had to change something
  netkit_l2_reconcile_errors_total        rounds that failed
  netkit_l2_networks{status}              networks by state after the last round
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
  python -m labs.uml -- netkit l2 verify --kind vlan

Needs root. Everything it creates carries a per-run prefix and is removed at the end. Exit
status: 0 every frame behaved, 1 a leak or a miss, 2 cannot run here (not root, no 802.1Q).
"""


def _common(p: argparse.ArgumentParser) -> None:
    add_file(p, "networks file (YAML; see netkit l2 --help)")
    p.add_argument(
        "--node",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        metavar="NAME",
        help="this node's name in the file; a node the file does not name is refused "
        "(default: $NODE_NAME, else the hostname)",
    )
    p.add_argument(
        "--netns",
        metavar="NS",
        help="work inside this network namespace (/run/netns/NS) instead of the current one",
    )


def _check_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the file and --node, print the networks this node would get (YAML), touch nothing",
    )


def _no_filter_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-underlay-filter",
        dest="underlay_filter",
        action="store_false",
        help="do not manage the nftables filter of VXLAN sources (underlay trusted)",
    )


def _probe_target(text: str) -> str:
    """``[NETNS/]IP``: the IP must be an address; the namespace is checked when probing."""
    ns, _, ip = text.rpartition("/")
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        where = f"{text!r}: " if ns else ""
        raise argparse.ArgumentTypeError(f"{where}{ip!r} is not an IP address ([NETNS/]IP)") from None
    return f"{ns}/{ip}" if ns else ip


_probe_target.__name__ = "probe target"


def add_parser(sub: Any) -> None:
    lsub = group(
        sub,
        "l2",
        help="per-tenant L2 segments (VXLAN/802.1Q): apply, status, node agent",
        description=L2_HELP,
    )

    p = command(
        lsub,
        "apply",
        help="plan and apply once",
        description=APPLY_HELP,
        kind="change",
        func=cmd_apply,
        examples=[
            "netkit l2 apply -f networks.yaml --node n1 --dry-run",
            "netkit l2 apply -f networks.yaml --node n1 --netns node1",
            "netkit l2 apply -f networks.yaml --node n1 --probe pod-a/198.19.1.2 --rollback-timeout 10",
        ],
    )
    _common(p)
    p.add_argument("--dry-run", action="store_true", help="read the kernel, print the plan, change nothing")
    _check_flag(p)
    p.add_argument(
        "--probe",
        action="append",
        default=[],
        type=_probe_target,
        metavar="[NETNS/]IP",
        help="after applying, ping IP (from NETNS); roll back if it does not answer (repeatable)",
    )
    p.add_argument(
        "--rollback-timeout",
        type=float_range(0, 3600, lo_open=True),
        default=10.0,
        metavar="S",
        help="how long the probes may take to succeed before rolling back",
    )
    _no_filter_flag(p)

    p = command(
        lsub,
        "status",
        help="each network's state on the node",
        description=STATUS_HELP,
        kind="query",
        func=cmd_status,
        examples=[
            "netkit l2 status -f networks.yaml --node n1 --netns node1",
            "netkit l2 status -f networks.yaml --node n1 --netns node1 -o json",
        ],
    )
    _common(p)
    add_output(p)
    p.add_argument("--json", dest="output", action="store_const", const="json", help="the same as -o json")

    p = command(
        lsub,
        "agent",
        help="repair drift continuously",
        description=AGENT_HELP,
        kind="daemon",
        log_level="info",
        func=cmd_agent,
        examples=[
            'netkit l2 agent -f /etc/netkit/l2.yaml --node "$NODE_NAME" --metrics 0.0.0.0:9254',
            "netkit l2 agent -f networks.yaml --node n1 --netns node1 --resync 10 --log-format text",
            "netkit l2 agent -f networks.yaml --node n1 --check",
        ],
    )
    _common(p)
    p.add_argument(
        "--metrics",
        type=host_port(),
        metavar="ADDR:PORT",
        help="serve /metrics, /healthz and /readyz (200 while the last round converged) at ADDR:PORT",
    )
    p.add_argument(
        "--resync",
        type=float_range(0.1, 86400),
        default=30.0,
        metavar="S",
        help="full comparison every S seconds, 0.1-86400",
    )
    _check_flag(p)
    _no_filter_flag(p)

    p = command(
        lsub,
        "verify",
        help="prove isolation with real frames (lab)",
        description=VERIFY_HELP,
        kind="lab",
        func=cmd_verify,
        examples=["netkit l2 verify", "netkit l2 verify --kind vxlan -o json"],
    )
    p.add_argument("--kind", choices=["auto", "vxlan", "vlan", "all"], default="auto", help="which path")
    add_output(p)
    p.add_argument("--json", dest="output", action="store_const", const="json", help="the same as -o json")
    p.add_argument(
        "--settle",
        type=float_range(0, 60),
        default=None,
        metavar="S",
        help="time to wait for strays after each probe, 0-60 (default: 0.15, 0.6 in User-Mode Linux)",
    )
    p.add_argument(
        "--timeout",
        type=float_range(0, 60, lo_open=True),
        default=None,
        metavar="S",
        help="time to wait for an expected frame, up to 60 (default: 1.5, 4 in User-Mode Linux)",
    )


# ------------------------------------------------------------------------------------------


def load_for_node(path: str, node: str) -> list[L2Network]:
    """The networks of ``path``, after checking that the file names ``node``: a node it does
    not name would be planned as "no networks here", removing every network it has. Raises
    ``ConfigError`` (each problem prefixed with the file) or ``UsageError`` (unreadable)."""
    from netkit.l2.core.model import load_network_file

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the networks file: {exc.strerror or exc}") from None
    try:
        nf = load_network_file(text)
        nf.require_node(node, path)
    except ConfigError as exc:
        raise ConfigError([f"{path}: {line}" for line in exc.errors]) from None
    return list(nf.networks)


def network_summary(networks: list[L2Network], node: str) -> dict[str, Any]:
    """What ``--check`` prints: the networks this node gets, with the names derived for them."""
    from netkit.l2.core.model import networks_for_node

    rows: list[dict[str, Any]] = []
    for net in networks_for_node(networks, node):
        row: dict[str, Any] = {"name": net.name, "kind": net.kind}
        row["vni" if net.kind == "vxlan" else "vlan"] = net.segment
        row.update({"bridge": net.bridge, "device": net.uplink, "underlay": net.underlay, "mtu": net.mtu})
        if net.kind == "vxlan":
            row["port"] = net.port
            row["vtep"] = net.vtep(node)
            row["remote_vteps"] = {n: ip for n, ip in net.remote_vteps(node)}
        row["ports"] = list(net.ports_on(node))
        row["endpoints"] = [{"mac": e.mac, "ip": e.ip, "node": e.node} for e in net.remote_endpoints(node)]
        rows.append(row)
    return {"node": node, "networks": rows}


def _check(args: argparse.Namespace, networks: list[L2Network]) -> int:
    emit(network_summary(networks, args.node), "yaml")
    return 0


def _kernel(netns: str | None) -> Any:
    from netkit.l2.kernel import Kernel, KernelError

    try:
        return Kernel(netns)
    except KernelError as exc:
        raise CommandError(str(exc)) from None


def cmd_apply(args: argparse.Namespace) -> int:
    from netkit.l2.agent import ApplyOutcome, apply_with_rollback, ping_probe, reconcile_once
    from netkit.l2.kernel import KernelError

    networks = load_for_node(args.file, args.node)
    if args.check:
        return _check(args, networks)
    try:
        probes = [ping_probe(t, args.netns) for t in args.probe]
    except FileNotFoundError as exc:
        raise UsageError(f"--probe: {exc}") from None
    with _kernel(args.netns) as kernel:
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
            raise CommandError(str(exc)) from None
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
    from netkit.l2.core.plan import network_status, plan
    from netkit.l2.kernel import KernelError

    networks = load_for_node(args.file, args.node)
    try:
        with _kernel(args.netns) as kernel:
            observed = kernel.read()
    except KernelError as exc:
        raise CommandError(str(exc)) from None
    pl = plan(networks, args.node, observed)
    statuses = network_status(pl, observed)
    by_name = {n.name: n for n in networks}
    rows = []
    for s in statuses:
        net = by_name.get(s.network)
        rows.append(
            {
                "network": s.network,
                "kind": net.kind if net else "-",
                "id": str(net.segment) if net else "-",
                "bridge": net.bridge if net else "-",
                "status": s.status,
                "detail": s.detail,
            }
        )
    if args.output != "text":
        emit({"node": args.node, "networks": rows}, args.output)
    else:
        cols = ["network", "kind", "id", "bridge", "status", "detail"]
        widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in cols}
        print("  ".join(c.upper().ljust(widths[c]) for c in cols).rstrip())
        for r in rows:
            print("  ".join(r[c].ljust(widths[c]) for c in cols).rstrip())
    return 0 if all(s.status == "ok" for s in statuses) else 1


def cmd_agent(args: argparse.Namespace) -> int:
    import logging

    from netkit.l2.agent import Agent, L2Metrics
    from netkit.l2.kernel import KernelError

    log = logging.getLogger("netkit.l2")
    networks = load_for_node(args.file, args.node)
    if args.check:
        return _check(args, networks)
    metrics = L2Metrics()
    agent = Agent(
        networks,
        args.node,
        args.netns,
        metrics=metrics,
        resync=args.resync,
        underlay_filter=args.underlay_filter,
    )
    server = None
    if args.metrics:
        from netkit.base.serving import EndpointServer

        server = EndpointServer(
            args.metrics, metrics.registry, agent.converged, not_ready="the last round did not converge"
        )
        try:
            server.start_in_thread()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise CommandError(f"--metrics {args.metrics}: {reason}") from None
    stop = threading.Event()

    # Signal handlers run on the main thread between bytecodes, possibly while it holds the
    # agent queue's lock: they hand the work to a short-lived thread instead of queueing it.
    def on_stop(signum: int, _frame: object) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()
        threading.Thread(target=agent.stop, daemon=True).start()

    def reload() -> None:
        try:
            new = load_for_node(args.file, args.node)
        except (ConfigError, UsageError) as exc:
            log.error(
                "reload refused, keeping the current networks",
                extra={"file": str(args.file), "errors": getattr(exc, "errors", [str(exc)])},
            )
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
        agent.close()
        if server is not None:
            server.stop_thread()
        raise CommandError(str(exc)) from None
    log.info(
        "agent started",
        extra={
            "node": args.node,
            "netns": args.netns,
            "networks": len(networks),
            "ops": len(first.plan.ops),
            "writes": first.writes,
            "metrics": str(args.metrics) if args.metrics else None,
        },
    )
    try:
        agent.run(stop)
    finally:
        agent.close()
        if server is not None:
            server.stop_thread()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    require_labs("netkit l2 verify")
    from labs.l2verify import VerifyError, run_verify

    main_pid = os.getpid()

    def on_term(signum: int, _frame: object) -> None:
        if os.getpid() != main_pid:  # a forked helper (pyroute2) inherited this handler
            os._exit(128 + signum)
        raise SystemExit(128 + signum)  # unwinds through the lab's cleanup

    signal.signal(signal.SIGTERM, on_term)
    try:
        texts, result = run_verify(args.kind, settle=args.settle, timeout=args.timeout)
    except VerifyError as exc:
        raise UsageError(str(exc)) from None
    if args.output == "text":
        print("\n\n".join(texts))
    else:
        emit(result, args.output)
    sys.stdout.flush()
    return 0 if result["ok"] else 1
