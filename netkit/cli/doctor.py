"""``netkit doctor``: run every check of the node once, print what it found, repair with --fix."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import Any

from netkit.base.fields import ConfigError
from netkit.cli.cmdline import CommandError, add_output, command, emit, float_range, host_port

DOCTOR_HELP = """\
Probe this node for the network failure modes netkit knows, print a table (check, status,
evidence, the fix suggested or applied), and with --fix apply the repairs that are safe: each one
idempotent, on objects netkit owns only, and checked by running the check again (before and after
facts are logged). The same checks run inside `netkit agent` on their intervals, where they
become Node conditions (type Netkit*, as node-problem-detector writes them), Events and metrics.

A check runs when its part is configured:

  L2 (--networks FILE, the `netkit l2` networks file, and --node):
    l2-drift            NetkitL2Drift            owned links, VTEPs, FDB/neighbour entries drifted
    l2-bridge-arp       NetkitBridgeAnswersARP   a tenant bridge's arp_ignore/rp_filter reset
    l2-underlay-filter  NetkitUnderlayFilter     the nftables underlay filter missing or edited
    l2-overlay-mtu      NetkitOverlayMTU         DF-set probes: the path between VTEPs too small
  BGP (--bird-socket PATH, or --frr [--frr-vty DIR]):
    bgp-sessions        NetkitBGPSessionDown     a session not Established, or flapping
    bgp-fib             NetkitBGPRoutesNotInFIB  prefixes the speaker holds, missing in the FIB
  DNS (--dns ADDR:PORT, the node-local cache; --dns-metrics, --dns-interface add checks):
    dns-address         NetkitDNSAddressMissing      the listen address missing from its interface
    dns-answering       NetkitDNSCacheNotAnswering   no reply at all (a stopped cache: SIGCONT)
    dns-upstreams       NetkitDNSUpstreamsDown       every upstream out of service
    dns-serve-stale     NetkitDNSServingStale        expired answers served since the last run
    dns-clients         NetkitDNSClientsBypassCache  kubelet clusterDNS / pods' resolv.conf elsewhere
  Always:
    conntrack           NetkitConntrackNearFull      the conntrack table at --conntrack-threshold
    api-server          NetkitAPIServerUnreachable   /version unanswered (with --kubeconfig)

Without --fix nothing changes; --fix --dry-run says what --fix would do. A desired state that
cannot be read is an error, never "nothing desired": no repair follows from it. A check that
crashes is reported as failed (status error) and the others still run. docs/doctor.md lists
every check with its evidence and repair.

