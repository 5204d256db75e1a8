#!/usr/bin/env python3
"""Fuzz run against ``netkit dns serve``: >= 100,000 malformed messages over UDP and TCP plus TCP
framing abuse, while a checker keeps asking valid questions; no crash, every valid question
answered correctly, memory that does not grow without bound.

One NSD (generated zone) is the upstream; netkit runs as a subprocess
(``python -m netkit.cli dns serve --listen 127.0.0.1:P --upstream NSD --metrics 127.0.0.1:M``, every
other setting default). The run:

- ``warm-up`` (5 s): the checker warms its hot names;
- two identical-shape rounds (round 2 uses fresh packets from the same generators), each
  ``udp`` (40 % of --packets as datagrams), ``tcp`` (10 % as framed messages on 8 connections)
  and ``abuse`` (slowloris on 100 connections throughout, lying length prefixes, frames shorter
  than a header, pipelined bursts of valid queries, connections that never read their answers);
- ``cool-down`` (10 s).

The generators are ``labs.dnsfuzz`` (scapy ``fuzz()`` of DNS/DNSQR/DNSRR/OPT, byte mutations,
random lengths 0..4096 over UDP and 0..65535 over TCP). Throughout, a checker sends one valid query
every 50 ms (4 of 5 over UDP, 1 over TCP; alternately a warmed name and a never-asked one) and
compares the answer with the zone; a sampler reads VmRSS from /proc/PID/status, netkit's
/metrics and the kernel's drop counter of netkit's UDP socket every second.

    .venv/bin/python benchmarks/dns_fuzz.py [--packets 100000] [--seed S] [--out DIR]

Writes ``results.txt`` (the table), ``results.json`` (everything, with every sample and check),
``dns_fuzz.png`` and a copy of netkit's log into --out (default benchmarks/results/fuzz/); the
table goes to stdout, progress to stderr. Exit status 1 if netkit died or logged a traceback, or a
valid query failed; 0 otherwise (the RSS verdict is reported, not enforced). See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode

from labs import dnsfuzz
from labs.dnspeers import NsdServer, Record, Zone, generate_zone
from labs.netkitd import NetkitServer
from labs.runid import RunDir

HOST = "127.0.0.1"
ORIGIN = "example.test."
ZONE_NAMES = 20_000
N_HOT = 50  # warmed names the checker cycles through
NEW_BASE = 1_000  # the checker's never-asked names start at h1000
FUZZ_NAMES = 1_000  # h0..h999 (and nonexistent nxN) are the names the fuzz queries are built on
CHECK_INTERVAL = 0.05
CHECK_TIMEOUT = 2.0
CHECK_TCP_EVERY = 5
RSS_LIMIT_MIB = 4.0  # allowed RSS above the peak of warm-up + round 1, in round 2 and the cool-down
UDP_RATE = 4_000  # datagrams/s ceiling; also paced by the kernel queue of netkit's socket
UDP_QUEUE_LIMIT = 256 * 1024  # pause while netkit's UDP receive queue holds more than this
TCP_RATE = 3_000  # messages/s ceiling
TCP_CONNS = 8
TCP_BATCH = 16
SLOWLORIS_CONNS = 100
SLOWLORIS_INTERVAL = 1.5


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# netkit as a lab daemon
# --------------------------------------------------------------------------------------------


def rss_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB from /proc/PID/status, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    rss = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    hwm = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return (int(rss.group(1)) if rss else 0, int(hwm.group(1)) if hwm else 0)


def udp_socket_queue(port: int) -> tuple[int, int] | None:
    """(rx_queue octets, drops) of the UDP socket bound to 127.0.0.1:port, from /proc/net/udp."""
    want = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) >= 13 and parts[1] == want:
            return int(parts[4].split(":")[1], 16), int(parts[12])
    return None


# --------------------------------------------------------------------------------------------
# Background: checker and sampler
# --------------------------------------------------------------------------------------------


@dataclass
class Check:
    t: float
    name: str
    kind: str  # hot / new
    proto: str
    ok: bool
    latency: float | None
    error: str = ""


class Checker(threading.Thread):
    """One valid query every CHECK_INTERVAL; the answer must carry exactly the zone's A rdata."""

    def __init__(self, port: int, zone: Zone, t0: float) -> None:
        super().__init__(daemon=True, name="checker")
        self.port = port
        self.zone = zone
        self.t0 = t0
        self.results: list[Check] = []
        self.stop_event = threading.Event()
        self.new_index = 0
        self.lock = threading.Lock()

    def run(self) -> None:
        i = 0
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            if i % 2 == 0:
                name, kind = f"h{(i // 2) % N_HOT}", "hot"
            else:
                name, kind = f"h{NEW_BASE + self.new_index}", "new"
                self.new_index += 1
            proto = "tcp" if i % CHECK_TCP_EVERY == CHECK_TCP_EVERY - 1 else "udp"
            with self.lock:  # held by the phase boundaries' metrics reads: no query in flight then
                self.results.append(self.ask(name, kind, proto))
            i += 1
            next_at += CHECK_INTERVAL
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
            else:
                next_at = time.monotonic()

    def ask(self, name: str, kind: str, proto: str) -> Check:
        q = dns.message.make_query(f"{name}.{ORIGIN}", "A")
        t = time.monotonic()
        try:
            if proto == "tcp":
                r = dns.query.tcp(q, HOST, port=self.port, timeout=CHECK_TIMEOUT)
            else:
                r = dns.query.udp(q, HOST, port=self.port, timeout=CHECK_TIMEOUT)
        except (dns.exception.DNSException, OSError) as e:
            return Check(t - self.t0, name, kind, proto, False, None, f"{type(e).__name__}: {e}")
        latency = time.monotonic() - t
        got = sorted(rd.to_text() for rrset in r.answer for rd in rrset)
        want = sorted(self.zone.rdata(name))
        if r.rcode() != dns.rcode.NOERROR or got != want:
            err = f"rcode {dns.rcode.to_text(r.rcode())}, answer {got}, want {want}"
            return Check(t - self.t0, name, kind, proto, False, latency, err)
        return Check(t - self.t0, name, kind, proto, True, latency)


