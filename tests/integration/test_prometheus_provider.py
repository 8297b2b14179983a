"""PrometheusProvider against a real Prometheus scraping a real exporter.

Given an exporter playing the model servers and Debian's prometheus scraping it every second,
when the provider asks, then its observations say what Prometheus really answers: values
(with Prometheus' own extrapolation), no data for empty/NaN/ambiguous answers, errors for
failures. Each test waits for Prometheus to have scraped what it set (never for a fixed time)
and asserts correctness only, never how long anything took.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from controller.api.models import BuiltinMetric
from controller.core.observation import ObservationStatus
from controller.metrics.batch import for_model
from controller.metrics.builtins import BY_MODEL, PROMQL, by_segment
from controller.metrics.prometheus import PrometheusProvider
from controller.metrics.templates import render, variables_for
from controller.observe import UNLABELLED
from tests.support.controlplane import free_port
from tests.support.prometheus import (
    LATENCY,
    LATENCY_BUCKETS,
    PREDICTION,
    REQUESTS,
    Exporter,
    PrometheusServer,
    values,
)

OK, NO_DATA, ERROR = ObservationStatus.OK, ObservationStatus.NO_DATA, ObservationStatus.ERROR
WINDOW = "1m"


class CountingTransport(httpx.HTTPTransport):
    """The real HTTP transport, counting requests: to tell a retried failure from a final one."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return super().handle_request(request)


@pytest.fixture
def model() -> str:
    """A model name no other test uses: the exporter and Prometheus are shared by the session."""
    return f"m-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def transport() -> CountingTransport:
    return CountingTransport()


@pytest.fixture
def provider(prometheus: PrometheusServer, transport: CountingTransport) -> Iterator[PrometheusProvider]:
    with PrometheusProvider(address=prometheus.url, timeout=10, stale_after=300, transport=transport) as p:
        yield p


def now() -> datetime:
    return datetime.now(UTC)


def has(n: int) -> Any:
    return lambda result: len(result) == n


def builtin(
    metric: BuiltinMetric,
    model: str,
    which: str,
    variant: str = "candidate",
    *,
    incumbent: str = "inc",
    rollout: str = "r",
) -> str:
    template = getattr(PROMQL[metric], which)
    assert template is not None
    return render(
        template, variables_for(model, None, variant, "default", WINDOW, rollout=rollout, incumbent=incumbent)
    )


def requests(model: str, code: str) -> dict[str, str]:
    return {"model": model, "code": code}


def start_counters(exporter: Exporter, prometheus: PrometheusServer, model: str, codes: list[str]) -> None:
    """Counters at zero, scraped at least twice: the start every increase() is measured from."""
    with exporter.atomically():  # one scrape sees them all: the same sample times, the same extrapolation
        for code in codes:
            exporter.set_counter(REQUESTS, requests(model, code), 0)
    prometheus.wait_for(
        f'count_over_time(model_requests_total{{model="{model}"}}[{WINDOW}]) >= 2', has(len(codes)), timeout=60
    )


# -- values -----------------------------------------------------------------------------------


