"""A work queue of object keys with client-go's guarantees.

- A key is queued at most once (deduplicated) and never handed to two workers at once: a key
  added while it is being processed is marked dirty and queued again when the worker is done.
- `add_after` schedules planned waits (holds, analysis intervals): a key already waiting keeps
  the earlier of its two ready times (one entry per key, as client-go's delaying queue keeps);
  `add_rate_limited` backs a failing key off exponentially, under an overall token-bucket limit.
- Two lanes. Changes (watch events), waits that came due and retries go in the foreground lane;
  the periodic resync's keys go in the background lane, served only when the foreground one is
  empty. client-go's one FIFO puts a change behind a whole resync (at 10,000 rollouts, 7,890
  keys were waiting when a spec change came: docs/benchmarks.md "Scale"). A key waiting in the
  background moves to the foreground when added there; a resync of a key being processed adds
  nothing (it is being looked at now).
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import deque
from collections.abc import Callable

Key = tuple[str, str]


class WorkQueue:
    def __init__(
        self,
        *,
        base_delay: float = 0.5,
        max_delay: float = 300.0,
        rate: float = 20.0,
        burst: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cond = threading.Condition()
        self._queue: deque[Key] = deque()
        self._background: deque[Key] = deque()  # entries whose key is no longer queued[key] True are stale
        self._queued: dict[Key, bool] = {}  # key -> waiting in the background lane
        self._processing: set[Key] = set()
        self._dirty: set[Key] = set()
        self._delayed: list[tuple[float, int, Key]] = []
        self._waiting: dict[Key, float] = {}  # ready times; a heap entry not matching is stale
        self._seq = 0
        self._failures: dict[Key, int] = {}
        self._base, self._max = base_delay, max_delay
        self._rate: float = rate
        self._burst: float = float(burst)
        self._tokens: float = float(burst)
        self._last_refill: float = clock()
        self._clock = clock
        self._shutdown = False

    # -- adding ---------------------------------------------------------------------------------

    def add(self, key: Key, *, background: bool = False) -> None:
        """Queue `key`: in the foreground lane, or (`background`, the resync) behind it."""
        with self._cond:
            if self._shutdown:
                return
            if key in self._processing:
                if not background:
                    self._dirty.add(key)
                return
            if background:
                if key not in self._queued:
                    self._queued[key] = True
                    self._background.append(key)
                    self._cond.notify()
                return
            self._enqueue(key)

    def _enqueue(self, key: Key) -> None:
        """In the foreground lane, once (moved there if waiting in the background)."""
        if self._queued.get(key) is False:
            return
        self._queued[key] = False
        self._queue.append(key)
        self._cond.notify()

    def add_after(self, key: Key, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            ready = self._clock() + delay
            if self._waiting.get(key, math.inf) <= ready:
                return
            self._waiting[key] = ready
            self._seq += 1
            heapq.heappush(self._delayed, (ready, self._seq, key))
            self._cond.notify()

    def add_rate_limited(self, key: Key) -> float:
        """Back off this key exponentially (and all keys by the token bucket); return the delay."""
        with self._cond:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
            delay = min(self._max, self._base * (2.0**failures))
            delay = max(delay, self._take_token_delay())
        self.add_after(key, delay)
        return delay

    def forget(self, key: Key) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def _take_token_delay(self) -> float:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last_refill) * self._rate)
        self._last_refill = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else float(-self._tokens / self._rate)

    # -- taking ---------------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Key | None:
        """The next key to process, or None on shutdown or timeout. Call done(key) after."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                self._promote_due()
                key = self._next()
                if key is not None:
                    self._processing.add(key)
                    return key
                if self._shutdown:
                    return None
                wait = None if not self._delayed else max(0.0, self._delayed[0][0] - self._clock())
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def _next(self) -> Key | None:
        if self._queue:
            key = self._queue.popleft()
            del self._queued[key]
            return key
        while self._background:
            key = self._background.popleft()
            if self._queued.get(key) is True:
                del self._queued[key]
                return key
        return None

    def done(self, key: Key) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._enqueue(key)

    def _promote_due(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            ready, _, key = heapq.heappop(self._delayed)
            if self._waiting.get(key) != ready:
                continue
            del self._waiting[key]
            if key in self._processing:
                self._dirty.add(key)
            else:
                self._enqueue(key)

    # -- state ----------------------------------------------------------------------------------

    def depth(self) -> int:
        """Keys waiting to be processed, both lanes."""
        with self._cond:
            return len(self._queued)

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
