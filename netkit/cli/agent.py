"""``netkit agent``: the node agent (run as a DaemonSet, one per node)."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path
from typing import Any

from netkit.base.fields import ConfigError
from netkit.cli.cmdline import CommandError, command, emit, float_range, host_port

AGENT_HELP = """\
Run the netkit node agent for one node (--node, default $NODE_NAME): it watches that node's
NodeState (which the controller fills) and makes the node run what it says, reporting back in the
NodeState's status (status.applied per object with its generation, status.dns, a heartbeat):

  spec.l2Networks  the L2 reconcile (as `netkit l2 agent`): bridges, VTEPs, FDB entries and MTUs
                   of exactly these networks, drift repaired, nothing it does not own touched;
  spec.dns         the node-local cache (`netkit dns serve`, a child process) with this
                   configuration: reloaded without a dropped query on a change, restarted when the
                   listen addresses change, stopped when spec.dns goes; an agent started while
                   another one's cache serves (a DaemonSet surge) takes it over without a gap;
  spec.bgp         the node's BGP speaker (BIRD: --bird-control and --bird-config; FRR: --frr)
                   configured to the migration step the controller publishes, its sessions and
                   learnt paths reported back so the controller can gate the next step; the
                   speaker is the node's: it is never started or stopped here. A topology with
                   speaker: calico is run by calico/node from the resources the controller
                   writes; --calico-bird-control (calico/node's bird.ctl) lets the agent observe
                   its BIRD and report the sessions and paths the gates need.
  status.endpoints the pods netkit-cni attached here (its records in --cni-state-dir), which the
                   controller makes known endpoints (static FDB, ARP/ND suppression) on every
                   other node of their network. With --cni-socket the agent runs the plugin for
                   the node's netkit-cni shim (/opt/cni/bin/netkit-cni, a small binary the
                   DaemonSet installs): the node needs no Python.

It acts only once the NodeState has been read: a node without one waits and touches nothing.
While the API server cannot be reached the node keeps what it runs (and drift is still repaired
against the last NodeState); a NodeState deleted is not "nothing": everything stays.

--netns runs the node's data plane in a network namespace (the lab's nodes); --state-dir holds the
cache's configuration, control socket and log (--no-dns: no DNS part). --metrics serves /metrics
(netkit_agent_l2_rounds, netkit_agent_status_writes, netkit_agent_dns_serving), /healthz and
/readyz (200 once the NodeState is read).

