"""One Prometheus query per builtin, window and evaluation time, shared by every rollout asking.

Why: each analysis asked its own two queries per guardrail and variant, so the queries per
interval grew with rollouts (issue 23: 2 per rollout per interval, and the controller could not
keep up at 2,000 rollouts). Rollouts whose guardrails use the same builtin ask the same question
of different models: `metrics/builtins.py` BY_MODEL answers it for every model at once
(`sum by (model) (...)`), and each rollout takes its two models' results.

What a rollout sees, and what it does not:
- **The evaluation time is aligned**: an analysis due at `now` evaluates its batched queries at
  the start of the current period, `floor(now / period) * period` with `period` the smaller of
  `--metric-batch-period` (10 s) and the rollout's `analysis.interval`. So its window,
  `analysis.window` (default: the interval), ends at most one period before the analysis, and
  two analyses of one rollout (an interval apart) never share an evaluation time. Every rollout
  analysed in the same period with the same builtin and window shares one query.
- **Each model's result is the one its own query would give**: the same functions over the same
  series (rate and increase handle counter resets per series, inside Prometheus, as before),
  aggregated by model instead of filtered to one. A model's NaN, missing series or duplicate
  series make that model's observation NO_DATA, never another model's. A failed query (ERROR) is
  every asker's ERROR, as it would have been for each.
- **Not batched**: counts since the rollout began (sequential rules, label guardrails: each
  rollout's window is its own age, and Prometheus has no query for "each model since its own
  start"), custom queries, LLM builtins and segmented guardrails. They are asked per rollout, as
  before.

Concurrent askers of one query wait for the first one's answer (bounded by the provider's own
timeout) instead of asking again. Answers are kept for three periods, then dropped.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from controller.core.observation import Observation
from controller.metrics.base import MetricProvider

Answer = Mapping[str, Observation] | Observation


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    answer: Answer = field(default_factory=lambda: Observation.error("batched query not answered"))
    created: float = field(default_factory=time.monotonic)


class QueryBatches:
    """The batched answers of one controller; shared by the worker threads."""

    def __init__(self, *, period: float = 10.0) -> None:
        self.period = period
        self._answers: dict[tuple[object, ...], _Pending] = {}
        self._lock = threading.Lock()
        self.asked = 0  # queries sent (for the bench and tests)
        self.served = 0  # answers handed out

    def evaluation_time(self, now: datetime, interval: float) -> datetime:
        """The start of the period holding `now`; the period never exceeds the rollout's interval."""
        period = min(self.period, interval) if interval > 0 else self.period
        if period <= 0:
            return now
        stamp = now.timestamp()
        return datetime.fromtimestamp(math.floor(stamp / period) * period, UTC)

    def ask(self, provider: MetricProvider, query: str, *, at: datetime, label: str | None = None) -> Answer:
        """The answer of `query` split by model (each value as `scalar`, or as `vector` by `label`)."""
        key: tuple[object, ...] = (provider, query, label, at)
        with self._lock:
            self._forget_old()
            pending = self._answers.get(key)
            mine = pending is None
            if pending is None:
                pending = self._answers[key] = _Pending()
            self.served += 1
        if mine:
            try:
                pending.answer = provider.split(query, by="model", at=at, label=label)
            finally:
                with self._lock:
                    self.asked += 1
                pending.done.set()
        elif not pending.done.wait(timeout=max(self.period, 1.0) * 3):
            return Observation.error("the batched query of another rollout did not finish")
        return pending.answer

    def _forget_old(self) -> None:
        horizon = time.monotonic() - 3 * max(self.period, 1.0)
        for key in [k for k, p in self._answers.items() if p.done.is_set() and p.created < horizon]:
            del self._answers[key]


def for_model(answer: Answer, model: str) -> Observation:
    """One model's observation in a batched answer."""
    if isinstance(answer, Observation):
        return answer
    return answer.get(model) or Observation.no_data("no series")
