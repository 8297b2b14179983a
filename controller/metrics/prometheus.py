"""Prometheus as a metric provider: instant queries over the HTTP API (`GET /api/v1/query`).

The judge must be able to tell "the candidate is bad" from "we could not see": so every
failure here becomes data (an Observation), never an exception. A timeout, an unreachable
server, a 5xx after retries, a bad query, invalid JSON or `status: error` is an ERROR
observation with a message a human can act on; an empty vector, NaN/Inf, several series where
one is expected, a series without the asked label, or a stale sample is NO_DATA.

Only transient failures (connection errors, timeouts, 5xx, 429) are retried, with jittered
exponential back-off, and only while the `timeout` budget lasts: one observation never takes
much longer than `timeout`, whatever the retries. A bad query (4xx) is answered at once.

The bearer token lives only in the HTTP client's headers: it is never logged, never part of a
message, and never in the provider's repr.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from controller.api.duration import parse_duration
from controller.api.models import BuiltinMetric, LlmMetrics, ModelPrice, PrometheusSource
from controller.core.observation import Observation, ObservationStatus
from controller.metrics import llm
from controller.metrics.builtins import BY_MODEL, PROMQL, BuiltinQueries, by_segment

log = structlog.get_logger("metrics.prometheus")

QUERY_PATH = "/api/v1/query"
_UNAUTHORIZED_HINT = "check the bearer token in the provider's secretRef"


class _Secret:
    """A value that never shows itself: not in repr, not in a dump of the provider's fields."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<redacted>"

    def redact(self, text: str) -> str:
        return text.replace(self.value, "<redacted>") if self.value else text


class _Transient(Exception):
    """A failure that another attempt may not see (network, timeout, 5xx, 429)."""


class _Failed(Exception):
    """A failure that another attempt would see again (bad query, bad answer, bad address)."""


