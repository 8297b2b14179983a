"""PrometheusProvider's reading of answers and its retry policy, over httpx.MockTransport.

The real server is in tests/integration/test_prometheus_provider.py; here are the answers that
are hard to provoke from it on demand (503 then 200, invalid JSON, a timeout, a stale sample).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import structlog

from controller.core.observation import Observation, ObservationStatus
from controller.metrics.base import MetricProvider
from controller.metrics.prometheus import PrometheusProvider

AT = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW = AT.timestamp()
OK, NO_DATA, ERROR = ObservationStatus.OK, ObservationStatus.NO_DATA, ObservationStatus.ERROR
TOKEN = "s3cr3t-t0ken-value"

Handler = Callable[[httpx.Request], httpx.Response]


def success(result_type: str, result: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": result_type, "result": result}}


def series(value: str, *, ts: float = NOW, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [ts, value]}


class Recorder:
    """A MockTransport handler answering from a script, recording every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def provider(handler: Handler, **kwargs: Any) -> PrometheusProvider:
    options: dict[str, Any] = {
        "address": "http://prometheus.test:9090/",
        "timeout": 5.0,
        "stale_after": 300.0,
        "transport": httpx.MockTransport(handler),
        "backoff": 0.001,  # the retry policy is under test, not the waiting
    }
    options.update(kwargs)
    return PrometheusProvider(**options)


def answer(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


def scalar_of(body: Any, status: int = 200, **kwargs: Any) -> Observation:
    return provider(Recorder(answer(body, status)), **kwargs).scalar("q", at=AT)


def vector_of(body: Any, label: str = "le", **kwargs: Any) -> Observation:
    return provider(Recorder(answer(body)), **kwargs).vector("q", label=label, at=AT)


def test_it_is_a_metric_provider() -> None:
    p: MetricProvider = provider(Recorder(answer(success("scalar", [NOW, "1"]))))
    assert p.scalar("q", at=AT).ok


# -- scalar -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "value", "message"),
    [
        (success("vector", [series("0.25", model="m")]), OK, 0.25, ""),
        (success("scalar", [NOW, "3"]), OK, 3.0, ""),
        (success("vector", [series("0", model="m")]), OK, 0.0, ""),
        (success("vector", []), NO_DATA, None, "no series"),
        (success("vector", [series("1", code="200"), series("2", code="500")]), NO_DATA, None, "2 series"),
        (success("vector", [series("NaN")]), NO_DATA, None, "NaN"),
        (success("vector", [series("+Inf")]), NO_DATA, None, "+Inf"),
        (success("vector", [series("-Inf")]), NO_DATA, None, "-Inf"),
        (success("scalar", [NOW, "NaN"]), NO_DATA, None, "NaN"),
        (success("vector", [series("1", ts=NOW - 301)]), NO_DATA, None, "stale"),
        (success("scalar", [NOW - 3600, "1"]), NO_DATA, None, "stale"),
        (success("matrix", [{"metric": {}, "values": [[NOW, "1"]]}]), ERROR, None, "matrix"),
        (success("string", [NOW, "hello"]), ERROR, None, "string"),
        (success("vector", [{"metric": {}, "value": ["x", "1"]}]), ERROR, None, "malformed"),
        (success("vector", [{"metric": {}}]), ERROR, None, "malformed"),
        (success("vector", [{"metric": {}, "histogram": [NOW, {}]}]), ERROR, None, "native histogram"),
        (success("vector", "not a list"), ERROR, None, "malformed"),
        ({"status": "success"}, ERROR, None, "malformed"),
        ({"status": "success", "data": {"resultType": "vector"}}, ERROR, None, "malformed"),
        ([1, 2, 3], ERROR, None, "malformed"),
        ({"status": "error", "errorType": "execution", "error": "many-to-many matching"}, ERROR, None, "many-to-many"),
    ],
)
def test_scalar_answers(body: Any, status: ObservationStatus, value: float | None, message: str) -> None:
    observation = scalar_of(body)
    assert observation.status is status, observation
    assert observation.value == value
    assert message in observation.message


def test_a_fresh_sample_carries_its_time() -> None:
    observation = scalar_of(success("vector", [series("1", ts=NOW - 299)]))
    assert observation.ok
    assert observation.sample_time == AT - timedelta(seconds=299)


