"""``netkit lab``: the lab's own services, for tests, demos and trying the control plane."""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from netkit.cli.cmdline import (
    CommandError,
    command,
    emit,
    float_range,
    group,
    host_port,
    int_range,
    require_labs,
)

APISERVER_HELP = """\
Run the lab's Kubernetes API server: the wire protocol kubectl and the official Python client
speak, over a real etcd (Debian's etcd-server, started on loopback ports of its own with its data
in --data-dir). It serves discovery and /openapi/v3, Namespaces, Nodes, ConfigMaps, Secrets,
Services, Events, Leases and CustomResourceDefinitions, and every kind a CRD registers while it
runs: custom resources are defaulted, pruned and validated (schema and CEL rules, a 422 naming
every field), with the status subresource, finalizers, label and field selectors, watches and
server-side Tables (printer columns). It trusts every client on its address: there is no
authentication, so it listens on loopback unless told otherwise.

A kubeconfig naming it is written to --kubeconfig (default: DATA-DIR/kubeconfig), for example:

  KUBECONFIG=/tmp/netkit-api/kubeconfig kubectl apply -k deploy/crds

Runs until SIGTERM or SIGINT (exit 0). Without --data-dir the data lives in a fresh directory
removed at the end. Exit status: 1 the address is taken or etcd cannot start, 2 bad options.
"""


DEMO_HELP = """\
Boot an emulated data centre in network namespaces and drive it as an administrator does, with
kubectl against the lab API server: the API server (real etcd), two controller replicas, --nodes
nodes in 3 failure domains, each with a real BIRD or FRR speaker, a netkit agent (L2 networks,
the node-local DNS cache, the speaker, the node's netkit-cni) and an upstream NSD. Then:

  BGP        a BGPTopology in full mesh, edited to redundant route reflectors: a live
             migration with every node's kernel FIB sampled every 80 ms
  tenants    two L2Networks (VXLAN) and a DNSCache; pods attached through each node's netkit-cni
  proofs     each tenant's pods reach each other across nodes and nothing of the other tenant
             (a ping matrix); every node resolves through its node-local cache
  faults     a route reflector killed; every DNS upstream gone for --fault-seconds; the API
             server stopped for --fault-seconds; a node's underlay link flapped; a tenant network
             deleted -- each with its effect measured

Progress is shown throughout; the report (index.html with the plots, report.json) goes to --out,
whose path is the last line printed. Every namespace, link and process is removed at the end
(--keep leaves the lab running for exploring: kubectl with its kubeconfig, and
`netkit lab shell NODE` for a shell inside a node; Ctrl-C removes it).
Exit status: 0 every proof held, 1 one failed (the summary names it), 2 bad options.
"""


def add_parser(sub: Any) -> None:
    lsub = group(
        sub,
        "lab",
        help="the lab's own services (the API server, the demo)",
        description="The lab's services.",
    )
    d = command(
        lsub,
        "demo",
        help="an emulated data centre, driven through the API, broken on purpose, with a report",
        description=DEMO_HELP,
        kind="lab",
        func=cmd_demo,
        log_level="warning",
        examples=["netkit lab demo --nodes 6 --out demo-report", "netkit lab demo --check"],
    )
    d.add_argument("--nodes", type=int_range(4, 12), default=6, metavar="N", help="nodes (4 to 12)")
    d.add_argument(
        "--out", type=Path, default=Path("demo-report"), metavar="DIR", help="where the report goes"
    )
    d.add_argument(
        "--fault-seconds",
        type=float_range(2, 120),
        default=20.0,
        metavar="S",
        help="how long each outage lasts",
    )
    d.add_argument("--keep", action="store_true", help="leave the lab running at the end (Ctrl-C stops it)")
    d.add_argument("--check", action="store_true", help="print the options in effect (YAML), start nothing")
    sh = command(
        lsub,
        "shell",
        help="a shell in one node of a lab left running by netkit lab demo --keep",
        description=SHELL_HELP,
        kind="lab",
        func=cmd_shell,
        log_level="warning",
        examples=["netkit lab shell n1 --lab demo-report/lab.json"],
    )
    sh.add_argument("node", metavar="NODE", help="the node, e.g. n1")
    sh.add_argument(
        "--lab", type=Path, default=Path("demo-report/lab.json"), metavar="FILE", help="the lab's lab.json"
    )
    p = command(
        lsub,
        "apiserver",
        help="a Kubernetes API server over etcd, for kubectl and the control plane's tests",
        description=APISERVER_HELP,
        kind="daemon",
        func=cmd_apiserver,
        log_level="info",
        examples=[
            "netkit lab apiserver --listen 127.0.0.1:8080 --data-dir /tmp/netkit-api",
            "netkit lab apiserver --check",
        ],
    )
    p.add_argument(
        "--listen",
        type=host_port(),
        default="127.0.0.1:8080",
        metavar="ADDR:PORT",
        help="where the API is served (plain HTTP)",
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, metavar="DIR", help="etcd's data and the kubeconfig"
    )
    p.add_argument(
        "--kubeconfig", type=Path, default=None, metavar="PATH", help="where the kubeconfig is written"
    )
    p.add_argument("--check", action="store_true", help="print the options in effect (YAML), start nothing")


