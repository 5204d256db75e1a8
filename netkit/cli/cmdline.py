"""The one command-line convention of every ``netkit`` command (ARCHITECTURE.md, "One CLI
convention"): how a command is declared, the flags every command shares, flag types that check
ranges, output formats, and how a failure becomes one line and an exit code.

A plane's ``cli`` module declares its commands with :func:`group` and :func:`command`; the
top-level ``netkit`` parser runs them through :func:`run`. Nothing here knows a plane.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeVar

from netkit.base.addr import AddressError, HostPort, parse_hostport
from netkit.base.fields import ConfigError, integer, ip, number

T = TypeVar("T")

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "OUTPUT_FORMATS",
    "CommandError",
    "CommandInfo",
    "HelpFormatter",
    "Parser",
    "UsageError",
    "add_file",
    "add_output",
    "command",
    "emit",
    "float_range",
    "group",
    "host_port",
    "int_range",
    "ip_address",
    "leaves",
    "run",
]

EXIT_OK = 0
EXIT_FAILURE = 1  # at run time: a peer, the kernel, a port in use, a check that failed
EXIT_USAGE = 2  # usage or configuration: nothing was started or changed
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")
OUTPUT_FORMATS = ("text", "json", "yaml")

Kind = Literal["query", "change", "daemon", "lab"]


class CommandError(Exception):
    """A failure reported as one line (``netkit l2 agent: <message>``) and an exit code."""

    code = EXIT_FAILURE

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


def labs_available() -> bool:
    """The ``labs`` package is there (a source checkout; it is not in the wheel)."""
    return importlib.util.find_spec("labs") is not None


def require_labs(what: str) -> None:
    """Commands that build a lab (the demo, chaos, ``l2 verify``, ``bgp migrate --lab``) load
    ``labs`` when run; without it they fail in one line."""
    if not labs_available():
        raise CommandError(f"{what} runs from a netkit source checkout: the labs package is not installed")


class UsageError(CommandError):
    """Bad flags or input: exit 2, nothing started or changed."""

    code = EXIT_USAGE


@dataclass(frozen=True)
class CommandInfo:
    """What the convention knows of a leaf command (kept on its parser, walked by the tests).

    ``kind``: ``query`` reads and prints; ``change`` changes the world once (has ``--dry-run``);
    ``daemon`` runs until stopped (has ``--check``); ``lab`` builds its own namespaces and peers
    and removes them at the end.
    """

    path: str
    kind: Kind
    examples: tuple[str, ...]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option's help ends with its default when it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "default" not in text
            and default not in (None, False, argparse.SUPPRESS)
            and not (isinstance(default, list | tuple) and not default)
            and action.nargs != 0
        ):
            shown = default if not isinstance(default, list | tuple) else ",".join(map(str, default))
            text += f" (default: {str(shown).replace('%', '%%')})"
        return text


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose sub-commands are parsers of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see: {self.prog} --help)\n")


# -- declaring commands ------------------------------------------------------------------------


def group(sub: Any, name: str, *, help: str, description: str) -> Any:
    """A command with sub-commands (``netkit l2``); returns its subparsers action."""
    parser: Parser = sub.add_parser(name, help=help, description=description)
    parser.set_defaults(_parser=parser)
    return parser.add_subparsers(
        dest=f"{parser.prog.replace(' ', '_')}_command", required=True, metavar="COMMAND"
    )


def command(
    sub: Any,
    name: str,
    *,
    help: str,
    description: str,
    examples: Sequence[str],
    func: Callable[[argparse.Namespace], int],
    kind: Kind,
    log_level: str = "warning",
    log_flags: bool = True,
    epilog: str = "",
) -> Parser:
    """A leaf command: its description, an Examples section, the common flags (``--log-level``,
    ``--log-format``, ``--debug``) and the function that runs it."""
    parser: Parser = sub.add_parser(name, help=help, description=description)
    info = CommandInfo(parser.prog, kind, tuple(examples))
    lines = [epilog.rstrip("\n"), ""] if epilog else []
    lines += ["Examples:", *(f"  {e}" for e in examples)]
    parser.epilog = "\n".join(lines)
    common = parser.add_argument_group("common options")
    if log_flags:
        common.add_argument(
            "--log-level", choices=LOG_LEVELS, default=None, help=f"log threshold (default: {log_level})"
        )
        common.add_argument(
            "--log-format",
            choices=LOG_FORMATS,
            default=None,
            help="json: one object per line on stderr; text: for people (default: json)",
        )
    common.add_argument(
        "--debug", action="store_true", help="show the traceback of an unexpected error instead of one line"
    )
    parser.set_defaults(func=func, _parser=parser, _info=info, _log_level=log_level)
    return parser


def add_file(parser: argparse.ArgumentParser, help: str, *, required: bool = True) -> None:
    """``-f/--file FILE`` (kubectl's), with ``-c/--config`` as an alias."""
    parser.add_argument(
        "-f", "--file", "-c", "--config", dest="file", metavar="FILE", required=required, help=help
    )


def _output_format(formats: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text in formats:
            return text
        hint = f"; to write a file use --out {text}" if ("/" in text or "." in text) else ""
        raise argparse.ArgumentTypeError(f"{text!r} is not an output format ({', '.join(formats)}){hint}")

    parse.__name__ = "output format"
    return parse


def add_output(
    parser: argparse.ArgumentParser, formats: Sequence[str] = OUTPUT_FORMATS, default: str = "text"
) -> None:
    """``-o/--output FORMAT``, as kubectl: ``text`` for people, ``json``/``yaml`` for scripts."""
    parser.add_argument(
        "-o",
        "--output",
        type=_output_format(formats),
        default=default,
        metavar="|".join(formats),
        help="output format",
    )


def emit(data: Any, fmt: str) -> None:
    """Print ``data`` as JSON or YAML (``-o json|yaml``)."""
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str))
        return
    import yaml

    print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")