The node's checks (`netkit doctor`'s, docs/doctor.md) run inside the agent on their intervals:
each becomes a Node condition of type Netkit* (node-problem-detector's format), an Event on the
Node at every transition and repair, netkit_doctor_* metrics, and a line of status.doctor. Safe
repairs run unless --doctor-dry-run; --no-doctor runs no check.

Exit status: 0 stopped by SIGTERM/SIGINT, 1 the metrics address is taken, 2 bad options or an
unreadable kubeconfig.
"""


def add_parser(sub: Any) -> None:
    p = command(
        sub,
        "agent",
        help="the node agent: the node's NodeState to its kernel and DNS cache, and back",
        description=AGENT_HELP,
        kind="daemon",
        func=cmd_agent,
        log_level="info",
        examples=[
            "netkit agent --node n1 --kubeconfig /tmp/netkit-api/kubeconfig --metrics 127.0.0.1:9261",
            "netkit agent --node n1 --netns lab-n1 --state-dir /tmp/n1 --check",
        ],
    )
    p.add_argument("--node", default=os.environ.get("NODE_NAME"), metavar="NAME", help="this node's name")
    p.add_argument(
        "--kubeconfig", default=None, metavar="PATH", help="the cluster (default: in-cluster config)"
    )
    p.add_argument("--netns", default=None, metavar="NAME", help="the node's network namespace (lab nodes)")
    p.add_argument(
        "--state-dir", default="/var/lib/netkit", metavar="DIR", help="the DNS cache's files (a hostPath)"
    )
    p.add_argument("--no-dns", action="store_true", help="no DNS part: spec.dns is left alone")
    p.add_argument(
        "--dns-metrics",
        type=host_port(),
        default=None,
        metavar="ADDR:PORT",
        help="where the DNS cache serves its /metrics (default: none)",
    )
    p.add_argument("--bird-control", default=None, metavar="PATH", help="BIRD's control socket (BGP part)")
    p.add_argument("--bird-config", default=None, metavar="PATH", help="the bird.conf BIRD runs (rewritten)")
    p.add_argument("--frr", action="store_true", help="FRR runs on the node: configure it through vtysh")
    p.add_argument("--frr-vty", default=None, metavar="DIR", help="FRR's vty socket directory (with --frr)")
    p.add_argument(
        "--calico-bird-control",
        default=None,
        metavar="PATH",
        help="calico/node's BIRD socket, observed for speaker: calico (e.g. /var/run/calico/bird.ctl)",
    )
    p.add_argument(
        "--cni-state-dir",
        default="/var/lib/netkit/cni",
        metavar="DIR",
        help="netkit-cni's stateDir: the pods attached here, published as status.endpoints",
    )
    p.add_argument(
        "--cni-socket",
        default=None,
        metavar="PATH",
        help="serve the netkit-cni shim's calls here (the DaemonSet: /run/netkit/cni.sock)",
    )
    p.add_argument(
        "--resync", type=float_range(0.5, 3600), default=30.0, metavar="S", help="full re-read and re-check"
    )
    p.add_argument(
        "--metrics", type=host_port(), default=None, metavar="ADDR:PORT", help="/metrics, /healthz, /readyz"
    )
    p.add_argument("--no-doctor", action="store_true", help="run no node checks (netkit doctor)")
    p.add_argument(
        "--doctor-dry-run", action="store_true", help="node checks report their findings, never repair"
    )
    p.add_argument(
        "--dns-interface",
        default=None,
        metavar="NAME",
        help="the interface holding the cache's listen addresses, checked and repaired (default: none)",
    )
    p.add_argument(
        "--kubelet-config",
        default="/var/lib/kubelet/config.yaml",
        metavar="PATH",
        help="kubelet's configuration: its clusterDNS must point at the cache",
    )
    p.add_argument(
        "--conntrack-threshold",
        type=float_range(0.0001, 1.0),
        default=0.9,
        metavar="RATIO",
        help="the conntrack fill ratio that is a problem",
    )
    p.add_argument("--check", action="store_true", help="print the options in effect (YAML), start nothing")


def cmd_agent(args: argparse.Namespace) -> int:
    from netkit.control.agent import AgentOptions, run_agent
    from netkit.control.bgpagent import SpeakerAccess
    from netkit.control.doctoragent import DoctorOptions

    errors = []
    if not args.node:
        errors.append("--node: required (or $NODE_NAME, from the pod's spec.nodeName)")
    if args.kubeconfig is not None and not Path(args.kubeconfig).is_file():
        errors.append(f"--kubeconfig: {args.kubeconfig}: no such file")
    if bool(args.bird_control) != bool(args.bird_config):
        errors.append("--bird-control and --bird-config: give both (the socket and the file BIRD runs)")
    if args.frr_vty and not args.frr:
        errors.append("--frr-vty: needs --frr")
    if errors:
        raise ConfigError(errors)
    speaker = None
    if args.bird_control or args.frr or args.calico_bird_control:
        speaker = SpeakerAccess(
            args.bird_control, args.bird_config, args.frr_vty, args.frr, args.calico_bird_control
        )
    opts = AgentOptions(
        node=args.node,
        kubeconfig=args.kubeconfig,
        netns=args.netns,
        state_dir=None if args.no_dns else Path(args.state_dir),
        dns_metrics=str(args.dns_metrics) if args.dns_metrics else None,
        speaker=speaker,
        bgp_state_dir=Path(args.state_dir),
        cni_state_dir=args.cni_state_dir,
        cni_socket=args.cni_socket,
        metrics=args.metrics,
        resync=args.resync,
        doctor=None
        if args.no_doctor
        else DoctorOptions(
            dry_run=args.doctor_dry_run,
            dns_interface=args.dns_interface,
            kubelet_config=args.kubelet_config,
            conntrack_threshold=args.conntrack_threshold,
        ),
    )
    if args.check:
        shown = {**vars(opts), "metrics": str(opts.metrics) if opts.metrics else None}
        shown |= {"state_dir": str(opts.state_dir) if opts.state_dir else None}
        shown |= {"bgp_state_dir": str(opts.bgp_state_dir), "speaker": vars(speaker) if speaker else None}
        shown |= {"doctor": vars(opts.doctor) if opts.doctor else None}
        emit(shown, "yaml")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        return run_agent(opts, stop)
    except OSError as exc:
        raise CommandError(str(exc.strerror or exc)) from None
