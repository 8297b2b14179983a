"""The work queue's guarantees: dedup, one worker per key, planned waits, bounded back-off."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


# -- two lanes: changes before the resync ---------------------------------------------------------


def drain(q: WorkQueue) -> list[tuple[str, str]]:
    """Every key get() hands out, in order, each marked done at once."""
    served = []
    while (key := q.get(timeout=0)) is not None:
        served.append(key)
        q.done(key)
    return served


def test_a_change_is_served_before_every_resync_key_queued_ahead_of_it() -> None:
    q = WorkQueue()
    for name in ("r1", "r2", "r3"):
        q.add(("ns", name), background=True)
    q.add(("ns", "changed"))
    assert q.depth() == 4
    assert drain(q) == [("ns", "changed"), ("ns", "r1"), ("ns", "r2"), ("ns", "r3")]


def test_a_resync_key_that_changes_moves_ahead_and_is_served_once() -> None:
    q = WorkQueue()
    q.add(("ns", "a"), background=True)
    q.add(("ns", "b"), background=True)
    q.add(("ns", "b"))
    q.add(("ns", "b"), background=True)  # already ahead: stays there
    assert q.depth() == 2
    assert drain(q) == [("ns", "b"), ("ns", "a")]


def test_a_moved_key_queued_again_by_the_next_resync_is_served_once_more() -> None:
    """The stale background entry a move leaves behind never serves the key twice."""
    q = WorkQueue()
    q.add(("ns", "a"), background=True)
    q.add(("ns", "a"))
    assert drain(q) == [("ns", "a")]
    q.add(("ns", "a"), background=True)
    assert drain(q) == [("ns", "a")]


def test_a_resync_of_a_key_being_processed_adds_nothing_a_change_does() -> None:
    q = WorkQueue()
    q.add(("ns", "a"))
    key = q.get(timeout=0)
    assert key == ("ns", "a")
    q.add(key, background=True)
    q.done(key)
    assert q.get(timeout=0) is None  # the resync found it being looked at: nothing more
    q.add(key)
    assert q.get(timeout=0) == key
    q.add(key)  # a change while it is looked at: once more after
    q.done(key)
    assert q.get(timeout=0) == ("ns", "a")


def test_a_wait_that_came_due_is_served_before_the_resync() -> None:
    clock = Clock()
    q = WorkQueue(clock=clock)
    q.add(("ns", "settled"), background=True)
    q.add_after(("ns", "analysis"), 30)
    clock.t = 30
    assert drain(q) == [("ns", "analysis"), ("ns", "settled")]


Op = tuple[str, int]


@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "resync", "get", "done"]), st.integers(min_value=0, max_value=3)),
        max_size=60,
    )
)
def test_lanes_against_a_model(ops: list[Op]) -> None:
    """Random adds, resyncs, gets and dones: a key is never handed out twice at once, a change is
    never behind a resync key, nothing queued is lost, and depth counts both lanes."""
    q = WorkQueue()
    queued: dict[tuple[str, str], bool] = {}  # the model: key -> in the background lane
    processing: set[tuple[str, str]] = set()
    dirty: set[tuple[str, str]] = set()
    for op, n in ops:
        key = ("ns", str(n))
        if op in ("add", "resync"):
            background = op == "resync"
            q.add(key, background=background)
            if key in processing:
                if not background:
                    dirty.add(key)
            elif key not in queued or (not background and queued[key]):
                queued[key] = background
        elif op == "get":
            got = q.get(timeout=0)
            if not queued:
                assert got is None
                continue
            assert got is not None and got in queued and got not in processing
            if any(not lane for lane in queued.values()):
                assert queued[got] is False  # a change before any resync key
            del queued[got]
            processing.add(got)
        elif key in processing:
            q.done(key)
            processing.discard(key)
            if key in dirty:
                dirty.discard(key)
                queued[key] = False
        assert q.depth() == len(queued)
    for key in processing:
        q.done(key)
        if key in dirty:
            queued[key] = False
    assert sorted(drain(q)) == sorted(queued)
