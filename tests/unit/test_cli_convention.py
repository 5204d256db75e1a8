"""The one CLI convention (ARCHITECTURE.md, "One CLI convention"), checked on every command the
`netkit` parser has: help that teaches (a description, every flag with help and its default, an
Examples section whose examples parse), the common flags, input/output flag names, --check and
--dry-run where they belong, and the exit codes: 0 --help, 2 bad usage with the command's own
usage, 1 a failure at run time, in one line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from netkit.cli import build_parser, main
from netkit.cli.cmdline import LOG_FORMATS, LOG_LEVELS, OUTPUT_FORMATS, CommandInfo, leaves

PARSER = build_parser()
LEAVES = {leaf.prog: leaf for leaf in leaves(PARSER)}


def info(leaf: argparse.ArgumentParser) -> CommandInfo:
    found = leaf.get_default("_info")
    assert isinstance(found, CommandInfo), f"{leaf.prog} is not declared with netkit.cli.cmdline.command"
    return found


def option(leaf: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in leaf._actions if flag in a.option_strings), None)


def argv_of(prog: str) -> list[str]:
    return prog.split()[1:]


def test_the_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert len(LEAVES) >= 12
    for prog, leaf in LEAVES.items():
        assert f"  {prog} " in out, f"{prog} missing from `netkit --help`"
        assert info(leaf).path == prog


@pytest.mark.parametrize("prog", LEAVES)
def test_help_teaches(prog: str) -> None:
    leaf = LEAVES[prog]
    meta = info(leaf)
    text = leaf.format_help()
    assert leaf.description and len(leaf.description) > 40, "a description that says what it does"
    assert "\nExamples:\n" in text
    assert meta.examples, "at least one example"
    for example in meta.examples:
        words = shlex.split(example)
        assert example.startswith(prog + " ") or example == prog, example
        args, extra = PARSER.parse_known_args(words[1:])
        assert not extra and args._parser is leaf, f"{example!r} does not parse as {prog}"
    for action in leaf._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{prog} {action.option_strings or action.dest}: no help"
        meaningful = action.default not in (None, False, argparse.SUPPRESS, [], ())
        if meaningful and action.option_strings and action.nargs != 0:  # not a switch
            shown = leaf._get_formatter()._expand_help(action)  # what --help prints for it
            assert "default" in shown, f"{prog} {action.option_strings[0]}: the default is not shown"


@pytest.mark.parametrize("prog", LEAVES)
def test_common_flags_and_names(prog: str) -> None:
    leaf = LEAVES[prog]
    meta = info(leaf)
    level, fmt, debug = option(leaf, "--log-level"), option(leaf, "--log-format"), option(leaf, "--debug")
    assert level is not None and list(level.choices or ()) == list(LOG_LEVELS)
    assert fmt is not None and list(fmt.choices or ()) == list(LOG_FORMATS)
    assert debug is not None
    file_flag = option(leaf, "-f")
    if file_flag is not None:
        assert file_flag.option_strings == ["-f", "--file", "-c", "--config"] and file_flag.dest == "file"
    assert option(leaf, "--config") in (None, file_flag), "--config is only ever the alias of -f"
    out = option(leaf, "-o")
    if out is not None:
        assert out.option_strings == ["-o", "--output"] and out.dest == "output"
        for bad in ("plan.yaml", "xml"):
            with pytest.raises(argparse.ArgumentTypeError):
                out.type(bad)  # type: ignore[misc]
        assert {out.type(f) for f in OUTPUT_FORMATS if f in out.metavar.split("|")}  # type: ignore[misc,union-attr]
    for action in leaf._actions:  # files and directories written go to --out, formats to -o
        if {"--format", "--json"} & set(action.option_strings):
            assert action.dest == "output", f"{prog} {action.option_strings}: an alias of -o"
    if meta.kind == "daemon":
        assert option(leaf, "--check") is not None, "a long-running command validates with --check"
    if meta.kind == "change" and file_flag is not None:
        assert option(leaf, "--dry-run") is not None, (
            "a command that changes things from a file has --dry-run"
        )
    if option(leaf, "--dry-run") is not None:
        assert "change nothing" in (option(leaf, "--dry-run").help or "")  # type: ignore[union-attr]


@pytest.mark.parametrize("prog", LEAVES)
def test_usage_errors_exit_2_with_the_commands_own_usage(
    prog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in ([*argv_of(prog), "--no-such-flag"], [*argv_of(prog), "--log-level", "verbose"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"usage: {prog} "), err
        assert f"{prog}: error: " in err and f"(see: {prog} --help)" in err
    with pytest.raises(SystemExit) as exit_info:
        main([*argv_of(prog), "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {prog} ")
    required = [a for a in LEAVES[prog]._actions if a.required]
    if required:
        with pytest.raises(SystemExit) as exit_info:
            main(argv_of(prog))
        assert exit_info.value.code == 2
        assert "the following arguments are required" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def default_event_loop_policy() -> Iterator[None]:
    """`netkit dns serve` installs uvloop's policy for its process; in this one it must not
    outlive the test (pyroute2's netlink sockets need asyncio's own loop)."""
    yield
    asyncio.set_event_loop_policy(None)


@pytest.fixture
def taken_port() -> Iterator[tuple[socket.socket, int]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port = sock.getsockname()[1]
    with contextlib.suppress(OSError):
        udp.bind(("127.0.0.1", port))
    yield sock, port
    sock.close()
    udp.close()


L2_FILE = "networks: [{name: blue, vni: 100, members: {n1: 198.18.0.1}}]\n"
REFLECTOR = (
    "router_id: 127.0.0.1\nasn: 64512\nlocal_address: 127.0.0.1\nmetrics: 127.0.0.1:{port}\n"
    "neighbors: [{{name: c1, address: 127.0.0.2, asn: 64512, role: client}}]\n"
)
INVENTORY = "asn: 64512\nnodes:\n" + "".join(
    f"  - {{name: n{i}, address: 198.18.0.{i}, labels: {{zone: z{i % 2}}}}}\n" for i in range(1, 5)
)

# Per command: arguments that make it fail at run time (exit 1), or why it has no such failure.
RUNTIME_FAILURES: dict[str, list[str] | str] = {
    "netkit dns serve": ["--listen", "127.0.0.1:{port}", "--upstream", "127.0.0.1:9"],
    "netkit dns restart": ["--control", "{tmp}/no-such.ctl"],
    "netkit dns demo": "builds its own peers; fails when they cannot start (tests/integration/test_demo.py)",
    "netkit l2 apply": ["-f", "{l2}", "--node", "n1", "--netns", "nk-no-such-ns"],
    "netkit l2 status": ["-f", "{l2}", "--node", "n1", "--netns", "nk-no-such-ns"],
    "netkit l2 agent": ["-f", "{l2}", "--node", "n1", "--metrics", "127.0.0.1:{port}"],
    "netkit l2 verify": "a leak or miss is exit 1 (tests/integration/test_l2_verify.py)",
    "netkit bgp plan": "pure: reads a file, prints a plan; every failure is bad input (exit 2)",
    "netkit bgp render": "pure: reads files, prints configs; every failure is bad input (exit 2)",
    "netkit bgp migrate": "a failed step is exit 1 (tests/integration/test_bgp_migrate_cli.py)",
    "netkit bgp reflector": ["-f", "{rr}"],
    "netkit chaos dns": "root, real peers; a failed self-check is exit 3 (tests/integration/test_chaos_dns)",
    "netkit lab apiserver": ["--listen", "127.0.0.1:{port}"],
    "netkit lab demo": "builds its own lab; a proof that fails exits 1 and names it "
    "(tests/unit/test_demo_report.py, tests/integration/test_lab_demo.py)",
    "netkit lab shell": ["n1", "--lab", "{tmp}/no-such-lab.json"],
    "netkit controller": ["--metrics", "127.0.0.1:{port}"],
    "netkit agent": ["--node", "n1", "--metrics", "127.0.0.1:{port}"],
    "netkit doctor": "a check that cannot run is a failed check (status error, exit 3), never exit 1: "
    "the others still run (tests/unit/test_doctor_runner.py)",
}


def test_every_command_has_a_runtime_failure_entry() -> None:
    assert set(RUNTIME_FAILURES) == set(LEAVES)


@pytest.mark.parametrize("prog", [p for p, v in RUNTIME_FAILURES.items() if isinstance(v, list)])
def test_runtime_failures_exit_1_in_one_line(
    prog: str, tmp_path: Path, taken_port: tuple[socket.socket, int], capsys: pytest.CaptureFixture[str]
) -> None:
    l2 = tmp_path / "nets.yaml"
    l2.write_text(L2_FILE)
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    rr = tmp_path / "reflector.yaml"
    rr.write_text(REFLECTOR.format(port=taken_port[1]))
    spec = RUNTIME_FAILURES[prog]
    assert isinstance(spec, list)
    args = [a.format(port=taken_port[1], tmp=tmp_path, l2=l2, rr=rr) for a in spec]
    assert main([*argv_of(prog), *args]) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), err
    assert "Traceback" not in err