class PrometheusProvider:
    """A MetricProvider over one Prometheus; safe to share between worker threads."""

    builtins = PROMQL
    builtins_by_model = BY_MODEL

    def __init__(
        self,
        *,
        address: str,
        timeout: float,
        stale_after: float,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        attempts: int = 3,
        backoff: float = 0.2,
    ) -> None:
        """`timeout` (seconds) bounds one observation including its retries; `stale_after`
        (seconds) is the oldest a sample may be, relative to the time asked for; `backoff` is
        the first retry's largest wait (seconds), doubling each time, with full jitter."""
        self.address = address.rstrip("/")
        self.timeout = max(timeout, 0.0)
        self.stale_after = stale_after
        self._token = _Secret(token or "")
        self._attempts = max(attempts, 1)
        self._backoff = max(backoff, 0.0)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # No base_url: an address httpx cannot parse must become an ERROR observation at query
        # time, not an exception while the reconciler builds its providers.
        self._client = httpx.Client(headers=headers, transport=transport, timeout=self.timeout)

    @classmethod
    def from_source(cls, source: PrometheusSource, token: str | None) -> PrometheusProvider:
        """The provider for a `spec.provider.prometheus` block; `token` is what its secretRef holds."""
        timeout, stale_after = (parse_duration(d).total_seconds() for d in (source.timeout, source.stale_after))
        return cls(address=source.address, timeout=timeout, stale_after=stale_after, token=token)

    def __repr__(self) -> str:
        return (
            f"PrometheusProvider(address={self.address!r}, timeout={self.timeout:g}, "
            f"stale_after={self.stale_after:g}, token={'<set>' if self._token.value else None})"
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PrometheusProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the contract (metrics.base.MetricProvider) ---------------------------------------------

    def llm_builtin(
        self, metric: BuiltinMetric, names: LlmMetrics | None, price: ModelPrice | None
    ) -> BuiltinQueries | str:
        return llm.promql(metric, names, price)

    def scalar(self, query: str, *, at: datetime) -> Observation:
        """One finite, fresh value: a scalar, or a vector of exactly one series."""
        moment = _aware(at)
        return self._safely(lambda: self._scalar(query, moment))

    def builtins_by(self, label: str) -> Mapping[BuiltinMetric, BuiltinQueries]:
        return by_segment(label)

    def vector(self, query: str, *, label: str, at: datetime, unlabelled: str | None = None) -> Observation:
        """Finite, fresh values keyed by the value of `label` (e.g. `le`, `class` or a segment's label);
        a series without the label (Prometheus: the empty value) is keyed `unlabelled`, when given."""
        moment = _aware(at)
        return self._safely(lambda: self._vector(query, label, moment, unlabelled))

    def grouped(self, query: str, *, label: str, by: str, at: datetime, unlabelled: str | None = None) -> Observation:
        """Finite, fresh vectors keyed by `label`, one per value of `by` (a segment's label)."""
        moment = _aware(at)
        return self._safely(lambda: self._grouped(query, label, by, moment, unlabelled))

    def split(
        self, query: str, *, by: str, at: datetime, label: str | None = None
    ) -> Mapping[str, Observation] | Observation:
        """One observation per value of `by` (a model's name): as `scalar` for each, or with `label`
        as `vector` for each; a problem with one value's series is that value's NO_DATA only.
        Series without `by` belong to no one and are left out. An Observation (ERROR, or NO_DATA
        for a result that is no vector) when the whole query failed."""
        moment = _aware(at)
        found: dict[str, Observation] = {}

        def observe() -> Observation:
            found.update(self._split(query, by, label, moment))
            return Observation(ObservationStatus.OK)

        outcome = self._safely(observe)
        return found if outcome.ok else outcome

    def _safely(self, observe: Callable[[], Observation]) -> Observation:
        try:
            observation = observe()
        except (_Failed, _Transient) as exc:
            observation = Observation.error(str(exc))
        except Exception as exc:
            # A bug here must not stop the reconcile loop: the judge sees an error, we see a log
            # (with the traceback as text, so that it can be redacted like everything else).
            log.error(
                "prometheus provider failed unexpectedly",
                address=self.address,
                traceback=self._token.redact(traceback.format_exc()),
            )
            observation = Observation.error(f"Prometheus provider internal error: {type(exc).__name__}: {exc}")
        # Belt and braces: a proxy that echoes the request could put the token in an error text.
        redacted = self._token.redact(observation.message)
        return observation if redacted == observation.message else replace(observation, message=redacted)

    # -- result shapes --------------------------------------------------------------------------

    def _scalar(self, query: str, at: datetime) -> Observation:
        kind, result = self._query(query, at)
        if kind == "scalar":
            return self._sample(result, at)
        if kind != "vector":
            raise _Failed(f"result type {kind!r} where an instant vector or scalar is expected{_hint(kind)}")
        if not result:
            return Observation.no_data("no series")
        if len(result) > 1:
            return Observation.no_data(
                f"{len(result)} series where one is expected: aggregate the query (e.g. sum(...))"
            )
        return self._sample(_value_of(result[0]), at)

    def _vector(self, query: str, label: str, at: datetime, unlabelled: str | None = None) -> Observation:
        found = self._keyed(query, label, None, at, unlabelled)
        if isinstance(found, Observation):
            return found
        values, oldest = found
        return Observation(ObservationStatus.OK, vector=values.get("", {}), sample_time=oldest)

    def _grouped(self, query: str, label: str, by: str, at: datetime, unlabelled: str | None) -> Observation:
        found = self._keyed(query, label, by, at, None, unlabelled)
        if isinstance(found, Observation):
            return found
        groups, oldest = found
        return Observation(ObservationStatus.OK, groups=groups, sample_time=oldest)

    def _split(self, query: str, by: str, label: str | None, at: datetime) -> dict[str, Observation]:
        kind, result = self._query(query, at)
        if kind != "vector":
            raise _Failed(f"result type {kind!r} where an instant vector by {by!r} is expected{_hint(kind)}")
        members: dict[str, list[dict[str, Any]]] = {}
        for series in result:
            labels = series.get("metric")
            if not isinstance(labels, dict):
                raise _Failed("malformed answer: a series has no labels object")
            if labels.get(by):
                members.setdefault(str(labels[by]), []).append(series)
        found: dict[str, Observation] = {}
        for key, mine in members.items():
            if label is None:
                found[key] = (
                    self._sample(_value_of(mine[0]), at)
                    if len(mine) == 1
                    else Observation.no_data(f"{len(mine)} series where one is expected for {by}={key!r}")
                )
                continue
            vector: dict[str, float] = {}
            oldest: datetime | None = None
            problem: Observation | None = None
            for series in mine:
                name = series["metric"].get(label)
                sample = self._sample(_value_of(series), at)
                if name is None or name in vector:
                    problem = Observation.no_data(f"{by}={key!r}: series without {label!r}, or several with one value")
                elif not sample.ok or sample.value is None:
                    problem = Observation.no_data(f"{by}={key!r}, {label}={name!r}: {sample.message}")
                else:
                    vector[str(name)] = sample.value
                    if oldest is None or (sample.sample_time is not None and sample.sample_time < oldest):
                        oldest = sample.sample_time
                if problem is not None:
                    break
            found[key] = problem or Observation(ObservationStatus.OK, vector=vector, sample_time=oldest)
        return found

    def _keyed(
        self,
        query: str,
        label: str,
        by: str | None,
        at: datetime,
        unlabelled: str | None,
        ungrouped: str | None = None,
    ) -> tuple[dict[str, dict[str, float]], datetime | None] | Observation:
        """The vector's values keyed by (value of `by`, or "" without it) then `label`; or why not
        (NO_DATA). A series without `label` is keyed `unlabelled`, one without `by` `ungrouped`."""
        kind, result = self._query(query, at)
        if kind != "vector":
            wanted = label if by is None else f"{by}, {label}"
            raise _Failed(f"result type {kind!r} where an instant vector by {wanted!r} is expected{_hint(kind)}")
        if not result:
            return Observation.no_data("no series")
        values: dict[str, dict[str, float]] = {}
        oldest: datetime | None = None
        for series in result:
            labels = series.get("metric")
            if not isinstance(labels, dict):
                raise _Failed("malformed answer: a series has no labels object")
            key = labels.get(label) or unlabelled
            group = "" if by is None else labels.get(by) or ungrouped
            for name, got in ((label, key), (by, group)):
                if got is None:
                    return Observation.no_data(
                        f"a series lacks the label {name!r}: aggregate with sum by ({name}) (...)"
                    )
            assert key is not None and group is not None
            where = f"{label}={key!r}" if by is None else f"{by}={group!r}, {label}={key!r}"
            if key in values.get(group, {}):
                grouping = label if by is None else f"{label}, {by}"
                return Observation.no_data(f"several series with {where}: aggregate with sum by ({grouping}) (...)")
            sample = self._sample(_value_of(series), at)
            if not sample.ok or sample.value is None:
                return Observation.no_data(f"{where}: {sample.message}")
            values.setdefault(group, {})[str(key)] = sample.value
            if oldest is None or (sample.sample_time is not None and sample.sample_time < oldest):
                oldest = sample.sample_time
        return values, oldest

    def _sample(self, pair: Any, at: datetime) -> Observation:
        try:
            stamp, value = float(pair[0]), float(pair[1])
            when = datetime.fromtimestamp(stamp, UTC)
        except (TypeError, ValueError, IndexError, KeyError, OverflowError, OSError) as exc:
            raise _Failed(f"malformed answer: sample {pair!r:.80}") from exc
        if not math.isfinite(value):
            return Observation.no_data(f"value is {_prometheus_float(value)}")
        # Prometheus stamps instant-query results with the evaluation time, so this mostly
        # catches answers served from a cache or a lagging replica; raw series older than the
        # lookback delta (5m by default) already vanish inside Prometheus ("no series").
        age = (at - when).total_seconds()
        if age > self.stale_after:
            return Observation.no_data(
                f"stale: sample from {when.isoformat()} is {age:.0f}s old (staleAfter {self.stale_after:g}s)"
            )
        return Observation(ObservationStatus.OK, value=value, sample_time=when)

    # -- HTTP -----------------------------------------------------------------------------------

    def _query(self, query: str, at: datetime) -> tuple[str, Any]:
        """The (resultType, result) of an instant query, retried while transient and in budget."""
        params = {"query": query, "time": f"{at.timestamp():.3f}"}
        deadline = time.monotonic() + self.timeout
        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            # stop_before_delay: never start a back-off that would end past the budget.
            stop=stop_after_attempt(self._attempts) | stop_before_delay(self.timeout),
            wait=wait_random_exponential(multiplier=self._backoff, max=max(self.timeout, 0.001)),
            before_sleep=self._log_retry,
            reraise=True,
        )
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    body = self._get(params, timeout=max(deadline - time.monotonic(), 0.001))
        except _Transient as exc:
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            raise _Transient(f"{exc}{tries}") from exc
        return _result_of(body)

    def _get(self, params: dict[str, str], *, timeout: float) -> Any:
        """One attempt: the decoded JSON body of a successful answer, or a classified failure."""
        try:
            response = self._client.get(self.address + QUERY_PATH, params=params, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise _Transient(f"Prometheus at {self.address} timed out ({self.timeout:g}s budget)") from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _Transient(f"Prometheus at {self.address} unreachable: {_describe(exc)}") from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise _Failed(f"invalid Prometheus address {self.address!r}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise _Failed(f"request to Prometheus at {self.address} failed: {_describe(exc)}") from exc

        code = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        error = _error_text(body)
        if code == 429 or code >= 500:
            raise _Transient(f"Prometheus answered HTTP {code} {response.reason_phrase}{error and ': ' + error}")
        if error:
            # Prometheus' own words for a bad query: `bad_data: 1:5: parse error: ...`.
            raise _Failed(f"Prometheus refused the query: {error}")
        if code in (401, 403):
            raise _Failed(f"Prometheus answered HTTP {code} {response.reason_phrase}: {_UNAUTHORIZED_HINT}")
        if code == 404:
            raise _Failed(f"Prometheus answered HTTP 404 for {QUERY_PATH}: the address must be the server's base URL")
        if not 200 <= code < 300:
            raise _Failed(f"Prometheus answered HTTP {code} {response.reason_phrase}")
        if body is None:
            raise _Failed(f"Prometheus answered HTTP {code} with invalid JSON")
        return body

    def _log_retry(self, state: RetryCallState) -> None:
        outcome = state.outcome
        reason = str(outcome.exception()) if outcome is not None and outcome.failed else ""
        log.debug(
            "retrying prometheus query",
            address=self.address,
            attempt=state.attempt_number,
            wait=round(state.upcoming_sleep, 3),
            reason=self._token.redact(reason),
        )


# -- the answer's JSON ------------------------------------------------------------------------


def _result_of(body: Any) -> tuple[str, Any]:
    if not isinstance(body, dict) or body.get("status") != "success":
        raise _Failed("malformed answer: not a Prometheus API response")
    data = body.get("data")
    if not isinstance(data, dict) or "result" not in data:
        raise _Failed("malformed answer: no data.result")
    kind, result = str(data.get("resultType")), data["result"]
    if kind == "vector" and not isinstance(result, list):
        raise _Failed("malformed answer: a vector result that is not a list")
    if kind == "vector" and not all(isinstance(series, dict) for series in result):
        raise _Failed("malformed answer: a series that is not an object")
    return kind, result


def _error_text(body: Any) -> str:
    """Prometheus' error message from an error answer, or "" for anything else."""
    if not isinstance(body, dict) or body.get("status") != "error":
        return ""
    kind, text = body.get("errorType"), body.get("error")
    message = str(text) if text else "no error message"
    return f"{kind}: {message}" if kind else message


def _aware(at: datetime) -> datetime:
    # A naive time is taken as UTC (the controller's clocks are all UTC), never as local time.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _value_of(series: dict[str, Any]) -> Any:
    if "value" not in series and "histogram" in series:
        raise _Failed("a native histogram sample where a float is expected: use histogram_quantile() or similar")
    return series.get("value")


def _hint(kind: str) -> str:
    if kind == "matrix":
        return ": drop the range selector [..] or wrap it in a function such as rate()"
    return ""


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _prometheus_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"
