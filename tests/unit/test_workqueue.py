"""The work queue's guarantees: dedup, one worker per key, planned waits, bounded back-off."""

from __future__ import annotations

import pytest

from controller.workqueue import WorkQueue


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_key_is_queued_once() -> None:
    q = WorkQueue()
    for _ in range(3):
        q.add(("ns", "a"))
    q.add(("ns", "b"))
    assert q.depth() == 2


def test_a_key_added_while_processing_comes_back_after_done_not_before() -> None:
    q = WorkQueue()
    q.add(("ns", "a"))
    key = q.get(timeout=0)
    q.add(("ns", "a"))
    assert q.get(timeout=0) is None  # not handed to a second worker
    assert key is not None
    q.done(key)
    assert q.get(timeout=0) == ("ns", "a")


def test_add_after_waits_for_the_clock() -> None:
    clock = Clock()
    q = WorkQueue(clock=clock)
    q.add_after(("ns", "a"), 30)
    assert q.get(timeout=0) is None
    clock.t = 30
    assert q.get(timeout=0) == ("ns", "a")


@pytest.mark.parametrize("waits", [(10, 30), (30, 10)], ids=["later-wait-added", "earlier-wait-added"])
def test_a_waiting_key_is_ready_once_at_the_earlier_of_its_waits(waits: tuple[int, int]) -> None:
    """Two waits for one key merge into one, at the earlier time, whichever came first (as client-go)."""
    clock = Clock()
    q = WorkQueue(clock=clock)
    for wait in waits:
        q.add_after(("ns", "a"), wait)
    clock.t = 10
    assert q.get(timeout=0) == ("ns", "a")
    q.done(("ns", "a"))
    clock.t = 30
    assert q.get(timeout=0) is None


def test_a_key_waits_again_once_its_wait_is_over() -> None:
    clock = Clock()
    q = WorkQueue(clock=clock)
    q.add_after(("ns", "a"), 10)
    q.add_after(("ns", "b"), 10)
    clock.t = 10
    assert {q.get(timeout=0), q.get(timeout=0)} == {("ns", "a"), ("ns", "b")}
    q.done(("ns", "a"))
    q.add_after(("ns", "a"), 20)
    clock.t = 29
    assert q.get(timeout=0) is None
    clock.t = 30
    assert q.get(timeout=0) == ("ns", "a")


def test_failures_back_off_exponentially_up_to_a_cap_and_forget_resets() -> None:
    clock = Clock()
    q = WorkQueue(base_delay=1, max_delay=8, clock=clock)
    delays = [q.add_rate_limited(("ns", "a")) for _ in range(6)]
    assert delays == [1, 2, 4, 8, 8, 8]
    q.forget(("ns", "a"))
    assert q.add_rate_limited(("ns", "a")) == 1


def test_overall_rate_limit_spreads_a_burst_of_failures() -> None:
    clock = Clock()
    q = WorkQueue(base_delay=0.001, rate=10, burst=5, clock=clock)
    delays = [q.add_rate_limited(("ns", str(i))) for i in range(10)]
    assert max(delays[:5]) < 0.01
    assert delays[-1] >= 0.4


def test_shutdown_releases_waiting_workers() -> None:
    q = WorkQueue()
    q.shutdown()
    assert q.get() is None