Exit status: 0 no problem (left), 1 a failure at run time, 2 bad options or an invalid networks
file, 3 a problem found (or left after --fix), or a check that failed.
"""


def add_parser(sub: Any) -> None:
    p = command(
        sub,
        "doctor",
        help="probe the node for known network failure modes; --fix repairs what is safe",
        description=DOCTOR_HELP,
        kind="change",
        func=cmd_doctor,
        examples=[
            "netkit doctor --node n1 --networks networks.yaml --dns 169.254.20.10:53",
            "netkit doctor --node n1 --networks networks.yaml --fix -o json",
            "netkit doctor --dns 169.254.20.10:53 --dns-metrics 169.254.20.10:9253 --dns-interface lo",
            "netkit doctor --only conntrack --conntrack-threshold 0.8 -o json",
        ],
    )
    p.add_argument(
        "--node",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        metavar="NAME",
        help="this node's name (default: $NODE_NAME, else the hostname)",
    )
    p.add_argument(
        "--netns", default=None, metavar="NAME", help="check inside this network namespace (lab nodes)"
    )
    p.add_argument(
        "--networks", default=None, metavar="FILE", help="the L2 networks file (`netkit l2` format)"
    )
    p.add_argument(
        "--no-underlay-filter", action="store_true", help="the underlay filter is off on this node"
    )
    p.add_argument("--bird-socket", default=None, metavar="PATH", help="BIRD's control socket")
    p.add_argument("--frr", action="store_true", help="FRR runs on the node (read through vtysh)")
    p.add_argument("--frr-vty", default=None, metavar="DIR", help="FRR's vty socket directory (with --frr)")
    p.add_argument(
        "--dns",
        type=host_port(53),
        action="append",
        default=[],
        metavar="ADDR[:PORT]",
        help="a listen address of the node-local cache (repeatable)",
    )
    p.add_argument(
        "--dns-metrics",
        type=host_port(),
        default=None,
        metavar="ADDR:PORT",
        help="the cache's /metrics (default: none)",
    )
    p.add_argument(
        "--dns-interface",
        default=None,
        metavar="NAME",
        help="the interface that holds the cache's listen addresses (e.g. nodelocaldns, lo)",
    )
    p.add_argument(
        "--dns-pid-file",
        default=None,
        metavar="PATH",
        help="the cache's pid file: a stopped cache is resumed by --fix (default: none)",
    )
    p.add_argument(
        "--kubelet-config",
        default="/var/lib/kubelet/config.yaml",
        metavar="PATH",
        help="kubelet's KubeletConfiguration (its clusterDNS)",
    )
    p.add_argument(
        "--resolv-conf",
        action="append",
        default=[],
        metavar="GLOB",
        help="pods' resolv.conf files to check (repeatable)",
    )
    p.add_argument(
        "--conntrack-threshold",
        type=float_range(0.0001, 1.0),
        default=0.9,
        metavar="RATIO",
        help="the conntrack table's fill ratio that is a problem",
    )
    p.add_argument(
        "--kubeconfig",
        default=None,
        metavar="PATH",
        help="check the API server; with --report, write Node conditions and Events there",
    )
    p.add_argument(
        "--report", action="store_true", help="write the conditions on the Node (needs --kubeconfig)"
    )
    p.add_argument("--only", action="append", default=[], metavar="CHECK", help="run only these checks")
    p.add_argument("--fix", action="store_true", help="apply the safe repairs")
    p.add_argument(
        "--dry-run", action="store_true", help="with --fix: say what would be repaired, change nothing"
    )
    p.add_argument(
        "--mtu-timeout",
        type=float_range(0.05, 5),
        default=0.5,
        metavar="S",
        help="how long a DF-set MTU probe waits",
    )
    add_output(p)


def _pid_reader(path: str | None) -> Any:
    def read() -> int | None:
        if path is None:
            return None
        try:
            pid = int(Path(path).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:  # only a netkit DNS cache is ever signalled
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        return pid if b"dns" in cmdline and any(b"netkit" in c for c in cmdline) else None

    return read


def parts_from(args: argparse.Namespace) -> Any:
    from netkit.doctor.build import CHECKS, NodeParts
    from netkit.doctor.checks.dns import DnsTarget
    from netkit.doctor.checks.l2 import L2Desired

    errors: list[str] = []
    known = {c.name for c in CHECKS}
    errors += [
        f"--only: {o}: no such check ({', '.join(sorted(known))})" for o in args.only if o not in known
    ]
    if args.frr_vty and not args.frr:
        errors.append("--frr-vty: needs --frr")
    if args.bird_socket and args.frr:
        errors.append("--bird-socket and --frr: one speaker per node")
    if args.report and not args.kubeconfig:
        errors.append("--report: needs --kubeconfig")
    if args.kubeconfig and not Path(args.kubeconfig).is_file():
        errors.append(f"--kubeconfig: {args.kubeconfig}: no such file")
    if (args.dns_metrics or args.dns_interface or args.dns_pid_file) and not args.dns:
        errors.append("--dns-metrics/--dns-interface/--dns-pid-file: need --dns (the cache's address)")
    if args.dry_run and not args.fix:
        errors.append("--dry-run: goes with --fix (without --fix nothing is changed anyway)")
    if args.netns and not os.path.exists(f"/run/netns/{args.netns}"):
        errors.append(f"--netns: {args.netns}: no such network namespace")
    if errors:
        raise ConfigError(errors)
    parts = NodeParts(
        netns=args.netns, conntrack_threshold=args.conntrack_threshold, mtu_timeout=args.mtu_timeout
    )
    if args.networks:
        from netkit.cli.l2 import load_for_node

        nets = load_for_node(args.networks, args.node)  # unreadable or invalid: exit 2, nothing checked
        parts.l2 = L2Desired(args.node, lambda: nets, args.netns, not args.no_underlay_filter)
    if args.bird_socket or args.frr:
        from bgp.control import BirdObserver, FrrObserver

        observer: Any = (
            BirdObserver(args.bird_socket, args.netns, args.node)
            if args.bird_socket
            else FrrObserver(args.frr_vty, args.netns, args.node)
        )
        parts.speaker = lambda: observer
    if args.dns:
        parts.dns = DnsTarget(
            listen=lambda: args.dns,
            netns=args.netns,
            metrics=args.dns_metrics,
            interface=args.dns_interface,
            pid=_pid_reader(args.dns_pid_file),
            kubelet_config=args.kubelet_config,
            resolv_confs=args.resolv_conf,
        )
    return parts


def _table(rows: list[dict[str, Any]]) -> str:
    lines = []
    heads = ("CHECK", "STATUS", "REASON", "EVIDENCE", "FIX")
    cells = []
    for r in rows:
        ev = r["evidence"][:3] or [r["message"]]
        fix = ""
        if "repair" in r:
            rep = r["repair"]
            fix = ("applied: " if rep["applied"] else "") + rep["action"]
            if not rep["applied"]:
                fix += f" ({rep['decision']})"
            if "after" in rep:
                fix += f" -> {rep['after']['status']}"
            if "error" in rep:
                fix += f" -> failed: {rep['error']}"
        elif r.get("suggestion"):
            fix = r["suggestion"]
        repaired = r["found"] == "problem" and r["status"] == "ok"
        status = "repaired" if repaired else r["status"]
        cells.append([r["check"], status, r["found_reason"] if repaired else r["reason"], ev[0], fix])
        cells += [["", "", "", e, ""] for e in ev[1:]]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
    widths[3] = min(widths[3], 72)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:4]) + "  {}"
    lines.append(fmt.format(*heads))
    for c in cells:
        ev = c[3] if len(c[3]) <= 72 else c[3][:71] + "…"
        lines.append(fmt.format(c[0], c[1], c[2], ev, c[4]).rstrip())
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    from netkit.doctor.build import checks_for
    from netkit.doctor.runner import Doctor

    parts = parts_from(args)
    reporter = None
    if args.kubeconfig:
        from netkit.control import kube

        api = kube.api_client(args.kubeconfig)
        parts.api_server, parts.api_probe = api.configuration.host, kube.version_probe(api)
        if args.report:
            from netkit.control.doctorreport import NodeReporter

            events = kube.EventRecorder(kube.core(api), "netkit-doctor", args.node)
            reporter = NodeReporter(api, args.node, events, prune=False)  # the agent's conditions stay
    checks = checks_for(parts)
    if not checks:
        raise CommandError("no check to run")
    doctor = Doctor(checks, fix=args.fix, dry_run=args.dry_run, reporter=reporter)
    results = [r.as_dict() for r in doctor.run_once(args.only)]
    if args.output == "text":
        print(_table(results))
        configured = {"l2": parts.l2, "bgp": parts.speaker, "dns": parts.dns}
        off = [k for k, v in configured.items() if v is None]
        if off:
            print(f"\nnot checked (not configured): {', '.join(off)}; see netkit doctor --help")
    else:
        emit({"node": args.node, "checks": results}, args.output)
    left = [r for r in results if r["status"] in ("problem", "error")]
    return 3 if left else 0
