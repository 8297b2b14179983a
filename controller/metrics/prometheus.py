"""Prometheus as a metric provider: instant queries over the HTTP API.

Failures are data (metrics.base): a timeout, a 5xx after retries, a bad query or a malformed
answer becomes an ERROR observation; an empty vector, NaN/Inf, several series where one is
expected or a stale sample becomes NO_DATA. Only transient failures (connection errors,
timeouts, 5xx, 429) are retried, with jittered exponential back-off, within a bounded budget.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from controller.metrics.base import Observation, ObservationStatus


class _Transient(Exception):
    """A failure worth one more try."""


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, (_Transient, httpx.TransportError))


class PrometheusProvider:
    def __init__(
        self,
        *,
        address: str,
        timeout: float,
        stale_after: float,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        attempts: int = 3,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=address.rstrip("/"), timeout=timeout, headers=headers, transport=transport)
        self._timeout = timeout
        self._stale_after = stale_after
        self._attempts = attempts

    def close(self) -> None:
        self._client.close()

    # -- the contract ---------------------------------------------------------------------------

    def scalar(self, query: str, *, at: datetime) -> Observation:
        result = self._query(query, at)
        if isinstance(result, Observation):
            return result
        kind, data = result
        if kind == "scalar":
            return self._sample(data, at)
        if kind != "vector":
            return Observation.error(f"unexpected result type {kind!r}")
        if not data:
            return Observation.no_data("no series")
        if len(data) > 1:
            return Observation.no_data(f"{len(data)} series where one is expected: aggregate the query")
        return self._sample(data[0].get("value"), at)

    def vector(self, query: str, *, label: str, at: datetime) -> Observation:
        result = self._query(query, at)
        if isinstance(result, Observation):
            return result
        kind, data = result
        if kind != "vector":
            return Observation.error(f"unexpected result type {kind!r} (a vector by {label} is expected)")
        if not data:
            return Observation.no_data("no series")
        values: dict[str, float] = {}
        newest: datetime | None = None
        for series in data:
            key = series.get("metric", {}).get(label)
            if key is None:
                return Observation.no_data(f"a series lacks the label {label!r}")
            if key in values:
                return Observation.no_data(f"several series with {label}={key}: aggregate by {label}")
            sample = self._sample(series.get("value"), at)
            if not sample.ok or sample.value is None:
                return Observation.no_data(f"{label}={key}: {sample.message}")
            values[key] = sample.value
            newest = (
                sample.sample_time if newest is None or (sample.sample_time and sample.sample_time > newest) else newest
            )
        return Observation(ObservationStatus.OK, vector=values, sample_time=newest)

    # -- HTTP -----------------------------------------------------------------------------------

    def _query(self, query: str, at: datetime) -> tuple[str, Any] | Observation:
        params = {"query": query, "time": f"{at.timestamp():.3f}"}
        try:
            for attempt in Retrying(
                retry=retry_if_exception(_transient),
                stop=stop_after_attempt(self._attempts) | stop_after_delay(self._timeout * 2),
                wait=wait_random_exponential(multiplier=0.2, max=2.0),
                reraise=True,
            ):
                with attempt:
                    response = self._client.get("/api/v1/query", params=params)
                    if response.status_code == 429 or response.status_code >= 500:
                        raise _Transient(f"HTTP {response.status_code}")
        except httpx.TimeoutException:
            return Observation.error(f"timed out after {self._timeout:g}s")
        except httpx.TransportError as exc:
            return Observation.error(f"unreachable: {type(exc).__name__}")
        except (_Transient, RetryError) as exc:
            return Observation.error(f"Prometheus answered {exc}")
        try:
            body = response.json()
        except ValueError:
            return Observation.error(f"HTTP {response.status_code}: not JSON")
        if not isinstance(body, dict):
            return Observation.error("malformed answer")
        if body.get("status") != "success":
            return Observation.error(
                f"{body.get('errorType', 'error')}: {body.get('error', f'HTTP {response.status_code}')}"
            )
        data = body.get("data") or {}
        return str(data.get("resultType")), data.get("result")

    def _sample(self, pair: Any, at: datetime) -> Observation:
        try:
            stamp, raw = float(pair[0]), float(pair[1])
        except (TypeError, ValueError, IndexError):
            return Observation.error("malformed sample")
        when = datetime.fromtimestamp(stamp, UTC)
        if not math.isfinite(raw):
            return Observation.no_data(f"value is {raw}")
        if (at - when).total_seconds() > self._stale_after:
            return Observation.no_data(f"stale: sample from {when.isoformat()}")
        return Observation(ObservationStatus.OK, value=raw, sample_time=when)
