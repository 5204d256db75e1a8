"""``DnsService`` embedded in another program's event loop (as the node agent will): no signal
handler installed, the environment left alone, stopped by its owner."""

from __future__ import annotations

import asyncio
import os
import signal

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from dnscache import handover
from dnscache.core.config import load
from dnscache.runner import DnsService
from labs.dnspeers import NsdServer
from labs.runid import RunDir, free_port
from tests.conftest import hp

pytestmark = pytest.mark.peers


def test_an_embedded_service_answers_and_stops_when_told(
    nsd: NsdServer, run_dir: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(handover.ENV, "not for the service")
    port, control = free_port(), str(run_dir.path / "dns.ctl")

    async def run() -> tuple[str, bool, bool]:
        cfg = load({"listen": [f"127.0.0.1:{port}"], "upstream": [hp(nsd)], "control": control})
        service = DnsService(cfg)
        await service.start()
        reply = await dns.asyncquery.udp(
            dns.message.make_query("h1.example.test", "A"), "127.0.0.1", port=port, timeout=3
        )
        handlers = signal.getsignal(signal.SIGTERM)
        service.terminate()
        await asyncio.wait_for(service.wait(), 10)
        return dns.rcode.to_text(reply.rcode()), handlers is signal.SIG_DFL, os.path.exists(control)

    rcode, default_sigterm, control_left = asyncio.run(run())
    assert rcode == "NOERROR"
    assert default_sigterm  # the owner's signals are the owner's
    assert not control_left
    assert os.environ[handover.ENV] == "not for the service"
