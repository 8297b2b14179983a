"""Ask the metric provider for every guardrail's numbers, for both variants, and judge them.

Queries are rendered from the guardrail's templates (or the provider's builtin ones) with each
variant's variables. Sequential tests and label guardrails get cumulative counts since the
rollout began; the other rules get the analysis window. The incumbent is queried only by rules that compare with it.
Without a provider (or a builtin), every guardrail concerned is inconclusive, saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial

from controller.api.models import Guardrail, ModelRef, ModelRolloutSpec, ModelRolloutStatus, Verdict
from controller.core.engine import analysis_window
from controller.core.judge import Cause, GuardrailData, Judgement, VariantData, judge
from controller.core.observation import Observation
from controller.metrics.base import MetricProvider
from controller.metrics.builtins import BuiltinQueries
from controller.metrics.templates import TemplateError, render, variables_for


def queries_of(guardrail: Guardrail, provider: MetricProvider) -> BuiltinQueries | str:
    """The guardrail's query templates, or why there are none."""
    metric = guardrail.metric
    if metric.builtin is not None:
        return provider.builtins.get(metric.builtin) or f"the metric provider has no builtin {metric.builtin}"
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
    def ask(template: str | None, query: Callable[[str], Observation]) -> Observation | None:
        try:
            return None if template is None else query(render(template, variables))
        except TemplateError as exc:
            return Observation.error(f"query template: {exc}")

    scalar = partial(provider.scalar, at=at)
    if guardrail.sequential is not None:
        return VariantData(errors=ask(queries.errors, scalar), total=ask(queries.total, scalar))
    if guardrail.drift is not None:
        vector = partial(provider.vector, label=queries.distribution_label or "le", at=at)
        return VariantData(distribution=ask(queries.distribution, vector))
    return VariantData(value=ask(queries.value, scalar), samples=ask(queries.samples, scalar))


def observe_and_judge(
    *,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    provider: MetricProvider | str,
    namespace: str,
    pair: tuple[ModelRef, ModelRef],
    now: datetime,
) -> dict[str, Judgement]:
    """`pair` is (incumbent, candidate); `provider` a message when the rollout has none: then every
    guardrail is inconclusive with it."""
    incumbent, candidate = pair
    if isinstance(provider, str):
        return {g.name: Judgement(Verdict.INCONCLUSIVE, provider, cause=Cause.ERROR) for g in spec.guardrails}
    judgements: dict[str, Judgement] = {}
    for guardrail in spec.guardrails:
        queries = queries_of(guardrail, provider)
        if isinstance(queries, str):
            judgements[guardrail.name] = Judgement(Verdict.INCONCLUSIVE, queries, cause=Cause.ERROR)
            continue
        # Labels trickle in long after their predictions: label guardrails count since the rollout began.
        cumulative = guardrail.sequential is not None or guardrail.labelled
        window = analysis_window(spec, status, now, cumulative=cumulative)

        def variables(model: ModelRef, variant: str, window: str = window) -> dict[str, str]:
            return variables_for(model.name, model.version, variant, namespace, window)

        cand = _variant(provider, queries, guardrail, variables(candidate, "candidate"), now)
        compares = guardrail.absolute is None
        inc = _variant(provider, queries, guardrail, variables(incumbent, "incumbent"), now) if compares else VariantData()
        judgements[guardrail.name] = judge(guardrail, GuardrailData(candidate=cand, incumbent=inc))
    return judgements
