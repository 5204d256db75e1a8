"""Fixed-rate DNS load generator with answer checking (a process of its own, run inside a node's
network namespace by ``ip netns exec``).

    python -m labs.chaos.loadgen SPEC.json

It builds the workload from the seed in the spec (the same stream in every node), prints
``{"event": "ready", ...}`` and waits for one line ``start T0`` on stdin, ``T0`` being a
``time.monotonic()`` instant (the clock is system-wide, so every generator starts together).
Query ``i`` is due at ``T0 + i / qps``; it is sent then, once, without retries: UDP over a pool of
connected sockets on kernel-chosen random ports with a random ID, or (a share of them) over a new
TCP connection. A query succeeds when a reply with our ID and question, the expected rcode and
exactly the expected RRset (sorted RDATA, compared as bytes) arrives within the deadline. The hot
path parses nothing else: a small walker skips names and reads each answer's type and RDATA.

Every second a JSON progress line goes to stdout; at the end the per-query records (send time,
latency, status, name class, transport, generator lateness) are written to the spec's ``out`` file
and a summary line is printed (achieved rate, lateness percentiles, CPU time).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import resource
import sys
import time
from array import array
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from labs.chaos import schedule as sch
from labs.chaos.workload import QTYPES, Mix, Name, build_names, build_stream, question_wire

MAGIC = b"NKCHAOS1\n"
TC_BIT = 0x0200
QR_BIT = 0x8000
QUERY_FLAGS = b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"  # RD, QDCOUNT 1


# --------------------------------------------------------------------------------------------
# Records file
# --------------------------------------------------------------------------------------------


@dataclass
class Records:
    """Per-query outcome columns (index = position in the stream)."""

    t_send: array[float]  # seconds after T0 ('d')
    latency: array[float]  # seconds; -1 when never answered ('f')
    status: bytearray
    cls: bytearray
    tcp: bytearray
    lateness: array[float]  # send time minus due time, seconds ('f')
    key: array[int]  # name index << 1 | qtype (0 A, 1 AAAA): the cache key, for seen/unseen ('I')
    meta: dict[str, Any]


def write_records(path: str | Path, rec: Records) -> None:
    header = json.dumps({**rec.meta, "n": len(rec.status)}).encode() + b"\n"
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(header)
        for col in (rec.t_send, rec.latency, rec.lateness, rec.key):
            f.write(col.tobytes())
        for b in (rec.status, rec.cls, rec.tcp):
            f.write(b)


def read_records(path: str | Path) -> Records:
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path}: not a chaos records file")
        meta = json.loads(f.readline())
        n = int(meta["n"])
        cols: list[Any] = []
        for code in ("d", "f", "f", "I"):
            a = array(code)
            a.frombytes(f.read(n * a.itemsize))
            cols.append(a)
        status, cls, tcp = (bytearray(f.read(n)) for _ in range(3))
    return Records(cols[0], cols[1], status, cls, tcp, cols[2], cols[3], meta)


# --------------------------------------------------------------------------------------------
# Answer check (hot path)
# --------------------------------------------------------------------------------------------


def check_reply(reply: bytes, question: bytes, qtype: int, rcode: int, rdata: tuple[bytes, ...]) -> int:
    """Status of ``reply`` to a query whose question section is ``question`` (lower case)."""
    n = len(reply)
    qend = 12 + len(question)
    if n < qend or not reply[2] & 0x80:
        return sch.MALFORMED
    if reply[12:qend].lower() != question or reply[4:6] != b"\x00\x01":
        return sch.MALFORMED
    if reply[2] & 0x02:  # TC
        return sch.TRUNCATED
    got_rcode = reply[3] & 0x0F
    if got_rcode != rcode:
        return sch.SERVFAIL if got_rcode == 2 else sch.WRONG_RCODE
    ancount = (reply[6] << 8) | reply[7]
    off = qend
    got: list[bytes] = []
    qname = question[:-4]
    for _ in range(ancount):
        start = off
        while True:  # skip the owner name
            if off >= n:
                return sch.MALFORMED
            b = reply[off]
            if b >= 0xC0:
                owner_ok = off == start and b == 0xC0 and off + 1 < n and reply[off + 1] == 12
                off += 2
                break
            if b == 0:
                off += 1
                owner_ok = reply[start:off].lower() == qname
                break
            if b & 0xC0:
                return sch.MALFORMED
            off += b + 1
        if off + 10 > n:
            return sch.MALFORMED
        rtype = (reply[off] << 8) | reply[off + 1]
        rdlen = (reply[off + 8] << 8) | reply[off + 9]
        off += 10
        if rtype == qtype and owner_ok:
            got.append(reply[off : off + rdlen])
        off += rdlen
    if off > n:
        return sch.MALFORMED
    if len(got) != len(rdata):
        return sch.WRONG_DATA
    got.sort()
    return sch.OK if tuple(got) == rdata else sch.WRONG_DATA


def _first_auth_ttl(reply: bytes, question: bytes) -> int | None:
    """TTL of the first authority record of a reply without answers (None if it cannot be read)."""
    off, n = 12 + len(question), len(reply)
    while off < n:
        b = reply[off]
        if b >= 0xC0:
            off += 2
            break
        if b == 0:
            off += 1
            break
        off += b + 1
    if reply[8:10] == b"\x00\x00" or off + 10 > n:
        return None
    return int.from_bytes(reply[off + 4 : off + 8], "big")


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, gen: Generator, index: int) -> None:
        self.gen = gen
        self.index = index

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.gen.on_udp(self.index, data)

    def error_received(self, exc: Exception) -> None:
        self.gen.udp_errors += 1


class _Tcp(asyncio.Protocol):
    def __init__(self, gen: Generator, key: int, i: int, qid: int, msg: bytes) -> None:
        self.gen = gen
        self.key = key
        self.i = i
        self.qid = qid
        self.msg = msg
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass
        self.transport = tr
        if self.key not in self.gen.pending:  # timed out while connecting
            tr.abort()
            return
        self.gen.tcp_transports[self.key] = tr
        tr.write(len(self.msg).to_bytes(2, "big") + self.msg)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= 2:
            length = (self.buf[0] << 8) | self.buf[1]
            if len(self.buf) >= 2 + length:
                self.gen.on_tcp(self.key, self.i, self.qid, self.buf[2 : 2 + length])
                if self.transport is not None:
                    self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.tcp_transports.pop(self.key, None)
        self.gen.on_tcp_lost(self.key, self.i)


class Generator:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.host, self.port = spec["server"][0], int(spec["server"][1])
        self.qps = float(spec["qps"])
        self.deadline = float(spec.get("deadline", 1.0))
        self.n_sockets = int(spec.get("sockets", 64))
        mix = Mix(**spec.get("mix", {}))
        total = round(self.qps * float(spec["duration"]))
        self.stream = build_stream(total, mix, int(spec["seed"]))
        self.names: list[Name] = build_names(mix, self.stream.n_cold)
        self.total = total
        # per (name, qtype): query body after the ID, lower-case question, qtype, rcode, rdata
        self.entries: dict[int, tuple[bytes, bytes, int, int, tuple[bytes, ...]]] = {}
        n = total
        self.t_send = array("d", bytes(8 * n))
        self.latency = array("f", [-1.0]) * n
        self.lateness = array("f", bytes(4 * n))
        self.status = bytearray([sch.NOT_SENT]) * n
        self.pending: dict[int, int] = {}
        self.deadlines: deque[tuple[float, int, int]] = deque()
        self.tcp_transports: dict[int, asyncio.Transport] = {}
        self.transports: list[asyncio.DatagramTransport] = []
        self.rng = random.Random(os.urandom(16))
        self.clock = time.monotonic  # replies are timed with this (tests substitute it)
        self.t0 = 0.0
        self.sent = 0
        self.done = 0
        self.ok = 0
        self.failed = 0
        self.unmatched = 0
        self.negative_without_soa = 0
        self.negative_ttl0 = 0
        self.udp_errors = 0
        self.tcp_errors = 0
        self.late_max_interval = 0.0
        self.done_interval = 0
        self.ok_interval = 0
        self.sent_interval = 0

    def entry(self, key: int) -> tuple[bytes, bytes, int, int, tuple[bytes, ...]]:
        e = self.entries.get(key)
        if e is None:
            name = self.names[key >> 1]
            qtype = QTYPES[key & 1]
            question = question_wire(name, qtype)
            rcode, rdata = name.expected(qtype)
            e = (QUERY_FLAGS + question, question, qtype, rcode, rdata)
            self.entries[key] = e
        return e

    # -- sending ---------------------------------------------------------------------------------

    def send(self, i: int, now: float) -> None:
        key = (self.stream.name[i] << 1) | self.stream.qtype[i]
        body = self.entry(key)[0]
        t = now - self.t0
        self.t_send[i] = t
        late = t - i / self.qps
        self.lateness[i] = late
        if late > self.late_max_interval:
            self.late_max_interval = late
        rng = self.rng
        if self.stream.tcp[i]:
            k = -(i + 1)
            qid = rng.getrandbits(16)
            self.pending[k] = i
            msg = qid.to_bytes(2, "big") + body
            proto = _Tcp(self, k, i, qid, msg)
            loop = asyncio.get_running_loop()
            task = loop.create_task(loop.create_connection(lambda: proto, self.host, self.port))
            task.add_done_callback(lambda tk: self._connected(tk, k, i))
        else:
            s = rng.randrange(self.n_sockets)
            while True:
                qid = rng.getrandbits(16)
                k = (s << 16) | qid
                if k not in self.pending:
                    break
            self.pending[k] = i
            self.transports[s].sendto(qid.to_bytes(2, "big") + body)
        self.deadlines.append((now + self.deadline, k, i))
        self.status[i] = sch.TIMEOUT  # until an answer says otherwise

    def _connected(self, task: asyncio.Task[Any], key: int, i: int) -> None:
        if task.cancelled() or task.exception() is not None:
            self.tcp_errors += 1
            if self.pending.pop(key, None) is not None:
                self.finish(i, sch.NETERR, self.clock())

    # -- receiving -------------------------------------------------------------------------------

    def finish(self, i: int, status: int, now: float) -> None:
        lat = now - self.t0 - self.t_send[i]
        if status == sch.OK and lat > self.deadline:
            status = sch.LATE
        self.status[i] = status
        self.latency[i] = lat
        self.done += 1
        self.done_interval += 1
        if status == sch.OK:
            self.ok += 1
            self.ok_interval += 1
        else:
            self.failed += 1

    def _judge(self, i: int, data: bytes) -> int:
        key = (self.stream.name[i] << 1) | self.stream.qtype[i]
        _, question, qtype, rcode, rdata = self.entry(key)
        status = check_reply(data, question, qtype, rcode, rdata)
        if status == sch.OK and not rdata and data[8:10] == b"\x00\x00":
            # a correct negative answer without the SOA a cache needs to cache it (RFC 2308):
            # not a failure for the client, but worth counting
            self.negative_without_soa += 1
        elif (
            status == sch.OK
            and not rdata
            and data[6:8] == b"\x00\x00"
            and _first_auth_ttl(data, question) == 0
        ):
            self.negative_ttl0 += 1  # served with TTL 0: the cache did not (could not) keep it
        return status

    def on_udp(self, s: int, data: bytes) -> None:
        now = self.clock()
        if len(data) < 12:
            self.unmatched += 1
            return
        i = self.pending.pop((s << 16) | (data[0] << 8) | data[1], None)
        if i is None:
            self.unmatched += 1
            return
        self.finish(i, self._judge(i, data), now)

    def on_tcp(self, key: int, i: int, qid: int, data: bytes) -> None:
        now = self.clock()
        if self.pending.pop(key, None) is None:
            return
        if len(data) < 12 or ((data[0] << 8) | data[1]) != qid:
            self.finish(i, sch.MALFORMED, now)
            return
        self.finish(i, self._judge(i, data), now)

    def on_tcp_lost(self, key: int, i: int) -> None:
        if self.pending.pop(key, None) is not None:
            self.tcp_errors += 1
            self.finish(i, sch.NETERR, self.clock())

    def sweep(self, now: float) -> None:
        dq = self.deadlines
        pending = self.pending
        while dq and dq[0][0] <= now:
            _, k, i = dq.popleft()
            # only if query i still owns key k: once i was answered, a later query may have drawn
            # the same socket and ID, and must not be timed out (nor i scored twice)
            if pending.get(k) == i:
                del pending[k]
                self.finish(i, sch.TIMEOUT, now)
                if k < 0:
                    tr = self.tcp_transports.pop(k, None)
                    if tr is not None:
                        tr.abort()

    # -- main loop -------------------------------------------------------------------------------

    def progress(self, now: float) -> None:
        line = {
            "event": "progress",
            "t": round(now - self.t0, 3),
            "sent": self.sent,
            "done": self.done,
            "ok": self.ok,
            "failed": self.failed,
            "pending": len(self.pending),
            "interval_sent": self.sent_interval,
            "interval_done": self.done_interval,
            "interval_ok": self.ok_interval,
            "late_max_ms": round(self.late_max_interval * 1000, 2),
        }
        self.late_max_interval = 0.0
        self.done_interval = self.ok_interval = self.sent_interval = 0
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    async def run(self, t0: float) -> None:
        loop = asyncio.get_running_loop()
        for s in range(self.n_sockets):
            tr, _ = await loop.create_datagram_endpoint(
                functools.partial(_Udp, self, s), remote_addr=(self.host, self.port)
            )
            self.transports.append(tr)
        self.t0 = t0
        next_report = t0 + 1.0
        total, qps = self.total, self.qps
        while time.monotonic() < t0:
            await asyncio.sleep(min(0.05, max(0.0, t0 - time.monotonic())))
        mono = time.monotonic
        while self.sent < total:
            now = mono()
            due = min(total, int((now - t0) * qps) + 1)
            while self.sent < due:
                self.send(self.sent, mono())
                self.sent += 1
                self.sent_interval += 1
            self.sweep(now)
            if now >= next_report:
                self.progress(now)
                next_report += 1.0
            # uvloop's timers have millisecond resolution: a shorter sleep returns at once and the
            # loop would spin; so tick at >= 1 ms and send what fell due meanwhile (lateness < ~1 ms)
            wait = t0 + self.sent / qps - mono()
            await asyncio.sleep(min(0.05, max(0.001, wait)))
        end = mono() + self.deadline + 0.5
        while self.pending and mono() < end:
            now = mono()
            self.sweep(now)
            if now >= next_report:
                self.progress(now)
                next_report += 1.0
            await asyncio.sleep(0.01)
        self.sweep(mono() + self.deadline + 1.0)  # anything left is a timeout
        self.progress(mono())
        for tr in self.transports:
            tr.close()
        for tcp in list(self.tcp_transports.values()):
            tcp.abort()
        await asyncio.sleep(0)

    def summary(self) -> dict[str, Any]:
        sent = [self.t_send[i] for i in (0, self.total - 1)] if self.total else [0.0, 0.0]
        span = sent[1] - sent[0]
        late = sorted(self.lateness)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "event": "done",
            "system": self.spec.get("system"),
            "queries": self.total,
            "sent": self.sent,
            "target_qps": self.qps,
            "achieved_qps": round((self.total - 1) / span, 2) if span > 0 else None,
            "lateness_p50_ms": _ms(sch.percentile(late, 50)),
            "lateness_p99_ms": _ms(sch.percentile(late, 99)),
            "lateness_p999_ms": _ms(sch.percentile(late, 99.9)),
            "lateness_max_ms": _ms(late[-1] if late else None),
            "late_over_10ms": sum(1 for x in late if x > 0.010),
            "unmatched_replies": self.unmatched,
            "negative_answers_without_soa": self.negative_without_soa,
            "negative_answers_soa_ttl_0": self.negative_ttl0,
            "udp_socket_errors": self.udp_errors,
            "tcp_errors": self.tcp_errors,
            "cpu_user_s": round(ru.ru_utime, 2),
            "cpu_system_s": round(ru.ru_stime, 2),
            "max_rss_kib": ru.ru_maxrss,
            "stream_digest": self.stream.digest(),
        }

    def records(self) -> Records:
        meta = {
            "system": self.spec.get("system"),
            "qps": self.qps,
            "deadline": self.deadline,
            "stream_digest": self.stream.digest(),
        }
        key = array("I", ((n << 1) | q for n, q in zip(self.stream.name, self.stream.qtype, strict=True)))
        return Records(
            self.t_send, self.latency, self.status, self.stream.cls, self.stream.tcp, self.lateness, key, meta
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m labs.chaos.loadgen SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    gen = Generator(spec)
    print(
        json.dumps({"event": "ready", "queries": gen.total, "stream_digest": gen.stream.digest()}), flush=True
    )
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "start":
        print(f"loadgen: expected 'start T0' on stdin, got {line!r}", file=sys.stderr)
        return 2
    t0 = float(line[1])
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(gen.run(t0))
    else:
        uvloop.run(gen.run(t0))
    write_records(spec["out"], gen.records())
    print(json.dumps(gen.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
