"""``netkit``: one command, a subcommand per plane."""

from __future__ import annotations

import argparse
import os
import sys

from netkit import __version__

DESCRIPTION = """\
netkit: network and DNS reliability for Kubernetes data centres.

  netkit dns serve   node-local caching DNS responder (see: netkit dns serve --help)
  netkit dns demo    real upstreams + the cache on loopback: answers, failover, serve-stale
  netkit chaos dns   the same faults against netkit, Unbound and dnsmasq in namespaces: availability
                     and latency per fault window (see: netkit chaos dns --help)
  netkit l2 apply    per-tenant L2 segments (VXLAN/802.1Q) on a node: plan and apply, with probes
                     and rollback; `netkit l2 status`, and `netkit l2 agent` repairs drift
                     (see: netkit l2 --help)
  netkit l2 verify   a namespace lab proving tenant isolation with real frames (exit 1 on a leak)
  netkit dns restart zero-gap restart of a running `netkit dns serve --control PATH`
  netkit bgp plan    route reflectors instead of the iBGP full mesh: plan, render (BIRD, FRR, GoBGP,
                     Calico, ExaBGP) and migrate without losing a route (see: netkit bgp --help)
"""


def build_parser() -> argparse.ArgumentParser:
    from bgp import cli as bgp_cli
    from dnscache import cli as dns_cli
    from netkit.chaos import cli as chaos_cli
    from netkit.l2 import cli as l2_cli

    parser = argparse.ArgumentParser(
        prog="netkit", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"netkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dns_cli.add_parser(sub)
    chaos_cli.add_parser(sub)
    l2_cli.add_parser(sub)
    bgp_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except BrokenPipeError:  # `netkit bgp plan ... | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return result


if __name__ == "__main__":
    sys.exit(main())
