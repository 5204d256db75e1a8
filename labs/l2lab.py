"""A lab of network namespaces for the L2 agent (effects): nodes on an underlay bridge, pods.

    fabric namespace  <rid>-fab: bridge <rid>-fab, one veth per node (<rid>-f<i>)
    node namespaces   <rid>-n<i>: underlay <rid>-u<i> with 198.18.0.<i>/24 (the VTEP), MTU 1500;
                      with ``underlay_name`` every node's underlay has that one name (a VLAN
                      network names its underlay interface, the same on every node)
    hosts             <rid>-<name>: ``add_host``, a namespace on the fabric with an underlay
                      address that is no node's (e.g. a rogue sender for ``netkit l2 verify``)
    pod namespaces    <rid>-<pod>: <rid>-eth with the pod's MAC and address; its peer <rid>-<pod>
                      stays in the node's namespace, as the port the agent attaches

Everything carries the run id (``labs.runid.new_run_id``: ``nk`` + 4 hex), and ``close()``
removes every namespace the lab created (which removes the veths and whatever the agent built in
them), also after a failed build. Needs root.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute, netns

from labs.runid import new_run_id
from netkit.base.netns import netns_exec
from netkit.l2.agent import reconcile_once
from netkit.l2.core.model import load_networks
from netkit.l2.kernel import Kernel

UNDERLAY_NET = "198.18.0"


@dataclass(frozen=True)
class Pod:
    name: str
    node: str
    netns: str  # the pod's namespace
    port: str  # the host-side veth, in the node's namespace
    mac: str
    ip: str  # with prefix length, e.g. 198.19.1.1/24

    @property
    def address(self) -> str:
        return self.ip.split("/")[0]


@dataclass
class L2Lab:
    nodes: int = 3
    run_id: str = field(default_factory=new_run_id)
    node_ns: dict[str, str] = field(default_factory=dict)  # node name -> namespace
    underlay: dict[str, str] = field(default_factory=dict)  # node name -> underlay link
    vtep: dict[str, str] = field(default_factory=dict)  # node name -> VTEP address
    pods: dict[str, Pod] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)  # namespaces, in creation order
    underlay_name: str | None = None  # one underlay name on every node (default <rid>-u<i>)
    hosts: dict[str, str] = field(default_factory=dict)  # host name -> namespace
    # close() acts only in this process: pyroute2 forks helpers (netns sockets), and a fork that
    # unwinds through a ``finally`` (e.g. on an inherited SIGTERM handler) must not tear down
    owner_pid: int = field(default_factory=os.getpid)

    @property
    def fabric(self) -> str:
        return f"{self.run_id}-fab"

    def ns(self, node: str) -> str:
        return self.node_ns[node]

    def _create_ns(self, name: str) -> IPRoute:
        try:
            netns.create(name)
        except BaseException:
            # a create that failed half-way can leave the empty mount-point file behind
            path = f"/run/netns/{name}"
            if os.path.exists(path) and not os.path.ismount(path):
                os.unlink(path)
            raise
        self.created.append(name)
        ipr = IPRoute(netns=name, flags=0)
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return ipr

    def build(self) -> L2Lab:
        try:
            fab = self._create_ns(self.fabric)
            with fab:
                fab.link("add", ifname=self.fabric, kind="bridge", state="up")
                br = fab.link_lookup(ifname=self.fabric)[0]
                for i in range(1, self.nodes + 1):
                    node = f"n{i}"
                    ns = f"{self.run_id}-{node}"
                    with self._create_ns(ns) as ipr:
                        self.node_ns[node] = ns
                        outer, inner = f"{self.run_id}-f{i}", self.underlay_name or f"{self.run_id}-u{i}"
                        fab.link("add", ifname=outer, kind="veth", peer={"ifname": inner})
                        fab.link("set", index=fab.link_lookup(ifname=outer)[0], master=br, state="up")
                        fab.link("set", index=fab.link_lookup(ifname=inner)[0], net_ns_fd=ns)
                        idx = ipr.link_lookup(ifname=inner)[0]
                        ipr.addr("add", index=idx, address=f"{UNDERLAY_NET}.{i}", prefixlen=24)
                        ipr.link("set", index=idx, state="up", mtu=1500)
                        self.underlay[node] = inner
                        self.vtep[node] = f"{UNDERLAY_NET}.{i}"
        except BaseException:
            self.close()
            raise
        return self

    def add_pod(self, name: str, node: str, mac: str, ip: str, mtu: int = 1500) -> Pod:
        """A pod namespace with one veth: ``ip`` (with prefix) and ``mac`` inside, the port outside."""
        pod = Pod(name, node, f"{self.run_id}-{name}", f"{self.run_id}-{name}", mac, ip)
        inner = f"{self.run_id}-eth"
        with self._create_ns(pod.netns) as podr, IPRoute(netns=self.ns(node), flags=0) as ipr:
            ipr.link("add", ifname=pod.port, kind="veth", peer={"ifname": inner})
            ipr.link("set", index=ipr.link_lookup(ifname=pod.port)[0], state="up", mtu=mtu)
            ipr.link("set", index=ipr.link_lookup(ifname=inner)[0], net_ns_fd=pod.netns)
            idx = podr.link_lookup(ifname=inner)[0]
            podr.link("set", index=idx, address=mac, mtu=mtu)
            address, prefix = ip.split("/")
            podr.addr("add", index=idx, address=address, prefixlen=int(prefix))
            podr.link("set", index=idx, state="up")
        self.pods[name] = pod
        return pod

    def add_blue_pods(self) -> tuple[Pod, Pod]:
        """The pair most L2 tests start from: pa (n1, 198.19.1.1/24), pb (n2, 198.19.1.2/24)."""
        return (
            self.add_pod("pa", "n1", "02:00:00:00:01:01", "198.19.1.1/24"),
            self.add_pod("pb", "n2", "02:00:00:00:01:02", "198.19.1.2/24"),
        )

    def blue(self, **extra: Any) -> dict[str, Any]:
        """Network blue (VNI 100) on every node with pa's and pb's ports (``add_blue_pods``),
        as one entry of a networks file; ``extra`` adds or replaces fields."""
        ports = {"n1": [self.pods["pa"].port], "n2": [self.pods["pb"].port]}
        return {"name": "blue", "vni": 100, "members": dict(self.vtep), "ports": ports, **extra}

    def apply(self, text: str) -> dict[str, int]:
        """Apply the networks file ``text`` on every node with the agent's own reconcile step;
        returns the kernel writes per node."""
        nets = load_networks(text)
        writes = {}
        for node in self.node_ns:
            with Kernel(self.ns(node)) as k:
                writes[node] = reconcile_once(k, nets, node)[2].writes
        return writes

    def add_sandbox(self, name: str) -> str:
        """An empty namespace ``<rid>-<name>`` (only ``lo``, up), as a container runtime makes
        one for a pod before it calls the CNI plugins; returns its path under /run/netns."""
        ns = f"{self.run_id}-{name}"
        self._create_ns(ns).close()
        return f"/run/netns/{ns}"

    def add_host(self, name: str, address: str, prefixlen: int = 24) -> str:
        """A namespace ``<rid>-<name>`` on the fabric bridge with ``address`` on its veth
        ``<rid>-eth``; returns the namespace."""
        ns = f"{self.run_id}-{name}"
        outer, inner = f"{self.run_id}-h{name}"[:15], f"{self.run_id}-eth"
        with self._create_ns(ns) as host, IPRoute(netns=self.fabric, flags=0) as fab:
            fab.link("add", ifname=outer, kind="veth", peer={"ifname": inner})
            br = fab.link_lookup(ifname=self.fabric)[0]
            fab.link("set", index=fab.link_lookup(ifname=outer)[0], master=br, state="up")
            fab.link("set", index=fab.link_lookup(ifname=inner)[0], net_ns_fd=ns)
            idx = host.link_lookup(ifname=inner)[0]
            host.addr("add", index=idx, address=address, prefixlen=prefixlen)
            host.link("set", index=idx, state="up")
        self.hosts[name] = ns
        return ns

    def ping(self, src: str, dst_ip: str, timeout: int = 1) -> bool:
        """One ping from pod ``src`` to ``dst_ip``."""
        cmd = netns_exec(self.pods[src].netns, ["ping", "-c1", "-n", f"-W{timeout}", dst_ip])
        return subprocess.run(cmd, capture_output=True, timeout=timeout + 10, check=False).returncode == 0

    def close(self) -> None:
        if os.getpid() != self.owner_pid:
            return
        errors = []
        for name in reversed(self.created):
            try:
                netns.remove(name)
            except OSError as exc:
                errors.append(f"{name}: {exc}")
        self.created.clear()
        if errors:
            raise RuntimeError("lab cleanup failed: " + "; ".join(errors))

    def leftovers(self) -> list[str]:
        """Namespaces with this run's prefix still present (should be none after close)."""
        try:
            names = os.listdir("/run/netns")
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.startswith(self.run_id))

    def __enter__(self) -> L2Lab:
        return self.build()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
