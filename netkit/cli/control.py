"""``netkit controller``: the control plane's controller (run as a Deployment of 2 replicas)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from netkit.base.fields import ConfigError
from netkit.cli.cmdline import CommandError, command, emit, float_range, host_port

CONTROLLER_HELP = """\
Run the netkit controller: it watches L2Network, Node and NodeState objects, publishes each node's
networks in its NodeState (a new generation rolled out at most maxUnavailable nodes at a time),
writes each L2Network's status (Ready, Progressing, Degraded naming a conflict or a failed node)
and holds a finalizer so that deleting an L2Network removes it from every node first.

Replicas elect a leader on a coordination.k8s.io Lease (--namespace/--lease): only the leader
writes; the others keep their caches warm and take over within --lease-duration when the leader
stops renewing. It acts only once every cache has listed, and an API server that cannot be reached
is waited for (with backoff), never read as "nothing desired".

--kubeconfig names the cluster (default: the pod's service account, in a cluster). --metrics
serves /metrics (netkit_controller_leader), /healthz and /readyz (200 once every cache has listed).
Exit status: 0 stopped by SIGTERM/SIGINT, 1 the metrics address is taken, 2 bad options or an
unreadable kubeconfig.
"""


def add_parser(sub: Any) -> None:
    p = command(
        sub,
        "controller",
        help="the control plane's controller: L2Networks to every node's NodeState, with leader election",
        description=CONTROLLER_HELP,
        kind="daemon",
        func=cmd_controller,
        log_level="info",
        examples=[
            "netkit controller --kubeconfig /tmp/netkit-api/kubeconfig --metrics 127.0.0.1:9260",
            "netkit controller --check",
        ],
    )
    p.add_argument(
        "--kubeconfig", default=None, metavar="PATH", help="the cluster (default: in-cluster config)"
    )
    p.add_argument(
        "--identity",
        default=None,
        metavar="NAME",
        help="this replica's name in the Lease (default: the pod's hostname and PID)",
    )
    p.add_argument("--namespace", default="kube-system", metavar="NS", help="the Lease's namespace")
    p.add_argument("--lease", default="netkit-controller", metavar="NAME", help="the Lease's name")
    p.add_argument(
        "--lease-duration",
        type=float_range(1, 300),
        default=15.0,
        metavar="S",
        help="how long a lease holds without renewal",
    )
    p.add_argument(
        "--renew-deadline",
        type=float_range(0.5, 300),
        default=10.0,
        metavar="S",
        help="a leader that cannot renew this long stops leading (below --lease-duration)",
    )
    p.add_argument(
        "--retry-period", type=float_range(0.1, 60), default=2.0, metavar="S", help="between lease attempts"
    )
    p.add_argument(
        "--metrics",
        type=host_port(),
        default=None,
        metavar="ADDR:PORT",
        help="serve /metrics, /healthz and /readyz here",
    )
    p.add_argument("--check", action="store_true", help="print the options in effect (YAML), start nothing")


def cmd_controller(args: argparse.Namespace) -> int:
    from netkit.control.controller import ControllerOptions, run_controller

    if args.renew_deadline >= args.lease_duration:
        raise ConfigError(["--renew-deadline: must be below --lease-duration"])
    if args.kubeconfig is not None and not Path(args.kubeconfig).is_file():
        raise ConfigError([f"--kubeconfig: {args.kubeconfig}: no such file"])
    opts = ControllerOptions(
        kubeconfig=args.kubeconfig,
        identity=args.identity or f"{socket.gethostname()}_{os.getpid()}",
        namespace=args.namespace,
        lease=args.lease,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        metrics=args.metrics,
    )
    if args.check:
        emit({**vars(opts), "metrics": str(opts.metrics) if opts.metrics else None}, "yaml")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        return run_controller(opts, stop)
    except OSError as exc:
        raise CommandError(str(exc.strerror or exc)) from None
