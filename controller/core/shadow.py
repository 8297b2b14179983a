"""The shadow phase before step 1, as the engine sees it: one more step, at 0% and mirrored.

During shadow the candidate serves no user: the router keeps 100% of the weight on the incumbent
and mirrors `spec.shadow.percent` of the requests to the comparator, which asks both models and
counts their agreement (docs/shadow.md). Rather than a second state machine, the engine runs the
shadow as a step of its own through the same code that runs canary steps: `phase_spec` gives the
spec in force, whose only step is {weight 0, hold shadow.duration} and whose guardrails are the
shadow's. So holds, the no-data/error policies, the inconclusive limit, the progress deadline,
pauses, gates and human requests mean in shadow what they mean in a canary step, and a controller
restarted mid-shadow resumes it from status like any step. What is shadow's own: the mirror (a
step is "at weight" only once the router reads back the mirror too), the end (a pass enters the
canary's step 1; a failure rolls back a candidate that answered no user) and `status.shadow`, the
agreement evidence kept after the canary's guardrails replace the shadow's.

Pure: imports only `api/` and the judge's arithmetic.
"""

from __future__ import annotations

import hashlib
import json

from controller.api.models import (
    ACTIVE,
    MAX_PENDING_MIRRORS,
    AfterLastStep,
    BuiltinMetric,
    Canary,
    ComparatorRef,
    GuardrailStatus,
    ModelRolloutSpec,
    ModelRolloutStatus,
    Shadow,
    ShadowState,
    ShadowStatus,
    Step,
)
from controller.core.judge import events


def shadowing(status: ModelRolloutStatus) -> bool:
    """The rollout of record is in its shadow phase (mirroring, no user traffic on the candidate)."""
    return status.shadow is not None and status.shadow.state is ShadowState.MIRRORING and status.phase in ACTIVE


def phase_spec(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> ModelRolloutSpec:
    """The spec in force now: in shadow, one step at 0% held `shadow.duration`, judged by the
    shadow's guardrails; otherwise `spec` itself. `analysis.endStepsEarly` is the canary's: the
    shadow's duration is a minimum (what the comparator sees in the first minutes is not the day's
    traffic), so shadow never ends before it."""
    if spec.shadow is None or not shadowing(status):
        return spec
    step = Step(weight=0, hold=spec.shadow.duration)
    canary = Canary(steps=[step], after_last_step=AfterLastStep.PROMOTE)
    analysis = spec.analysis.model_copy(update={"end_steps_early": False})
    return spec.model_copy(update={"canary": canary, "guardrails": list(spec.shadow.guardrails), "analysis": analysis})


def wanted_mirror(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> int:
    """Percent of requests the router should mirror to the comparator now: 0 outside shadow."""
    return spec.shadow.percent if spec.shadow is not None and shadowing(status) else 0


def mirrored(status: ModelRolloutStatus) -> int:
    """Percent mirrored as last read back (0 when never mirrored)."""
    return (status.shadow.mirror_percent or 0) if status.shadow is not None else 0


def definition(spec: Shadow) -> str:
    """Digest of what a comparison means: where requests are mirrored, the comparison rule, the
    noise floor and the model call timeout (a timeout is a candidate's error, a disagreement). The
    counts of a shadow are judged since it began, so they must all mean the same: the comparator
    compares only under the definition of record, and a change restarts shadow. The share mirrored,
    the duration, the guardrails and the caps change nothing a count means (the caps only drop)."""
    meaning = {
        "comparator": spec.comparator.wire(),
        "comparison": spec.comparison.wire(),
        "noiseFloor": spec.noise_floor.wire() if spec.noise_floor is not None else None,
        "timeout": spec.timeout,
    }
    return hashlib.sha256(json.dumps(meaning, sort_keys=True).encode()).hexdigest()[:16]


def redefined(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> bool:
    """In shadow, spec.shadow now means other comparisons than the shadow of record (a status
    without a definition, written before it existed, takes the spec's as its own)."""
    recorded = status.shadow.definition if status.shadow is not None else None
    return (
        spec.shadow is not None and shadowing(status) and recorded is not None and recorded != definition(spec.shadow)
    )


def stale_mirrors(status: ModelRolloutStatus, spec: ModelRolloutSpec) -> list[ComparatorRef]:
    """At a new candidate's (or a restarted shadow's) start: the comparators whose mirror the
    route may still hold (the last shadow's, unless read back gone, and those already pending), but
    the one the new shadow will own itself. The newest are kept when there are too many."""
    pending = list(status.pending_mirror_removals)
    last = status.shadow
    if last is not None and last.comparator is not None and last.mirror_percent != 0:
        pending.append(last.comparator)
    mine = spec.shadow.comparator if spec.shadow is not None else None
    unique = [c for i, c in enumerate(pending) if c != mine and c not in pending[:i]]
    return unique[-MAX_PENDING_MIRRORS:]


def summarise(spec: ModelRolloutSpec, shadow: ShadowStatus, guardrails: list[GuardrailStatus]) -> None:
    """Copy the ShadowDisagreement guardrail's evidence into `shadow` (the first such guardrail):
    comparisons, disagreements, their rate, the noise floor and the comparisons still needed."""
    if spec.shadow is None:
        return
    names = [g.name for g in spec.shadow.guardrails if g.metric.builtin is BuiltinMetric.SHADOW_DISAGREEMENT]
    gs = next((g for g in guardrails if names and g.name == names[0]), None)
    if gs is None:
        return
    e = gs.evidence
    shadow.comparisons = e.candidate_samples
    shadow.rate = e.candidate_value
    shadow.disagreements = events(e, "candidate")
    guardrail = next(g for g in spec.shadow.guardrails if g.name == names[0])
    shadow.noise_floor_rate = e.incumbent_value if guardrail.sequential is not None else None
    shadow.samples_needed = e.samples_needed
    shadow.message = gs.message[:1024]
