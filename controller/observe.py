"""Ask the metric provider for every guardrail's numbers, for both variants, and judge them.

Queries are rendered from the guardrail's templates (or its builtin's) with each variant's
variables. Sequential tests get cumulative counts since the rollout began; the other rules
get the analysis window. The incumbent is queried only by rules that compare with it.
"""

from __future__ import annotations

from datetime import datetime

from controller.api.models import Guardrail, ModelRef, ModelRolloutSpec, ModelRolloutStatus
from controller.core.engine import analysis_window
from controller.core.judge import GuardrailData, Judgement, VariantData, judge
from controller.core.observation import Observation
from controller.metrics.base import MetricProvider
from controller.metrics.builtins import BuiltinQueries, builtin_queries
from controller.metrics.templates import TemplateError, render, variables_for


def queries_of(guardrail: Guardrail) -> BuiltinQueries:
    metric = guardrail.metric
    if metric.builtin is not None:
        return builtin_queries(metric.builtin)
    return BuiltinQueries(
        value=metric.query,
        samples=metric.samples_query,
        errors=metric.errors_query,
        total=metric.total_query,
        distribution=metric.distribution_query,
        distribution_label=metric.distribution_label or "le",
    )


def _variant(
    provider: MetricProvider, queries: BuiltinQueries, guardrail: Guardrail, variables: dict[str, str], at: datetime
) -> VariantData:
    def scalar(template: str | None) -> Observation | None:
        if template is None:
            return None
        try:
            return provider.scalar(render(template, variables), at=at)
        except TemplateError as exc:
            return Observation.error(f"query template: {exc}")

    def vector(template: str | None) -> Observation | None:
        if template is None:
            return None
        try:
            return provider.vector(render(template, variables), label=queries.distribution_label or "le", at=at)
        except TemplateError as exc:
            return Observation.error(f"query template: {exc}")

    if guardrail.sequential is not None:
        return VariantData(errors=scalar(queries.errors), total=scalar(queries.total))
    if guardrail.drift is not None:
        return VariantData(distribution=vector(queries.distribution))
    return VariantData(value=scalar(queries.value), samples=scalar(queries.samples))


def observe_and_judge(
    *,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    provider: MetricProvider,
    namespace: str,
    incumbent: ModelRef,
    candidate: ModelRef,
    now: datetime,
) -> dict[str, Judgement]:
    judgements: dict[str, Judgement] = {}
    for guardrail in spec.guardrails:
        queries = queries_of(guardrail)
        window = analysis_window(spec, status, now, cumulative=guardrail.sequential is not None)

        def variables(model: ModelRef, variant: str, window: str = window) -> dict[str, str]:
            return variables_for(model.name, model.version, variant, namespace, window)

        cand = _variant(provider, queries, guardrail, variables(candidate, "candidate"), now)
        compares = guardrail.absolute is None
        inc = (
            _variant(provider, queries, guardrail, variables(incumbent, "incumbent"), now)
            if compares
            else VariantData()
        )
        judgements[guardrail.name] = judge(guardrail, GuardrailData(candidate=cand, incumbent=inc))
    return judgements