def test_several_series_name_the_count_and_the_cure() -> None:
    observation = scalar_of(success("vector", [series("1", pod=str(i)) for i in range(3)]))
    assert observation.status is NO_DATA
    assert "3 series" in observation.message and "sum" in observation.message


def test_a_naive_time_is_taken_as_utc() -> None:
    recorder = Recorder(answer(success("scalar", [NOW, "1"])))
    observation = provider(recorder).scalar("q", at=AT.replace(tzinfo=None))
    assert observation.ok
    assert recorder.requests[0].url.params["time"] == f"{NOW:.3f}"


def test_the_request() -> None:
    recorder = Recorder(answer(success("scalar", [NOW, "1"])))
    provider(recorder, timeout=2.5).scalar('sum(rate(x{model="a"}[5m]))', at=AT)
    (request,) = recorder.requests
    assert request.method == "GET"
    assert request.url.path == "/api/v1/query"
    assert request.url.host == "prometheus.test"
    assert request.url.params["query"] == 'sum(rate(x{model="a"}[5m]))'
    assert request.url.params["time"] == f"{NOW:.3f}"
    assert set(request.url.params) == {"query", "time"}
    assert "authorization" not in request.headers


# -- vector -----------------------------------------------------------------------------------


def test_vector_keyed_by_label() -> None:
    body = success("vector", [series("3", le="0.5"), series("10", le="+Inf"), series("0", le="0.25")])
    observation = vector_of(body)
    assert observation.ok
    assert observation.vector == {"0.25": 0.0, "0.5": 3.0, "+Inf": 10.0}
    assert observation.sample_time == AT


def test_vector_by_class() -> None:
    body = success(
        "vector", [{"metric": {"class": c}, "value": [NOW, v]} for c, v in (("fraud", "7"), ("legit", "93"))]
    )
    assert vector_of(body, label="class").vector == {"fraud": 7.0, "legit": 93.0}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (success("vector", []), NO_DATA, "no series"),
        (success("vector", [series("1", le="0.5"), series("NaN", le="+Inf")]), NO_DATA, "NaN"),
        (success("vector", [series("1", le="0.5"), series("+Inf", le="+Inf")]), NO_DATA, "+Inf"),
        (success("vector", [series("1", le="0.5"), series("2", model="m")]), NO_DATA, "lacks the label 'le'"),
        (success("vector", [series("1", le="0.5", pod="a"), series("2", le="0.5", pod="b")]), NO_DATA, "several"),
        (success("vector", [series("1", le="0.5"), series("2", le="1", ts=NOW - 900)]), NO_DATA, "stale"),
        (success("scalar", [NOW, "1"]), ERROR, "scalar"),
        (success("matrix", []), ERROR, "matrix"),
        (success("vector", [{"value": [NOW, "1"]}]), ERROR, "malformed"),
        (success("vector", [series("1", le="0.5"), "oops"]), ERROR, "malformed"),
    ],
)
def test_vector_answers(body: Any, status: ObservationStatus, message: str) -> None:
    observation = vector_of(body)
    assert observation.status is status, observation
    assert message in observation.message
    assert observation.vector == {}


def test_vector_by_segment_keys_series_without_the_label_as_unlabelled() -> None:
    body = success("vector", [series("30", region="eu"), series("5")])
    observation = provider(Recorder(answer(body))).vector("q", label="region", at=AT, unlabelled="(none)")
    assert observation.ok and observation.vector == {"eu": 30.0, "(none)": 5.0}
    assert "lacks the label 'region'" in vector_of(body, label="region").message


def grouped_of(body: Any, **kwargs: Any) -> Observation:
    return provider(Recorder(answer(body))).grouped("q", label="le", by="region", at=AT, **kwargs)


