"""Field validation shared by every loader and the command line (pure).

One set of value parsers, one rule for types, one wording: a parser takes a value and returns it
checked (and normalised) or raises ``ValueError`` with a message that names the value but not the
field; ``Errors.check`` adds the field's path and keeps going, so one run of a loader reports
every problem of a file. Types are YAML's: ``yes`` is a boolean, never the number 1, and ``"5"``
is text, never a number, unless the parser is told the value may come as text (``text=True``:
a command-line flag, a value that is merged with a file's).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

__all__ = [
    "ConfigError",
    "Errors",
    "boolean",
    "bounds",
    "int_in",
    "integer",
    "ip",
    "is_int",
    "list_of",
    "nonempty_str",
    "number",
    "one_of",
    "optional",
    "unknown_key",
    "unknown_keys",
]

T = TypeVar("T")
Parse = Callable[[Any], T]

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class ConfigError(ValueError):
    """An invalid input file or set of flags: ``errors`` lists every problem found, each as
    ``path: message``. The one error class of every loader, so the CLI reports them one way."""

    def __init__(self, errors: Sequence[str] | str) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


class Errors:
    """Problems found so far, as ``path: message`` lines."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def check(self, path: str, parse: Callable[[Any], T], value: Any, default: T) -> T:
        """``parse(value)``, or ``default`` with the problem kept under ``path``."""
        try:
            return parse(value)
        except ConfigError as exc:  # a parser of a nested mapping reports paths of its own
            self.items += exc.errors
        except ValueError as exc:
            self.add(path, str(exc))
        return default

    def collect(self, validate: Callable[..., T], *args: Any, default: T) -> T:
        """``validate(*args)`` for a validator that raises ``ConfigError`` naming its own paths
        (a nested mapping's); its problems are kept and ``default`` returned."""
        try:
            return validate(*args)
        except ConfigError as exc:
            self.items += exc.errors
            return default

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)


def is_int(v: Any) -> bool:
    """An int that is not a bool (YAML's ``yes`` must not pass as 1)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def bounds(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    """``between 1 and 4094``, ``at least 0``, ``above 0 and at most 600``: a range in words."""
    if lo is not None and hi is not None:
        low, high = _num(lo), _num(hi)
        return f"between {low} and {high}" if not lo_open else f"above {low} and at most {high}"
    if lo is not None:
        return f"above {_num(lo)}" if lo_open else f"at least {_num(lo)}"
    return f"at most {_num(hi)}" if hi is not None else "any number"


def integer(lo: int | None = None, hi: int | None = None, *, text: bool = False) -> Parse[int]:
    """An integer within [lo, hi]; with ``text`` its decimal text too."""

    def parse(v: Any) -> int:
        if text and isinstance(v, str):
            try:
                v = int(v.strip())
            except ValueError:
                raise ValueError(f"{v!r} is not an integer") from None
        if not is_int(v):
            raise ValueError(f"{v!r} is not an integer")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError(f"{v} is out of range: must be {bounds(lo, hi)}")
        return int(v)

    parse.__name__ = "integer"
    return parse


def number(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, text: bool = False
) -> Parse[float]:
    """A finite number within [lo, hi] (or (lo, hi] with ``lo_open``); with ``text`` its text too."""

    def parse(v: Any) -> float:
        if text and isinstance(v, str):
            try:
                v = float(v.strip())
            except ValueError:
                raise ValueError(f"{v!r} is not a number") from None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{v!r} is not a number")
        x = float(v)
        ok = math.isfinite(x) and (lo is None or (x > lo if lo_open else x >= lo)) and (hi is None or x <= hi)
        if not ok:
            raise ValueError(f"{_num(v)} is out of range: must be {bounds(lo, hi, lo_open)}")
        return x

    parse.__name__ = "number"
    return parse


def boolean(*, text: bool = False) -> Parse[bool]:
    """``true`` or ``false``; with ``text`` also true/false, yes/no, on/off, 1/0 as text."""

    def parse(v: Any) -> bool:
        if isinstance(v, bool):
            return v
        if text and isinstance(v, str) and v.strip().lower() in _TRUE + _FALSE:
            return v.strip().lower() in _TRUE
        raise ValueError(f"{v!r} is not true or false")

    parse.__name__ = "boolean"
    return parse


def nonempty_str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"{v!r} is not a non-empty string")
    return v


def one_of(*choices: str, fold_case: bool = False) -> Parse[str]:
    """One of ``choices`` (compared in lower case with ``fold_case``, and returned so)."""

    def parse(v: Any) -> str:
        got = str(v).lower() if fold_case and isinstance(v, str) else v
        if got not in choices:
            raise ValueError(f"{v!r} is not one of {', '.join(choices)}")
        return str(got)

    parse.__name__ = "choice"
    return parse


def ip(version: int | None = None) -> Parse[str]:
    """An IP address (of ``version``, if given), normalised."""
    kind = f"an IPv{version} address" if version else "an IP address"

    def parse(v: Any) -> str:
        try:
            addr = ipaddress.ip_address(v if isinstance(v, str) else "")
        except ValueError:
            raise ValueError(f"{v!r} is not {kind}") from None
        if version is not None and addr.version != version:
            raise ValueError(f"{v!r} is not {kind}")
        return str(addr)

    parse.__name__ = "address"
    return parse


def list_of(item: Callable[[Any], T], *, single: bool = False) -> Parse[tuple[T, ...]]:
    """A list of ``item``; with ``single`` one text value is a list of one (a flag given once)."""

    def parse(v: Any) -> tuple[T, ...]:
        values = [v] if single and isinstance(v, str) else v
        if not isinstance(values, list | tuple):
            raise ValueError(f"{v!r} is not a list")
        return tuple(item(x) for x in values)

    return parse


def optional(parse: Callable[[Any], T]) -> Parse[T | None]:
    """``parse``, or None for a missing (null) value."""
    return lambda v: None if v is None else parse(v)


def int_in(v: Any, lo: int, hi: int, path: str, err: Errors) -> int | None:
    return err.check(path, integer(lo, hi), v, None)


def unknown_key(allowed: Iterable[str]) -> str:
    """The one wording of an unknown key, with the keys that are known."""
    return f"unknown key (expected one of: {', '.join(allowed)})"


def unknown_keys(raw: Iterable[Any], allowed: Iterable[str], path: str, err: Errors) -> None:
    """Unknown keys are errors, so a typo never silently falls back to a default."""
    known = list(allowed)
    for key in raw:
        if key not in known:
            err.add(f"{path}.{key}" if path else str(key), unknown_key(known))
