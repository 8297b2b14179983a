"""The contract of a metric provider: a backend failure is data (an Observation), never an exception."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from controller.api.models import BuiltinMetric, LlmMetrics, ModelPrice
from controller.core.observation import Observation
from controller.metrics.builtins import BuiltinQueries


class MetricProvider(Protocol):
    @property
    def builtins(self) -> Mapping[BuiltinMetric, BuiltinQueries]:
        """The queries behind `builtin: <metric>`, in this provider's language."""
        ...

    @property
    def builtins_by_model(self) -> Mapping[BuiltinMetric, BuiltinQueries]:
        """The builtins of every model in one query each, keyed by the `model` label (metrics/batch.py);
        templates with `{{window}}` only. A builtin absent here is asked per rollout."""
        ...

    def builtins_by(self, label: str) -> Mapping[BuiltinMetric, BuiltinQueries]:
        """The builtins per value of `label`, for guardrails with segmentBy (those it can segment)."""
        ...

    def llm_builtin(
        self, metric: BuiltinMetric, names: LlmMetrics | None, price: ModelPrice | None
    ) -> BuiltinQueries | str:
        """The queries behind an LLM builtin in the chosen metric family (and, for cost, with the
        model's price); a message saying why not when they cannot be built."""
        ...

    def scalar(self, query: str, *, at: datetime) -> Observation:
        """One value. More than one series, none, NaN/Inf or stale: NO_DATA. Never raises."""
        ...

    def vector(self, query: str, *, label: str, at: datetime, unlabelled: str | None = None) -> Observation:
        """Values keyed by `label` (bucket, class or segment). Empty or any non-finite value: NO_DATA.
        A series without the label is NO_DATA too, unless `unlabelled` names its key. Never raises."""
        ...

    def split(
        self, query: str, *, by: str, at: datetime, label: str | None = None
    ) -> Mapping[str, Observation] | Observation:
        """One observation per value of `by` (as `scalar`, or as `vector` by `label`), a problem in one
        value's series being that value's NO_DATA only; an Observation when the whole query failed.
        Never raises."""
        ...

    def grouped(self, query: str, *, label: str, by: str, at: datetime, unlabelled: str | None = None) -> Observation:
        """Vectors keyed by `label`, one per value of `by` (Observation.groups): distributions per
        segment. As `vector`, with `unlabelled` naming the group of series without `by`. Never raises."""
        ...
