"""``netkit dns serve`` as a lab daemon, for benchmarks that run it next to real peers."""

from __future__ import annotations

import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import dns.message

from labs.dnspeers import DnsDaemon
from labs.runid import free_port

HOST = "127.0.0.1"


class NetkitServer(DnsDaemon):
    """``netkit dns serve`` run as ``python -m netkit.cli`` with this interpreter, in its own group;
    ready once it answers the SOA of ``probe_origin`` and its ``/readyz`` says so."""

    binary = sys.executable
    kind = "netkit"

    def __init__(
        self,
        upstream: tuple[str, int],
        workdir: Path,
        *,
        workers: int = 1,
        cache_size: int | None = None,
        log_level: str = "info",
        extra_args: Sequence[str] = (),
        probe_origin: str = "example.test.",
    ) -> None:
        super().__init__((HOST, 0), workdir, start_timeout=20.0)
        self.upstream = upstream
        self.workers = workers
        self.cache_size = cache_size
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.probe_origin = probe_origin
        self.metrics_port = free_port(HOST)

    def _write_config(self) -> None:
        pass  # everything is on the command line

    def _command(self, exe: str) -> list[str]:
        host, port = self.address
        cache = ["--cache-size", str(self.cache_size)] if self.cache_size is not None else []
        return [
            exe, "-m", "netkit.cli", "dns", "serve",
            "--listen", f"{host}:{port}",
            "--upstream", f"{self.upstream[0]}:{self.upstream[1]}",
            *cache,
            "--workers", str(self.workers),
            "--metrics", f"{HOST}:{self.metrics_port}",
            "--log-level", self.log_level,
            *self.extra_args,
        ]  # fmt: skip

    def _probes(self) -> list[dns.message.Message]:
        return [dns.message.make_query(self.probe_origin, "SOA")]

    def start(self) -> NetkitServer:
        super().start()
        deadline = time.monotonic() + self.start_timeout
        while not self._http_ok("/readyz"):  # with workers: every worker has reported in
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"netkit never became ready\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def _http_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}{path}", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self, timeout: float = 5.0) -> dict[str, float]:
        """The netkit_dns_* samples (histogram buckets left out), keyed by name{labels}.

        With workers the supervisor serves the sum of snapshots each worker sends once a second,
        so wait for one more round of reports first.
        """
        if self.workers > 1:
            time.sleep(1.5)
        with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("netkit_dns_") and "_bucket" not in line:
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out
