"""The emulated data centre of ``netkit lab demo`` (effects): what boots, and what it is made of.

- the lab API server (real etcd) and two ``netkit controller`` replicas (leader-elected);
- N nodes (network namespaces on one underlay bridge, ``labs.bgpmigrate.migration_lab``: node
  n<i> at 198.18.0.<i>, an alternate address 198.18.1.<i>, pod CIDR 198.19.<i>.0/24, failure
  domain z<i mod 3>), each with a real BGP speaker (BIRD on odd nodes, FRR on even ones, started
  with no neighbour) and a real ``netkit agent`` driving it, its L2 networks, its node-local DNS
  cache (169.254.20.10 on the node's loopback) and serving the node's ``netkit-cni`` shim;
- the upstream DNS: a real NSD on the underlay (198.18.0.200) serving ``cluster.local`` and an
  external zone ``example.org``;
- kubectl, with a HOME of its own, for everything an administrator does.

Everything carries the run's prefix and is stopped by PID and removed on ``close`` (also after
an error), unless ``keep``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pyroute2 import IPRoute

from bgp.core.model import SpeakerConfig, Timers
from labs.apiserver.kubectl import Kubectl as LabKubectl
from labs.apiserver.lab import ApiLab
from labs.bgpmigrate import migration_lab, speaker_class
from labs.bgpspeakers import BgpSpeaker, BirdSpeaker
from labs.chaos.lab import NsNsd
from labs.dnspeers import generate_zone
from labs.l2lab import L2Lab
from labs.runid import RunDir, free_port
from netkit.base.process import ManagedProcess

__all__ = ["NODE_LOCAL", "UPSTREAM", "DataCentre", "Kubectl", "Progress"]

Progress = Callable[[str], None]
NODE_LOCAL = "169.254.20.10"
UPSTREAM = "198.18.0.200"
ROOT = Path(__file__).resolve().parents[2]
ZONE_LABEL = "topology.kubernetes.io/zone"


class Kubectl(LabKubectl):
    """kubectl as the demo's administrator: what it printed, kept for the report when asked."""

    def __init__(self, kubeconfig: Path, home: Path) -> None:
        super().__init__(kubeconfig, home)
        self.shown: list[tuple[str, str]] = []  # (command, output) worth showing in the report

    def run(self, *args: str, stdin: str | None = None, show: bool = False) -> str:
        out = self(*args, stdin=stdin).stdout
        if show:
            self.shown.append(("kubectl " + " ".join(args), out.rstrip()))
        return out


