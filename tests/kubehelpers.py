"""The control plane's tests: the lab API server (real etcd) with the netkit.io CRDs installed
and, if asked, Nodes with InternalIPs; the official client and kubectl on it; controller
replicas as processes."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import yaml
from kubernetes import client, config

from labs.apiserver.kubectl import Kubectl as LabKubectl
from labs.apiserver.lab import ApiLab
from netkit.control.core.crds import GROUP, VERSION
from tests import dnshelpers

ROOT = Path(__file__).resolve().parents[1]
G, V = GROUP, VERSION


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    """``check`` true within ``timeout``: the API server, the controllers and the agents work
    asynchronously, at their own pace."""
    return dnshelpers.wait_for(check, timeout, 0.05)


@contextmanager
def cluster(
    directory: Path, nodes: int = 0, labels: Callable[[int], Mapping[str, str]] = lambda i: {}
) -> Iterator[tuple[ApiLab, client.ApiClient]]:
    """The lab API server in ``directory`` with the CRDs of deploy/crds and Nodes n0, n1 ... at
    198.18.0.1, .2 ...; stopped (by PID) on exit."""
    with ApiLab(directory) as lab:
        api = config.new_client_from_config(str(lab.kubeconfig))
        for f in sorted((ROOT / "deploy" / "crds").glob("*.netkit.io.yaml")):
            client.ApiextensionsV1Api(api).create_custom_resource_definition(yaml.safe_load(f.read_text()))
        core = client.CoreV1Api(api)
        for i in range(nodes):
            core.create_node(
                client.V1Node(metadata=client.V1ObjectMeta(name=f"n{i}", labels=dict(labels(i))))
            )
            address = {"type": "InternalIP", "address": f"198.18.0.{i + 1}"}
            core.patch_node_status(f"n{i}", {"status": {"addresses": [address]}})
        try:
            yield lab, api
        finally:
            api.close()


class Kubectl(LabKubectl):
    """kubectl on a lab API server, with a HOME of its own."""

    def __init__(self, lab: ApiLab, home: Path) -> None:
        super().__init__(lab.kubeconfig, home)


def replica(lab: ApiLab, identity: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [
        "controller",
        "--kubeconfig",
        str(lab.kubeconfig),
        "--identity",
        identity,
        "--metrics",
        f"127.0.0.1:{port}",
    ]
    timing = ["--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.3"]
    return subprocess.Popen(
        [sys.executable, "-m", "netkit.cli", *argv, *timing], stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def agent(lab: ApiLab, node: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``netkit agent`` for ``node`` against the lab API server, logging to ``log`` (JSON, a
    2 s resync); ``args`` are the rest of its flags."""
    argv = ["agent", "--node", node, "--kubeconfig", str(lab.kubeconfig), *args]
    argv += ["--resync", "2", "--log-format", "json"]
    return subprocess.Popen(
        [sys.executable, "-m", "netkit.cli", *argv], stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s: a process this test started, by its PID."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def leading(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return "netkit_controller_leader 1.0" in resp.read().decode()
    except OSError:  # not listening yet
        return False
