"""Field validation shared by the YAML loaders (pure): collect every problem, each naming its
field, so one run of a loader reports all of them (``netkit.l2.core.model``, ``bgp.core.inventory``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ConfigError", "Errors", "int_in", "is_int", "unknown_keys"]


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

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)


def is_int(v: Any) -> bool:
    """An int that is not a bool (YAML's ``yes`` must not pass as 1)."""
    return isinstance(v, int) and not isinstance(v, bool)


def int_in(v: Any, lo: int, hi: int, path: str, err: Errors) -> int | None:
    if not is_int(v):
        err.add(path, f"{v!r} is not an integer")
        return None
    if not lo <= v <= hi:
        err.add(path, f"{v} is out of range {lo}-{hi}")
        return None
    return int(v)


def unknown_keys(raw: Mapping[Any, Any], allowed: Sequence[str], path: str, err: Errors) -> None:
    """Unknown keys are errors, so a typo never silently falls back to a default."""
    for key in raw:
        if key not in allowed:
            err.add(f"{path}.{key}", f"unknown field (expected one of: {', '.join(allowed)})")
