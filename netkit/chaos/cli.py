"""``netkit chaos``: chaos experiments against real components."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

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
with baseline windows in between.

Output in --out: results.json (per system and window: queries, failures, availability,
p50/p99/p99.9 latency, failures by reason and name class; generator rate and lateness; faults as
applied; netkit's metrics per window), report.html with availability.png, latency.png and
windows.png, records/SYSTEM.bin (one record per query), logs/ (every daemon's log, and netkit's
cache snapshots from its restart and its stop), cleanup.json;
and a summary table on stdout. Progress goes to stderr while it runs.

Exit status: 0 done, 3 the harness's own self-checks failed (query counts, empty windows, or cold
names answered while all upstreams were down: the results are not trustworthy), 1 error, 130
interrupted. Needs root.

Examples:
  netkit chaos dns --duration 600 --qps 2000 --seed 1 --out /tmp/chaos-long
  netkit chaos dns --duration 60 --qps 100 --systems netkit,unbound --out /tmp/chaos-short
"""


def add_parser(sub: Any) -> None:
    chaos = sub.add_parser(
        "chaos", help="chaos experiments against real components", description="Chaos experiments."
    )
    csub = chaos.add_subparsers(dest="chaos_command", required=True, metavar="COMMAND")
    p = csub.add_parser(
        "dns",
        help="node-local DNS caches under the same upstream faults: netkit vs Unbound vs dnsmasq",
        description=CHAOS_DNS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--duration",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="length of the query stream; the fault plan is scaled to it (default 600, minimum 30)",
    )
    p.add_argument(
        "--qps",
        type=float,
        default=2000.0,
        metavar="N",
        help="queries per second sent to each system (default 2000)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        metavar="S",
        help="seed of the names, the query stream, fault targets and shifts (default 1)",
    )
    p.add_argument(
        "--systems",
        default="netkit,unbound,dnsmasq",
        metavar="LIST",
        help="comma-separated systems under test among netkit, unbound, dnsmasq (default: all)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("chaos-out"),
        metavar="DIR",
        help="where results.json, report.html, plots, records and logs go (default ./chaos-out)",
    )
    p.add_argument(
        "--deadline",
        type=float,
        default=1.0,
        metavar="S",
        help="a query must be answered correctly within this long to count (default 1)",
    )
    p.add_argument(
        "--tcp-share",
        type=float,
        default=0.05,
        metavar="F",
        help="share of queries sent over TCP (default 0.05)",
    )
    p.add_argument(
        "--progress-every",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between progress lines on stderr (default 5)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs (report.html without images)")
    p.set_defaults(func=cmd_chaos_dns)  # fmt: skip


def cmd_chaos_dns(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from netkit.chaos.lab import SYSTEMS
    from netkit.chaos.runner import Options, require_root, run
    from netkit.chaos.schedule import MIN_DURATION
    from netkit.chaos.workload import Mix

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad or not systems or len(set(systems)) != len(systems):
        print(f"netkit chaos dns: --systems takes distinct names among {', '.join(SYSTEMS)}", file=sys.stderr)
        return 2
    if args.duration < MIN_DURATION:
        print(f"netkit chaos dns: --duration must be at least {MIN_DURATION:g}", file=sys.stderr)
        return 2
    if args.qps <= 0 or args.deadline <= 0 or not 0 <= args.tcp_share <= 1:
        print(
            "netkit chaos dns: --qps and --deadline must be > 0, --tcp-share within [0, 1]", file=sys.stderr
        )
        return 2
    problem = require_root()
    if problem:
        print(f"netkit chaos dns: {problem}", file=sys.stderr)
        return 1
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
    try:
        return run(opts)
    except Exception as e:
        print(f"netkit chaos dns: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