@dataclass
class DataCentre:
    run: RunDir
    nodes: int = 6
    progress: Progress = print
    stack: ExitStack = field(default_factory=ExitStack)
    speakers: dict[str, BgpSpeaker] = field(default_factory=dict)
    agents: dict[str, ManagedProcess] = field(default_factory=dict)
    controllers: dict[str, ManagedProcess] = field(default_factory=dict)
    api: ApiLab | None = None
    l2: L2Lab | None = None
    upstream: NsNsd | None = None
    kubectl: Kubectl | None = None

    # -- the parts -------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [f"n{i}" for i in range(1, self.nodes + 1)]

    def ns(self, node: str) -> str:
        assert self.l2 is not None
        return self.l2.ns(node)

    def log(self, name: str) -> Path:
        return self.run.path / f"{name}.log"

    def cni_socket(self, node: str) -> Path:
        return self.run.path / f"cni-{node}.sock"

    def boot(self) -> DataCentre:
        t0 = time.monotonic()
        self.api = self.stack.enter_context(ApiLab(self.run.path / "api"))
        self.kubectl = Kubectl(self.api.kubeconfig, self.run.path / "home")
        self.progress(f"  API server on {self.api.host}:{self.api.port_in_use} (etcd underneath)")
        self.kubectl.run("apply", "-k", "deploy/crds")
        self.l2 = self.stack.enter_context(migration_lab(self.nodes, self.run))
        self._nodes()
        self._upstream()
        self._speakers()
        for name in ("a", "b"):
            argv = ["controller", "--kubeconfig", str(self.api.kubeconfig), "--identity", f"replica-{name}"]
            argv += [
                "--metrics",
                f"127.0.0.1:{free_port()}",
                "--lease-duration",
                "4",
                "--renew-deadline",
                "3",
            ]
            argv += ["--retry-period", "0.5"]
            self.controllers[name] = self._process(argv, self.log(f"controller-{name}"))
        for node in self.names:
            self.agents[node] = self.start_agent(node)
        self.progress(
            f"  {self.nodes} nodes in 3 failure domains, {len(self.controllers)} controllers, "
            f"{len(self.agents)} agents, BIRD/FRR, NSD upstream: {time.monotonic() - t0:.1f} s"
        )
        return self

    def _process(self, argv: list[str], log: Path) -> ManagedProcess:
        proc = ManagedProcess(
            [sys.executable, "-m", "netkit.cli", *argv, "--log-format", "json"], log, cwd=ROOT
        )
        self.stack.callback(proc.stop, 15.0, group=False)
        return proc

    def _nodes(self) -> None:
        """The Node objects (labels, pod CIDR, the alternate address; InternalIP in the status),
        made with kubectl as an administrator (or a kubelet) would."""
        assert self.kubectl is not None and self.l2 is not None
        docs = []
        for node in self.names:
            i = int(node[1:])
            labels = {ZONE_LABEL: f"z{i % 3}", "netkit.io/tenant-blue": "true"}
            if i % 2 == 0 or i <= 2:
                labels["netkit.io/tenant-red"] = "true"
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": node,
                        "labels": labels,
                        "annotations": {"netkit.io/bgp-alternate-address": f"198.18.1.{i}"},
                    },
                    "spec": {"podCIDR": f"198.19.{i}.0/24", "podCIDRs": [f"198.19.{i}.0/24"]},
                }
            )
        self.kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
        for node in self.names:
            status = {"status": {"addresses": [{"type": "InternalIP", "address": f"198.18.0.{node[1:]}"}]}}
            self.kubectl.run(
                "patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps(status)
            )
            with IPRoute(netns=self.ns(node), flags=0) as ipr:
                ipr.addr("add", index=ipr.link_lookup(ifname="lo")[0], address=NODE_LOCAL, prefixlen=32)

    def _upstream(self) -> None:
        assert self.l2 is not None
        host = self.l2.add_host("up", UPSTREAM)
        # short TTLs: during an upstream outage the hot names expire and are served stale
        zones = [generate_zone("cluster.local.", 50, ttl=5), generate_zone("example.org.", 50, ttl=5)]
        self.upstream = NsNsd(host, zones, (UPSTREAM, 53), self.run.path / "nsd").start()
        self.stack.callback(self.upstream.stop)

    def _speakers(self) -> None:
        assert self.l2 is not None
        for node in self.names:
            i = int(node[1:])
            quiet = SpeakerConfig(node, f"198.18.0.{i}", f"198.18.0.{i}", 64512, (), (), timers=Timers.lab())
            sp = speaker_class(i)(self.ns(node), self.run.path, quiet)
            self.speakers[node] = self.stack.enter_context(sp)

    def start_agent(self, node: str) -> ManagedProcess:
        """The node's agent (a new one beside the old in a DaemonSet surge: same state dir)."""
        assert self.api is not None
        sp = self.speakers[node]
        state = self.run.path / f"state-{node}"
        self.stack.callback(_kill_cache, state)  # after the agent stops: its cache outlives it
        argv = ["agent", "--node", node, "--kubeconfig", str(self.api.kubeconfig), "--netns", self.ns(node)]
        argv += ["--state-dir", str(state)]
        argv += ["--cni-state-dir", str(self.run.path / f"cni-state-{node}")]
        argv += ["--cni-socket", str(self.cni_socket(node)), "--resync", "2"]
        argv += ["--dns-interface", "lo"]  # the node-local address lives on lo here
        if isinstance(sp, BirdSpeaker):
            argv += ["--bird-control", str(sp.ctl_path), "--bird-config", str(sp.conf_path)]
        else:
            argv += ["--frr", "--frr-vty", str(sp.dir)]
        return self._process(argv, self.log(f"agent-{node}"))

    def logs(self, tail: int = 1500) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}"
            for p in sorted(self.run.path.glob("*.log"))
        )

    def close(self) -> None:
        """Stop every process (by PID) and remove every namespace, link and file of the run."""
        self.stack.close()


def _kill_cache(state_dir: Path) -> None:
    """The DNS cache an agent started (in a session of its own, so the data plane outlives the
    agent): by the PID it wrote, if that process is still the one with our state dir."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((state_dir / "dns.pid").read_text())
        if str(state_dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