@dataclass
class Sample:
    t: float
    rss_kib: int | None
    hwm_kib: int | None
    metrics: dict[str, float]
    udp_drops: int | None
    alive: bool


class Sampler(threading.Thread):
    def __init__(self, netkit: NetkitServer, pid: int, t0: float) -> None:
        super().__init__(daemon=True, name="sampler")
        self.netkit = netkit
        self.pid = pid
        self.t0 = t0
        self.samples: list[Sample] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append(self.sample())
            if self.stop_event.wait(1.0):
                self.samples.append(self.sample())
                return

    def sample(self) -> Sample:
        t = time.monotonic() - self.t0
        mem = rss_kib(self.pid)
        try:
            m = self.netkit.metrics(timeout=2.0)
        except OSError:
            m = {}
        q = udp_socket_queue(self.netkit.address[1])
        return Sample(
            t,
            mem[0] if mem else None,
            mem[1] if mem else None,
            m,
            q[1] if q else None,
            mem is not None and self.netkit.running,
        )


# --------------------------------------------------------------------------------------------
# Storms
# --------------------------------------------------------------------------------------------


def progress_every(total: int, label: str, step: float = 0.1) -> Callable[[int], None]:
    marks = {max(1, int(total * k * step)) for k in range(1, int(1 / step) + 1)}

    def report(i: int) -> None:
        if i in marks:
            log(f"  {label}: {i:,}/{total:,}")

    return report


