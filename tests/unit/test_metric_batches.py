"""Batched builtin queries (metrics/batch.py): one query per builtin, window and period, fanned out.

The provider here is a stand-in that answers from a table of per-model values and counts what it
was asked: the batching and the fan-out are pure logic. That each model's batched result equals
its own query's, on a real Prometheus, is tests/integration/test_prometheus_provider.py's.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.api.models import BuiltinMetric, ModelRef, ModelRolloutSpec, ModelRolloutStatus, Verdict
from controller.core.observation import Observation, ObservationStatus
from controller.metrics.batch import QueryBatches, for_model
from controller.metrics.builtins import BY_MODEL, PROMQL, BuiltinQueries
from controller.observe import observe_and_judge

NOW = datetime(2026, 11, 28, 12, 0, 7, tzinfo=UTC)


class TableProvider:
    """Per model: (error rate, requests). Counts the queries it answers."""

    builtins: Mapping[BuiltinMetric, BuiltinQueries] = PROMQL
    builtins_by_model: Mapping[BuiltinMetric, BuiltinQueries] = BY_MODEL

    def __init__(self, table: dict[str, tuple[float, float]], gate: threading.Event | None = None) -> None:
        self.table, self.gate = table, gate
        self.split_calls: list[tuple[str, datetime]] = []
        self.scalar_calls = 0

    def builtins_by(self, label: str) -> Mapping[BuiltinMetric, BuiltinQueries]:
        return {}

    def split(
        self, query: str, *, by: str, at: datetime, label: str | None = None
    ) -> Mapping[str, Observation] | Observation:
        if self.gate is not None:
            self.gate.wait(10)
        self.split_calls.append((query, at))
        column = 1 if query.startswith("sum by (model) (increase(") else 0
        return {
            model: Observation(ObservationStatus.OK, value=row[column], sample_time=at)
            if row[column] == row[column]  # NaN: that model's NO_DATA only
            else Observation.no_data("value is NaN")
            for model, row in self.table.items()
        }

    def scalar(self, query: str, *, at: datetime) -> Observation:
        self.scalar_calls += 1
        return Observation(ObservationStatus.OK, value=1.0, sample_time=at)

    def vector(self, query: str, *, label: str, at: datetime, unlabelled: str | None = None) -> Observation:
        return Observation.error("not asked")


def spec(rule: dict[str, Any], interval: str = "30s") -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "candidate": {"name": "cand"},
            "traffic": {"gatewayAPI": {"httpRoute": "r"}},
            "canary": {"steps": [{"weight": 10, "hold": "1m"}]},
            "analysis": {"interval": interval, "window": "1m"},
            "guardrails": [{"name": "errors", "metric": {"builtin": "ErrorRate"}, "minSamples": 5, **rule}],
        }
    )


def judge_pair(
    provider: TableProvider, batches: QueryBatches | None, incumbent: str, candidate: str, rule: dict[str, Any]
) -> Any:
    return observe_and_judge(
        spec=spec(rule),
        status=ModelRolloutStatus(rollout_started=NOW - timedelta(minutes=5)),
        provider=provider,  # type: ignore[arg-type]
        namespace="ns",
        rollout="r",
        pair=(ModelRef(name=incumbent), ModelRef(name=candidate)),
        now=NOW,
        batches=batches,
    )["errors"]


def test_the_evaluation_time_is_the_start_of_the_period_never_longer_than_the_interval() -> None:
    batches = QueryBatches(period=10)
    assert batches.evaluation_time(NOW, 30) == datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    assert batches.evaluation_time(NOW, 2) == datetime(2026, 11, 28, 12, 0, 6, tzinfo=UTC)
    # Two analyses an interval apart never share an evaluation time.
    for interval in (1, 2, 7, 10, 30):
        for offset in range(0, 40):
            now = NOW + timedelta(seconds=offset / 4)
            later = now + timedelta(seconds=interval)
            assert batches.evaluation_time(later, interval) > batches.evaluation_time(now, interval)
            assert batches.evaluation_time(now, interval) <= now


def test_fifty_rollouts_in_one_period_share_two_queries_and_each_is_judged_on_its_own_model() -> None:
    table = {f"m{i}": (0.01 if i % 2 else 0.2, 100.0) for i in range(50)} | {"inc": (0.01, 100.0)}
    provider, batches = TableProvider(table), QueryBatches(period=10)

    verdicts = {m: judge_pair(provider, batches, "inc", m, {"absolute": {"max": 0.05}}).verdict for m in table}

    assert len(provider.split_calls) == 2 and provider.scalar_calls == 0  # value and samples, once each
    assert {at for _, at in provider.split_calls} == {datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)}
    assert all(verdicts[f"m{i}"] == (Verdict.PASS if i % 2 else Verdict.FAIL) for i in range(50))


def test_one_models_missing_or_nan_data_is_only_its_own_rollouts_no_data() -> None:
    table = {"inc": (0.01, 100.0), "good": (0.01, 100.0), "idle": (float("nan"), 0.0)}
    provider, batches = TableProvider(table), QueryBatches(period=10)
    absolute = {"absolute": {"max": 0.05}}
    assert judge_pair(provider, batches, "inc", "good", absolute).verdict is Verdict.PASS
    idle = judge_pair(provider, batches, "inc", "idle", absolute)
    absent = judge_pair(provider, batches, "inc", "never-seen", absolute)
    assert idle.verdict is Verdict.INCONCLUSIVE and absent.verdict is Verdict.INCONCLUSIVE
    assert "no series" in absent.message
    assert judge_pair(provider, batches, "inc", "good", absolute).verdict is Verdict.PASS


def test_a_relative_rule_reads_both_variants_from_the_same_answers() -> None:
    table = {"inc": (0.02, 100.0), "cand": (0.021, 100.0)}
    provider, batches = TableProvider(table), QueryBatches(period=10)
    judgement = judge_pair(provider, batches, "inc", "cand", {"relative": {"maxRatio": 1.2}})
    assert judgement.verdict is Verdict.PASS and len(provider.split_calls) == 2


def test_counts_since_the_rollout_began_are_not_batched() -> None:
    provider, batches = TableProvider({"inc": (0.01, 100.0), "cand": (0.01, 100.0)}), QueryBatches(period=10)
    judge_pair(provider, batches, "inc", "cand", {"sequential": {"significance": 0.01, "minEffect": 0.5}})
    assert provider.split_calls == [] and provider.scalar_calls == 4  # errors and total, for both variants


def test_without_batches_each_rollout_asks_its_own() -> None:
    provider = TableProvider({"inc": (0.01, 100.0), "cand": (0.01, 100.0)})
    judge_pair(provider, None, "inc", "cand", {"absolute": {"max": 0.05}})
    assert provider.split_calls == [] and provider.scalar_calls == 2  # the candidate's value and samples


def test_concurrent_askers_of_one_query_wait_for_one_answer() -> None:
    gate = threading.Event()
    provider, batches = TableProvider({"a": (0.5, 1.0)}, gate=gate), QueryBatches(period=10)
    at = batches.evaluation_time(NOW, 30)
    answers: list[Observation] = []

    def ask() -> None:
        answers.append(for_model(batches.ask(provider, "q", at=at), "a"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    assert len(provider.split_calls) == 1
    assert [a.value for a in answers] == [0.5] * 8


@pytest.mark.parametrize("builtin", sorted(BY_MODEL))
def test_batched_builtins_keep_the_window_and_drop_the_model_matcher(builtin: BuiltinMetric) -> None:
    queries = BY_MODEL[builtin]
    for template in (queries.value, queries.samples, queries.distribution):
        if template is not None:
            assert "{{window}}" in template and "{{model}}" not in template and "model)" in template
