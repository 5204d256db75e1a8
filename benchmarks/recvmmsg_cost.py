"""What the compiled hit path's single receives save: recvmmsg(2) for 1 datagram against for 64.

    .venv/bin/python benchmarks/recvmmsg_cost.py [--calls 300000] [--rounds 5]

With one datagram queued (a wake-up at a light load), ``recvmmsg(fd, msgs, 64, MSG_DONTWAIT)``
receives it, tries a second receive, fails with EAGAIN and returns 1; for 1 it stops after the
first. ``dnscache/_fastpath.c`` asks for one while wake-ups find one each (``Reader.batch``).
This times the call alone, in C (a Python loop would add more than the difference), on a
loopback socket pair: each call is preceded by one ``sendto`` from the client socket. The probe
is compiled with gcc into a per-run temp dir, which is removed at the end; the vlens alternate
round by round. Prints ns per call, per round and the medians, and the difference.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from labs.runid import RunDir

PROBE = r"""
#define _GNU_SOURCE
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    unsigned int vlen = (unsigned int)atoi(argv[1]);
    long calls = atol(argv[2]);
    int server = socket(AF_INET, SOCK_DGRAM, 0), client = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t len = sizeof addr;
    if (server < 0 || client < 0 || bind(server, (void *)&addr, sizeof addr) < 0 ||
        getsockname(server, (void *)&addr, &len) < 0 || vlen < 1 || vlen > 64) {
        perror("probe set-up");
        return 2;
    }
    static unsigned char slots[64][512];
    struct mmsghdr msgs[64];
    struct iovec iovs[64];
    struct sockaddr_storage peers[64];
    char query[40] = {0};
    double spent = 0;
    for (long k = 0; k < calls; k++) {
        if (sendto(client, query, sizeof query, 0, (void *)&addr, sizeof addr) < 0) {
            perror("sendto");
            return 2;
        }
        memset(msgs, 0, vlen * sizeof msgs[0]);
        for (unsigned int i = 0; i < vlen; i++) {
            iovs[i].iov_base = slots[i];
            iovs[i].iov_len = sizeof slots[i];
            msgs[i].msg_hdr.msg_iov = &iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &peers[i];
            msgs[i].msg_hdr.msg_namelen = sizeof peers[i];
        }
        double t = now();
        int got = recvmmsg(server, msgs, vlen, MSG_DONTWAIT, NULL);
        spent += now() - t;
        if (got != 1) {
            fprintf(stderr, "recvmmsg returned %d, not 1\n", got);
            return 2;
        }
    }
    printf("%.1f\n", spent / (double)calls * 1e9);
    return 0;
}
"""


def build(where: Path) -> Path:
    source, exe = where / "probe.c", where / "probe"
    source.write_text(PROBE)
    r = subprocess.run(["gcc", "-O2", "-o", str(exe), str(source)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"gcc failed (make setup installs it):\n{r.stderr}")
    return exe


def ns_per_call(exe: Path, vlen: int, calls: int) -> float:
    r = subprocess.run([str(exe), str(vlen), str(calls)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"probe failed: {r.stderr.strip()}")
    return float(r.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=300_000, help="calls per run (default 300000)")
    ap.add_argument("--rounds", type=int, default=5, help="runs of each vlen, alternating (default 5)")
    args = ap.parse_args(argv)
    times: dict[int, list[float]] = {1: [], 64: []}
    with RunDir() as rd:
        exe = build(rd.path)
        for i in range(args.rounds):
            for vlen in (1, 64) if i % 2 == 0 else (64, 1):
                times[vlen].append(ns_per_call(exe, vlen, args.calls))
            print(
                f"round {i + 1}/{args.rounds}: vlen 1 {times[1][-1]:.0f} ns, vlen 64 {times[64][-1]:.0f} ns",
                file=sys.stderr,
            )
    one, batch = statistics.median(times[1]), statistics.median(times[64])
    print(f"recvmmsg with one datagram queued, median of {args.rounds} runs of {args.calls:,} calls:")
    print(f"  vlen 1:  {one:.0f} ns")
    print(f"  vlen 64: {batch:.0f} ns")
    print(f"  the failed second receive: {batch - one:.0f} ns a call ({batch / one:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
