"""The incumbent's cap, checked on the comparator's request log alone (no wall clock, no slack).

The comparator logs, for each request it compared, when its token bucket let the incumbent's
calls through (`takes`: [bucket time, tokens]). A bucket of `rate` tokens per second holding at
most `burst` lets through, in any interval [s, t] of its own clock, at most burst + rate * (t - s)
tokens: a property of the log that holds on a fast machine and a slow one alike, and fails only
if the cap does not hold. Used by tests/integration/test_comparator.py and e2e/test_shadow.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def takes(entries: Iterable[dict[str, Any]]) -> list[tuple[float, int]]:
    """Every take of the log, in time order."""
    return sorted((float(at), int(n)) for e in entries for at, n in e.get("takes", []))


def worst_excess(entries: Iterable[dict[str, Any]], *, rate: float, burst: float) -> float:
    """The most tokens any interval of the log took beyond burst + rate * its length (<= 0: the
    cap held). Intervals that matter start and end at takes: O(n^2) over a test's few hundred."""
    seen = takes(entries)
    worst = -burst
    for i, (start, _) in enumerate(seen):
        taken = 0
        for end, n in seen[i:]:
            taken += n
            worst = max(worst, taken - burst - rate * (end - start))
    return worst


def incumbent_calls(entries: Iterable[dict[str, Any]]) -> int:
    return sum(n for _, n in takes(entries))
