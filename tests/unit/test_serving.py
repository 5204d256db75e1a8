"""netkit.base.serving: the one /metrics /healthz /readyz server, on a caller's loop and on a
thread of its own; what it answers for a failing route, an unknown path, a taken address."""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from labs.runid import free_port
from netkit.base.addr import HostPort
from netkit.base.serving import EndpointServer, check_bindable


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("netkit_test_things", "Things.", registry=reg).inc(3)
    return reg


def test_answers_without_sockets() -> None:
    ready = [False]

    def broken() -> tuple[int, str, bytes]:
        raise RuntimeError("bug")

    server = EndpointServer(
        HostPort("127.0.0.1", 1), registry(), lambda: ready[0], not_ready="warming", routes={"/bad": broken}
    )
    code, ctype, body = server.respond("/metrics?x=1")
    assert (
        code == 200
        and ctype.startswith("text/plain; version=0.0.4")
        and b"netkit_test_things_total 3.0" in body
    )
    assert server.respond("/healthz") == server.respond("/health") == (200, "text/plain", b"OK\n")
    assert server.respond("/readyz") == server.respond("/ready") == (503, "text/plain", b"warming\n")
    ready[0] = True
    assert server.respond("/readyz")[0] == 200
    assert server.respond("/bad") == (500, "text/plain", b"internal error\n")  # logged, not raised
    code, _, body = server.respond("/nope")
    assert code == 404 and b"/healthz" in body and b"/bad" in body


def test_on_a_thread_of_its_own_and_a_taken_address() -> None:
    port = free_port()
    server = EndpointServer(HostPort("127.0.0.1", port), registry(), lambda: True)
    server.start_in_thread()
    try:
        assert get(port, "/healthz") == (200, "text/plain", "OK\n")
        assert get(port, "/readyz") == (200, "text/plain", "OK\n")
        assert "netkit_test_things_total 3.0" in get(port, "/metrics")[2]
        assert get(port, "/nope")[0] == 404
        taken = f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"
        with pytest.raises(OSError, match=taken):
            EndpointServer(HostPort("127.0.0.1", port), registry(), lambda: True).start_in_thread()
        with pytest.raises(OSError, match=taken):
            check_bindable(HostPort("127.0.0.1", port))
    finally:
        server.stop_thread()
        server.stop_thread()  # idempotent
    assert not [t for t in threading.enumerate() if t.name == "metrics"]
    check_bindable(HostPort("127.0.0.1", port))  # the address is free again


def test_on_the_callers_loop_and_on_a_handed_over_socket() -> None:
    port = free_port()

    async def scenario() -> None:
        first = EndpointServer(HostPort("127.0.0.1", port), registry(), lambda: True)
        await first.start()
        lent = first.listening_socket()
        assert lent is not None
        await first.stop()
        assert first.listening_socket() is None
        second = EndpointServer(HostPort("127.0.0.1", port), registry(), lambda: False)
        await second.start(lent)  # a successor serves on the socket the first one held
        try:
            status = await asyncio.to_thread(get, port, "/readyz")
            assert status == (503, "text/plain", "not ready\n")
        finally:
            await second.stop()

    asyncio.run(scenario())


def test_a_request_that_never_ends_does_not_hold_the_server() -> None:
    port = free_port()
    server = EndpointServer(HostPort("127.0.0.1", port), registry(), lambda: True)
    server.start_in_thread()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as stuck:
            stuck.sendall(b"GET /healthz HTTP/1.1\r\n")  # no end of headers
            assert get(port, "/healthz")[0] == 200
            with socket.create_connection(("127.0.0.1", port), timeout=3) as garbage:
                garbage.sendall(b"\r\n\r\n")
                assert garbage.recv(100).startswith(b"HTTP/1.1 404 ")
    finally:
        server.stop_thread()
