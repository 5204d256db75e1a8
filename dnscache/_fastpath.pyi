"""Types of the compiled hit path (dnscache/_fastpath.c)."""

from array import array
from collections.abc import Callable, Sequence
from typing import Any

from _typeshed import WriteableBuffer

BATCH: int
SINGLES: int
OUT_SIZE: int
META_SIZE: int
RCODE_SLOTS: int
WORKSPACE_SIZE: int
ENGINE_COUNTERS: int

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
        engine: Engine | None = None,
    ) -> None: ...
    @property
    def batch(self) -> int: ...
    def __call__(self) -> None: ...
    def close(self) -> None: ...

Policy = tuple[
    float, float, float, float, float, bool
]  # min_ttl, max_ttl, neg_max_ttl, stale_window, prefetch_fraction, minimal_responses

class Engine:
    def __init__(
        self,
        python_inflight: dict[bytes, Any],
        entry_type: Callable[[int], bytearray],
        on_done: Callable[[list[Any]], object],
        counters: array[int],
        durations: array[int],
        rcodes: array[int],
        buckets: Sequence[float],
        policy: Policy,
        case_exact: bool,
        /,
    ) -> None: ...
    def __call__(self) -> None: ...
    def set_route(
        self,
        route: int,
        host: str,
        port: int,
        rto: float,
        timeout: float,
        zones: tuple[bytes, ...],
        policy: Policy,
        /,
    ) -> None: ...
    def clear_route(self) -> None: ...
    def fileno(self) -> int: ...
    def waiting(self) -> int: ...
    def close(self) -> int: ...

def entry_from_reply(
    reply: bytes, key: bytes, policy: Policy, now: float, entry_type: Callable[[int], bytearray], /
) -> bytearray | None: ...
def read_question(data: bytes, /) -> tuple[bytes, int, int] | None: ...
def trim() -> bool: ...
