"""Ask the metric provider for every guardrail's numbers, for both variants, and judge them.

Queries are rendered from the guardrail's templates (or the provider's builtin ones) with each
variant's variables. Sequential tests, label guardrails and ShadowDisagreement get cumulative
counts since the rollout (or its shadow) began (core.engine.cumulative); the other rules get the
analysis window. The incumbent is queried only by rules that compare with it.
Without a provider (or a builtin), every guardrail concerned is inconclusive, saying why.
LLM builtins are asked of the provider per variant: their names come from `metric.llmMetrics`,
and the cost builtin's from each variant's own price (`metric.prices`), so the two variants'
queries may differ (one priced per token, the other per replica-hour).
Builtins judged on the analysis window are asked once for every model and rollout at once when
the controller batches (`batches`; metrics/batch.py says what that changes and what it does not).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial

from controller.api.duration import parse_duration
from controller.api.models import (
    LLM_BUILTINS,
    BuiltinMetric,
    Guardrail,
    ModelPrice,
    ModelRef,
    ModelRolloutSpec,
    ModelRolloutStatus,
    Verdict,
)
from controller.core.engine import analysis_window, cumulative
from controller.core.judge import Cause, GuardrailData, Judgement, VariantData, judge
from controller.core.observation import Observation
from controller.metrics.base import MetricProvider
from controller.metrics.batch import QueryBatches, for_model
from controller.metrics.builtins import BuiltinQueries
from controller.metrics.llm import price_variables
from controller.metrics.templates import TemplateError, render, variables_for

# The key of a segment whose series lack the segment label (requests nobody labelled).
UNLABELLED = "(none)"


def queries_of(guardrail: Guardrail, provider: MetricProvider, model: ModelRef) -> BuiltinQueries | str:
    """The guardrail's query templates for one variant's `model`, or why there are none. A
    segmented guardrail's own queries must aggregate `by (<segmentBy>)` themselves
    (docs/guardrails.md)."""
    metric = guardrail.metric
    if metric.builtin in LLM_BUILTINS and guardrail.segment_by is not None:
        return f"builtin {metric.builtin} cannot be segmented: give a query that aggregates by ({guardrail.segment_by})"
    if metric.builtin in LLM_BUILTINS:
        return provider.llm_builtin(metric.builtin, metric.llm_metrics, _price(guardrail, model))
    if metric.builtin is not None:
        if guardrail.segment_by is not None:
            found = provider.builtins_by(guardrail.segment_by).get(metric.builtin)
            return found or f"the metric provider cannot segment builtin {metric.builtin}"
        return provider.builtins.get(metric.builtin) or f"the metric provider has no builtin {metric.builtin}"
    return BuiltinQueries(
        value=metric.query,
        samples=metric.samples_query,
        errors=metric.errors_query,
        total=metric.total_query,
        distribution=metric.distribution_query,
        distribution_label=metric.distribution_label or "le",
    )


def _price(guardrail: Guardrail, model: ModelRef) -> ModelPrice | None:
    return next((p for p in guardrail.metric.prices or [] if p.model == model.name), None)


def _variables(guardrail: Guardrail, model: ModelRef, variables: dict[str, str]) -> dict[str, str] | str:
    """The query variables, with the model's price for the cost builtin; a message if it has none."""
    if guardrail.metric.builtin is not BuiltinMetric.COST_PER_1K_OUTPUT_TOKENS:
        return variables
    price = _price(guardrail, model)
    if price is None:
        return f"no price for model {model.name} in guardrail {guardrail.name}'s metric.prices"
    return {**variables, **price_variables(price)}


def _plan(
    guardrail: Guardrail, provider: MetricProvider, model: ModelRef, variables: dict[str, str]
) -> tuple[BuiltinQueries, dict[str, str]] | str:
    """One variant's query templates and the variables to fill them with, or why there are none."""
    filled = _variables(guardrail, model, variables)
    if isinstance(filled, str):
        return filled
    queries = queries_of(guardrail, provider, model)
    return queries if isinstance(queries, str) else (queries, filled)


