"""Invoking CNI plugins as a container runtime does, on lab nodes whose L2Networks the node
agent's own reconcile built (``test_cni_plugin``, ``test_control_cni_e2e``, ``test_cni_podman``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pyroute2 import IPRoute

from labs.l2lab import L2Lab
from labs.runid import RunDir
from netkit.base.netns import in_netns, netns_exec
from netkit.l2.agent import reconcile_once
from netkit.l2.core.model import L2Network, load_networks
from netkit.l2.kernel import Kernel
from tests.cnischema import check_error, check_result

PLUGIN = str(Path(sys.prefix) / "bin" / "netkit-cni")
CNI_PATH = "/usr/lib/cni"
NETWORKS = {"blue": 100, "red": 200}
IP_FILE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
VETH = re.compile(r"^nk[0-9a-f]{13}$")


@dataclass
class Runtime:
    """A container runtime's side: sandboxes, plugin calls, what is left on a node."""

    lab: L2Lab
    dir: Path
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    networks: list[L2Network] = field(default_factory=list)  # what the nodes were built with

    def conf(self, network: str, node: str, **extra: Any) -> dict[str, Any]:
        start = 10 if node == "n1" else 20  # per-node ranges, as host-local is used per node
        ipam = {
            "type": "host-local",
            "dataDir": str(self.dir / f"ipam-{node}"),
            "ranges": [
                [
                    {
                        "subnet": "10.99.0.0/24",
                        "rangeStart": f"10.99.0.{start}",
                        "rangeEnd": f"10.99.0.{start + 9}",
                    }
                ]
            ],
        }
        return {
            "cniVersion": "1.0.0",
            "name": network,
            "type": "netkit-cni",
            "stateDir": str(self.dir / f"state-{node}"),
            "bridgeTimeoutSeconds": 1,
            "ipam": ipam,
            **extra,
        }

    def reference(self, node: str) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": "reference",
            "type": "bridge",
            "bridge": f"{self.lab.run_id}-rbr",
            "ipam": {
                "type": "host-local",
                "dataDir": str(self.dir / f"ipam-ref-{node}"),
                "ranges": [[{"subnet": "10.98.0.0/24"}]],
            },
        }

    def call(
        self,
        node: str,
        command: str,
        conf: dict[str, Any],
        cid: str,
        netns: str,
        ifname: str = "eth0",
        plugin: str = PLUGIN,
        env: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        full = {
            "PATH": os.environ["PATH"],
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": netns,
            "CNI_IFNAME": ifname,
            "CNI_PATH": CNI_PATH,
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=tenant;K8S_POD_NAME={cid}",
            **(env or {}),
        }
        done = subprocess.run(
            netns_exec(self.lab.ns(node), [plugin]),
            input=json.dumps(conf).encode(),
            env=full,
            capture_output=True,
            timeout=60,
        )
        self.calls.append((command, cid, done.returncode))
        out = json.loads(done.stdout) if done.stdout.strip() else None
        if done.returncode == 0 and command == "ADD":
            check_result(out)
        elif done.returncode > 0:
            check_error(out)
        return done.returncode, out

    def links(self, node: str) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            with IPRoute() as ipr:
                return {lk.get_attr("IFLA_IFNAME"): lk for lk in ipr.get_links()}

        return in_netns(self.lab.ns(node), read)

    def pod_veths(self, node: str) -> list[str]:
        """The host ends netkit-cni made on ``node`` (``host_veth_name``'s pattern)."""
        return sorted(n for n in self.links(node) if VETH.match(n))

    def allocated(self, node: str, prefix: str = "ipam") -> list[str]:
        found = []
        for d in (self.dir / f"{prefix}-{node}").glob("*"):
            found += [f.name for f in d.iterdir() if IP_FILE.match(f.name)]
        return sorted(found)

    def records(self, node: str) -> list[str]:
        return sorted(p.name for p in (self.dir / f"state-{node}" / "attachments").glob("*.json"))


@contextmanager
def cni_lab(run_dir: RunDir) -> Iterator[Runtime]:
    """Two lab nodes whose networks blue (VNI 100) and red (VNI 200) the agent's own reconcile
    built; removed on exit."""
    with L2Lab(nodes=2, run_id=run_dir.run_id) as lab:
        nets = [
            {"name": n, "kind": "vxlan", "vni": vni, "members": {m: lab.vtep[m] for m in ("n1", "n2")}}
            for n, vni in NETWORKS.items()
        ]
        networks = load_networks(yaml.safe_dump({"networks": nets}))
        for node in lab.node_ns:
            with Kernel(lab.ns(node)) as k:
                pl, _, _ = reconcile_once(k, networks, node)
            assert not pl.failed, pl.render()
        rt = Runtime(lab, run_dir.path)
        rt.networks = list(networks)
        yield rt


SHIM_SOURCE = Path(__file__).resolve().parents[1] / "netkit" / "cni" / "shim.c"


def build_shim(directory: Path) -> str:
    """The node-side netkit-cni shim, compiled as the image build compiles it (static)."""
    out = directory / "netkit-cni-shim"
    done = subprocess.run(
        ["cc", "-O2", "-static", "-Wall", "-Werror", "-o", str(out), str(SHIM_SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"cc (gcc, libc6-dev: make setup installs them): {done.stderr}"
    return str(out)
