"""Query templates and the builtin metrics' queries: filled exactly, or refused with a reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controller.api.models import BuiltinMetric
from controller.metrics.builtins import BY_MODEL, PROMQL, BuiltinQueries, by_segment
from controller.metrics.templates import VARIABLES, TemplateError, render, variables_for

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
CANDIDATE = variables_for("fraud-v8", "8.0.1", "candidate", "payments", "5m", rollout="r", incumbent="inc")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('up{model="{{model}}"}', 'up{model="fraud-v8"}'),
        ('up{model="{{ model }}"}', 'up{model="fraud-v8"}'),
        ('up{model="{{  model}}"}', 'up{model="fraud-v8"}'),
        ("rate(x[{{window}}]) / rate(y[{{ window }}])", "rate(x[5m]) / rate(y[5m])"),
        (
            'x{model="{{model}}",version="{{version}}",variant="{{variant}}",namespace="{{namespace}}"}',
            'x{model="fraud-v8",version="8.0.1",variant="candidate",namespace="payments"}',
        ),
        ("vector(1)", "vector(1)"),
        ('x{a="{b}"}', 'x{a="{b}"}'),
    ],
)
def test_render_fills_every_placeholder(template: str, expected: str) -> None:
    assert render(template, CANDIDATE) == expected


@pytest.mark.parametrize("typo", ["modle", "windw", "Model", "variant_name"])
def test_unknown_placeholder_is_an_error_naming_it(typo: str) -> None:
    with pytest.raises(TemplateError, match=typo) as caught:
        render(f'up{{model="{{{{{typo}}}}}"}}', CANDIDATE)
    assert isinstance(caught.value, ValueError)
    assert "model" in str(caught.value)  # and it says what is known


@pytest.mark.parametrize("template", ["up{model='{{ model-name }}'}", "up{model='{{model'}", "x{{}}", "{{ 1x }}"])
def test_malformed_placeholder_is_an_error(template: str) -> None:
    with pytest.raises(TemplateError, match="malformed placeholder"):
        render(template, CANDIDATE)


def test_values_are_not_templates_themselves() -> None:
    variables = variables_for("m", "{{window}}", "candidate", "ns", "1m", rollout="r", incumbent="inc")
    assert render('x{version="{{version}}"}', variables) == 'x{version="{{window}}"}'


def test_variables_for_a_variant() -> None:
    assert variables_for("fraud-v7", None, "incumbent", "payments", "10m", rollout="r", incumbent="inc") == {
        "model": "fraud-v7",
        "version": "",
        "variant": "incumbent",
        "namespace": "payments",
        "window": "10m",
        "rollout": "r",
        "incumbent": "inc",
    }
    assert set(CANDIDATE) == set(VARIABLES)


# -- builtin metrics --------------------------------------------------------------------------


def _templates(queries: BuiltinQueries) -> list[str]:
    return [q for q in (queries.value, queries.samples, queries.errors, queries.total, queries.distribution) if q]


def outcomes(query: str) -> list[set[str]]:
    """The outcomes each selector of the comparator's counter in `query` matches."""
    found = re.findall(r'outcome(=~?)"([^"]*)"', query)
    return [set(value.split("|")) if op == "=~" else {value} for op, value in found]


def test_shadow_disagreement_counts_a_candidate_error_as_a_disagreement() -> None:
    """Review finding 4: a candidate that errs (timeout, non-2xx, non-JSON) exactly where it would
    be wrong must not pass: its errors are disagreements; only the incumbent's are no comparison."""
    q = PROMQL[BuiltinMetric.SHADOW_DISAGREEMENT]
    assert q.value and q.errors and q.total and q.samples
    judged, disagreed = {"agree", "disagree", "candidate_error"}, {"disagree", "candidate_error"}
    assert outcomes(q.total) == outcomes(q.samples) == [judged]
    assert outcomes(q.errors) == [disagreed]
    assert outcomes(q.value) == [disagreed, judged]


def test_shadow_disagreement_is_one_rollouts_against_its_incumbent() -> None:
    """Review finding 10: two rollouts of a namespace sharing a model name must not add up."""
    for variant, model in (("candidate", "fraud-v2"), ("incumbent", "fraud-v1")):
        variables = variables_for(model, None, variant, "payments", "5m", rollout="fraud", incumbent="fraud-v1")
        for template in _templates(PROMQL[BuiltinMetric.SHADOW_DISAGREEMENT]):
            query = render(template, variables)
            selectors = re.findall(r"modelrollout_shadow_comparisons_total\{([^}]*)\}", query)
            assert selectors and all(
                f'rollout="fraud",model="{model}",reference="fraud-v1",variant="{variant}"' in s for s in selectors
            )


@pytest.mark.parametrize("metric", sorted(PROMQL))
def test_every_builtin_renders_with_the_standard_variables(metric: BuiltinMetric) -> None:
    queries = PROMQL[metric]
    assert _templates(queries)
    for template in _templates(queries):
        rendered = render(template, CANDIDATE)
        assert "{{" not in rendered
        assert 'model="fraud-v8"' in rendered
        assert "[5m]" in rendered


def test_builtin_shapes() -> None:
    error_rate = PROMQL[BuiltinMetric.ERROR_RATE]
    assert error_rate.value and error_rate.samples and error_rate.errors and error_rate.total
    assert error_rate.distribution is None
    assert 'code=~"5.."' in error_rate.value and 'code=~"5.."' in error_rate.errors
    assert "increase(" in error_rate.errors and "increase(" in error_rate.total

    latency = PROMQL[BuiltinMetric.LATENCY_P99]
    assert latency.value is not None and latency.value.startswith("histogram_quantile(0.99, sum by (le) (")
    assert latency.samples and latency.errors is None and latency.distribution is None

    distribution = PROMQL[BuiltinMetric.PREDICTION_DISTRIBUTION]
    assert distribution.distribution == 'sum by (le) (increase(model_prediction_bucket{model="{{model}}"}[{{window}}]))'
    assert distribution.distribution_label == "le"
    assert distribution.value is None and distribution.samples is None


@pytest.mark.parametrize("metric", sorted(PROMQL))
def test_docs_show_the_exact_builtin_queries(metric: BuiltinMetric) -> None:
    docs = DOCS.read_text()
    for template in _templates(PROMQL[metric]):
        assert template in docs, f"docs/metrics.md does not show {metric.value}'s query {template}"


@pytest.mark.parametrize("metric", sorted(BY_MODEL))
def test_docs_show_the_exact_batched_builtin_queries(metric: BuiltinMetric) -> None:
    docs = DOCS.read_text()
    for template in _templates(BY_MODEL[metric]):
        assert template in docs, f"docs/metrics.md does not show {metric.value}'s batched query {template}"


@pytest.mark.parametrize("metric", list(by_segment("region")))
def test_docs_show_the_exact_segmented_builtin_queries(metric: BuiltinMetric) -> None:
    docs = DOCS.read_text()
    for template in _templates(by_segment("region")[metric]):
        assert template in docs, f"docs/metrics.md does not show {metric.value}'s query by region {template}"


def test_segmented_builtins_keep_the_label_in_every_aggregation() -> None:
    for queries in by_segment("tenant").values():
        for template in _templates(queries):
            assert "sum(" not in template and "vector(0)" not in template
            groups = re.findall(r"sum by \(([^)]*)\)", template)
            assert groups and all("tenant" in g.split(", ") for g in groups), template
    distribution = by_segment("tenant")[BuiltinMetric.PREDICTION_DISTRIBUTION]
    assert distribution.distribution_label == "le" and "sum by (le, tenant)" in (distribution.distribution or "")