def cmd_apiserver(args: argparse.Namespace) -> int:
    listen = args.listen  # argparse applies the type to the default too
    if args.check:
        emit(
            {
                "listen": str(listen),
                "data_dir": str(args.data_dir) if args.data_dir else None,
                "kubeconfig": str(args.kubeconfig) if args.kubeconfig else None,
            },
            "yaml",
        )
        return 0
    require_labs("netkit lab apiserver")
    import shutil

    from netkit.base.serving import check_bindable

    try:
        check_bindable(listen, "the API")  # before etcd starts: a taken address fails at once
    except OSError as exc:
        raise CommandError(str(exc.strerror)) from None

    from labs.apiserver.lab import ApiLab

    if shutil.which("etcd") is None:
        raise CommandError("etcd is not installed (Debian's etcd-server)")
    temporary = args.data_dir is None
    directory = Path(tempfile.mkdtemp(prefix="netkit-api-")) if temporary else args.data_dir
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    lab = ApiLab(directory, host=listen.host, port=listen.port, kubeconfig=args.kubeconfig)
    try:
        try:
            lab.start()
        except OSError as exc:
            raise CommandError(f"cannot serve on {listen}: {exc.strerror or exc}") from None
        assert lab.server is not None
        print(f"serving the Kubernetes API on {lab.server.url}; kubeconfig: {lab.kubeconfig}", flush=True)
        stop.wait()
    finally:
        lab.stop()
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


SHELL_HELP = """\
A shell inside one node of a lab left running by `netkit lab demo --keep`: in the node's
network namespace (its bridges, VXLAN devices, BGP speaker's routes, node-local DNS cache), with
KUBECONFIG naming the lab's API server, so `kubectl get netkit` works there too. --lab is the
lab.json the demo wrote next to its report (default: demo-report/lab.json). Exit status: the
shell's; 1 no such lab or node.
"""


def cmd_shell(args: argparse.Namespace) -> int:
    import json
    import os
    import shutil

    try:
        lab = json.loads(args.lab.read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(
            f"{args.lab}: no running lab ({exc}); start one with netkit lab demo --keep"
        ) from None
    nodes = lab.get("nodes") or {}
    if args.node not in nodes:
        raise CommandError(f"{args.node}: not a node of this lab (it has {', '.join(sorted(nodes))})")
    shell = os.environ.get("SHELL") or shutil.which("bash") or "/bin/sh"
    os.environ["KUBECONFIG"] = str(lab["kubeconfig"])
    os.execvp("ip", ["ip", "netns", "exec", nodes[args.node], shell])
    return 1  # not reached: exec replaced this process


def cmd_demo(args: argparse.Namespace) -> int:
    if args.check:
        emit(
            {
                "nodes": args.nodes,
                "out": str(args.out),
                "fault_seconds": args.fault_seconds,
                "keep": args.keep,
            },
            "yaml",
        )
        return 0
    require_labs("netkit lab demo")
    import os

    from labs.demo.phases import run_demo
    from labs.demo.report import summary

    if os.geteuid() != 0:
        raise CommandError("netkit lab demo needs root (network namespaces, BGP speakers)")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def hold() -> None:
        print("Ctrl-C removes it.", flush=True)
        stop.wait()

    report = run_demo(
        args.nodes,
        args.out,
        fault_seconds=args.fault_seconds,
        hold=hold if args.keep else None,
        progress=_progress,
    )
    print(summary(report))
    print(str((args.out / "index.html").resolve()))
    return 0 if report.ok else 1


def _progress(line: str) -> None:
    print(line, flush=True)