def test_grouped_vectors_by_segment() -> None:
    body = success(
        "vector",
        [series("3", le="0.5", region="eu"), series("4", le="+Inf", region="eu"), series("9", le="+Inf")],
    )
    observation = grouped_of(body, unlabelled="(none)")
    assert observation.ok and observation.vector == {}
    assert observation.groups == {"eu": {"0.5": 3.0, "+Inf": 4.0}, "(none)": {"+Inf": 9.0}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (success("vector", [series("1", le="0.5", region="eu"), series("2", le="1")]), "lacks the label 'region'"),
        (success("vector", [series("1", region="eu")]), "lacks the label 'le'"),
        (
            success("vector", [series("1", le="0.5", region="eu", pod="a"), series("2", le="0.5", region="eu")]),
            "several series with region='eu', le='0.5': aggregate with sum by (le, region)",
        ),
        (success("vector", [series("NaN", le="0.5", region="eu")]), "region='eu', le='0.5': value is NaN"),
    ],
)
def test_grouped_answers_that_are_no_data(body: Any, message: str) -> None:
    observation = grouped_of(body)
    assert observation.status is NO_DATA and message in observation.message, observation
    assert observation.groups == {}


def split_of(body: Any, label: str | None = None) -> Any:
    return provider(Recorder(answer(body))).split("q", by="model", at=AT, label=label)


def test_split_gives_each_model_its_own_observation_and_its_own_problems() -> None:
    body = success(
        "vector",
        [
            series("0.5", model="a"),
            series("NaN", model="idle"),
            series("1", model="twice", pod="x"),
            series("2", model="twice", pod="y"),
            series("7"),  # no model: nobody's
        ],
    )
    found = split_of(body)
    assert set(found) == {"a", "idle", "twice"}
    assert found["a"].ok and found["a"].value == 0.5
    assert found["idle"].status is NO_DATA and "value is NaN" in found["idle"].message
    assert found["twice"].status is NO_DATA and "2 series where one is expected" in found["twice"].message


def test_split_by_model_and_bucket() -> None:
    body = success(
        "vector",
        [
            series("3", le="0.5", model="a"),
            series("4", le="+Inf", model="a"),
            series("1", le="0.5", model="b"),
            series("Inf", le="+Inf", model="b"),
        ],
    )
    found = split_of(body, label="le")
    assert found["a"].ok and found["a"].vector == {"0.5": 3.0, "+Inf": 4.0}
    assert found["b"].status is NO_DATA and "le='+Inf': value is +Inf" in found["b"].message


def test_split_of_a_failed_query_is_one_observation_for_all() -> None:
    assert split_of(success("vector", [])) == {}
    failed = provider(Recorder(answer({"status": "error", "errorType": "bad_data", "error": "parse error"}, 400)))
    outcome = failed.split("q", by="model", at=AT)
    assert isinstance(outcome, Observation) and outcome.status is ERROR and "parse error" in outcome.message
    assert split_of(success("matrix", [])).status is ERROR


# -- failures and retries ---------------------------------------------------------------------


def test_503_then_200_is_retried_and_succeeds() -> None:
    recorder = Recorder(httpx.Response(503, text="busy"), answer(success("scalar", [NOW, "0.5"])))
    observation = provider(recorder).scalar("q", at=AT)
    assert observation.ok and observation.value == 0.5
    assert len(recorder.requests) == 2


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, text="busy"),
        httpx.Response(500, json={"status": "error", "errorType": "internal", "error": "boom"}),
        httpx.Response(429, text="slow down"),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.RemoteProtocolError("server disconnected"),
        httpx.ReadError("connection reset"),
    ],
    ids=["503", "500-json", "429", "connect", "read-timeout", "connect-timeout", "disconnect", "reset"],
)
def test_transient_failures_are_retried_three_times_then_error(failure: httpx.Response | Exception) -> None:
    recorder = Recorder(failure)
    observation = provider(recorder).scalar("q", at=AT)
    assert observation.status is ERROR
    assert len(recorder.requests) == 3
    assert "3 attempts" in observation.message


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (httpx.Response(503, text="busy"), "HTTP 503"),
        (httpx.Response(500, json={"status": "error", "errorType": "internal", "error": "boom"}), "internal: boom"),
        (httpx.Response(429), "HTTP 429"),
        (httpx.ConnectError("connection refused"), "unreachable"),
        (httpx.ReadTimeout("read timed out"), "timed out"),
    ],
)
def test_transient_failure_messages(failure: httpx.Response | Exception, message: str) -> None:
    observation = provider(Recorder(failure)).scalar("q", at=AT)
    assert observation.status is ERROR
    assert message in observation.message
    assert "prometheus.test" in observation.message or "HTTP" in observation.message


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (
            httpx.Response(
                400, json={"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unclosed"}
            ),
            "bad_data: 1:5: parse error: unclosed",
        ),
        (
            httpx.Response(422, json={"status": "error", "errorType": "execution", "error": "vector cannot contain"}),
            "execution: vector cannot contain",
        ),
        (httpx.Response(400, text="<html>bad request</html>"), "HTTP 400"),
        (httpx.Response(404, text="404 page not found"), "base URL"),
        (httpx.Response(401, text="unauthorized"), "bearer token"),
        (httpx.Response(403, text="forbidden"), "bearer token"),
        (httpx.Response(200, text="<html>a login page</html>"), "invalid JSON"),
        (httpx.Response(200, text='{"status": "success", "data": '), "invalid JSON"),
        (httpx.Response(302, headers={"location": "/login"}), "HTTP 302"),
    ],
    ids=["bad-query", "execution", "400-html", "404", "401", "403", "html", "truncated-json", "redirect"],
)
def test_permanent_failures_are_not_retried(failure: httpx.Response, message: str) -> None:
    recorder = Recorder(failure)
    observation = provider(recorder).scalar("q", at=AT)
    assert observation.status is ERROR
    assert message in observation.message
    assert len(recorder.requests) == 1


