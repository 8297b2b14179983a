"""The LLM builtins against a real Prometheus: every query of both metric families parses and
evaluates, and the values (finish reasons, tokens per second, cost per 1,000 output tokens at a
price per token and per replica-hour) are what the exported series say.

The exporter plays vLLM's series (tests/support/prometheus.py); e2e/test_llm.py runs the same
builtins on stand-in vLLM servers with real traffic.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from controller.api.models import LLM_BUILTINS, BuiltinMetric, LlmMetricFamily, LlmMetrics, ModelPrice
from controller.core.observation import Observation, ObservationStatus
from controller.metrics import llm
from controller.metrics.builtins import BuiltinQueries
from controller.metrics.prometheus import PrometheusProvider
from controller.metrics.templates import render, variables_for
from tests.support.prometheus import Exporter, PrometheusServer

WINDOW = "1m"
PER_TOKEN = ModelPrice(model="m", per_million_input_tokens=0.3, per_million_output_tokens=1.2)
PER_REPLICA = ModelPrice(model="m", per_replica_hour=3.0)
E2E_BOUNDS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0)


@pytest.fixture
def model() -> str:
    return f"llm-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def provider(prometheus: PrometheusServer) -> Iterator[PrometheusProvider]:
    with PrometheusProvider(address=prometheus.url, timeout=10, stale_after=300) as p:
        yield p


def query(metric: BuiltinMetric, model: str, which: str, price: ModelPrice | None = None) -> str:
    queries = llm.promql(metric, None, price)
    assert isinstance(queries, BuiltinQueries), queries
    template = getattr(queries, which)
    assert template is not None
    variables = variables_for(model, None, "candidate", "default", WINDOW, rollout="r", incumbent="inc")
    return render(template, {**variables, **(llm.price_variables(price) if price else {})})


def test_every_llm_query_of_both_families_is_valid_promql(provider: PrometheusProvider, model: str) -> None:
    """No series for this model: every query is no data, and none is a Prometheus parse error."""
    asked = 0
    for family in LlmMetricFamily:
        for metric in LLM_BUILTINS:
            prices = [PER_TOKEN, PER_REPLICA] if metric is BuiltinMetric.COST_PER_1K_OUTPUT_TOKENS else [None]
            for price in prices:
                queries = llm.promql(metric, LlmMetrics(family=family), price)
                if isinstance(queries, str):
                    assert "metric family has no" in queries
                    continue
                variables = {**variables_for(model, None, "candidate", "default", WINDOW, rollout="r", incumbent="inc")}
                variables.update(llm.price_variables(price) if price else {})
                for template in (queries.value, queries.samples, queries.errors, queries.total):
                    if template is None:
                        continue
                    observation = provider.scalar(render(template, variables), at=datetime.now(UTC))
                    assert observation.status is not ObservationStatus.ERROR, (family, metric, observation.message)
                    asked += 1
    assert asked >= 20  # vLLM: 16 templates; llm-d: its six latency ones


def _ok(observation: Observation) -> float:
    assert observation.status is ObservationStatus.OK, observation.message
    assert observation.value is not None
    return observation.value


def test_finish_reasons_throughput_and_cost_read_the_series_as_exported(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    """Given two replicas of one model exporting vLLM's series, when 200 requests finish (20 cut off
    at max_tokens, 2 aborted) with 5,000 prompt and 10,000 output tokens, then the builtins read
    an 11% bad-event rate and costs that follow from the prices and the observed throughput."""
    replicas = [{"model_name": model, "pod": f"{model}-{i}"} for i in range(2)]
    with exporter.atomically():
        for labels in replicas:
            exporter.set_gauge("vllm:num_requests_running", labels, 1)
            for reason in ("stop", "length", "abort"):
                exporter.set_counter("vllm:request_success_total", {**labels, "finished_reason": reason}, 0)
            exporter.set_counter("vllm:prompt_tokens_total", labels, 0)
            exporter.set_counter("vllm:generation_tokens_total", labels, 0)
            exporter.observe("vllm:e2e_request_latency_seconds", labels, 0.4, count=0, bounds=E2E_BOUNDS)
    prometheus.wait_for(
        f'count_over_time(vllm:generation_tokens_total{{model_name="{model}"}}[{WINDOW}]) >= 2',
        lambda r: len(r) == 2,
        timeout=60,
    )
    with exporter.atomically():  # one scrape sees it all: every series extrapolated alike
        for labels, (stop, length, abort) in zip(replicas, ((100, 10, 1), (78, 10, 1)), strict=True):
            for reason, n in (("stop", stop), ("length", length), ("abort", abort)):
                exporter.inc_counter("vllm:request_success_total", {**labels, "finished_reason": reason}, n)
            exporter.inc_counter("vllm:prompt_tokens_total", labels, 2500)
            exporter.inc_counter("vllm:generation_tokens_total", labels, 5000)
            exporter.observe("vllm:e2e_request_latency_seconds", labels, 0.4, count=100, bounds=E2E_BOUNDS)
    total = query(BuiltinMetric.TRUNCATED_OR_ABORTED_RATE, model, "total")
    prometheus.wait_for(total, lambda r: bool(r) and float(r[0]["value"][1]) > 0)

    at = datetime.now(UTC)
    ask = lambda q: provider.scalar(q, at=at)  # noqa: E731 -- one instant for every query
    bad = _ok(ask(query(BuiltinMetric.TRUNCATED_OR_ABORTED_RATE, model, "errors")))
    finished = _ok(ask(total))
    rate = _ok(ask(query(BuiltinMetric.TRUNCATED_OR_ABORTED_RATE, model, "value")))
    tokens_per_second = _ok(ask(query(BuiltinMetric.OUTPUT_TOKENS_PER_SECOND, model, "value")))
    per_token = _ok(ask(query(BuiltinMetric.COST_PER_1K_OUTPUT_TOKENS, model, "value", PER_TOKEN)))
    per_replica = _ok(ask(query(BuiltinMetric.COST_PER_1K_OUTPUT_TOKENS, model, "value", PER_REPLICA)))
    samples = _ok(ask(query(BuiltinMetric.COST_PER_1K_OUTPUT_TOKENS, model, "samples", PER_REPLICA)))

    # increase() and rate() extrapolate, but every series alike: the ratios are exact.
    assert bad / finished == pytest.approx(22 / 200)
    assert rate == pytest.approx(22 / 200)
    # 0.3/M for each prompt token, 1.2/M for each output token, two output tokens per prompt token.
    assert per_token == pytest.approx((0.3 * 0.5 + 1.2) / 1000)
    # Two replicas at 3.0 an hour over what they produce in an hour, per 1,000 tokens.
    assert tokens_per_second > 0 and math.isfinite(per_replica)
    assert per_replica == pytest.approx(3.0 * 2 / (tokens_per_second * 3600) * 1000)
    assert samples >= 200 - 1e-9