def udp_storm(port: int, packets: Iterator[dnsfuzz.FuzzPacket], n: int, rate: float) -> dict[str, Any]:
    """Send ``n`` datagrams from 4 sockets at up to ``rate``/s, pausing while netkit's socket queue
    is long (so the kernel does not just drop them); drain and count the answers meanwhile."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    for s in socks:
        s.setblocking(False)
    kinds: Counter[str] = Counter()
    sent = answers = send_errors = pauses = octets = 0
    answer_rcodes: Counter[int] = Counter()

    def drain() -> None:
        nonlocal answers
        for s in socks:
            while True:
                try:
                    data = s.recv(65535)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                answers += 1
                if len(data) >= 4:
                    answer_rcodes[data[3] & 0xF] += 1

    report = progress_every(n, "udp")
    start = time.monotonic()
    try:
        for i, (kind, data) in enumerate(packets):
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            if i % 64 == 0:
                drain()
                waited = 0
                while (q := udp_socket_queue(port)) is not None and q[0] > UDP_QUEUE_LIMIT and waited < 2000:
                    time.sleep(0.002)
                    waited += 1
                pauses += waited > 0
            s = socks[i % len(socks)]
            for attempt in range(20):
                try:
                    s.sendto(data, (HOST, port))
                    break
                except BlockingIOError:
                    time.sleep(0.001 * (attempt + 1))
                except OSError:
                    send_errors += 1
                    break
            else:
                send_errors += 1
                continue
            sent += 1
            octets += len(data)
            kinds[kind] += 1
            report(i + 1)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            drain()
            time.sleep(0.05)
    finally:
        for s in socks:
            s.close()
    elapsed = time.monotonic() - start
    return {
        "sent": sent,
        "octets": octets,
        "kinds": dict(kinds),
        "answers_seen": answers,
        "answer_rcodes": {dns.rcode.to_text(k): v for k, v in sorted(answer_rcodes.items())},
        "send_errors": send_errors,
        "queue_pauses": pauses,
        "elapsed_s": round(elapsed, 2),
        "rate_per_s": round(sent / elapsed, 1) if elapsed else None,
    }


@dataclass
class _Conn:
    sock: socket.socket
    opened: float
    out: bytearray = field(default_factory=bytearray)
    inbuf: bytearray = field(default_factory=bytearray)
    expect_close: bool = False  # a frame shorter than a header went out: the server must hang up
    close_by: float = 0.0


def tcp_storm(port: int, packets: Iterator[dnsfuzz.FuzzPacket], n: int, rate: float) -> dict[str, Any]:
    """Send ``n`` messages, honestly framed, over TCP_CONNS connections at up to ``rate``/s, in
    batches of TCP_BATCH. A message shorter than a header ends its batch: the server must then
    close the connection (a new one replaces it). Answers are read and counted all along."""
    sel = selectors.DefaultSelector()
    conns: list[_Conn] = []
    st: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    answer_rcodes: Counter[int] = Counter()
    it = iter(packets)
    remaining = n
    sent_msgs = 0
    report = progress_every(n, "tcp")

    def open_conn() -> None:
        try:
            s = socket.create_connection((HOST, port), timeout=3)
        except OSError:
            st["connect_errors"] += 1
            return
        s.setblocking(False)
        c = _Conn(s, time.monotonic())
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
        st["connections"] += 1

    def drop(c: _Conn, why: str) -> None:
        st[why] += 1
        if c.out:
            st["frames_unsent_at_close"] += 1
        sel.unregister(c.sock)
        c.sock.close()
        conns.remove(c)
        if remaining > 0:
            open_conn()

    for _ in range(TCP_CONNS):
        open_conn()
    start = time.monotonic()
    last_activity = time.monotonic()
    while conns and (remaining > 0 or any(c.out or c.expect_close for c in conns)):
        budget = int((time.monotonic() - start) * rate) - sent_msgs
        for c in conns:
            if c.out or c.expect_close or remaining <= 0 or budget <= 0:
                continue
            for _ in range(min(TCP_BATCH, remaining, budget)):
                kind, data = next(it)
                remaining -= 1
                sent_msgs += 1
                budget -= 1
                kinds[kind] += 1
                c.out += dnsfuzz.frame(data)
                report(sent_msgs)
                if len(data) < 12:
                    st["short_frames"] += 1
                    c.expect_close = True
                    c.close_by = time.monotonic() + 3.0
                    break
                st["frames_ge12"] += 1
            sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0), c)
        for key, events in sel.select(timeout=0.005):
            c = key.data
            if events & selectors.EVENT_WRITE and c.out:
                try:
                    k = c.sock.send(c.out)
                    del c.out[:k]
                    st["octets"] += k
                except BlockingIOError:
                    pass
                except OSError:
                    drop(c, "closed_by_server_expected" if c.expect_close else "closed_by_server_unexpected")
                    continue
                if not c.out:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
            if events & selectors.EVENT_READ:
                try:
                    chunk = c.sock.recv(1 << 18)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    drop(c, "closed_by_server_expected" if c.expect_close else "closed_by_server_unexpected")
                    continue
                last_activity = time.monotonic()
                c.inbuf += chunk
                for msg in dnsfuzz.split_frames(c.inbuf):
                    st["answers"] += 1
                    if len(msg) >= 4:
                        answer_rcodes[msg[3] & 0xF] += 1
        now = time.monotonic()
        for c in list(conns):
            if c.expect_close and not c.out and now > c.close_by:
                drop(c, "short_frame_not_closed")
    # read the last answers until the connections are quiet for a second
    while conns and time.monotonic() - last_activity < 1.0:
        for key, _ in sel.select(timeout=0.1):
            c = key.data
            try:
                chunk = c.sock.recv(1 << 18)
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(c.sock)
                c.sock.close()
                conns.remove(c)
                continue
            last_activity = time.monotonic()
            c.inbuf += chunk
            for msg in dnsfuzz.split_frames(c.inbuf):
                st["answers"] += 1
                if len(msg) >= 4:
                    answer_rcodes[msg[3] & 0xF] += 1
    for c in conns:
        c.sock.close()
    sel.close()
    elapsed = time.monotonic() - start
    return {
        "sent": sent_msgs,
        "kinds": dict(kinds),
        **dict(st),
        "answer_rcodes": {dns.rcode.to_text(k): v for k, v in sorted(answer_rcodes.items())},
        "elapsed_s": round(elapsed, 2),
        "rate_per_s": round(sent_msgs / elapsed, 1) if elapsed else None,
    }


def abuse(port: int, rng: random.Random, hot: Sequence[str]) -> dict[str, Any]:
    """Slowloris in the background while the other patterns run one after the other."""
    stop = threading.Event()
    slow: dict[str, dnsfuzz.AbuseResult] = {}

    def run_slowloris() -> None:
        slow["r"] = dnsfuzz.slowloris(
            HOST, port, SLOWLORIS_CONNS, duration=600, interval=SLOWLORIS_INTERVAL, stop=stop
        )

    th = threading.Thread(target=run_slowloris, daemon=True, name="slowloris")
    th.start()
    out: dict[str, Any] = {}
    try:
        queries = [dnsfuzz.query_wire(rng.randrange(1 << 16), n) for n in hot]
        log("  abuse: lying length prefixes")
        out["lying_prefixes"] = dnsfuzz.lying_prefixes(HOST, port, rng, queries, rounds=20).as_dict()
        log("  abuse: frames shorter than a header")
        out["tiny_frames"] = dnsfuzz.tiny_frames(HOST, port, rng, rounds=2).as_dict()
        log("  abuse: pipelined bursts")
        bursts = []
        for _ in range(5):
            msgs = [dnsfuzz.query_wire(rng.randrange(1 << 16), rng.choice(hot)) for _ in range(500)]
            bursts.append(dnsfuzz.pipelined_burst(HOST, port, msgs, timeout=10).as_dict())
        out["pipelined_bursts"] = bursts
        log("  abuse: connections that never read")
        big = [dnsfuzz.query_wire(rng.randrange(1 << 16), f"big.{ORIGIN}", "TXT") for _ in range(3000)]
        out["never_read"] = dnsfuzz.never_read(HOST, port, big, conns=4, hold=5.0).as_dict()
        stop.wait(max(0.0, 3 * SLOWLORIS_INTERVAL))  # let slowloris run a few more trickle rounds
    finally:
        stop.set()
        th.join(10)
    out["slowloris"] = slow["r"].as_dict() if "r" in slow else {"error": "slowloris did not finish"}
    return out


# --------------------------------------------------------------------------------------------
# Analysis, table, plot
# --------------------------------------------------------------------------------------------


def metric(m: dict[str, float], key: str) -> float:
    return m.get(key, 0.0)


def rcode_counts(m: dict[str, float]) -> dict[str, float]:
    out = {}
    for key, v in m.items():
        mm = re.fullmatch(r'netkit_dns_responses_total\{rcode="([^"]+)"\}', key)
        if mm:
            out[mm.group(1)] = v
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    keys = [k for k in after if k.endswith("_total") or "_total{" in k]
    return {k: after[k] - before.get(k, 0.0) for k in sorted(keys) if after[k] - before.get(k, 0.0)}


def scan_log(path: Path) -> dict[str, Any]:
    levels: Counter[str] = Counter()
    tracebacks = handling_failed = 0
    errors: list[str] = []
    msgs: Counter[str] = Counter()
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return {"error": str(e)}
    for line in text.splitlines():
        tracebacks += "Traceback" in line
        handling_failed += "query handling failed" in line
        try:
            rec = json.loads(line)
        except ValueError:
            levels["unstructured"] += 1
            if len(errors) < 10:
                errors.append(line[:500])
            continue
        lvl = str(rec.get("level", "?"))
        levels[lvl] += 1
        msgs[f"{lvl}: {rec.get('msg', '')}"] += 1
        if lvl in ("error", "critical") and len(errors) < 10:
            errors.append(line[:2000])
    return {
        "lines": sum(levels.values()),
        "levels": dict(levels),
        "messages": dict(msgs.most_common(20)),
        "tracebacks": tracebacks,
        "query_handling_failed": handling_failed,
        "error_lines": errors,
    }


def pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def checker_summary(checks: Sequence[Check], phases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def summ(cs: Sequence[Check]) -> dict[str, Any]:
        lat = [c.latency for c in cs if c.ok and c.latency is not None]
        return {
            "queries": len(cs),
            "ok": sum(c.ok for c in cs),
            "failed": sum(not c.ok for c in cs),
            "success_ratio": round(sum(c.ok for c in cs) / len(cs), 6) if cs else None,
            "p50_ms": round(1e3 * (pct(lat, 0.5) or 0), 2) if lat else None,
            "p99_ms": round(1e3 * (pct(lat, 0.99) or 0), 2) if lat else None,
            "max_ms": round(1e3 * max(lat), 2) if lat else None,
            "mean_ms": round(1e3 * statistics.fmean(lat), 2) if lat else None,
        }

    out = {"all": summ(checks)}
    for key in ("udp", "tcp"):
        out[key] = summ([c for c in checks if c.proto == key])
    for key in ("hot", "new"):
        out[key] = summ([c for c in checks if c.kind == key])
    out["by_phase"] = {}
    since = 0.0
    for p in phases:  # a phase owns the checks from the end of the previous one (metrics read)
        out["by_phase"][p["name"]] = summ([c for c in checks if since <= c.t < p["end"]])
        since = p["end"]
    out["failures"] = [
        {"t": round(c.t, 3), "name": c.name, "proto": c.proto, "error": c.error} for c in checks if not c.ok
    ][:50]
    return out


def rss_summary(samples: Sequence[Sample], phases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """First, max, last RSS and the bound: after round 1 (i.e. in round 2, which repeats round 1's
    load with fresh packets, and in the cool-down) RSS stays within RSS_LIMIT_MIB of round 1's peak.
    Memory that grew per packet or per connection would grow again in round 2."""
    pts = [(s.t, s.rss_kib) for s in samples if s.rss_kib is not None]
    if not pts:
        return {"error": "no RSS samples"}
    r2_start = min((p["start"] for p in phases if p.get("round") == 2), default=None)
    r1 = [v for t, v in pts if r2_start is None or t < r2_start]  # warm-up and round 1
    r2 = [v for t, v in pts if r2_start is not None and t >= r2_start]  # round 2 and cool-down
    max1 = max(r1) if r1 else None
    max2 = max(r2) if r2 else None
    growth = (max2 - max1) / 1024 if max1 is not None and max2 is not None else None
    return {
        "first_mib": round(pts[0][1] / 1024, 2),
        "max_mib": round(max(v for _, v in pts) / 1024, 2),
        "last_mib": round(pts[-1][1] / 1024, 2),
        "hwm_mib": round(max((s.hwm_kib or 0) for s in samples) / 1024, 2),
        "round1_max_mib": round(max1 / 1024, 2) if max1 is not None else None,
        "after_round1_max_mib": round(max2 / 1024, 2) if max2 is not None else None,
        "growth_after_round1_mib": round(growth, 2) if growth is not None else None,
        "limit_mib": RSS_LIMIT_MIB,
        "criterion": (
            "bounded if, from the start of round 2 (the second half: the same kinds and numbers of "
            "packets and abuse as round 1, fresh packets) to the end of the cool-down, RSS never "
            f"exceeds the peak of warm-up + round 1 by more than {RSS_LIMIT_MIB} MiB"
        ),
        "bounded": growth is not None and growth <= RSS_LIMIT_MIB,
    }


def table(res: dict[str, Any]) -> str:
    lines: list[str] = []

    def row(label: str, value: object) -> None:
        lines.append(f"  {label:<44} {value}")

    def n(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return f"{v:,}" if isinstance(v, int) else str(v)

    udp = res["storms"]["udp_total"]
    tcp = res["storms"]["tcp_total"]
    md = res["netkit_metrics"]["delta"]
    mb, ma = res["netkit_metrics"]["before"], res["netkit_metrics"]["after"]
    lines.append(
        f"dns_fuzz: netkit dns serve under fuzz (loopback, one process, defaults; "
        f"fast path {res.get('fast_path', 'compiled')})"
    )
    lines.append("")
    lines.append("Fuzz sent")
    row("UDP datagrams (0..4096 octets)", n(udp["sent"]))
    row("TCP messages, honest framing (0..65535)", n(tcp["sent"]))
    row("total fuzz messages", n(udp["sent"] + tcp["sent"]))
    row("TCP abuse connections (slowloris, lies, ...)", n(res["abuse_connections"]))
    lines.append("Received by netkit (netkit_dns_requests_total, delta over the run)")
    udp_rx = md.get('netkit_dns_requests_total{proto="udp"}', 0)
    row("udp", n(udp_rx))
    cu = res["checker_udp_in_window"]
    row("  of which fuzz (minus the checker's UDP queries)", f"{n(udp_rx - cu)} of {n(udp['sent'])} sent")
    row(
        "tcp (fuzz, abuse, bursts, never-read, checker)",
        n(md.get('netkit_dns_requests_total{proto="tcp"}', 0)),
    )
    row(
        "  of which fuzz (tcp phases, minus the checker)",
        f"{n(res['tcp_fuzz_received'])} of {n(tcp['frames_ge12'])} frames >= 12 octets sent "
        f"(+{n(tcp['short_frames'])} shorter: connection closed, not counted)",
    )
    row("kernel drops at netkit's UDP socket", n(res["udp_socket_drops"]))
    row("dropped (netkit_dns_dropped_total)", n(md.get("netkit_dns_dropped_total", 0)))
    row("TCP connections accepted", n(md.get("netkit_dns_tcp_connections_total", 0)))
    rca, rcb = rcode_counts(ma), rcode_counts(mb)
    rc_text = ", ".join(f"{k} {n(v - rcb.get(k, 0))}" for k, v in sorted(rca.items()) if v - rcb.get(k, 0))
    row("responses by rcode", rc_text or "-")
    row("FORMERR", n(md.get('netkit_dns_responses_total{rcode="FORMERR"}', 0)))
    lines.append("Health")
    row("netkit alive at the end", "yes" if res["alive"] else "NO")
    lg = res["log"]
    row(
        "log: tracebacks / 'query handling failed'",
        f"{lg.get('tracebacks')} / {lg.get('query_handling_failed')}",
    )
    row("log lines by level", ", ".join(f"{k} {v}" for k, v in sorted(lg.get("levels", {}).items())) or "-")
    for msg, count in lg.get("messages", {}).items():
        if not msg.startswith("info: serving"):
            row(f"  {msg[:42]}", count)
    up: Counter[str] = Counter()
    for k, v in md.items():
        mm = re.search(r'netkit_dns_upstream_requests_total\{.*result="([a-z_]+)"', k)
        if mm:
            up[mm.group(1)] += int(v)
    row(
        "upstream exchanges by result (delta)", ", ".join(f"{k} {n(v)}" for k, v in sorted(up.items())) or "-"
    )
    ck = res["checker"]["all"]
    row("valid queries answered correctly", f"{n(ck['ok'])}/{n(ck['queries'])} ({ck['success_ratio']})")
    for key in ("udp", "tcp", "hot", "new"):
        c = res["checker"][key]
        row(
            f"  {key}: ok/total, p50/p99/max ms",
            f"{n(c['ok'])}/{n(c['queries'])}, {c['p50_ms']}/{c['p99_ms']}/{c['max_ms']}",
        )
    lines.append("Checker latency by phase (p50/p99/max ms, failures)")
    for name, c in res["checker"]["by_phase"].items():
        row(f"  {name}", f"{c['p50_ms']}/{c['p99_ms']}/{c['max_ms']}, {c['failed']} failed of {c['queries']}")
    r = res["rss"]
    lines.append("Memory (VmRSS of the netkit process, sampled every second)")
    row("first / max / last MiB", f"{r['first_mib']} / {r['max_mib']} / {r['last_mib']}")
    row("peak up to round 1 / peak after MiB", f"{r['round1_max_mib']} / {r['after_round1_max_mib']}")
    row("growth after round 1 MiB", r["growth_after_round1_mib"])
    row(f"bounded (growth <= {RSS_LIMIT_MIB} MiB)", "yes" if r["bounded"] else "NO")
    row("cache entries / bytes at the end", f"{n(ma.get('netkit_dns_cache_entries'))} / "
        f"{n(ma.get('netkit_dns_cache_size_bytes'))}")  # fmt: skip
    lines.append("TCP abuse (per round: server closed / still open at give-up / answers)")
    for rnd, ab in enumerate(res["abuse"], 1):
        for key in ("slowloris", "lying_prefixes", "tiny_frames", "never_read"):
            a = ab.get(key, {})
            lt = a.get("lifetime_s", {})
            row(
                f"  round {rnd} {key}",
                f"{n(a.get('connections'))} conns, closed {n(a.get('server_closed'))}, "
                f"open {n(a.get('still_open'))}, answers {n(a.get('answers'))}, "
                f"lifetime max {lt.get('max')} s",
            )
        bursts = ab.get("pipelined_bursts", [])
        row(
            f"  round {rnd} pipelined bursts (answers/sent)",
            ", ".join(f"{b['answers']}/{b['frames_sent']}" for b in bursts),
        )
    lines.append("")
    lines.append(f"Verdict: {res['verdict']}")
    return "\n".join(lines)


def plot(res: dict[str, Any], samples: Sequence[Sample], checks: Sequence[Check], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(13, 10), sharex=True)
    colors = {"udp": "#d0e4f7", "tcp": "#f7e3d0", "abuse": "#f7d0d8"}
    for ax in axes:
        for p in res["phases"]:
            base = p["name"].split()[0]
            if base in colors:
                ax.axvspan(p["start"], p["end"], color=colors[base], alpha=0.7, lw=0)
    for p in res["phases"]:
        axes[0].text((p["start"] + p["end"]) / 2, 1.01, p["name"], transform=axes[0].get_xaxis_transform(),
                     ha="center", va="bottom", fontsize=7)  # fmt: skip

    ts = [s.t for s in samples if s.rss_kib is not None]
    axes[0].plot(ts, [s.rss_kib / 1024 for s in samples if s.rss_kib is not None], label="VmRSS", color="C0")
    cb = [(s.t, s.metrics.get("netkit_dns_cache_size_bytes")) for s in samples]
    cb = [(t, v) for t, v in cb if v is not None]
    if cb:
        ax2 = axes[0].twinx()
        ax2.plot([t for t, _ in cb], [v / 2**20 for _, v in cb], color="C2", ls="--", label="cache bytes")
        ax2.set_ylabel("cache estimate (MiB)", color="C2")
    axes[0].set_ylabel("netkit VmRSS (MiB)")
    axes[0].grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=8)

    for proto, color in (("udp", "C0"), ("tcp", "C1")):
        ok = [(c.t, c.latency * 1e3) for c in checks if c.ok and c.proto == proto and c.latency is not None]
        axes[1].scatter([t for t, _ in ok], [v for _, v in ok], s=4, color=color, label=f"{proto} ok")
    bad = [c.t for c in checks if not c.ok]
    if bad:
        axes[1].scatter(bad, [CHECK_TIMEOUT * 1e3] * len(bad), marker="x", color="red", label="failed")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("checker latency (ms)")
    axes[1].grid(alpha=0.3)
    axes[1].legend(loc="upper left", fontsize=8)

    for proto, color in (("udp", "C0"), ("tcp", "C1")):
        key = f'netkit_dns_requests_total{{proto="{proto}"}}'
        xs, ys = [], []
        for a, b in itertools.pairwise(samples):
            if key in a.metrics and key in b.metrics and b.t > a.t:
                xs.append(b.t)
                ys.append((b.metrics[key] - a.metrics[key]) / (b.t - a.t))
        axes[2].plot(xs, ys, color=color, label=f"{proto} requests/s")
    axes[2].set_ylabel("requests/s received")
    axes[2].set_xlabel("seconds since start")
    axes[2].grid(alpha=0.3)
    axes[2].legend(loc="upper left", fontsize=8)
    fig.suptitle("netkit dns serve under fuzz: memory, valid-query latency, load", y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def build_zone() -> Zone:
    zone = generate_zone(ORIGIN, ZONE_NAMES, seed=11, ttl=300, negative_ttl=60)
    big = "x" * 200
    zone.records += [Record("big", "TXT", f'"{i:02d}{big}"') for i in range(12)]  # ~2.5 KB answers
    zone.records += [Record("many", "A", f"198.18.7.{i + 1}") for i in range(60)]
    return zone


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--packets", type=int, default=100_000, help="fuzz messages in total (80%% UDP, 20%% TCP)"
    )
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "fuzz")
    ap.add_argument(
        "--udp-rate", type=float, default=UDP_RATE, help=f"datagrams/s ceiling (default {UDP_RATE})"
    )
    ap.add_argument(
        "--tcp-rate", type=float, default=TCP_RATE, help=f"messages/s ceiling (default {TCP_RATE})"
    )
    ap.add_argument(
        "--fast-path", choices=("compiled", "python"), default="compiled",
        help="netkit's hit path under fuzz (default compiled: the C walker is the boundary)",
    )  # fmt: skip
    args = ap.parse_args(argv)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)  # so the finally blocks stop every daemon
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    udp_n = args.packets * 4 // 5
    tcp_n = args.packets - udp_n
    per_round = [(udp_n // 2, tcp_n // 2), (udp_n - udp_n // 2, tcp_n - tcp_n // 2)]
    zone = build_zone()
    fuzz_names = [f"h{i}.{ORIGIN}" for i in range(FUZZ_NAMES)] + [f"nx{i}.{ORIGIN}" for i in range(200)]
    fuzz_names += [f"big.{ORIGIN}", f"many.{ORIGIN}", ORIGIN]
    hot = [f"h{i}.{ORIGIN}" for i in range(N_HOT)]
    rng = random.Random(args.seed)

    res: dict[str, Any] = {
        "phases": [], "storms": {"udp": [], "tcp": []}, "abuse": [], "fast_path": args.fast_path,
    }  # fmt: skip
    checker: Checker | None = None
    sampler: Sampler | None = None
    with RunDir() as run:
        log(f"run dir {run.path}; starting NSD ({ZONE_NAMES:,} names) and netkit")
        with (
            NsdServer([zone], workdir=run.path, start_timeout=60) as nsd,
            NetkitServer(nsd.address, run.path, extra_args=["--fast-path", args.fast_path]) as nk,
        ):
            pid = nk.pid
            assert pid is not None
            port = nk.address[1]
            log(f"netkit pid {pid} on {HOST}:{port}, metrics on {HOST}:{nk.metrics_port}")
            t0 = time.monotonic()
            checker = Checker(port, zone, t0)
            sampler = Sampler(nk, pid, t0)
            drops_start = udp_socket_queue(port)
            sampler.start()
            checker.start()
            phase_metrics: list[tuple[str, dict[str, float]]] = []

            def phase(name: str, rnd: int | None, fn: Callable[[], Any]) -> Any:
                log(f"phase {name}")
                p: dict[str, Any] = {"name": name, "round": rnd, "start": round(time.monotonic() - t0, 3)}
                try:
                    return fn()
                finally:
                    with checker.lock:  # every checker query falls clearly before or after the read
                        p["end"] = round(time.monotonic() - t0, 3)
                        res["phases"].append(p)
                        try:
                            phase_metrics.append((name, nk.metrics()))
                        except OSError as e:
                            log(f"metrics after {name} failed: {e}")

            try:
                phase("warm-up", None, lambda: time.sleep(5.0))
                before = phase_metrics[-1][1]
                for rnd, (u, t) in enumerate(per_round, 1):
                    udp_pkts = dnsfuzz.udp_fuzz(rng.getrandbits(32), u, fuzz_names)
                    tcp_pkts = dnsfuzz.tcp_fuzz(rng.getrandbits(32), t, fuzz_names)
                    arng = random.Random(rng.getrandbits(32))
                    res["storms"]["udp"].append(
                        phase(f"udp {rnd}", rnd, partial(udp_storm, port, udp_pkts, u, args.udp_rate))
                    )
                    res["storms"]["tcp"].append(
                        phase(f"tcp {rnd}", rnd, partial(tcp_storm, port, tcp_pkts, t, args.tcp_rate))
                    )
                    res["abuse"].append(phase(f"abuse {rnd}", rnd, partial(abuse, port, arng, hot)))
                phase("cool-down", None, lambda: time.sleep(10.0))
            finally:
                checker.stop_event.set()
                sampler.stop_event.set()
                checker.join(CHECK_TIMEOUT + 2)
                sampler.join(5)
            after = phase_metrics[-1][1]
            drops_end = udp_socket_queue(port)
            alive = nk.running and rss_kib(pid) is not None
            # one more valid query over each transport after everything
            final_udp = checker.ask("h7", "hot", "udp")
            final_tcp = checker.ask("h8", "hot", "tcp")
            log_path = nk.output_path
            log_scan = scan_log(log_path)
            log_copy = args.out / "netkit.log"
            log_copy.write_bytes(log_path.read_bytes() if log_path.exists() else b"")
            exit_status = None if nk.running else (nk._proc.poll() if nk._proc is not None else None)

    assert checker is not None and sampler is not None
    checks, samples = checker.results, sampler.samples

    def total(kind: str, key: str) -> int:
        return sum(int(s.get(key, 0)) for s in res["storms"][kind])

    res["storms"]["udp_total"] = {"sent": total("udp", "sent"), "answers_seen": total("udp", "answers_seen")}
    res["storms"]["tcp_total"] = {
        key: total("tcp", key) for key in ("sent", "answers", "frames_ge12", "short_frames")
    }
    res["abuse_connections"] = sum(
        int(a.get("connections", 0)) for ab in res["abuse"] for key, a in ab.items() if isinstance(a, dict)
    ) + sum(int(b.get("connections", 0)) for ab in res["abuse"] for b in ab.get("pipelined_bursts", []))
    res["udp_socket_drops"] = (
        drops_end[1] - drops_start[1] if drops_start is not None and drops_end is not None else None
    )
    res["alive"] = alive
    res["exit_status"] = exit_status
    res["log"] = log_scan
    res["final_queries"] = {
        "udp": {"ok": final_udp.ok, "error": final_udp.error},
        "tcp": {"ok": final_tcp.ok, "error": final_tcp.error},
    }
    res["checker"] = checker_summary(checks, res["phases"])
    warm_end = res["phases"][0]["end"]
    run_end = res["phases"][-1]["end"]  # the "after" metrics are read at the end of the last phase
    res["checker_udp_in_window"] = sum(1 for c in checks if c.proto == "udp" and warm_end <= c.t < run_end)
    tcp_key = 'netkit_dns_requests_total{proto="tcp"}'
    pm = dict(phase_metrics)
    names = [p["name"] for p in res["phases"]]
    tcp_rx = 0.0
    for i, p in enumerate(res["phases"]):
        if p["name"].startswith("tcp ") and i > 0:
            tcp_rx += pm.get(p["name"], {}).get(tcp_key, 0) - pm.get(names[i - 1], {}).get(tcp_key, 0)
            since = res["phases"][i - 1]["end"]  # the metrics were read then
            tcp_rx -= sum(1 for c in checks if c.proto == "tcp" and since <= c.t < p["end"])
    res["tcp_fuzz_received"] = int(tcp_rx)
    res["rss"] = rss_summary(samples, res["phases"])
    res["netkit_metrics"] = {
        "before": before,
        "after": after,
        "delta": delta(before, after),
        "per_phase_requests": [
            {
                "phase": name,
                "udp": m.get('netkit_dns_requests_total{proto="udp"}'),
                "tcp": m.get('netkit_dns_requests_total{proto="tcp"}'),
                "dropped": m.get("netkit_dns_dropped_total"),
                "formerr": m.get('netkit_dns_responses_total{rcode="FORMERR"}'),
                "tcp_connections": m.get("netkit_dns_tcp_connections_total"),
                "cache_entries": m.get("netkit_dns_cache_entries"),
            }
            for name, m in phase_metrics
        ],
    }
    crashed = not alive or bool(log_scan.get("tracebacks")) or bool(log_scan.get("query_handling_failed"))
    failed = res["checker"]["all"]["failed"] > 0 or not (final_udp.ok and final_tcp.ok)
    verdicts = []
    verdicts.append("netkit CRASHED or logged a traceback" if crashed else "no crash")
    verdicts.append("valid queries FAILED" if failed else "every valid query answered correctly")
    verdicts.append("RSS bounded" if res["rss"].get("bounded") else "RSS criterion NOT met")
    res["verdict"] = "; ".join(verdicts)
    res["meta"] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "command": " ".join(
            [Path(sys.executable).name, *(sys.argv if argv is None else ["dns_fuzz.py", *argv])]
        ),
        "seed": args.seed,
        "packets": args.packets,
        "udp_rate": args.udp_rate,
        "tcp_rate": args.tcp_rate,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "netkit_git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            check=False,
        ).stdout.strip(),
        "zone": {"origin": ORIGIN, "names": ZONE_NAMES, "ttl": 300, "negative_ttl": 60},
        "checker": {"interval_s": CHECK_INTERVAL, "timeout_s": CHECK_TIMEOUT, "tcp_every": CHECK_TCP_EVERY},
    }
    res["samples"] = [
        {
            "t": round(s.t, 3),
            "rss_kib": s.rss_kib,
            "udp_drops": s.udp_drops,
            "alive": s.alive,
            "requests_udp": s.metrics.get('netkit_dns_requests_total{proto="udp"}'),
            "requests_tcp": s.metrics.get('netkit_dns_requests_total{proto="tcp"}'),
            "cache_entries": s.metrics.get("netkit_dns_cache_entries"),
            "cache_bytes": s.metrics.get("netkit_dns_cache_size_bytes"),
        }
        for s in samples
    ]
    res["checks"] = [
        {"t": round(c.t, 3), "name": c.name, "kind": c.kind, "proto": c.proto, "ok": c.ok,
         "latency_ms": round(c.latency * 1e3, 3) if c.latency is not None else None, "error": c.error}
        for c in checks
    ]  # fmt: skip
    text = table(res)
    print(text)
    (args.out / "results.txt").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    plot(res, samples, checks, args.out / "dns_fuzz.png")
    log(
        f"wrote results.json, results.txt, dns_fuzz.png, netkit.log into {args.out} "
        f"in {time.time() - started:.0f} s"
    )
    return 1 if crashed or failed else 0


if __name__ == "__main__":
    sys.exit(main())