def _variant(
    provider: MetricProvider, queries: BuiltinQueries, guardrail: Guardrail, variables: dict[str, str], at: datetime
) -> VariantData:
    def ask(template: str | None, query: Callable[[str], Observation]) -> Observation | None:
        try:
            return None if template is None else query(render(template, variables))
        except TemplateError as exc:
            return Observation.error(f"query template: {exc}")

    scalar: Callable[[str], Observation] = partial(provider.scalar, at=at)
    if guardrail.segment_by is not None:
        # One query per variant and metric, by segment: every rule reads vectors keyed by its value.
        scalar = partial(provider.vector, label=guardrail.segment_by, at=at, unlabelled=UNLABELLED)
    if guardrail.sequential is not None:
        return VariantData(errors=ask(queries.errors, scalar), total=ask(queries.total, scalar))
    if guardrail.drift is not None:
        label = queries.distribution_label or "le"
        vector: Callable[[str], Observation] = partial(provider.vector, label=label, at=at)
        if guardrail.segment_by is not None:
            vector = partial(provider.grouped, label=label, by=guardrail.segment_by, at=at, unlabelled=UNLABELLED)
        return VariantData(distribution=ask(queries.distribution, vector))
    return VariantData(value=ask(queries.value, scalar), samples=ask(queries.samples, scalar))


def _batchable(guardrail: Guardrail, provider: MetricProvider, *, cumulative: bool) -> BuiltinQueries | None:
    """The guardrail's by-model queries when one query can serve every rollout (metrics/batch.py)."""
    builtin = guardrail.metric.builtin
    if builtin is None or builtin in LLM_BUILTINS or guardrail.segment_by is not None or cumulative:
        return None
    return provider.builtins_by_model.get(builtin)


def _batched_variant(
    batches: QueryBatches, provider: MetricProvider, queries: BuiltinQueries, guardrail: Guardrail, model: str,
    window: str, at: datetime,
) -> VariantData:  # fmt: skip
    def ask(template: str | None, label: str | None = None) -> Observation | None:
        if template is None:
            return None
        try:
            query = render(template, {"window": window})
        except TemplateError as exc:
            return Observation.error(f"query template: {exc}")
        return for_model(batches.ask(provider, query, at=at, label=label), model)

    if guardrail.drift is not None:
        return VariantData(distribution=ask(queries.distribution, queries.distribution_label or "le"))
    return VariantData(value=ask(queries.value), samples=ask(queries.samples))


def observe_and_judge(
    *,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    provider: MetricProvider | str,
    namespace: str,
    rollout: str,
    pair: tuple[ModelRef, ModelRef],
    now: datetime,
    batches: QueryBatches | None = None,
) -> dict[str, Judgement]:
    """`pair` is (incumbent, candidate) of the ModelRollout `rollout`; `provider` a message when
    the rollout has none: then every guardrail is inconclusive with it."""
    incumbent, candidate = pair
    if isinstance(provider, str):
        return {g.name: Judgement(Verdict.INCONCLUSIVE, provider, cause=Cause.ERROR) for g in spec.guardrails}
    judgements: dict[str, Judgement] = {}
    previous = {gs.name: gs.segments for gs in status.guardrails}
    for guardrail in spec.guardrails:
        since_start = cumulative(guardrail)
        window = analysis_window(spec, status, now, cumulative=since_start)
        compares = guardrail.absolute is None
        batched = None if batches is None else _batchable(guardrail, provider, cumulative=since_start)
        if batches is not None and batched is not None:
            at = batches.evaluation_time(now, parse_duration(spec.analysis.interval).total_seconds())
            cand = _batched_variant(batches, provider, batched, guardrail, candidate.name, window, at)
            inc = (
                _batched_variant(batches, provider, batched, guardrail, incumbent.name, window, at)
                if compares
                else VariantData()
            )
            judgements[guardrail.name] = judge(
                guardrail, GuardrailData(candidate=cand, incumbent=inc), previous.get(guardrail.name)
            )
            continue
        asked = [(candidate, "candidate"), *([(incumbent, "incumbent")] if compares else [])]
        plans = [
            _plan(
                guardrail,
                provider,
                model,
                variables_for(
                    model.name, model.version, variant, namespace, window, rollout=rollout, incumbent=incumbent.name
                ),
            )
            for model, variant in asked
        ]
        problem = next((plan for plan in plans if isinstance(plan, str)), None)
        ready = [plan for plan in plans if not isinstance(plan, str)]
        if problem is not None:
            judgements[guardrail.name] = Judgement(Verdict.INCONCLUSIVE, problem, cause=Cause.ERROR)
            continue
        (cand_queries, cand_variables), *rest = ready
        cand = _variant(provider, cand_queries, guardrail, cand_variables, now)
        inc = _variant(provider, rest[0][0], guardrail, rest[0][1], now) if compares else VariantData()
        judgements[guardrail.name] = judge(
            guardrail, GuardrailData(candidate=cand, incumbent=inc), previous.get(guardrail.name)
        )
    return judgements
