"""Shared test helpers: run ``DnsServer`` on its own event loop thread, query it, and a scripted
upstream for the behaviours no real server produces (spoofed, garbled, out-of-bailiwick replies).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import uvloop

from dnscache.core.config import ServeConfig, load
from dnscache.server import DnsServer
from labs.runid import free_port
from netkit.cli.dns import FAST_PATH_ENV


class ServerThread:
    """A real ``DnsServer`` on 127.0.0.1:free port, its loop in a thread; stop() in a finalizer."""

    def __init__(self, **options: Any) -> None:
        self.port = options.pop("port", None) or free_port()
        options.setdefault("listen", [f"127.0.0.1:{self.port}"])
        # make test runs the DNS tests twice: on the compiled fast path, then on the Python one
        options.setdefault("fast_path", os.environ.get(FAST_PATH_ENV) or "compiled")
        self.cfg: ServeConfig = load(options, "test")
        # its own uvloop loop, without installing uvloop's policy for the whole test process:
        # pyroute2 runs asyncio loops of its own over AF_NETLINK, which uvloop cannot open
        self.loop = uvloop.new_event_loop()
        self.server = DnsServer(self.cfg)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        self.call(self.server.start())
        return self

    def call(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop thread (for touching its state safely)."""

        async def wrap() -> Any:
            return fn()

        return self.call(wrap())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def prefer(self, address: str, others_rtt: float = 0.2) -> None:
        """Make every other upstream look slow, so ``address`` is the first choice of every query.

        Exploration is switched off too: with it, 1 query in 20 goes to a random other server
        first (by design: it keeps their estimates current), which made tests that expect the
        preferred upstream to be asked first fail about 5% of the time. Its SRTT still moves, so
        once ``address`` fails enough to look slower than ``others_rtt`` it loses the first place.
        """

        def slow_down() -> None:
            for _, pool in self.server.resolver.pools:
                pool.policy = dataclasses.replace(pool.policy, explore_probability=0.0)
                for state in pool.states:
                    if str(state.address) != address:
                        state.srtt = others_rtt
            self.server.upstreams_changed()

        self.run(slow_down)

    @property
    def stats(self) -> Any:
        return self.server.stats

    def query(
        self, name: str, rdtype: str = "A", *, tcp: bool = False, timeout: float = 3.0, **kw: Any
    ) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, **kw)
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=timeout)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=timeout, ignore_trailing=True)

    def query_wire(self, wire: bytes, timeout: float = 2.0) -> bytes | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(wire, ("127.0.0.1", self.port))
            try:
                return s.recv(65535)
            except TimeoutError:
                return None


@contextlib.contextmanager
def running_server(**options: Any) -> Iterator[ServerThread]:
    srv = ServerThread(**options)
    try:
        yield srv.start()
    finally:
        srv.stop()


def answers(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


def min_ttl(msg: dns.message.Message) -> int:
    return min(rrset.ttl for rrset in [*msg.answer, *msg.authority])


Handler = Callable[[dns.message.Message, bytes], list[bytes] | None]


class ScriptedUpstream:
    """A UDP DNS server on loopback whose replies a test scripts: the handler gets each parsed
    query and returns the datagrams to send back (in order), or None to stay silent. It logs the
    source port and ID of every query it receives. ``send_from_other_port`` replies through a
    second socket, as an off-path spoofer would."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.1)
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other.bind(("127.0.0.1", 0))
        self.seen: list[tuple[int, int, str]] = []  # (source port, id, qname as sent)
        self.spoof_first_from_other_port = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> ScriptedUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self.other.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                q = dns.message.from_wire(data)
            except Exception:
                continue
            self.seen.append((addr[1], q.id, q.question[0].name.to_text()))
            for i, out in enumerate(self.handler(q, data) or []):
                sender = self.other if (i == 0 and self.spoof_first_from_other_port) else self.sock
                sender.sendto(out, addr)


def reply_to(
    q: dns.message.Message,
    *rrs: str,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    authority: tuple[str, ...] = (),
    additional: tuple[str, ...] = (),
) -> bytes:
    """A reply to ``q`` with records given in zone-file syntax."""
    import dns.rrset

    r = dns.message.make_response(q)
    r.flags |= dns.flags.RA
    r.set_rcode(rcode)
    for section, texts in ((r.answer, rrs), (r.authority, authority), (r.additional, additional)):
        for text in texts:
            name, ttl, cls, rtype, *rdata = text.split()
            section.append(dns.rrset.from_text(name, int(ttl), cls, rtype, " ".join(rdata)))
    return r.to_wire()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Load:
    """Steady UDP load without retries: every query gets one chance, answered within 1 s."""

    def __init__(self, port: int, names: list[str], qps: int) -> None:
        self.port, self.names, self.qps = port, names, qps
        self.sent = self.answered = self.wrong = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._window = [0.0, 0.0]

    def __enter__(self) -> Load:
        self._window[0] = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._window[1] = time.monotonic()
        self._stop.set()
        self._thread.join(10)

    @property
    def rate(self) -> float:
        """Queries sent per second while sending."""
        return self.sent / max(self._window[1] - self._window[0], 1e-9)

    def _run(self) -> None:
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]  # 8 source ports
        for s in socks:
            s.setblocking(False)
        pending: dict[tuple[int, int], float] = {}
        interval = 1.0 / self.qps
        next_send = time.monotonic()
        rng = random.Random(3)
        try:
            while not self._stop.is_set() or pending:
                now = time.monotonic()
                while not self._stop.is_set() and now >= next_send:  # every query that is due
                    i = rng.randrange(len(socks))
                    q = dns.message.make_query(rng.choice(self.names), "A")
                    while (i, q.id) in pending:  # a second query with an ID in flight would count as lost
                        q.id = rng.getrandbits(16)
                    socks[i].sendto(q.to_wire(), ("127.0.0.1", self.port))
                    pending[(i, q.id)] = now
                    self.sent += 1
                    next_send += interval
                for i, s in enumerate(socks):
                    while True:
                        try:
                            data = s.recv(4096)
                        except BlockingIOError:
                            break
                        r = dns.message.from_wire(data)
                        if pending.pop((i, r.id), None) is not None:
                            self.answered += 1
                            self.wrong += r.rcode() != dns.rcode.NOERROR or not r.answer
                for k, t in list(pending.items()):
                    if now - t > 1.0:
                        del pending[k]  # lost: more than 1 s without an answer
                time.sleep(0.0005)
        finally:
            for s in socks:
                s.close()

    @property
    def lost(self) -> int:
        return self.sent - self.answered


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise KeyError(name)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