# -- flag types ----------------------------------------------------------------------------------


def _flag_type(parse: Callable[[Any], T], name: str) -> Callable[[str], T]:
    """A ``netkit.base.fields`` parser as an argparse ``type=`` (its message becomes the usage error)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name  # argparse names the type in "invalid <name> value"
    return convert


def float_range(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False
) -> Callable[[str], float]:
    """A finite number within [lo, hi] (or (lo, hi] with ``lo_open``), for argparse ``type=``."""
    return _flag_type(number(lo, hi, lo_open=lo_open, text=True), "number")


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer within [lo, hi], for argparse ``type=``."""
    return _flag_type(integer(lo, hi, text=True), "integer")


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address, normalised."""
    return _flag_type(ip(), "address")(text)


def host_port(default_port: int | None = None) -> Callable[[str], HostPort]:
    """``ADDR:PORT`` (``[V6]:PORT``); with ``default_port`` the port may be left out."""

    def parse(text: str) -> HostPort:
        try:
            return parse_hostport(text, default_port)
        except AddressError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "address"
    return parse


# -- running a command -------------------------------------------------------------------------


def leaves(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every leaf command under ``parser``, depth first."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
        return
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):
            yield from leaves(child)


def command_list(parser: argparse.ArgumentParser) -> str:
    """The ``Commands:`` block of the top-level help: every leaf with its one-line help."""
    rows: list[tuple[str, str]] = []

    def walk(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {c.dest: c.help or "" for c in action._choices_actions}
                for name, child in action.choices.items():
                    if any(isinstance(a, argparse._SubParsersAction) for a in child._actions):
                        walk(child)
                    else:
                        rows.append((child.prog, helps.get(name, "")))

    walk(parser)
    width = max(len(r[0]) for r in rows) + 2
    return "\n".join(f"  {prog.ljust(width)}{text}" for prog, text in rows)


def _setup_logs(args: argparse.Namespace) -> None:
    if not hasattr(args, "log_format"):
        return
    from netkit.base import logs

    logs.setup(args.log_level or args._log_level or "info", args.log_format or "json")


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv``, run the command, and turn every failure into one line and an exit code:
    0 done, 1 a failure at run time, 2 bad usage or input (3 and up: a command's own outcomes,
    listed in its help). ``--debug`` shows the traceback of an unexpected error."""
    args, extra = parser.parse_known_args(argv)
    leaf: argparse.ArgumentParser = getattr(args, "_parser", parser)
    if extra:
        leaf.error(f"unrecognized arguments: {' '.join(extra)}")
    prog = leaf.prog
    _setup_logs(args)
    try:
        result: int = args.func(args)
    except CommandError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{prog}: {line}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `netkit bgp plan ... | head`: the reader left, nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file, a socket, the kernel: a failure at run time, not a bug
        if getattr(args, "debug", False):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        print(
            f"{prog}: unexpected error: {type(exc).__name__}: {exc} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return result
