"""``netkit``: one command, a sub-command per plane (the convention: ``netkit.cli.cmdline``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from netkit import __version__
from netkit.cli.cmdline import Parser, command_list, labs_available, run

DESCRIPTION = """\
netkit: network and DNS reliability for Kubernetes data centres: node-local caching DNS, per-tenant
L2 segments (VXLAN/802.1Q) and iBGP route reflectors, with the chaos and lab tooling that prove
them. Every command takes --help, which ends with examples.

Commands:
{commands}

Conventions (all commands): -f/--file FILE for input (-c/--config is an alias); -o/--output
text|json|yaml for what is printed; --out PATH where files are written; --log-level
debug|info|warning|error and --log-format json|text; --check validates the input, prints the
effective configuration and starts nothing; --dry-run prints what would change and changes
nothing. Exit status: 0 done, 1 a failure at run time, 2 bad usage or input (nothing started or
changed), 3 and up a command's own outcomes, listed in its help.
"""


GROUPS = {
    "dns": "netkit.cli.dns",
    "l2": "netkit.cli.l2",
    "bgp": "netkit.cli.bgp",
    "chaos": "netkit.cli.chaos",
    "lab": "netkit.cli.lab",
    "controller": "netkit.cli.control",
    "agent": "netkit.cli.agent",
    "doctor": "netkit.cli.doctor",
}
LAB_GROUPS = {"chaos", "lab"}  # whole groups built on the labs: left out where they are not installed


def build_parser(only: str | None = None) -> Parser:
    """Every command; with ``only`` (a group name), that group's alone: a command run by name
    does not import the other planes (``netkit dns serve`` starts ~60 ms sooner)."""
    parser = Parser(prog="netkit")
    parser.add_argument("--version", action="version", version=f"netkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in GROUPS.items():
        if name in LAB_GROUPS and not labs_available():
            continue
        if only is None or name == only:
            importlib.import_module(module).add_parser(sub)
    parser.description = DESCRIPTION.format(commands=command_list(parser))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return run(build_parser(args[0] if args and args[0] in GROUPS else None), args)
