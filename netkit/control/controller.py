"""``netkit controller`` as a process: the informers, the leader election on a Lease, the
controllers (L2, DNS, BGP) run while leading, each on its own thread, and /metrics /healthz /readyz
(ready once every cache has listed). A replica that does not lead keeps its caches warm, so a
takeover acts at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from netkit.base.addr import HostPort
from netkit.base.serving import EndpointServer
from netkit.control import kube
from netkit.control.bgpcontroller import BgpController
from netkit.control.core.crds import GROUP, VERSION
from netkit.control.dnscontroller import DnsController
from netkit.control.l2controller import L2Controller
from netkit.control.reconciler import Reconciler

__all__ = ["ControllerOptions", "run_controller"]

log = logging.getLogger("netkit.control")


@dataclass(frozen=True)
class ControllerOptions:
    kubeconfig: str | None
    identity: str
    namespace: str = "kube-system"
    lease: str = "netkit-controller"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    metrics: HostPort | None = None


def _informers(api: Any, changed: Callable[[str, dict[str, Any]], None]) -> dict[str, kube.Informer]:
    co, core = kube.custom_objects(api), kube.core(api)

    def custom(plural: str) -> kube.Informer:
        return kube.Informer(
            co.list_cluster_custom_object, changed, args=(GROUP, VERSION, plural), name=plural
        )

    return {
        "l2networks": custom("l2networks"),
        "dnscaches": custom("dnscaches"),
        "bgptopologies": custom("bgptopologies"),
        "nodestates": custom("nodestates"),
        "nodes": kube.Informer(core.list_node, changed, name="nodes"),
        "services": kube.Informer(core.list_service_for_all_namespaces, changed, name="services"),
    }


def run_controller(opts: ControllerOptions, stop: threading.Event) -> int:
    registry = CollectorRegistry()
    leader = Gauge("netkit_controller_leader", "1 while this replica leads.", registry=registry)
    server: EndpointServer | None = None
    controllers: list[Reconciler] = []
    if opts.metrics is not None:  # first: a taken address fails before anything is contacted
        server = EndpointServer(
            opts.metrics,
            registry,
            lambda: bool(controllers) and all(c.ready() for c in controllers),
            not_ready="the caches have not listed yet",
        )
        server.start_in_thread()

    def changed(_kind: str = "", _obj: dict[str, Any] | None = None) -> None:
        for c in controllers:
            c.changed()

    def started() -> None:
        leader.set(1)
        changed()  # a new leader looks at everything at once

    try:
        api = kube.api_client(opts.kubeconfig)
        co = kube.custom_objects(api)
        informers = _informers(api, changed)
        events = kube.EventRecorder(kube.core(api), "netkit-controller", opts.identity)
        controllers.extend(
            [
                L2Controller(co, informers, events=events),
                DnsController(co, informers, events=events),
                BgpController(co, informers, events=events, core=kube.core(api)),
            ]
        )
        for inf in informers.values():
            inf.start()
        elector = kube.LeaderElector(
            kube.coordination(api),
            opts.namespace,
            opts.lease,
            opts.identity,
            lease_duration=opts.lease_duration,
            renew_deadline=opts.renew_deadline,
            retry_period=opts.retry_period,
            on_started=started,
            on_stopped=lambda: leader.set(0),
        ).start()
        log.info(
            "controller started", extra={"identity": opts.identity, "lease": f"{opts.namespace}/{opts.lease}"}
        )
        threads = [
            threading.Thread(target=c.run, args=(elector.leading, stop), name=c.name, daemon=True)
            for c in controllers
        ]
        try:
            for t in threads:
                t.start()
            stop.wait()
        finally:
            for t in threads:
                t.join(timeout=10)
            elector.stop()
            for inf in informers.values():
                inf.stop()
    finally:
        if server is not None:
            server.stop_thread()
    return 0
