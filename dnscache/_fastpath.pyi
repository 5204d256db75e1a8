"""Types of the compiled hit path (dnscache/_fastpath.c)."""

from array import array
from collections.abc import Callable
from typing import Any

from _typeshed import WriteableBuffer

BATCH: int
OUT_SIZE: int
META_SIZE: int
RCODE_SLOTS: int
WORKSPACE_SIZE: int

def serve(
    fd: int,
    workspace: WriteableBuffer,
    entries: dict[bytes, Any],
    now: float,
    rcodes: array[int],
    misses: list[tuple[bytes, Any, tuple[bytes, int, int] | None]],
    prefetch: list[tuple[bytes, Any]],
    /,
) -> tuple[int, int, int]: ...

class Reader:
    def __init__(
        self,
        fd: int,
        workspace: WriteableBuffer,
        entries: dict[bytes, Any],
        rcodes: array[int],
        counts: array[int],
        on_rest: Callable[
            [list[tuple[bytes, Any, tuple[bytes, int, int] | None]], list[tuple[bytes, Any]]], object
        ],
        clock: Callable[[], float] | None = None,
    ) -> None: ...
    def __call__(self) -> None: ...
    def close(self) -> None: ...

def read_question(data: bytes, /) -> tuple[bytes, int, int] | None: ...
def trim() -> bool: ...
