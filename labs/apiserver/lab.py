"""etcd and the API server together, with a kubeconfig for kubectl and the Python client."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

import yaml

from labs.apiserver.etcd import EtcdServer
from labs.apiserver.server import ApiServer

__all__ = ["ApiLab"]


class ApiLab:
    """``with ApiLab(directory) as lab:`` etcd in ``directory``, the API server on loopback and
    ``lab.kubeconfig`` naming it; everything stopped (by PID) on exit."""

    def __init__(
        self, directory: Path, *, host: str = "127.0.0.1", port: int = 0, kubeconfig: Path | None = None
    ) -> None:
        self.directory = directory
        self.etcd = EtcdServer(directory)
        self.host, self.port = host, port
        self.server: ApiServer | None = None
        self.kubeconfig = kubeconfig or directory / "kubeconfig"
        self.port_in_use = port

    def start(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.etcd.start()
        try:
            self.server = ApiServer(self.etcd.client, host=self.host, port=self.port).start()
            self.port_in_use = self.server.port
        except BaseException:
            self.etcd.stop()
            raise
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "netkit-lab", "cluster": {"server": self.server.url}}],
            "users": [{"name": "admin", "user": {}}],
            "contexts": [{"name": "netkit-lab", "context": {"cluster": "netkit-lab", "user": "admin"}}],
            "current-context": "netkit-lab",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        return self

    def stop_server(self) -> None:
        """The API server gone (etcd stays): listening stops, open watches are cut."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    def start_server(self) -> None:
        """The API server back on the same address, on the same etcd."""
        self.server = ApiServer(self.etcd.client, host=self.host, port=self.port_in_use).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.etcd.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
