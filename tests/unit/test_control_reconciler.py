"""The loop every controller runs (``Reconciler.run``): a change seen before the caches have
listed, or while another replica leads, stays pending and is acted on once they have (or once
this one leads), with no further change; waiting for that is not a busy loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from netkit.control.reconciler import Reconciler


class FakeInformer:
    def __init__(self, synced: bool) -> None:
        self.synced = threading.Event()
        if synced:
            self.synced.set()


class CountingEvent(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


class Counting(Reconciler):
    name = "counting"

    def __init__(self, informers: dict[str, FakeInformer]) -> None:
        super().__init__(api=None, informers=informers)
        self.dirty = CountingEvent()
        self.calls = 0

    def reconcile(self) -> int:
        if not self.ready():  # as every controller does: nothing decided on an unlisted cache
            return 0
        self.calls += 1
        return 0


@contextmanager
def running(r: Reconciler, leading: threading.Event) -> Iterator[None]:
    stop = threading.Event()
    t = threading.Thread(target=r.run, args=(leading, stop, 0.02), daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()


def eventually(check: object, timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if callable(check) and check():
            return True
        time.sleep(0.01)
    return False


def test_a_change_before_the_caches_listed_is_acted_on_once_they_have() -> None:
    # the race CI met: an L2Network seen by one informer while an empty one had not listed yet
    # (an empty list calls no handler, so nothing else would have woken the loop)
    late = FakeInformer(synced=False)
    r = Counting({"l2networks": FakeInformer(synced=True), "services": late})
    leading = threading.Event()
    leading.set()
    with running(r, leading):
        r.changed()
        time.sleep(0.2)
        assert r.calls == 0  # nothing decided on a cache that has not listed
        late.synced.set()
        assert eventually(lambda: r.calls == 1)
        time.sleep(0.1)
        assert r.calls == 1  # once: the change was taken


def test_a_change_seen_while_another_replica_leads_is_acted_on_when_this_one_does() -> None:
    r = Counting({"l2networks": FakeInformer(synced=True)})
    leading = threading.Event()
    with running(r, leading):
        r.changed()
        time.sleep(0.2)
        assert r.calls == 0
        leading.set()
        assert eventually(lambda: r.calls == 1)


def test_a_pending_change_is_waited_on_without_spinning() -> None:
    r = Counting({"l2networks": FakeInformer(synced=False)})
    leading = threading.Event()
    with running(r, leading):
        r.changed()
        time.sleep(0.5)
    # period 0.02 s: about 25 looks in 0.5 s, not the millions of a loop that never sleeps
    assert r.dirty.waits < 100
    assert r.calls == 0


def test_a_failed_reconcile_is_tried_again() -> None:
    class Failing(Counting):
        def reconcile(self) -> int:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("the API server refused")
            return 0

    r = Failing({"l2networks": FakeInformer(synced=True)})
    leading = threading.Event()
    leading.set()
    with running(r, leading):
        r.changed()
        assert eventually(lambda: r.calls == 2)