def test_scalar_of_a_set_counter(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    exporter.set_counter(REQUESTS, requests(model, "200"), 42)
    query = f'sum(model_requests_total{{model="{model}"}})'
    prometheus.wait_for(query, lambda r: values(r) == {"": 42.0})

    at = now()
    observation = provider.scalar(query, at=at)

    assert observation.status is OK, observation.message
    assert observation.value == 42.0
    # Prometheus stamps an instant query's result with the time asked for.
    assert observation.sample_time is not None
    assert abs(observation.sample_time - at) < timedelta(milliseconds=2)


def test_error_rate_builtin_for_a_variant(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    incumbent = model + "-incumbent"
    start_counters(exporter, prometheus, model, ["200", "500"])
    start_counters(exporter, prometheus, incumbent, ["200"])

    with exporter.atomically():
        exporter.inc_counter(REQUESTS, requests(model, "200"), 90)
        exporter.inc_counter(REQUESTS, requests(model, "500"), 10)
        exporter.inc_counter(REQUESTS, requests(incumbent, "200"), 100)
    value = builtin(BuiltinMetric.ERROR_RATE, model, "value")
    prometheus.wait_for(value, lambda r: bool(r) and float(r[0]["value"][1]) > 0)
    prometheus.wait_for(builtin(BuiltinMetric.ERROR_RATE, incumbent, "total", "incumbent"), lambda r: values(r)[""] > 0)

    at = now()
    rate = provider.scalar(value, at=at)
    errors = provider.scalar(builtin(BuiltinMetric.ERROR_RATE, model, "errors"), at=at)
    total = provider.scalar(builtin(BuiltinMetric.ERROR_RATE, model, "total"), at=at)
    samples = provider.scalar(builtin(BuiltinMetric.ERROR_RATE, model, "samples"), at=at)
    never_failed = provider.scalar(builtin(BuiltinMetric.ERROR_RATE, incumbent, "value", "incumbent"), at=at)
    incumbent_errors = provider.scalar(builtin(BuiltinMetric.ERROR_RATE, incumbent, "errors", "incumbent"), at=at)

    assert rate.status is OK, rate.message
    assert rate.value == pytest.approx(0.10)
    # increase() extrapolates, but every series of the pair is extrapolated alike.
    assert errors.value is not None and total.value is not None
    assert errors.value / total.value == pytest.approx(0.10)
    assert total.value >= 100 - 1e-9
    assert samples.value == total.value
    # No 5xx series at all counts as zero errors, not as no data.
    assert never_failed.status is OK and never_failed.value == 0.0
    assert incumbent_errors.status is OK and incumbent_errors.value == 0.0


def test_a_5xx_series_born_with_its_first_error_hides_it_from_increase_unless_initialised_at_zero(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    """What the builtins lose when a model server creates its `code="500"` series only at the first
    error: increase() takes a series' first sample as its start, so those errors never count.
    Given two models with the same traffic, one exporting its 500s at 0 from the start and one
    not, when both serve 95 good and 5 failed requests, then only the initialised one shows them."""
    born, initialised = model + "-born", model + "-init"
    start_counters(exporter, prometheus, born, ["200"])
    start_counters(exporter, prometheus, initialised, ["200", "500"])
    with exporter.atomically():
        for m in (born, initialised):
            exporter.inc_counter(REQUESTS, requests(m, "200"), 95)
            exporter.inc_counter(REQUESTS, requests(m, "500"), 5)  # born: the series appears now, at 5
    for m in (born, initialised):
        prometheus.wait_for(
            f'count_over_time(model_requests_total{{model="{m}",code="500"}}[{WINDOW}]) >= 2', has(1), timeout=60
        )
        prometheus.wait_for(builtin(BuiltinMetric.ERROR_RATE, m, "total"), lambda r: bool(r) and values(r)[""] > 0)

    at = now()
    lost = provider.scalar(builtin(BuiltinMetric.ERROR_RATE, born, "errors"), at=at)
    lost_total = provider.scalar(builtin(BuiltinMetric.ERROR_RATE, born, "total"), at=at)
    kept = provider.scalar(builtin(BuiltinMetric.ERROR_RATE, initialised, "errors"), at=at)
    kept_total = provider.scalar(builtin(BuiltinMetric.ERROR_RATE, initialised, "total"), at=at)

    assert lost.status is OK and kept.status is OK, (lost.message, kept.message)
    assert lost.value == 0.0  # 5 errors of 100 requests, invisible: a 5% error rate reads as 0%
    assert lost_total.value is not None and lost_total.value > 0
    assert kept.value is not None and kept_total.value is not None
    assert kept.value / kept_total.value == pytest.approx(0.05)  # extrapolated alike, the ratio is exact


def test_latency_p99_builtin(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    labels = {"model": model}
    exporter.observe(LATENCY, labels, 0.07, count=0, bounds=LATENCY_BUCKETS)
    prometheus.wait_for(
        f'count_over_time(model_request_duration_seconds_count{{model="{model}"}}[{WINDOW}]) >= 2', has(1)
    )
    exporter.observe(LATENCY, labels, 0.07, count=200, bounds=LATENCY_BUCKETS)
    samples_query = builtin(BuiltinMetric.LATENCY_P99, model, "samples")
    prometheus.wait_for(samples_query, lambda r: bool(r) and values(r)[""] > 0)

    at = now()
    p99 = provider.scalar(builtin(BuiltinMetric.LATENCY_P99, model, "value"), at=at)
    samples = provider.scalar(samples_query, at=at)

    # Every request fell in (0.05, 0.1]: Prometheus interpolates the 99th percentile linearly in it.
    assert p99.status is OK, p99.message
    assert p99.value == pytest.approx(0.05 + 0.05 * 0.99)
    assert samples.value is not None and samples.value >= 200 - 1e-9


def test_vector_of_prediction_buckets(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    labels = {"model": model}
    exporter.observe(PREDICTION, labels, 0.5, count=0)
    prometheus.wait_for(f'count_over_time(model_prediction_count{{model="{model}"}}[{WINDOW}]) >= 2', has(1))
    with exporter.atomically():
        exporter.observe(PREDICTION, labels, 0.1, count=30)
        exporter.observe(PREDICTION, labels, 0.6, count=50)
        exporter.observe(PREDICTION, labels, 0.9, count=20)
    raw = f'sum by (le) (model_prediction_bucket{{model="{model}"}})'
    prometheus.wait_for(raw, lambda r: values(r, "le").get("+Inf") == 100.0)

    at = now()
    counts = provider.vector(raw, label="le", at=at)
    distribution = provider.vector(
        builtin(BuiltinMetric.PREDICTION_DISTRIBUTION, model, "distribution"),
        label=PROMQL[BuiltinMetric.PREDICTION_DISTRIBUTION].distribution_label or "",
        at=at,
    )

    assert counts.status is OK, counts.message
    assert counts.vector == {"0.25": 30.0, "0.5": 30.0, "0.75": 80.0, "1.0": 100.0, "+Inf": 100.0}
    assert distribution.status is OK, distribution.message
    assert set(distribution.vector) == set(counts.vector)
    # increase() extrapolates every bucket alike: the shape is exact, the scale is Prometheus'.
    scale = distribution.vector["+Inf"]
    assert scale >= 100 - 1e-9
    for le, count in counts.vector.items():
        assert distribution.vector[le] / scale == pytest.approx(count / 100)


def test_vector_by_class(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    with exporter.atomically():
        for pod in ("a", "b"):
            exporter.set_gauge("model_predicted_class", {"model": model, "pod": pod, "class": "fraud"}, 3)
            exporter.set_gauge("model_predicted_class", {"model": model, "pod": pod, "class": "legit"}, 97)
    selector = f'model_predicted_class{{model="{model}"}}'
    prometheus.wait_for(selector, has(4))

    by_class = provider.vector(f"sum by (class) ({selector})", label="class", at=now())
    per_pod = provider.vector(selector, label="class", at=now())

    assert by_class.status is OK and by_class.vector == {"fraud": 6.0, "legit": 194.0}
    assert per_pod.status is NO_DATA and "several series with class=" in per_pod.message


# -- no data ----------------------------------------------------------------------------------


def test_empty_result_is_no_data(provider: PrometheusProvider, model: str) -> None:
    empty = provider.scalar(f'sum(model_requests_total{{model="{model}"}})', at=now())
    rate = provider.scalar(builtin(BuiltinMetric.ERROR_RATE, model, "value"), at=now())
    buckets = provider.vector(
        builtin(BuiltinMetric.PREDICTION_DISTRIBUTION, model, "distribution"), label="le", at=now()
    )

    for observation in (empty, rate, buckets):
        assert observation.status is NO_DATA
        assert observation.message == "no series"


def test_nan_is_no_data(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    # Requests once, then none: the rate of errors over the rate of requests is 0/0.
    exporter.set_counter(REQUESTS, requests(model, "200"), 5)
    exporter.set_gauge("model_score_gauge", {"model": model}, float("nan"))
    prometheus.wait_for(f'count_over_time(model_requests_total{{model="{model}"}}[{WINDOW}]) >= 2', has(1))

    idle = provider.scalar(builtin(BuiltinMetric.ERROR_RATE, model, "value"), at=now())
    literal = provider.scalar("0/0", at=now())
    exported = provider.scalar(f'model_score_gauge{{model="{model}"}}', at=now())
    infinite = provider.vector(f'sum by (model) (model_requests_total{{model="{model}"}}) / 0', label="model", at=now())

    for observation in (idle, literal, exported):
        assert observation.status is NO_DATA
        assert observation.message == "value is NaN"
    assert infinite.status is NO_DATA and "+Inf" in infinite.message


def test_several_series_where_one_is_expected_is_no_data(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    with exporter.atomically():
        exporter.set_counter(REQUESTS, requests(model, "200"), 9)
        exporter.set_counter(REQUESTS, requests(model, "500"), 1)
    selector = f'model_requests_total{{model="{model}"}}'
    prometheus.wait_for(selector, has(2))

    several = provider.scalar(selector, at=now())
    unlabelled = provider.vector(f"sum({selector})", label="le", at=now())

    assert several.status is NO_DATA and several.message.startswith("2 series where one is expected")
    assert unlabelled.status is NO_DATA and "lacks the label 'le'" in unlabelled.message


def test_a_series_no_longer_exported_is_no_data(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    labels = requests(model, "200")
    exporter.set_counter(REQUESTS, labels, 3)
    query = f'sum(model_requests_total{{model="{model}"}})'
    prometheus.wait_for(query, has(1))
    assert provider.scalar(query, at=now()).value == 3.0

    exporter.remove(REQUESTS, labels)  # Prometheus writes a staleness marker at the next scrape
    prometheus.wait_for(query, has(0))

    gone = provider.scalar(query, at=now())
    assert gone.status is NO_DATA and gone.message == "no series"


# -- errors -----------------------------------------------------------------------------------


def test_bad_query_is_an_error_with_prometheus_message_and_no_retry(
    provider: PrometheusProvider, transport: CountingTransport
) -> None:
    observation = provider.scalar("sum(model_requests_total", at=now())

    assert observation.status is ERROR
    assert "bad_data" in observation.message and "parse error" in observation.message
    assert transport.requests == 1


def test_a_range_vector_is_an_error(provider: PrometheusProvider, transport: CountingTransport) -> None:
    observation = provider.scalar("model_requests_total[1m]", at=now())

    assert observation.status is ERROR and "matrix" in observation.message
    assert transport.requests == 1


def test_prometheus_stopped_is_an_error_and_a_restart_recovers(exporter: Exporter, model: str) -> None:
    exporter.set_counter(REQUESTS, requests(model, "200"), 7)
    query = f'sum(model_requests_total{{model="{model}"}})'
    own = PrometheusServer([exporter.port])
    try:
        own.start()
        own.wait_for(query, lambda r: values(r) == {"": 7.0})
        before = now()
        transport = CountingTransport()
        with PrometheusProvider(address=own.url, timeout=10, stale_after=300, transport=transport) as provider:
            assert provider.scalar(query, at=before).value == 7.0

            own.stop()
            transport.requests = 0
            down = provider.scalar(query, at=now())

            assert not own.running
            assert down.status is ERROR, down
            assert "unreachable" in down.message and own.url in down.message
            assert transport.requests == 3  # connection refused is transient: retried, then given up

            own.start()  # same port, same data directory
            kept = provider.scalar(query, at=before)
            assert kept.status is OK and kept.value == 7.0
            own.wait_for(query, has(1))
            assert provider.scalar(query, at=now()).value == 7.0
    finally:
        own.close()
    assert own.proc is not None and own.proc.poll() is not None
    assert not own.workdir.exists()


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A port that accepts connections (the kernel does) but never answers: a hung server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_server_that_never_answers_is_an_error(blackhole: str) -> None:
    transport = CountingTransport()
    with PrometheusProvider(address=blackhole, timeout=0.5, stale_after=300, transport=transport) as provider:
        observation = provider.vector("up", label="le", at=now())

    assert observation.status is ERROR
    assert "timed out" in observation.message
    assert 1 <= transport.requests <= 3


def test_an_unreachable_address_is_an_error() -> None:
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    transport = CountingTransport()
    with PrometheusProvider(address=address, timeout=2, stale_after=300, transport=transport) as provider:
        observation = provider.scalar("up", at=now())

    assert observation.status is ERROR
    assert "unreachable" in observation.message
    assert transport.requests == 3


# -- segments (guardrails with segmentBy) -----------------------------------------------------


def test_segmented_error_rate_builtin_one_query_per_variant_by_region(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    """Per region: errors where there are some, zero where the 5xx series never appeared, and
    requests nobody labelled as a segment of their own (never silently dropped)."""
    series = [
        {"model": model, "code": "200", "region": "eu"},
        {"model": model, "code": "500", "region": "eu"},
        {"model": model, "code": "200", "region": "us"},
        {"model": model, "code": "200"},
        {"model": model, "code": "200", "region": "ap"},  # never a request: no value, zero requests
    ]
    with exporter.atomically():
        for labels in series:
            exporter.set_counter(REQUESTS, labels, 0)
    prometheus.wait_for(
        f'count_over_time(model_requests_total{{model="{model}"}}[{WINDOW}]) >= 2', has(len(series)), timeout=60
    )
    with exporter.atomically():
        for labels, by in zip(series, (70, 30, 200, 50, 0), strict=True):
            exporter.inc_counter(REQUESTS, labels, by)
    queries = by_segment("region")[BuiltinMetric.ERROR_RATE]

    def segmented(which: str) -> str:
        template = getattr(queries, which)
        assert template is not None
        return render(
            template, variables_for(model, None, "candidate", "default", WINDOW, rollout="r", incumbent="inc")
        )

    prometheus.wait_for(segmented("value"), has(3))
    prometheus.wait_for(segmented("total"), lambda r: has(4)(r) and sorted(values(r, "region").values())[1] > 0)

    at = now()
    observed = {
        which: provider.vector(segmented(which), label="region", at=at, unlabelled=UNLABELLED)
        for which in ("value", "errors", "total", "samples")
    }
    for which, obs in observed.items():
        assert obs.status is OK, f"{which}: {obs.message}"
    rate, errors, total = observed["value"].vector, observed["errors"].vector, observed["total"].vector
    assert set(rate) == {"eu", "us", UNLABELLED}
    assert set(errors) == set(total) == {"eu", "us", "ap", UNLABELLED} and total["ap"] == errors["ap"] == 0.0
    assert rate["eu"] == pytest.approx(0.30) and rate["us"] == 0.0 and rate[UNLABELLED] == 0.0
    assert errors["us"] == 0.0 and errors[UNLABELLED] == 0.0
    assert errors["eu"] / total["eu"] == pytest.approx(0.30)
    assert observed["samples"].vector == total
    # Without `unlabelled` a series lacking the label stays no data, as before.
    plain = provider.vector(segmented("total"), label="region", at=at)
    assert plain.status is NO_DATA and "lacks the label 'region'" in plain.message


def test_grouped_prediction_buckets_by_region(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    """The segmented PredictionDistribution builtin: one query, a cumulative histogram per region."""
    regions = {"eu": (10, 30), "us": (40, 0)}  # predictions at 0.1 and at 0.9
    with exporter.atomically():
        for region in regions:
            exporter.observe(PREDICTION, {"model": model, "region": region}, 0.5, count=0)
    prometheus.wait_for(f'count_over_time(model_prediction_count{{model="{model}"}}[{WINDOW}]) >= 2', has(2))
    with exporter.atomically():
        for region, (low, high) in regions.items():
            exporter.observe(PREDICTION, {"model": model, "region": region}, 0.1, count=low)
            exporter.observe(PREDICTION, {"model": model, "region": region}, 0.9, count=high)
    template = by_segment("region")[BuiltinMetric.PREDICTION_DISTRIBUTION].distribution
    assert template is not None
    query = render(template, variables_for(model, None, "candidate", "default", WINDOW, rollout="r", incumbent="inc"))
    prometheus.wait_for(query, lambda r: sum(float(s["value"][1]) for s in r if s["metric"]["le"] == "+Inf") > 0)
    prometheus.wait_for(
        f'sum by (region) (model_prediction_count{{model="{model}"}})',
        lambda r: sum(values(r, "region").values()) == 80,
    )

    observed = provider.grouped(query, label="le", by="region", at=now(), unlabelled=UNLABELLED)

    assert observed.status is OK, observed.message
    assert set(observed.groups) == {"eu", "us"}
    eu, us = observed.groups["eu"], observed.groups["us"]
    # Shapes exact (increase() scales every bucket of a series alike): eu 1/4 low, us all low.
    assert eu["0.25"] / eu["+Inf"] == pytest.approx(0.25) and us["0.25"] / us["+Inf"] == pytest.approx(1.0)
    # A series without the bucket label is no data, as for vector().
    plain = provider.grouped(
        f'sum by (region) (model_prediction_count{{model="{model}"}})', label="le", by="region", at=now()
    )
    assert plain.status is NO_DATA and "lacks the label 'le'" in plain.message


# -- batched builtins (metrics/batch.py) --------------------------------------------------------


def test_each_models_batched_builtin_is_what_its_own_query_gives(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    """Given three models (10% errors, no error series at all, and idle: counters that stopped
    moving), when the by-model builtins are asked once at one time and the per-model ones at the
    same time, then every model's value and samples are the same numbers, and the idle model is
    no data in both (0/0), without making anyone else's no data."""
    failing, clean, idle = model + "-failing", model + "-clean", model + "-idle"
    start_counters(exporter, prometheus, failing, ["200", "500"])
    start_counters(exporter, prometheus, clean, ["200"])
    start_counters(exporter, prometheus, idle, ["200"])
    latency_models = (failing, clean)
    for m in latency_models:
        exporter.observe(LATENCY, {"model": m}, 0.07, count=0, bounds=LATENCY_BUCKETS)
    prometheus.wait_for(
        f'count_over_time(model_request_duration_seconds_count{{model=~"{failing}|{clean}"}}[{WINDOW}]) >= 2', has(2)
    )
    with exporter.atomically():
        exporter.inc_counter(REQUESTS, requests(failing, "200"), 90)
        exporter.inc_counter(REQUESTS, requests(failing, "500"), 10)
        exporter.inc_counter(REQUESTS, requests(clean, "200"), 100)
        exporter.observe(LATENCY, {"model": failing}, 0.2, count=100, bounds=LATENCY_BUCKETS)
        exporter.observe(LATENCY, {"model": clean}, 0.07, count=100, bounds=LATENCY_BUCKETS)
    for m in latency_models:
        prometheus.wait_for(builtin(BuiltinMetric.LATENCY_P99, m, "samples"), lambda r: bool(r) and values(r)[""] > 0)
        prometheus.wait_for(builtin(BuiltinMetric.ERROR_RATE, m, "total"), lambda r: bool(r) and values(r)[""] > 0)

    at = now()
    for metric in (BuiltinMetric.ERROR_RATE, BuiltinMetric.LATENCY_P99):
        for which in ("value", "samples"):
            template = getattr(BY_MODEL[metric], which)
            batched = provider.split(render(template, {"window": WINDOW}), by="model", at=at)
            assert isinstance(batched, dict), batched
            for m in (failing, clean, idle):
                own = provider.scalar(builtin(metric, m, which), at=at)
                theirs = for_model(batched, m)
                assert (theirs.status, theirs.value) == (own.status, own.value), (metric, which, m, own, theirs)
    error_rate = render(BY_MODEL[BuiltinMetric.ERROR_RATE].value or "", {"window": WINDOW})
    batched = provider.split(error_rate, by="model", at=at)
    assert isinstance(batched, dict)
    assert for_model(batched, failing).value == pytest.approx(0.10)
    assert for_model(batched, clean).value == 0.0  # no 5xx series at all: zero errors, not no data
    assert for_model(batched, idle).status is NO_DATA  # 0/0
    assert for_model(batched, model + "-never-seen").status is NO_DATA


def test_each_models_batched_prediction_distribution_is_its_own(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    first, second = model + "-1", model + "-2"
    for m in (first, second):
        exporter.observe(PREDICTION, {"model": m}, 0.5, count=0)
    prometheus.wait_for(f'count_over_time(model_prediction_count{{model=~"{first}|{second}"}}[{WINDOW}]) >= 2', has(2))
    with exporter.atomically():
        exporter.observe(PREDICTION, {"model": first}, 0.1, count=30)
        exporter.observe(PREDICTION, {"model": second}, 0.9, count=70)
    for m in (first, second):
        raw = f'sum by (le) (model_prediction_bucket{{model="{m}"}})'
        prometheus.wait_for(raw, lambda r: values(r, "le").get("+Inf", 0) > 0)
        prometheus.wait_for(builtin(BuiltinMetric.PREDICTION_DISTRIBUTION, m, "distribution"),
                            lambda r: any(float(s["value"][1]) > 0 for s in r))  # fmt: skip

    at = now()
    queries = BY_MODEL[BuiltinMetric.PREDICTION_DISTRIBUTION]
    batched = provider.split(
        render(queries.distribution or "", {"window": WINDOW}), by="model", at=at, label=queries.distribution_label
    )
    assert isinstance(batched, dict), batched
    for m in (first, second):
        own = provider.vector(builtin(BuiltinMetric.PREDICTION_DISTRIBUTION, m, "distribution"), label="le", at=at)
        assert own.ok and for_model(batched, m).vector == own.vector, (m, own, batched.get(m))


SHADOW = "modelrollout_shadow_comparisons_total"


def test_shadow_disagreement_builtin_reads_the_candidate_and_the_noise_floor_apart(
    exporter: Exporter, prometheus: PrometheusServer, provider: PrometheusProvider, model: str
) -> None:
    """The comparator's counter (controller/comparator): variant candidate is the candidate against
    the incumbent, variant incumbent the incumbent against itself; a candidate's error is a
    disagreement, the incumbent's errors are no comparison. Another rollout of the namespace with
    the same model, or the model against another incumbent, never adds up (review finding 10)."""
    incumbent = model + "-incumbent"

    def labels(
        judged: str, variant: str, outcome: str, *, rollout: str = "r", reference: str = incumbent
    ) -> dict[str, str]:
        return {
            "namespace": "default", "rollout": rollout, "model": judged, "reference": reference, "variant": variant,
            "outcome": outcome,
        }  # fmt: skip

    others = [
        labels(model, "candidate", "disagree", rollout="other"),
        labels(model, "candidate", "disagree", reference="x"),
    ]

    series = [
        (model, "candidate", "agree"), (model, "candidate", "disagree"), (model, "candidate", "candidate_error"),
        (model, "candidate", "incumbent_error"), (incumbent, "incumbent", "agree"),
        (incumbent, "incumbent", "incumbent_error"),
    ]  # fmt: skip
    with exporter.atomically():
        for s in series:
            exporter.set_counter(SHADOW, labels(*s), 0)
        for other in others:
            exporter.set_counter(SHADOW, other, 0)
    prometheus.wait_for(f'count_over_time({SHADOW}{{model=~"{model}.*"}}[{WINDOW}]) >= 2', has(8), timeout=60)
    with exporter.atomically():
        exporter.inc_counter(SHADOW, labels(model, "candidate", "agree"), 90)
        exporter.inc_counter(SHADOW, labels(model, "candidate", "disagree"), 10)
        exporter.inc_counter(SHADOW, labels(model, "candidate", "candidate_error"), 50)
        exporter.inc_counter(SHADOW, labels(model, "candidate", "incumbent_error"), 400)
        exporter.inc_counter(SHADOW, labels(incumbent, "incumbent", "agree"), 40)
        exporter.inc_counter(SHADOW, labels(incumbent, "incumbent", "incumbent_error"), 400)
        for other in others:
            exporter.inc_counter(SHADOW, other, 1000)
    metric = BuiltinMetric.SHADOW_DISAGREEMENT
    prometheus.wait_for(
        builtin(metric, model, "value", incumbent=incumbent), lambda r: bool(r) and float(r[0]["value"][1]) > 0
    )
    prometheus.wait_for(
        builtin(metric, incumbent, "total", "incumbent", incumbent=incumbent), lambda r: bool(r) and values(r)[""] > 0
    )

    at = now()
    rate = provider.scalar(builtin(metric, model, "value", incumbent=incumbent), at=at)
    errors = provider.scalar(builtin(metric, model, "errors", incumbent=incumbent), at=at)
    total = provider.scalar(builtin(metric, model, "total", incumbent=incumbent), at=at)
    floor_errors = provider.scalar(builtin(metric, incumbent, "errors", "incumbent", incumbent=incumbent), at=at)
    floor_total = provider.scalar(builtin(metric, incumbent, "total", "incumbent", incumbent=incumbent), at=at)
    nothing = provider.scalar(builtin(metric, model + "-never-compared", "value", incumbent=incumbent), at=at)

    # 10 disagreements and 50 candidate errors of 150 judged; the 400 incumbent errors are no comparison.
    assert rate.status is OK and rate.value == pytest.approx(0.40)
    assert errors.value is not None and total.value is not None and errors.value / total.value == pytest.approx(0.40)
    assert 150 - 1e-9 <= total.value < 550 * 0.9
    assert floor_errors.status is OK and floor_errors.value == 0.0
    assert floor_total.value is not None and 40 - 1e-9 <= floor_total.value < 440 * 0.9
    assert nothing.status is NO_DATA
