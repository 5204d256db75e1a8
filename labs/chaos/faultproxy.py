"""A UDP + TCP DNS fault proxy in front of one upstream (a process of its own).

This kernel has no netem, so link faults are made in user space, on the path between the caches
and one upstream resolver:

    python -m labs.chaos.faultproxy --listen 198.18.0.11:53 --backend 198.18.1.11:53 \\
        --control DIR/up1.ctl

Modes, switched at run time by one line on the ``--control`` unix socket (the reply is one JSON
line; ``stats`` returns the counters):

``pass``         forward both ways untouched
``replyloss P``  drop each UDP reply with probability P (queries pass): P of exchanges lost
``loss P``       drop each UDP datagram with probability P, independently in each direction; over
                 TCP (which retransmits instead of losing) each message is held back one
                 retransmission timeout, 0.2 s doubling, as many times as it is "lost" in a row
``delay S``      hold every query S seconds before forwarding it (UDP and TCP)
``servfail``     answer every query with SERVFAIL at once, forward nothing
``garbage``      forward, then corrupt each reply: random bytes, the real reply with a wrong ID,
                 or an empty reply with TC set (UDP; over TCP random bytes or a wrong ID)
``blackhole``    answer nothing (UDP dropped; TCP accepted, then silent)

UDP queries are forwarded from one socket with IDs rewritten (so the backend sees one client),
TCP connections one-to-one. Faults of the backend itself (SIGKILL, SIGSTOP) show through as they
would behind a load balancer: the caches see timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from typing import Any

from netkit.base.addr import parse_hostport
from netkit.base.serving import listen_unix

MODES = ("pass", "loss", "replyloss", "delay", "servfail", "garbage", "blackhole")
TCP_RTO = 0.2
PENDING_TTL = 10.0


def question_end(msg: bytes) -> int:
    """Offset just past the first question, or -1 if it cannot be walked."""
    off, n = 12, len(msg)
    while off < n:
        b = msg[off]
        if b == 0:
            return off + 5 if off + 5 <= n else -1
        if b & 0xC0:
            return -1
        off += b + 1
    return -1


def servfail_for(query: bytes) -> bytes | None:
    end = question_end(query)
    if len(query) < 12 or end < 0:
        return None
    flags = 0x8000 | 0x0080 | (query[2] << 8 & 0x0100) | 2  # QR, RA, RD copied, SERVFAIL
    return query[:2] + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x00" + query[12:end]


class Proxy:
    def __init__(self, listen: tuple[str, int], backend: tuple[str, int], seed: int | None) -> None:
        self.listen = listen
        self.backend = backend
        self.rng = random.Random(seed if seed is not None else os.urandom(16))
        self.mode = "pass"
        self.param = 0.0
        self.mode_since = time.monotonic()
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None
        self.pending: dict[int, tuple[Any, bytes, float]] = {}
        self.next_id = self.rng.getrandbits(16)
        self.stats: dict[str, int] = {
            k: 0
            for k in (
                "udp_queries",
                "udp_forwarded",
                "udp_replies",
                "udp_dropped_queries",
                "udp_dropped_replies",
                "udp_unmatched_replies",
                "tcp_connections",
                "tcp_queries",
                "tcp_replies",
                "delayed",
                "servfail_sent",
                "garbage_sent",
                "blackholed",
                "backend_errors",
            )
        }
        self.mode_log: list[dict[str, Any]] = []

    # -- control -------------------------------------------------------------------------------

    def set_mode(self, words: list[str]) -> dict[str, Any]:
        mode = words[0] if words else ""
        if mode not in MODES:
            return {"error": f"unknown mode {mode!r}; one of {', '.join(MODES)}"}
        param = 0.0
        if mode in ("loss", "replyloss", "delay"):
            try:
                param = float(words[1])
            except (IndexError, ValueError):
                return {"error": f"{mode} needs a number"}
            if mode in ("loss", "replyloss") and not 0.0 <= param <= 1.0:
                return {"error": "loss probability must be within [0, 1]"}
            if mode == "delay" and param < 0:
                return {"error": "delay must be >= 0"}
        self.mode, self.param, self.mode_since = mode, param, time.monotonic()
        self.mode_log.append({"t": round(self.mode_since, 3), "mode": mode, "param": param})
        return {"ok": True, "mode": mode, "param": param}

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                words = line.decode(errors="replace").split()
                if not words:
                    continue
                if words[0] == "stats":
                    reply: dict[str, Any] = {"mode": self.mode, "param": self.param, **self.stats}
                elif words[0] == "mode":
                    reply = self.set_mode(words[1:])
                else:
                    reply = self.set_mode(words)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    # -- UDP -----------------------------------------------------------------------------------

    def lost(self, reply: bool = False) -> bool:
        lossy = self.mode == "loss" or (reply and self.mode == "replyloss")
        return lossy and self.rng.random() < self.param

    def on_query(self, data: bytes, addr: Any) -> None:
        if len(data) < 12:
            return
        self.stats["udp_queries"] += 1
        mode = self.mode
        if mode == "blackhole":
            self.stats["blackholed"] += 1
            return
        if mode == "servfail":
            reply = servfail_for(data)
            if reply is not None and self.front is not None:
                self.front.sendto(reply, addr)
                self.stats["servfail_sent"] += 1
            return
        if self.lost():
            self.stats["udp_dropped_queries"] += 1
            return
        if mode == "delay" and self.param > 0:
            self.stats["delayed"] += 1
            asyncio.get_running_loop().call_later(self.param, self.forward, data, addr)
            return
        self.forward(data, addr)

    def forward(self, data: bytes, addr: Any) -> None:
        if self.back is None:
            return
        for _ in range(65536):
            self.next_id = (self.next_id + 1) & 0xFFFF
            if self.next_id not in self.pending:
                break
        else:
            return
        pid = self.next_id
        self.pending[pid] = (addr, data[:2], time.monotonic())
        self.back.sendto(pid.to_bytes(2, "big") + data[2:])
        self.stats["udp_forwarded"] += 1

    def on_reply(self, data: bytes) -> None:
        if len(data) < 12:
            return
        entry = self.pending.pop((data[0] << 8) | data[1], None)
        if entry is None or self.front is None:
            self.stats["udp_unmatched_replies"] += 1
            return
        addr, qid, _ = entry
        mode = self.mode
        if mode == "blackhole":
            self.stats["blackholed"] += 1
            return
        if self.lost(reply=True):
            self.stats["udp_dropped_replies"] += 1
            return
        reply = qid + data[2:]
        if mode == "garbage":
            reply = self.corrupt(reply, udp=True)
            self.stats["garbage_sent"] += 1
        self.front.sendto(reply, addr)
        self.stats["udp_replies"] += 1

    def corrupt(self, reply: bytes, udp: bool) -> bytes:
        kind = self.rng.randrange(3 if udp else 2)
        if kind == 0:  # random bytes
            return self.rng.randbytes(self.rng.randrange(2, 120))
        if kind == 1:  # the real answer with another ID
            wrong = ((reply[0] << 8 | reply[1]) ^ (1 + self.rng.randrange(0xFFFF))) & 0xFFFF
            return wrong.to_bytes(2, "big") + reply[2:]
        end = question_end(reply)  # truncated: header with TC, the question, no records
        if end < 0:
            return reply[:12]
        flags = ((reply[2] << 8 | reply[3]) | 0x0200) & 0xFFF0
        return reply[:2] + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x00" + reply[12:end]

    async def expire(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            cutoff = time.monotonic() - PENDING_TTL
            for pid in [p for p, (_, _, t) in self.pending.items() if t < cutoff]:
                del self.pending[pid]

    # -- TCP -----------------------------------------------------------------------------------

    async def tcp_hold(self) -> None:
        """Delay of a TCP message on a lossy link: one RTO per consecutive loss."""
        rto = TCP_RTO
        while self.lost():
            self.stats["delayed"] += 1
            await asyncio.sleep(rto)
            rto *= 2

    async def tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["tcp_connections"] += 1
        back_writer: asyncio.StreamWriter | None = None
        pump: asyncio.Task[None] | None = None
        tasks: set[asyncio.Task[None]] = set()
        lock = asyncio.Lock()

        async def to_client(msg: bytes) -> None:
            async with lock:
                writer.write(len(msg).to_bytes(2, "big") + msg)
                await writer.drain()

        async def replies(back_reader: asyncio.StreamReader) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, OSError):
                while True:
                    n = int.from_bytes(await back_reader.readexactly(2), "big")
                    msg = await back_reader.readexactly(n)
                    if self.mode == "blackhole":
                        self.stats["blackholed"] += 1
                        continue
                    await self.tcp_hold()
                    if self.mode == "garbage":
                        msg = self.corrupt(msg, udp=False)
                        self.stats["garbage_sent"] += 1
                    await to_client(msg)
                    self.stats["tcp_replies"] += 1
            writer.close()

        async def handle(msg: bytes) -> None:
            nonlocal back_writer, pump
            mode = self.mode
            if mode == "blackhole":
                self.stats["blackholed"] += 1
                return
            if mode == "servfail":
                reply = servfail_for(msg)
                if reply is not None:
                    await to_client(reply)
                    self.stats["servfail_sent"] += 1
                return
            if mode == "delay" and self.param > 0:
                self.stats["delayed"] += 1
                await asyncio.sleep(self.param)
            await self.tcp_hold()
            if back_writer is None:
                try:
                    back_reader, back_writer = await asyncio.open_connection(*self.backend)
                except OSError:
                    self.stats["backend_errors"] += 1
                    writer.close()
                    return
                pump = asyncio.create_task(replies(back_reader))
            back_writer.write(len(msg).to_bytes(2, "big") + msg)
            with contextlib.suppress(ConnectionError, OSError):
                await back_writer.drain()

        try:
            while True:
                n = int.from_bytes(await reader.readexactly(2), "big")
                msg = await reader.readexactly(n)
                self.stats["tcp_queries"] += 1
                task = asyncio.create_task(handle(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            for task in list(tasks):
                task.cancel()
            if pump is not None:
                pump.cancel()
            if back_writer is not None:
                back_writer.close()
            writer.close()

    # -- run -----------------------------------------------------------------------------------

    async def run(self, control_path: str, ready_line: bool = True) -> None:
        loop = asyncio.get_running_loop()
        proxy = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                proxy.on_query(data, addr)

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                proxy.on_reply(data)

            def error_received(self, exc: Exception) -> None:
                proxy.stats["backend_errors"] += 1

        self.front, _ = await loop.create_datagram_endpoint(Front, local_addr=self.listen)
        self.back, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.backend)
        tcp = await asyncio.start_server(self.tcp_client, *self.listen, reuse_address=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(control_path)
        ctl = await asyncio.start_unix_server(self.control, sock=listen_unix(control_path))
        expiry = asyncio.create_task(self.expire())
        if ready_line:
            print(json.dumps({"event": "ready", "listen": list(self.listen)}), flush=True)
        stop = asyncio.Event()
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        expiry.cancel()
        tcp.close()
        ctl.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(control_path)
        print(json.dumps({"event": "stopped", **self.stats}), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m labs.chaos.faultproxy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--listen", required=True, metavar="ADDR:PORT")
    p.add_argument("--backend", required=True, metavar="ADDR:PORT")
    p.add_argument("--control", required=True, metavar="PATH", help="unix socket for mode commands")
    p.add_argument("--seed", type=int, default=None, help="seed of the fault dice (default: random)")
    args = p.parse_args(argv)
    listen = parse_hostport(args.listen, default_port=53)
    backend = parse_hostport(args.backend, default_port=53)
    proxy = Proxy((str(listen.host), listen.port), (str(backend.host), backend.port), args.seed)
    try:
        import uvloop

        uvloop.run(proxy.run(args.control))
    except ImportError:  # pragma: no cover
        asyncio.run(proxy.run(args.control))
    return 0


if __name__ == "__main__":
    sys.exit(main())
