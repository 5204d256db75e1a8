"""``netkit chaos``: chaos experiments against real components."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from netkit.cli.cmdline import CommandError, command, emit, float_range, group

CHAOS_DNS_HELP = """\
Measure how node-local DNS caches keep answering while their upstreams fail: the same query
stream and the same fault schedule hit every system under test, each on its own node, at once.

The lab (built in network namespaces named after a fresh run id, nk + 4 hex, and removed at the
end, also on failure, Ctrl-C or SIGTERM):

  upstream namespace   NSD and Knot, authoritative for example.test and cluster.local
                       (generated names); three Unbound resolvers forwarding to both; in front
                       of each resolver a fault proxy (UDP + TCP) on 198.18.0.11-13:53
  one node per system  the cache on 169.254.20.10:53 with the three proxies as upstreams and
                       as cluster.local stub servers, and a load generator
  fabric namespace     a bridge joining them (veth pairs, 198.18.0.0/24)

The load: --qps queries per second per system for --duration seconds, sent at fixed times without
client retries: hot names (Zipf, TTL 30 s, A and AAAA, some cluster.local), nonexistent names
(repeated: negative caching), cold names (each asked once), 5 % over TCP. A query succeeds when the
expected rcode and RRset arrive within --deadline (1 s).

The fault schedule (a 600 s plan scaled to --duration; targets and small shifts from --seed):
  kill       SIGKILL one upstream resolver, start it again at the end of the window
  stop       SIGSTOP one (a black hole), SIGCONT at the end
  loss       30 % datagram loss on one upstream's path (this kernel has no netem: the proxy)
  delay      +2 s on one upstream's path
  servfail   one upstream answers SERVFAIL to everything
  garbage    one upstream answers random bytes, wrong IDs or empty truncated replies
  all_down   every upstream black-holed (30 s of 600): cold names cannot be answered by
             anyone, so they are left out of the headline and reported on their own
  cache_restart  the cache itself restarts: netkit by `netkit dns restart` (zero-gap
             handover), Unbound and dnsmasq by SIGTERM and start (their real restart)
  loss_all   30 % of replies lost on every upstream at once
  upgrade    a new cache process beside the old, then SIGTERM to the old (a DaemonSet rolling
             with maxSurge): netkit by takeover, Unbound by a second instance on SO_REUSEPORT,
             dnsmasq (which cannot share its address) by SIGTERM and start
  crash_restart  SIGKILL the process that resolves (netkit: its worker, which the keeper
             holding its sockets forks again; Unbound, dnsmasq: their only process, started
             again)
with baseline windows in between.

Output in --out: results.json (per system and window: queries, failures, availability,
p50/p99/p99.9 latency, failures by reason and name class; generator rate and lateness; faults as
applied; netkit's metrics per window), report.html with availability.png, latency.png and
windows.png, records/SYSTEM.bin (one record per query), logs/ (every daemon's log, and netkit's
cache snapshots from its restart and its stop), cleanup.json;
and a summary table on stdout. Progress goes to stderr while it runs.

--check validates the options and prints them with the fault schedule they give (YAML), without
building anything.

Exit status: 0 done, 3 the harness's own self-checks failed (query counts, empty windows, or cold
names answered while all upstreams were down: the results are not trustworthy), 1 error, 2 bad
options, 130 interrupted. Needs root.
"""


def _systems(text: str) -> list[str]:
    from labs.chaos.lab import SYSTEMS

    systems = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad or not systems or len(set(systems)) != len(systems):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct names among {', '.join(SYSTEMS)}")
    return systems


_systems.__name__ = "systems"


def add_parser(sub: Any) -> None:
    from labs.chaos.schedule import MIN_DURATION

    csub = group(
        sub, "chaos", help="chaos experiments against real components", description="Chaos experiments."
    )
    p = command(
        csub,
        "dns",
        help="node-local DNS caches under the same upstream faults: netkit vs Unbound vs dnsmasq",
        description=CHAOS_DNS_HELP,
        kind="lab",
        func=cmd_chaos_dns,
        examples=[
            "netkit chaos dns --duration 600 --qps 2000 --seed 1 --out /tmp/chaos-long",
            "netkit chaos dns --duration 60 --qps 100 --systems netkit,unbound --out /tmp/chaos-short",
            "netkit chaos dns --duration 120 --check",
        ],
    )
    p.add_argument(
        "--duration",
        type=float_range(MIN_DURATION, 86400),
        default=600.0,
        metavar="SECONDS",
        help=f"length of the query stream; the fault plan is scaled to it (at least {MIN_DURATION:g})",
    )
    p.add_argument(
        "--qps",
        type=float_range(0, 100_000, lo_open=True),
        default=2000.0,
        metavar="N",
        help="queries per second sent to each system",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        metavar="S",
        help="seed of the names, the query stream, fault targets and shifts",
    )
    p.add_argument(
        "--systems",
        type=_systems,
        default="netkit,unbound,dnsmasq",
        metavar="LIST",
        help="comma-separated systems under test among netkit, unbound, dnsmasq",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("chaos-out"),
        metavar="DIR",
        help="where results.json, report.html, plots, records and logs go",
    )
    p.add_argument(
        "--deadline",
        type=float_range(0, 30, lo_open=True),
        default=1.0,
        metavar="S",
        help="a query must be answered correctly within this long to count",
    )
    p.add_argument(
        "--tcp-share",
        type=float_range(0, 1),
        default=0.05,
        metavar="F",
        help="share of queries sent over TCP, 0-1",
    )
    p.add_argument(
        "--progress-every",
        type=float_range(0.1, 3600),
        default=5.0,
        metavar="S",
        help="seconds between progress lines on stderr",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs (report.html without images)")
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the options, print them and the fault schedule (YAML), build nothing",
    )


def cmd_chaos_dns(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from labs.chaos.runner import Options, require_root, run
    from labs.chaos.schedule import build_schedule
    from labs.chaos.workload import Mix

    systems = _systems(args.systems) if isinstance(args.systems, str) else args.systems
    opts = Options(
        duration=args.duration,
        qps=args.qps,
        seed=args.seed,
        systems=systems,
        out=args.out,
        deadline=args.deadline,
        mix=replace(Mix(), tcp=args.tcp_share),
        progress_every=args.progress_every,
        plots=not args.no_plots,
        command="netkit " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    if args.check:
        options = {
            k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("func", "check")
        }
        options["systems"], options["out"] = systems, str(args.out)
        emit(
            {"options": options, "schedule": [w.to_dict() for w in build_schedule(opts.duration, opts.seed)]},
            "yaml",
        )
        return 0
    problem = require_root()
    if problem:
        raise CommandError(problem)
    return run(opts)
