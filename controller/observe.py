"""Ask the metric provider for every guardrail's numbers, for both variants, and judge them.

Queries are rendered from the guardrail's templates (or the provider's builtin ones) with each
variant's variables. Sequential tests get cumulative counts since the rollout began; the other
rules get the analysis window. The incumbent is queried only by rules that compare with it.
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

# The key of a segment whose series lack the segment label (requests nobody labelled).
UNLABELLED = "(none)"


def queries_of(guardrail: Guardrail, provider: MetricProvider) -> BuiltinQueries | str:
    """The guardrail's query templates, or why there are none. A segmented guardrail's own queries
    must aggregate `by (<segmentBy>)` themselves (docs/guardrails.md)."""
    metric = guardrail.metric
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
    previous = {gs.name: gs.segments for gs in status.guardrails}
    for guardrail in spec.guardrails:
        queries = queries_of(guardrail, provider)
        if isinstance(queries, str):
            judgements[guardrail.name] = Judgement(Verdict.INCONCLUSIVE, queries, cause=Cause.ERROR)
            continue
        window = analysis_window(spec, status, now, cumulative=guardrail.sequential is not None)

        def variables(model: ModelRef, variant: str, window: str = window) -> dict[str, str]:
            return variables_for(model.name, model.version, variant, namespace, window)

        cand = _variant(provider, queries, guardrail, variables(candidate, "candidate"), now)
        compares = guardrail.absolute is None
        inc = _variant(provider, queries, guardrail, variables(incumbent, "incumbent"), now) if compares else VariantData()
        judgements[guardrail.name] = judge(guardrail, GuardrailData(candidate=cand, incumbent=inc), previous.get(guardrail.name))
    return judgements
