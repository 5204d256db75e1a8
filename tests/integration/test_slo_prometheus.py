"""The SLO rules against a real Prometheus scraping a real `netkit dns serve`: the recorded
availability SLI agrees with what the clients counted themselves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from labs.dnspeers import NsdServer
from labs.runid import RunDir, free_port
from tests.conftest import hp
from tests.dnshelpers import wait_for

pytestmark = pytest.mark.peers
ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "monitoring" / "rules" / "netkit-dns.rules.yaml"


def prom_query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def netkit_and_prometheus(run_dir: RunDir, nsd: NsdServer) -> Iterator[tuple[int, int]]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: `make setup` installs it (Debian package prometheus)"
    port, mport, pport = free_port(), free_port(), free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "netkit.cli", "dns", "serve", "--listen", f"127.0.0.1:{port}",
         "--upstream", hp(nsd), "--metrics", f"127.0.0.1:{mport}",
         "--deadline", "0.5", "--attempt-timeout", "0.4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    config = run_dir.path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        f"  - job_name: netkit-dns\n    static_configs: [{{targets: ['127.0.0.1:{mport}']}}]\n"
    )
    prom = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={run_dir.path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{pport}"],
        stdout=subprocess.DEVNULL, stderr=(run_dir.path / "prometheus.log").open("w"),
    )  # fmt: skip
    try:
        yield port, pport
    finally:
        for proc in (prom, serve):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_recorded_sli_matches_the_clients_count(
    netkit_and_prometheus: tuple[int, int], nsd: NsdServer
) -> None:
    port, pport = netkit_and_prometheus

    def scraping() -> bool:
        try:
            return bool(prom_query(pport, 'up{job="netkit-dns"} == 1'))
        except OSError:
            return False  # not listening yet

    assert wait_for(scraping, timeout=30)
    ok = failed = 0

    def ask(name: str) -> None:
        nonlocal ok, failed
        r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2)
        if r.rcode() == dns.rcode.SERVFAIL:
            failed += 1
        else:
            ok += 1

    for i in range(150):  # healthy: every name answered
        ask(f"h{i}.example.test")
    nsd.pause()  # a fault: new names fail (SERVFAIL at the deadline), cached ones still answer
    try:
        for i in range(150, 170):
            ask(f"h{i}.example.test")
            ask(f"h{i - 150}.example.test")
    finally:
        nsd.resume()
    for i in range(30):
        ask(f"h{i}.example.test")
    assert failed == 20 and ok == 200
    time.sleep(3)  # two more scrapes and rule evaluations

    def ratio() -> float | None:
        res = prom_query(pport, "netkit_dns:sli_error_ratio:rate5m")
        return float(res[0]["value"][1]) if res else None

    assert wait_for(lambda: ratio() is not None and ratio() > 0, timeout=15)
    expected = failed / (ok + failed)
    # rate() extrapolates numerator and denominator alike, so their ratio is the clients' ratio
    assert ratio() == pytest.approx(expected, rel=0.02), (ratio(), expected)
    requests = prom_query(pport, "sum(netkit_dns_requests_total)")
    assert float(requests[0]["value"][1]) == ok + failed
