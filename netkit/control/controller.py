"""``netkit controller`` as a process: the informers, the leader election on a Lease, the L2
controller run while leading, and /metrics /healthz /readyz (ready once every cache has listed).
A replica that does not lead keeps its caches warm, so a takeover acts at once."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge

from netkit.base.addr import HostPort
from netkit.base.serving import EndpointServer
from netkit.control import kube
from netkit.control.core.crds import GROUP, VERSION
from netkit.control.l2controller import L2Controller

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


def run_controller(opts: ControllerOptions, stop: threading.Event) -> int:
    registry = CollectorRegistry()
    leader = Gauge("netkit_controller_leader", "1 while this replica leads.", registry=registry)
    server: EndpointServer | None = None
    controller: L2Controller | None = None
    if opts.metrics is not None:  # first: a taken address fails before anything is contacted
        server = EndpointServer(
            opts.metrics,
            registry,
            lambda: controller is not None and controller.ready(),
            not_ready="the caches have not listed yet",
        )
        server.start_in_thread()

    def started(c: L2Controller) -> None:
        leader.set(1)
        c.changed()  # a new leader looks at everything at once

    try:
        api = kube.api_client(opts.kubeconfig)
        co, core = kube.custom_objects(api), kube.core(api)
        controller = L2Controller(co, {})
        informers = {
            "l2networks": kube.Informer(
                co.list_cluster_custom_object,
                controller.changed,
                args=(GROUP, VERSION, "l2networks"),
                name="l2networks",
            ),
            "nodes": kube.Informer(core.list_node, controller.changed, name="nodes"),
            "nodestates": kube.Informer(
                co.list_cluster_custom_object,
                controller.changed,
                args=(GROUP, VERSION, "nodestates"),
                name="nodestates",
            ),
        }
        controller.informers = informers
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
            on_started=lambda: started(controller),
            on_stopped=lambda: leader.set(0),
        ).start()
        log.info(
            "controller started", extra={"identity": opts.identity, "lease": f"{opts.namespace}/{opts.lease}"}
        )
        try:
            controller.run(elector.leading, stop)
        finally:
            elector.stop()
            for inf in informers.values():
                inf.stop()
    finally:
        if server is not None:
            server.stop_thread()
    return 0
