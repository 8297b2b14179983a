"""Prometheus' builtin guardrail metrics: PromQL templates over conventional model-server names.

Most teams want the same three guardrails (errors, tail latency, prediction drift); writing
their PromQL by hand in every ModelRollout invites subtle mistakes (a rate of a ratio, a
quantile of summed quantiles, a missing `or vector(0)`). A model server that exports these
names, each labelled with `model` (the ModelRef name), gets them with `builtin: <name>`:

- `model_requests_total{model, code}`: counter of requests by HTTP status code; errors are
  `code=~"5.."`;
- `model_request_duration_seconds_bucket{model, le}`: request latency histogram (seconds);
- `model_prediction_bucket{model, le}`: histogram of the model's predicted score;
- `model_feedback_total{model, outcome}`: labelled predictions by outcome (`correct` or
  `incorrect`), counted when the label arrives, for the model that made the prediction;
- `model_feedback_loss_sum{model}` and `model_feedback_loss_count{model}`: a regressor's loss
  (e.g. squared error) summed over its labelled predictions, and their count (a Summary).

ShadowDisagreement reads the comparator's counter (controller/comparator, docs/shadow.md):

- `modelrollout_shadow_comparisons_total{namespace, rollout, model, reference, variant, outcome}`:
  mirrored requests compared, by outcome (`agree`, `disagree`, `candidate_error`,
  `incumbent_error`); `model` is the model whose answer was judged against `reference`'s. For
  variant `candidate` that is the candidate against the incumbent; for variant `incumbent` the
  incumbent against itself (the noise floor), so one template serves both variants and a
  sequential rule tests the candidate's disagreement against the noise floor. A candidate's
  error (`candidate_error`) is a disagreement; the incumbent's errors are no comparison.

The label builtins (LabelledErrorRate, LabelledLoss) are judged on counts since the rollout
began, not on the analysis window: labels trickle in long after the predictions (docs/labels.md).

The templates are filled per variant by metrics.templates; docs/metrics.md lists them verbatim.
Builtins are kept per provider (`MetricProvider.builtins`): these are PrometheusProvider's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.api.models import BuiltinMetric

_WINDOW = "[{{window}}]"
_REQUESTS = 'model_requests_total{model="{{model}}"}' + _WINDOW
_ERRORS = 'model_requests_total{model="{{model}}",code=~"5.."}' + _WINDOW
_LATENCY = 'model_request_duration_seconds_bucket{model="{{model}}"}' + _WINDOW
# The +Inf bucket counts every observation: the requests behind the latency quantile.
_LATENCY_COUNT = 'model_request_duration_seconds_bucket{model="{{model}}",le="+Inf"}' + _WINDOW
_PREDICTIONS = 'model_prediction_bucket{model="{{model}}"}' + _WINDOW
_FEEDBACK = 'model_feedback_total{model="{{model}}"}' + _WINDOW
_WRONG = 'model_feedback_total{model="{{model}}",outcome="incorrect"}' + _WINDOW
_LOSS_SUM = 'model_feedback_loss_sum{model="{{model}}"}' + _WINDOW
_LOSS_COUNT = 'model_feedback_loss_count{model="{{model}}"}' + _WINDOW
# One rollout's comparisons of this model against its incumbent: two rollouts in one namespace
# that share a model name (or a model judged against another incumbent) never add up.
_SHADOW = (
    'modelrollout_shadow_comparisons_total{namespace="{{namespace}}",rollout="{{rollout}}",model="{{model}}",'
    'reference="{{incumbent}}",variant="{{variant}}"'
)
# Judged: the reference (the incumbent's first answer) answered. A candidate that errs where the
# incumbent answers did not give the incumbent's answer: a disagreement (else a candidate that
# times out or answers non-JSON exactly where it would be wrong would pass). Only the reference's
# own errors (incumbent_error) are no comparison. The noise floor's second incumbent call counts
# its errors as incumbent_error: left out alike, as the incumbent is not on trial.
_COMPARED = _SHADOW + ',outcome=~"agree|disagree|candidate_error"}' + _WINDOW
_DISAGREED = _SHADOW + ',outcome=~"disagree|candidate_error"}' + _WINDOW

# A model that never failed has no 5xx series at all: `or on() vector(0)` counts that as zero
# errors. A model without requests still gives no result (or NaN from 0/0): no data, never a pass.
_ERROR_COUNT = f"sum(increase({_ERRORS})) or on() vector(0)"
_REQUEST_COUNT = f"sum(increase({_REQUESTS}))"
# As for requests: a model never wrong has no incorrect series; a model without labels gives no
# result (no data, never a pass).
_WRONG_COUNT = f"sum(increase({_WRONG})) or on() vector(0)"
_FEEDBACK_COUNT = f"sum(increase({_FEEDBACK}))"
# No disagreement yet has no series: zero. No comparison at all stays no data, never a pass.
_DISAGREED_COUNT = f"sum(increase({_DISAGREED})) or on() vector(0)"
_COMPARED_COUNT = f"sum(increase({_COMPARED}))"


@dataclass(frozen=True)
class BuiltinQueries:
    """The query templates of one guardrail metric; None where a query does not apply."""

    value: str | None = None
    samples: str | None = None
    errors: str | None = None
    total: str | None = None
    distribution: str | None = None
    distribution_label: str | None = None


PROMQL: Mapping[BuiltinMetric, BuiltinQueries] = {
    BuiltinMetric.ERROR_RATE: BuiltinQueries(
        # The ratio of sums, never the average of per-series ratios.
        value=f"(sum(rate({_ERRORS})) or on() vector(0)) / sum(rate({_REQUESTS}))",
        samples=_REQUEST_COUNT,
        errors=_ERROR_COUNT,
        total=_REQUEST_COUNT,
    ),
    BuiltinMetric.LATENCY_P99: BuiltinQueries(
        # Buckets are summed across series (pods) first: a quantile of quantiles means nothing.
        value=f"histogram_quantile(0.99, sum by (le) (rate({_LATENCY})))",
        samples=f"sum(increase({_LATENCY_COUNT}))",
    ),
    BuiltinMetric.PREDICTION_DISTRIBUTION: BuiltinQueries(
        distribution=f"sum by (le) (increase({_PREDICTIONS}))",
        distribution_label="le",
    ),
    BuiltinMetric.LABELLED_ERROR_RATE: BuiltinQueries(
        value=f"(sum(increase({_WRONG})) or on() vector(0)) / sum(increase({_FEEDBACK}))",
        samples=_FEEDBACK_COUNT,
        errors=_WRONG_COUNT,
        total=_FEEDBACK_COUNT,
    ),
    BuiltinMetric.LABELLED_LOSS: BuiltinQueries(
        value=f"sum(increase({_LOSS_SUM})) / sum(increase({_LOSS_COUNT}))",
        samples=f"sum(increase({_LOSS_COUNT}))",
    ),
    BuiltinMetric.SHADOW_DISAGREEMENT: BuiltinQueries(
        value=f"({_DISAGREED_COUNT}) / {_COMPARED_COUNT}",
        samples=_COMPARED_COUNT,
        errors=_DISAGREED_COUNT,
        total=_COMPARED_COUNT,
    ),
}


# The builtins of many rollouts in one query each (metrics/batch.py): the same PromQL as above,
# without the `{model="{{model}}"}` matcher and aggregated `by (model)`, so each model's result is
# the one its own query would give. A model without a 5xx series gets 0 errors from its requests
# times 0 (as `or on() vector(0)` above); a model without requests has no series (no data); an
# idle one 0/0 = NaN (no data): each only for that model. Only the builtins judged on the
# analysis window are here: counts since the rollout began (sequential rules, label guardrails)
# differ per rollout in their window, so they keep their own queries.
_ALL_REQUESTS = "model_requests_total" + _WINDOW
_ALL_ERRORS = 'model_requests_total{code=~"5.."}' + _WINDOW
BY_MODEL: Mapping[BuiltinMetric, BuiltinQueries] = {
    BuiltinMetric.ERROR_RATE: BuiltinQueries(
        value=f"(sum by (model) (rate({_ALL_ERRORS})) or sum by (model) (rate({_ALL_REQUESTS})) * 0) "
        f"/ sum by (model) (rate({_ALL_REQUESTS}))",
        samples=f"sum by (model) (increase({_ALL_REQUESTS}))",
    ),
    BuiltinMetric.LATENCY_P99: BuiltinQueries(
        value=f"histogram_quantile(0.99, sum by (le, model) (rate(model_request_duration_seconds_bucket{_WINDOW})))",
        samples=f'sum by (model) (increase(model_request_duration_seconds_bucket{{le="+Inf"}}{_WINDOW}))',
    ),
    BuiltinMetric.PREDICTION_DISTRIBUTION: BuiltinQueries(
        distribution=f"sum by (le, model) (increase(model_prediction_bucket{_WINDOW}))",
        distribution_label="le",
    ),
}


def by_segment(label: str) -> Mapping[BuiltinMetric, BuiltinQueries]:
    """The builtins per value of `label` (a guardrail's segmentBy), one query per variant: every
    aggregation keeps the label (a distribution: by its bucket and the label). A segment without errors has no 5xx series; `or`
    with the segment's requests times 0 gives it zero errors, while a segment without requests
    stays absent (no data). Requests without the label are one segment (its value empty). Values
    keep only segments with requests in the window (`> 0`): 0/0 in one idle segment would otherwise
    be NaN, and no data for every segment."""
    by = f"sum by ({label})"
    errors, requests = f"{by} (increase({_ERRORS}))", f"{by} (increase({_REQUESTS}))"
    return {
        BuiltinMetric.ERROR_RATE: BuiltinQueries(
            value=f"({by} (rate({_ERRORS})) or {by} (rate({_REQUESTS})) * 0) / ({by} (rate({_REQUESTS})) > 0)",
            samples=requests,
            errors=f"{errors} or {requests} * 0",
            total=requests,
        ),
        BuiltinMetric.LATENCY_P99: BuiltinQueries(
            value=f"histogram_quantile(0.99, sum by (le, {label}) (rate({_LATENCY}))) "
            f"and on ({label}) ({by} (rate({_LATENCY_COUNT})) > 0)",
            samples=f"{by} (increase({_LATENCY_COUNT}))",
        ),
        BuiltinMetric.PREDICTION_DISTRIBUTION: BuiltinQueries(
            distribution=f"sum by (le, {label}) (increase({_PREDICTIONS}))",
            distribution_label="le",
        ),
    }
