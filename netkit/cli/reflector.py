"""``netkit bgp reflector --config FILE``: the command line (registered by ``netkit.cli.bgp``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bgp.reflector.core.config import EXAMPLE, load_config
from netkit.cli.cmdline import Parser, UsageError, add_file, command
from netkit.cli.cmdline import run as cmdline_run

__all__ = ["add_parser", "build_parser", "main", "run"]

DESCRIPTION = """\
A BGP route reflector (RFC 4456) on ExaBGP, with best-path selection, reflection rules, policy
and metrics in Python.

ExaBGP speaks BGP; this command renders its exabgp.conf from FILE, starts it, and ExaBGP starts
the API process that decides what to send to whom:

  - best path: LOCAL_PREF, AS_PATH length, ORIGIN, MED (same neighbour AS), eBGP over iBGP,
    IGP cost (igp_metrics), router id / ORIGINATOR_ID, CLUSTER_LIST length, peer address;
  - reflection: a client's routes go to every other peer, a non-client's to clients only;
    ORIGINATOR_ID set, CLUSTER_ID prepended; loops (our cluster id in the CLUSTER_LIST, our
    router id as ORIGINATOR_ID) dropped;
  - sessions: a peer's routes are withdrawn when its session drops; a peer that (re)connects
    gets the full table, then End-of-RIB; IPv4 and IPv6 unicast;
  - policy per neighbour: allowed prefix blocks (never a default route unless allow_default),
    max_prefix (keep the session and reject the excess, or tear it down), TCP MD5 passwords.

Metrics (Prometheus, at `metrics:`): netkit_bgp_sessions{state},
netkit_bgp_prefixes_{received,accepted,advertised}{peer}, netkit_bgp_prefixes_rejected_total{peer,
reason}, netkit_bgp_updates_processed_total, netkit_bgp_update_processing_seconds, ...; /readyz
answers 200 once a session is Established; /status is JSON. Logs: JSON lines on stderr (ExaBGP's
own lines are mixed in, in its format). Full reference: docs/bgp-reflector.md.
"""

EPILOG = f"""\
example (netkit bgp reflector -f reflector.yaml):

{EXAMPLE}
`netkit bgp render --to exabgp` writes such a file for every reflector of a plan.
--check validates FILE and prints the exabgp.conf it implies, without starting anything.

Exit status: 0 stopped by SIGTERM/SIGINT (or --check passed), 1 cannot start (ExaBGP missing,
the metrics address in use) or ExaBGP ended on its own, 2 invalid configuration or usage.
"""

EXAMPLES = [
    "netkit bgp reflector -f reflector.yaml --check",
    "netkit bgp reflector -f reflector.yaml --state-dir /run/netkit/rr --log-format text",
]


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_file(parser, "reflector YAML (see below)")
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where exabgp.conf and the API process marker go (default: a temp dir, removed at exit)",
    )
    parser.add_argument(
        "--check", action="store_true", help="validate FILE, print the exabgp.conf it implies, and exit"
    )
    return parser


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``reflector`` on an argparse subparsers object (``netkit bgp``'s)."""
    parser = command(
        sub,
        "reflector",
        help="run a route reflector on ExaBGP (RFC 4456; policy and metrics in Python)",
        description=DESCRIPTION,
        epilog=EPILOG,
        kind="daemon",
        log_level="info",
        func=run,
        examples=EXAMPLES,
    )
    return build_parser(parser)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bgp.reflector.core.exabgp_conf import exabgp_environment, render_exabgp_conf
    from bgp.reflector.launcher import api_command
    from bgp.reflector.launcher import run as launch
    from bgp.reflector.process import LOG_FORMAT_ENV, LOG_LEVEL_ENV
    from netkit.base import logs

    path = Path(args.file)
    try:
        text = path.read_text()
        cfg = load_config(text, str(path))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if args.log_level:
        cfg = replace(cfg, log_level=args.log_level)
    if args.check:
        print(render_exabgp_conf(cfg, api_command()))
        for key, value in sorted(exabgp_environment(cfg, "USER").items()):
            print(f"# env {key}={value}")
        return 0
    log_format = args.log_format or "json"
    logs.setup(cfg.log_level, log_format)
    state = Path(args.state_dir) if args.state_dir else None
    env = {LOG_LEVEL_ENV: cfg.log_level, LOG_FORMAT_ENV: log_format}
    return launch(cfg, text, state, env)


def main(argv: list[str] | None = None) -> int:
    """``python -m bgp.reflector``: the same command as ``netkit bgp reflector``."""
    root = Parser(prog="netkit bgp")
    add_parser(root.add_subparsers(dest="command", required=True))
    return cmdline_run(root, ["reflector", *(sys.argv[1:] if argv is None else argv)])
