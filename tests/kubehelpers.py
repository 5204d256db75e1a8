"""The control plane's tests: the lab API server (real etcd) with the netkit.io CRDs installed
and, if asked, Nodes with InternalIPs; the official client on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import yaml
from kubernetes import client, config

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
