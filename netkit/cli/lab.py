"""``netkit lab``: the lab's own services, for tests, demos and trying the control plane."""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from netkit.cli.cmdline import CommandError, command, emit, group, host_port, require_labs

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


def add_parser(sub: Any) -> None:
    lsub = group(
        sub, "lab", help="the lab's own services (the API server)", description="The lab's services."
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