def test_no_retry_starts_once_the_timeout_budget_is_spent() -> None:
    # With no budget at all, any back-off would end past it: one attempt, then the error.
    recorder = Recorder(httpx.Response(503))
    observation = provider(recorder, timeout=0.0).scalar("q", at=AT)
    assert observation.status is ERROR
    assert len(recorder.requests) == 1


def test_attempts_are_configurable() -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    assert provider(recorder, attempts=1).scalar("q", at=AT).status is ERROR
    assert len(recorder.requests) == 1


# -- never raises -----------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["http://[::1", "ftp://prometheus.test", "prometheus.test:9090"])
def test_a_bad_address_is_an_error_not_an_exception(address: str) -> None:
    observation = PrometheusProvider(address=address, timeout=1, stale_after=60).scalar("q", at=AT)
    assert observation.status is ERROR
    assert observation.message


def test_an_unexpected_exception_becomes_an_error_and_a_log_line() -> None:
    def explode(request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"a bug in a transport that knows {TOKEN}")

    with structlog.testing.capture_logs() as logs:
        observation = provider(explode, token=TOKEN).vector("q", label="le", at=AT)
    assert observation.status is ERROR
    assert "RuntimeError" in observation.message and TOKEN not in observation.message
    assert [entry["event"] for entry in logs] == ["prometheus provider failed unexpectedly"]
    assert "RuntimeError" in logs[0]["traceback"] and TOKEN not in repr(logs)


def test_huge_timestamps_are_malformed_not_a_crash() -> None:
    assert scalar_of(success("scalar", [1e300, "1"])).status is ERROR


# -- the bearer token -------------------------------------------------------------------------


def test_token_is_sent_as_bearer_header() -> None:
    recorder = Recorder(answer(success("scalar", [NOW, "1"])))
    provider(recorder, token=TOKEN).scalar("q", at=AT)
    assert recorder.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(401, text=f"bad token {TOKEN}"),
        httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": f"Bearer {TOKEN} rejected"}),
        httpx.Response(503, json={"status": "error", "errorType": "unavailable", "error": f"echo {TOKEN}"}),
        httpx.ConnectError(f"proxy said {TOKEN}"),
    ],
)
def test_token_never_appears_in_a_message_or_repr(failure: httpx.Response | Exception) -> None:
    p = provider(Recorder(failure), token=TOKEN)
    with structlog.testing.capture_logs() as logs:
        for observation in (p.scalar("q", at=AT), p.vector("q", label="le", at=AT)):
            assert observation.status is ERROR
            assert TOKEN not in observation.message
    assert TOKEN not in repr(logs)
    assert TOKEN not in repr(p)
    assert TOKEN not in json.dumps(vars(p), default=repr)


def test_close_and_context_manager() -> None:
    with provider(Recorder(answer(success("scalar", [NOW, "1"])))) as p:
        assert p.scalar("q", at=AT).ok
    p.close()  # twice is harmless
