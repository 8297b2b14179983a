"""Builtin guardrail metrics, from conventional model-server metric names (docs/metrics.md).

A model server exports, labelled with `model`:
- `model_requests_total{model, code}`: requests by HTTP status code (errors are 5xx);
- `model_request_duration_seconds_bucket{model, le}`: latency histogram;
- `model_prediction_bucket{model, le}`: histogram of the model's predicted score.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.api.models import BuiltinMetric

_REQ = 'model_requests_total{model="{{model}}"}'
_ERR = 'model_requests_total{model="{{model}}",code=~"5.."}'


@dataclass(frozen=True)
class BuiltinQueries:
    value: str | None = None
    samples: str | None = None
    errors: str | None = None
    total: str | None = None
    distribution: str | None = None
    distribution_label: str | None = None


_BUILTINS = {
    BuiltinMetric.ERROR_RATE: BuiltinQueries(
        # A model that never failed has no 5xx series: count that as 0 errors, while no
        # requests at all still yields no result (no data, never a pass).
        value=f"(sum(increase({_ERR}[{{{{window}}}}])) or on() vector(0)) / sum(increase({_REQ}[{{{{window}}}}]))",
        samples=f"sum(increase({_REQ}[{{{{window}}}}]))",
        errors=f"sum(increase({_ERR}[{{{{window}}}}])) or on() vector(0)",
        total=f"sum(increase({_REQ}[{{{{window}}}}]))",
    ),
    BuiltinMetric.LATENCY_P99: BuiltinQueries(
        value='histogram_quantile(0.99, sum by (le) (rate(model_request_duration_seconds_bucket{model="{{model}}"}[{{window}}])))',
        samples=f"sum(increase({_REQ}[{{{{window}}}}]))",
    ),
    BuiltinMetric.PREDICTION_DISTRIBUTION: BuiltinQueries(
        distribution='sum by (le) (increase(model_prediction_bucket{model="{{model}}"}[{{window}}]))',
        distribution_label="le",
    ),
}


def builtin_queries(metric: BuiltinMetric) -> BuiltinQueries:
    return _BUILTINS[metric]
