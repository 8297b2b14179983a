"""The rollout state machine: decide(input) -> new status + actions + when to look again.

Pure: everything it needs comes in `RolloutInput` (the spec, the status of record, what the
router read back, the judge's verdicts of this analysis, the clock's now) and everything it
wants done goes out as actions the reconciler carries out in order. All state it keeps is in
the returned status, so a restarted controller resumes the same rollout to the same verdict.

Rules it keeps (tests/unit/test_engine_properties.py checks them):
- the candidate's weight never exceeds the current step's weight; no step is skipped;
- a rollback is sticky until the candidate changes; a new candidate resets weights and counters;
- promotion only after every guardrail passed in the step that needs it;
- no data is never a pass; every wait ends in a verdict by the progress deadline.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from controller.api.duration import format_duration, parse_duration
from controller.api.models import (
    ACTIVE,
    ALL_CANDIDATE,
    ALL_INCUMBENT,
    GATE_TYPES,
    MAX_FAILED_CANDIDATES,
    MAX_HISTORY,
    AfterLastStep,
    AnalysisMode,
    BuiltinMetric,
    ComparatorRef,
    Condition,
    DataPolicy,
    DeadlinePolicy,
    Decision,
    ErrorBudget,
    Evidence,
    FailedCandidate,
    GateState,
    Guardrail,
    GuardrailStatus,
    ModelRef,
    ModelRolloutSpec,
    ModelRolloutStatus,
    Phase,
    SegmentEvidence,
    SegmentsStatus,
    ShadowState,
    ShadowStatus,
    Step,
    Verdict,
    WebhookType,
    Weights,
)
from controller.api.reasons import INCONCLUSIVE, Reason
from controller.core import budget, hooks, labels, shadow
from controller.core.judge import PROVIDER_PROBLEMS, Cause, Judgement, check_counts

TERMINAL = (Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED)
# A route we asked to change is re-read soon; a problem a human must fix is retried slowly.
WEIGHT_SETTLE = timedelta(seconds=2)
# Inconclusive analyses in a row (policy Wait) before a Warning Event: the first may be a scrape away.
INCONCLUSIVE_WARN_AFTER = 2
PROBLEM_RETRY = timedelta(seconds=30)
# Inconclusive causes the guardrail's onNoData / onError decide (INSUFFICIENT waits for traffic).
DATA_PROBLEMS = (Cause.NO_DATA, *PROVIDER_PROBLEMS)
FAILED = (Reason.GUARDRAIL_FAILED, Reason.FAILURE_LIMIT_EXCEEDED)


@dataclass(frozen=True)
class SetWeights:
    """Route `weights` between this pair of models (the reconciler records what it reads back)."""

    incumbent: ModelRef
    candidate: ModelRef
    weights: Weights
    # Percent of requests mirrored to `comparator` (the shadow of record's); 0 removes our mirror.
    mirror: int = 0
    comparator: ComparatorRef | None = None
    # Earlier shadows' comparators: any mirror of ours to them is removed with this write.
    stale: tuple[ComparatorRef, ...] = ()


def set_weights(
    status: ModelRolloutStatus, incumbent: ModelRef, candidate: ModelRef, weights: Weights, mirror: int = 0
) -> SetWeights:
    """The write of `weights` for this pair, with the mirrors the status of record owns: its
    shadow's (to `mirror` percent) and the stale ones still to remove. Every write names them
    itself, so a mirror is found by the comparator it was written with, whatever the spec says now."""
    comparator = status.shadow.comparator if status.shadow is not None else None
    return SetWeights(incumbent, candidate, weights, mirror, comparator, tuple(status.pending_mirror_removals))


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Requests:
    """Values of the modelrollout.dev/{promote,abort,retry} annotations.

    A promote value starting with "full" promotes to 100% at once; any other promotes one step.
    """

    promote: str | None = None
    abort: str | None = None
    retry: str | None = None


@dataclass(frozen=True)
class RolloutInput:
    spec: ModelRolloutSpec
    status: ModelRolloutStatus
    now: datetime
    generation: int = 0
    deleting: bool = False
    # What the router read back for the pair in flight; None when nothing is in flight.
    applied: Weights | None = None
    # Percent the router mirrors to the comparator, read back with `applied` (0: no mirror of ours).
    mirrored: int | None = None
    # Of status.pendingMirrorRemovals, those the route still mirrors to (read back with `applied`).
    stale_mirrors: tuple[ComparatorRef, ...] | None = None
    # (reason, message) when the route is missing or malformed: traffic stays put.
    router_problem: tuple[str, str] | None = None
    # The judge's verdicts when an analysis ran in this reconcile (see analysis_due), else None.
    judgements: Mapping[str, Judgement] | None = None
    # What humans asked for through annotations (the CLI sets them); each new value acts once.
    requests: Requests = field(default_factory=lambda: Requests())
    # What gates and rollback hooks answered, and notification deliveries, since the last reconcile.
    answers: tuple[hooks.GateAnswer, ...] = ()
    deliveries: tuple[hooks.DeliveryResult, ...] = ()


@dataclass
class Outcome:
    status: ModelRolloutStatus
    actions: list[SetWeights] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: timedelta | None = None
    # The rollout may be let go (finalizer removed): traffic is back on the incumbent.
    release: bool = False
    # Gates and rollback hooks to ask now (the adapter dedupes asks already in flight).
    asks: list[hooks.Ask] = field(default_factory=list)


def candidate_hash(model: ModelRef) -> str:
    return hashlib.sha256(json.dumps(model.wire(), sort_keys=True).encode()).hexdigest()[:16]


def settling(status: ModelRolloutStatus) -> SetWeights | None:
    """A verdict whose weights the router has not confirmed yet: the write still owed."""
    if status.candidate is None:
        return None
    # A mirror left from the shadow phase (or an earlier one) is owed too: removed at every verdict.
    mirror = shadow.mirrored(status) > 0 or bool(status.pending_mirror_removals)
    if (
        status.phase is Phase.PROMOTED
        and status.previous_incumbent is not None
        and (status.weights != ALL_CANDIDATE or mirror)
    ):
        return set_weights(status, status.previous_incumbent, status.candidate, ALL_CANDIDATE)
    if (
        status.phase is Phase.ROLLED_BACK
        and status.incumbent is not None
        and (status.weights != ALL_INCUMBENT or mirror)
    ):
        return set_weights(status, status.incumbent, status.candidate, ALL_INCUMBENT)
    return None


def pair_in_flight(status: ModelRolloutStatus) -> tuple[ModelRef, ModelRef] | None:
    """The (incumbent, candidate) whose traffic the router must read, or None when idle."""
    if status.phase in ACTIVE and status.incumbent is not None and status.candidate is not None:
        return status.incumbent, status.candidate
    owed = settling(status)
    return (owed.incumbent, owed.candidate) if owed is not None else None


def analysis_due(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, applied: Weights | None, now: datetime, mirrored: int | None = 0
) -> bool:
    """Query the metric providers only when an analysis is due at the weights (and, in shadow, the
    mirror) the step wants. `spec` is the rollout's; in shadow the shadow's step and guardrails apply."""
    if status.candidate_hash != candidate_hash(spec.candidate):
        return False
    wanted_mirror = shadow.wanted_mirror(spec, status)
    spec = shadow.phase_spec(spec, status)
    if status.phase is not Phase.PROGRESSING or spec.paused or status.current_step is None or not spec.guardrails:
        return False
    steps = spec.expanded_steps()
    if status.current_step >= len(steps) or applied != Weights.for_candidate(steps[status.current_step].weight):
        return False
    if (mirrored or 0) != wanted_mirror:
        return False
    since = status.last_analysis or status.step_started
    return since is None or now >= since + parse_duration(spec.analysis.interval)


def cumulative(guardrail: Guardrail) -> bool:
    """Whether a guardrail is judged on counts since the rollout (or its shadow) began rather than
    over the analysis window: sequential tests (their guarantee is over all the evidence), label
    guardrails (labels trickle in long after their predictions) and ShadowDisagreement (the
    comparisons of the whole phase). Their counts never go back (judge.check_counts)."""
    return (
        guardrail.sequential is not None
        or guardrail.labelled
        or guardrail.metric.builtin is BuiltinMetric.SHADOW_DISAGREEMENT
    )


def analysis_window(spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime, *, cumulative: bool) -> str:
    """{{window}} for queries: the analysis window, or since the rollout began for sequential tests."""
    if cumulative and status.rollout_started is not None:
        seconds = max(1, int((now - status.rollout_started).total_seconds()))
        return f"{seconds}s"
    return spec.analysis.window or spec.analysis.interval


@dataclass(frozen=True)
class Assessment:
    """The rollout's outcome from its guardrails' judgements: what to do, why, and the guardrail behind it."""

    action: Literal["advance", "hold", "pause", "rollback"]
    reason: Reason | None = None
    message: str = ""
    guardrail: GuardrailStatus | None = None


def assess(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    causes: Mapping[str, Cause | None] | None,
    *,
    at_weight: bool,
    now: datetime,
    spending: budget.BudgetView | None = None,
) -> Assessment:
    """Where the step stands, from the verdicts in `status`. Only a fresh verdict (`causes` given: an
    analysis ran in this reconcile) fails or pauses. `at_weight`: the router has the step's weights."""
    steps = spec.expanded_steps()
    index = min(status.current_step or 0, len(steps) - 1)
    step, display = steps[index], f"{index + 1}/{len(steps)}"
    elapsed = now - (status.step_started or now)
    timed_out = elapsed >= parse_duration(spec.analysis.progress_deadline)
    on_deadline: Literal["pause", "rollback"] = (
        "pause" if spec.analysis.on_deadline is DeadlinePolicy.PAUSE else "rollback"
    )
    if not at_weight:
        why = f"step {display}: the data plane did not take {step.weight}% within {spec.analysis.progress_deadline}"
        return Assessment(on_deadline, Reason.PROGRESS_DEADLINE_EXCEEDED, why) if timed_out else Assessment("hold")
    judged = _judged(spec, status.guardrails, causes) if causes is not None else None
    if judged is not None:
        return judged
    # Beyond the first step the budget pays for every interval: once one more cannot be afforded
    # at the bound of the candidate's excess rate, the evidence has not come in time. Once every
    # sequential guardrail has passed the evidence has come: the budget no longer applies (its
    # point estimate `spent` would otherwise grow with mere noise at high traffic).
    one_more = spending.one_interval if spending is not None else None
    if (
        index > 0
        and spending is not None
        and one_more is not None
        and 0 < spec.analysis.budget < spending.spent + one_more
        and not _sequential_passed(spec, status)
    ):
        why = (
            f"step {display}: {spending.spent:.0f} of the error budget {spec.analysis.budget} spent; one more "
            f"interval may cost up to {one_more:.1f}"
        )
        return Assessment(on_deadline, Reason.ERROR_BUDGET_EXHAUSTED, why)
    # Evidence-driven: the hold is a minimum unless analysis.endStepsEarly, and in either case the
    # step ends only once every guardrail passed at this step's weight (never while one is short
    # of samples: an InsufficientSamples verdict is not a pass).
    held = elapsed >= parse_duration(step.hold) or spec.analysis.end_steps_early
    eb = status.error_budget
    affordable = (
        index + 1 < len(steps)
        and spec.analysis.budget > 0
        and eb is not None
        and eb.next_step is not None
        and eb.next_step <= eb.left
    )
    names: list[str] = []
    missing = _missing(spec, status, affordable=affordable, names=names)
    if held and not missing:
        risk = f"; next step's excess bounded by {eb.next_step:.1f} of {eb.left:.1f} left" if affordable and eb else ""
        return Assessment("advance", Reason.STEP_ADVANCED, risk)
    waiting_for = labels.only_labels_missing(spec, names)
    if waiting_for and (held or timed_out):
        # Labels keep arriving after the step's predictions: wait for them, past the hold and up
        # to the deadline extended by their delay (never longer: no labels is no data).
        limit = parse_duration(spec.analysis.progress_deadline) + labels.extension(waiting_for)
        if elapsed < limit:
            return Assessment("hold", Reason.WAITING_FOR_LABELS, f"step {display}: {'; '.join(missing)}")
    if timed_out:
        why = f"step {display} did not complete within {spec.analysis.progress_deadline}: {'; '.join(missing)}"
        return Assessment(on_deadline, Reason.PROGRESS_DEADLINE_EXCEEDED, why)
    return Assessment("hold")


def _sequential_passed(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> bool:
    latest = {gs.name: gs.verdict for gs in status.guardrails}
    return all(latest.get(g.name) is Verdict.PASS for g in spec.guardrails if g.sequential is not None)


def _policy(guardrail: Guardrail, cause: Cause | None) -> DataPolicy:
    return guardrail.on_error if cause in PROVIDER_PROBLEMS else guardrail.on_no_data


def _judged(
    spec: ModelRolloutSpec, latest: list[GuardrailStatus], causes: Mapping[str, Cause | None]
) -> Assessment | None:
    """A failure or a data problem that ends or pauses the rollout now, or None."""
    by_name = {g.name: g for g in spec.guardrails}
    for gs in latest:
        g = by_name[gs.name]
        if gs.verdict is Verdict.FAIL and (g.critical or gs.failures > g.failure_tolerance):
            # A segmented guardrail's message already reads "<name> failed in <label>=<value>: ...".
            why = (
                gs.message if gs.message.startswith(f"{g.name} failed") else f"guardrail {g.name} failed: {gs.message}"
            )
            return Assessment("rollback", Reason.GUARDRAIL_FAILED, why, gs)
    noncritical = sum(gs.failures for gs in latest if not by_name[gs.name].critical)
    if noncritical > spec.analysis.failure_limit and any(gs.verdict is Verdict.FAIL for gs in latest):
        why = f"{noncritical} guardrail failures exceed failureLimit {spec.analysis.failure_limit}"
        return Assessment("rollback", Reason.FAILURE_LIMIT_EXCEEDED, why)
    for gs in latest:
        cause = causes.get(gs.name, Cause.NO_DATA)
        if cause not in DATA_PROBLEMS:
            continue
        policy, limit = _policy(by_name[gs.name], cause), spec.analysis.inconclusive_limit
        if policy is DataPolicy.ROLLBACK:
            setting = "onError" if cause in PROVIDER_PROBLEMS else "onNoData"
            why = f"guardrail {gs.name} inconclusive ({gs.message}) and {setting} is Rollback"
            return Assessment("rollback", Reason(cause), why, gs)
        if policy is DataPolicy.PAUSE:
            why = f"guardrail {gs.name}: {gs.message}; waiting for a human"
            return Assessment("pause", Reason.GUARDRAIL_INCONCLUSIVE, why, gs)
        if gs.consecutive_inconclusive > limit:
            why = f"guardrail {gs.name} inconclusive {gs.consecutive_inconclusive} times in a row (inconclusiveLimit {limit}): {gs.message}"
            return Assessment("rollback", Reason.INCONCLUSIVE_LIMIT_EXCEEDED, why, gs)
    return None


def _missing(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, *, affordable: bool, names: list[str] | None = None
) -> list[str]:
    """What keeps the step from ending: every guardrail must pass at this step's weight, judged
    strictly after the step began (the analysis that ended the previous step never counts). A
    sequential guardrail with its minimum samples that is only not yet conclusive (no data
    problem) is enough when the next step is `affordable` within the error budget (a label
    guardrail never: its counts lag). At the last step a label guardrail's pass counts once the
    step's own predictions had labelDelay to be labelled. `names` collects the guardrails'."""
    latest, started = {g.name: g for g in status.guardrails}, status.step_started
    steps = spec.expanded_steps()
    last = (status.current_step or 0) >= len(steps) - 1
    missing = []
    for guardrail in spec.guardrails:
        gs = latest.get(guardrail.name)
        due = labels.labels_due(guardrail, steps[-1], started) if last else None
        if gs is None:
            missing.append(f"{guardrail.name} never evaluated")
        elif started is not None and (gs.last_evaluated is None or gs.last_evaluated <= started):
            missing.append(f"{guardrail.name} not yet evaluated at this step")
        elif gs.verdict is Verdict.PASS and due is not None and (gs.last_evaluated is None or gs.last_evaluated < due):
            missing.append(
                f"{guardrail.name}: waiting for the labels of this step's predictions "
                f"(labelDelay {guardrail.label_delay or '0s'}, until {due:%H:%M:%S} UTC)"
            )
        elif gs.verdict is Verdict.PASS or (
            affordable
            and not guardrail.labelled
            and guardrail.sequential is not None
            and guardrail.segment_by is None  # the budget bounds aggregate harm, which a segment's can hide
            and gs.verdict is Verdict.INCONCLUSIVE
            and gs.consecutive_inconclusive == 0
            and (gs.evidence.candidate_samples or 0) >= guardrail.min_samples
        ):
            continue
        elif gs.labels is not None and gs.verdict is Verdict.INCONCLUSIVE and gs.labels.need is not None:
            missing.append(f"{guardrail.name}: {labels.waiting(gs.labels, status.last_analysis or gs.labels.since)}")
        else:
            missing.append(f"{guardrail.name} {gs.verdict.value.lower()}: {gs.message}")
        if names is not None and len(missing) > len(names):
            names.append(guardrail.name)
    return missing


def _segments(guardrail: Guardrail, j: Judgement, old: GuardrailStatus | None) -> SegmentsStatus | None:
    """This analysis' segments; without them (a provider problem), the segments named so far: which
    segments have a test of their own never changes during a rollout (core.segments)."""
    if guardrail.segment_by is None or j.segments is not None:
        return j.segments
    before = old.segments if old is not None else None
    if before is None or before.label != guardrail.segment_by:
        return None
    return SegmentsStatus(label=before.label, named=before.named, policy=before.policy)


def decide(inp: RolloutInput) -> Outcome:
    return _Decider(inp).run()


def record_weights(
    status: ModelRolloutStatus,
    weights: Weights,
    *,
    now: datetime,
    generation: int,
    mirrored: int | None = None,
    stale: tuple[ComparatorRef, ...] | None = None,
) -> None:
    """Record what the router read back after acting (`stale`: the pending mirror removals the
    route still holds); a verdict becomes Ready/Stalled only now."""
    status.weights = weights
    if status.shadow is not None and mirrored is not None:
        status.shadow.mirror_percent = mirrored
    if stale is not None:
        status.pending_mirror_removals = [c for c in status.pending_mirror_removals if c in stale]
    set_conditions(status, problem=False, now=now, generation=generation)


def with_problem(
    status: ModelRolloutStatus, reason: str, message: str, *, now: datetime, generation: int
) -> ModelRolloutStatus:
    """The status of record, unchanged but for a problem a human must fix (Stalled)."""
    st = status.model_copy(deep=True)
    st.phase = st.phase or Phase.PENDING
    st.observed_generation = generation
    st.reason, st.message = reason, message[:1024]
    set_conditions(st, problem=True, now=now, generation=generation)
    return st


_REASONS = frozenset(Reason)


class _Decider:
    def __init__(self, inp: RolloutInput) -> None:
        self.inp = inp
        self.now = inp.now
        self.st = inp.status.model_copy(deep=True)
        if self.st.phase is Phase.PAUSED and self.st.pause_reason is None and self.st.reason in _REASONS:
            # Paused before status.pauseReason existed: then status.reason said why.
            self.st.pause_reason = Reason(self.st.reason)
        self.out = Outcome(status=self.st)
        self.spec = inp.spec
        self.steps: list[Step] = []
        self._use_phase_spec()

    def _use_phase_spec(self) -> None:
        """The spec in force: in shadow, its one step and its guardrails (core/shadow.py)."""
        self.spec = shadow.phase_spec(self.inp.spec, self.st)
        self.steps = self.spec.expanded_steps()

    # -- entry ----------------------------------------------------------------------------------

    def run(self) -> Outcome:
        self.st.observed_generation = self.inp.generation
        self._record_hook_outcomes()
        if self.inp.applied is not None and pair_in_flight(self.st) is not None:
            self.st.weights = self.inp.applied
            if self.st.shadow is not None and self.inp.mirrored is not None:
                self.st.shadow.mirror_percent = self.inp.mirrored
            if self.inp.stale_mirrors is not None:
                stale = self.inp.stale_mirrors
                self.st.pending_mirror_removals = [c for c in self.st.pending_mirror_removals if c in stale]
        if self.inp.deleting:
            self._release()
        elif self._bootstrap():
            pass
        elif self.st.candidate_hash != candidate_hash(self.spec.candidate):
            self._start()
        elif self._new(self.inp.requests.retry, self.st.handled_retry) and self.st.phase is Phase.ROLLED_BACK:
            self._start(retry=True)
        elif self.st.phase in TERMINAL:
            self._settle()
        elif self._new(self.inp.requests.abort, self.st.handled_abort):
            self.st.handled_abort = self.inp.requests.abort
            self._roll_back(Reason.ABORTED_BY_USER, f"aborted by a human ({self.inp.requests.abort})", force=True)
        elif self.inp.router_problem is not None:
            self._router_problem(*self.inp.router_problem)
        else:
            self._progress()
        if self.out.requeue_after is None and settling(self.st) is not None and not self.out.release:
            # A verdict's weights not yet read back (the replica ratio takes several applies, each
            # once pods are ready): come back to settle them, nothing else would wake us.
            self.out.requeue_after = WEIGHT_SETTLE
        set_conditions(
            self.st, problem=self.inp.router_problem is not None, now=self.now, generation=self.inp.generation
        )
        return self.out

    # -- transitions ----------------------------------------------------------------------------

    def _active_pair(self) -> tuple[ModelRef, ModelRef] | None:
        if self.st.phase in ACTIVE and self.st.incumbent is not None and self.st.candidate is not None:
            return self.st.incumbent, self.st.candidate
        return None

    def _release(self) -> None:
        pair = self._active_pair()
        owed = settling(self.st)
        if owed is not None and pair is None:
            self.out.actions.append(owed)
        if pair is not None:
            self.out.actions.append(set_weights(self.st, pair[0], pair[1], ALL_INCUMBENT))
            self._event("Normal", Reason.TRAFFIC_RESTORED, f"deleted mid-rollout: 100% back to {pair[0].name}")
        self.out.release = True

    def _bootstrap(self) -> bool:
        if self.st.incumbent is not None:
            return False
        if self.spec.incumbent is not None:
            self.st.incumbent = self.spec.incumbent
            return False
        # Nothing to compare against: the first model is adopted as the incumbent, without a canary.
        self.st.incumbent = self.st.candidate = self.spec.candidate
        self.st.candidate_hash = candidate_hash(self.spec.candidate)
        why = f"no incumbent: {self.spec.candidate.name} adopted as the incumbent"
        self._set_phase(Phase.PROMOTED, Reason.ADOPTED, why)
        self._event("Normal", Reason.ADOPTED, why)
        return True

    @staticmethod
    def _new(request: str | None, handled: str | None) -> bool:
        return bool(request) and request != handled

    def _start(self, *, retry: bool = False) -> None:
        previous = self._active_pair()
        owed = settling(self.st)
        if owed is not None and previous is None:
            self.out.actions.append(owed)  # the last verdict's weights first
        if previous is not None:
            # Written with the last shadow's comparator: its mirror goes with the last pair's weights.
            self.out.actions.append(set_weights(self.st, previous[0], previous[1], ALL_INCUMBENT))
            why = f"{previous[1].name} replaced mid-rollout by {self.spec.candidate.name}"
            self._event("Normal", Reason.CANDIDATE_REPLACED, why)
        incumbent = self.st.incumbent
        assert incumbent is not None
        self.st.candidate = self.spec.candidate
        self.st.candidate_hash = candidate_hash(self.spec.candidate)
        # Requests made before this rollout began are about an earlier one: they never act here.
        r = self.inp.requests
        self.st.handled_promote, self.st.handled_abort, self.st.handled_retry = r.promote, r.abort, r.retry
        self.st.guardrails, self.st.last_analysis, self.st.weights, self.st.previous_incumbent = [], None, None, None
        self.st.paused_since, self.st.pause_reason, self.st.rollout_started = None, None, self.now
        self.st.error_budget, self.st.conditions = None, [c for c in self.st.conditions if c.type != "Feasible"]
        # The last candidate's shadow: unless read back gone, its mirror stays owed (a controller
        # killed before the write above must not forget it), removed with this rollout's writes.
        self.st.pending_mirror_removals = shadow.stale_mirrors(self.st, self.inp.spec)
        self.st.shadow = None
        self._use_phase_spec()
        if self.spec.candidate.name == incumbent.name:
            self._set_phase(Phase.PROMOTED, Reason.ALREADY_SERVING, f"{incumbent.name} is already the incumbent")
            return
        reason = Reason.ROLLOUT_RETRIED if retry else Reason.ROLLOUT_STARTED
        verb = "retrying" if retry else "rolling out"
        self._set_phase(Phase.PROGRESSING, reason, f"{verb} {self.spec.candidate.name} against {incumbent.name}")
        shadow_spec = self.inp.spec.shadow
        if shadow_spec is not None:
            # mirrorPercent stays unknown until this shadow's route is read back.
            self.st.shadow = ShadowStatus(
                state=ShadowState.MIRRORING,
                started=self.now,
                comparator=shadow_spec.comparator,
                definition=shadow.definition(shadow_spec),
            )
            self._use_phase_spec()
        self._enter_step(0)
        if shadow_spec is not None:
            first = (
                f"shadow: {shadow_spec.percent}% of requests mirrored to comparator {shadow_spec.comparator.service}, "
                f"0 users served by {self.spec.candidate.name}"
            )
        else:
            first = f"step 1/{len(self.steps)} at {self.steps[0].weight}%"
        self._event("Normal", reason, f"{self.st.message}; {first}")
        self._record("start", reason)
        self.st.gates = []
        if self._gate_open(0):
            self._set_weights(Weights.for_candidate(self.steps[0].weight))
            self.out.requeue_after = WEIGHT_SETTLE

    def _settle(self) -> None:
        owed = settling(self.st)
        if owed is None:
            return
        if self.inp.router_problem is not None:
            self._router_problem(*self.inp.router_problem)
            return
        self.out.actions.append(owed)
        self.out.requeue_after = WEIGHT_SETTLE

    def _router_problem(self, reason: str, message: str) -> None:
        if self.st.reason != reason:
            self._event("Warning", reason, f"{message}; traffic left as it is")
        self.st.reason, self.st.message = reason, message
        self.out.requeue_after = PROBLEM_RETRY

    def _progress(self) -> None:
        if self._paused_by_user():
            return
        if shadow.shadowing(self.st) and self.inp.spec.shadow is None:
            # A human took spec.shadow out mid-shadow: as a promote would, on to step 1.
            self._end_shadow(manual=True, why="spec.shadow removed")
            return
        if shadow.redefined(self.inp.spec, self.st):
            self._restart_shadow()
            return
        # A promote moves past the step the data plane is at: it waits until that step's
        # weights are applied, so even a human's request never skips a step's weight.
        at_step = (
            self.inp.applied == Weights.for_candidate(self._step().weight)
            and (self.inp.mirrored or 0) == shadow.wanted_mirror(self.inp.spec, self.st)
            and not self.st.pending_mirror_removals
        )
        at_gate = self._at_gate()
        if ((at_step or at_gate or self.st.phase is Phase.PAUSED) and self._take_promote_request()) or (
            self.st.phase is Phase.PAUSED
        ):
            return
        if not at_step and not self._gate_open(self.st.current_step or 0):
            unwanted = (self.inp.mirrored or 0) > shadow.wanted_mirror(self.inp.spec, self.st)
            if self.inp.applied is not None and (unwanted or self.st.pending_mirror_removals):
                # Held at a gate with a mirror no longer wanted (shadow ended, a controller killed
                # before its write, an earlier shadow's): the weights stay, the mirror goes.
                self._set_weights(self.inp.applied)
            return
        if at_step and self._rollback_requested():
            return
        causes, spending = None, None
        if at_step and self.inp.judgements is not None:
            causes, spending = self._record_analysis(self.inp.judgements)
            if self.st.shadow is not None and shadow.shadowing(self.st):
                shadow.summarise(self.inp.spec, self.st.shadow, self.st.guardrails)
        verdict = assess(self.spec, self.st, causes, at_weight=at_step, now=self.now, spending=spending)
        self._warn(causes, verdict)
        if verdict.action == "rollback" and verdict.reason:
            self._roll_back(verdict.reason, verdict.message, gs=verdict.guardrail)
        elif verdict.action == "pause" and verdict.reason:
            self._pause(verdict.reason, verdict.message)
        elif verdict.action == "advance":
            self._complete_step(self._step(), verdict.message)
        elif not at_step:
            self._set_weights(Weights.for_candidate(self._step().weight))
            self.out.requeue_after = WEIGHT_SETTLE
        else:
            if verdict.reason is Reason.WAITING_FOR_LABELS:
                self._wait_for_labels(verdict.message)
            self.out.requeue_after = self._next_wake(self._step())

    def _wait_for_labels(self, message: str) -> None:
        """Past the hold, only ground truth is missing: say so (an Event once per step)."""
        if self.st.reason != Reason.WAITING_FOR_LABELS:
            self._event("Normal", Reason.WAITING_FOR_LABELS, message)
        self._set_phase(Phase.PROGRESSING, Reason.WAITING_FOR_LABELS, message)

    # -- pieces of progress ---------------------------------------------------------------------

    def _paused_by_user(self) -> bool:
        if self.spec.paused:
            if self.st.pause_reason is not Reason.PAUSED_BY_USER:
                self._pause(Reason.PAUSED_BY_USER, "spec.paused is true: weights stay where they are")
            return True
        if self.st.pause_reason is Reason.PAUSED_BY_USER:
            self._resume(Reason.RESUMED, "spec.paused cleared")
        return False

    def _take_promote_request(self) -> bool:
        """A human's promote, past a gate, a pause or a hold: one step, or all the way ("full...")."""
        request = self.inp.requests.promote
        if not self._new(request, self.st.handled_promote):
            return False
        assert request is not None
        self.st.handled_promote = request
        if self._at_gate():
            # At a gate (waiting, refused, or paused past its deadline), a promote opens it and
            # moves no further: the step's weights come next, so no step is skipped.
            opened = hooks.open_by_human(self.spec, self.st, self.st.candidate_hash or "", request, self.now)
            why = f"gate {', '.join(opened)} opened by a human ({request})"
            if self.st.phase is Phase.PAUSED:
                self._resume(Reason.PROMOTED_BY_USER, why)
            else:
                self._set_phase(Phase.PROGRESSING, Reason.PROMOTED_BY_USER, why)
                self._record("promote-request", Reason.PROMOTED_BY_USER, why)
            if any(g.name in opened and g.step == self.st.current_step for g in self.st.gates):
                self.st.step_started, self.st.last_analysis = self.now, None  # the step begins now
            self.out.requeue_after = WEIGHT_SETTLE
            return True
        if self.st.phase is Phase.PAUSED:
            self._resume(Reason.PROMOTED_BY_USER, f"promotion requested ({request})")
        else:
            self._record("promote-request", Reason.PROMOTED_BY_USER, request)
        if request.startswith("full"):
            self._promote(by_user=True)
        else:
            self._advance_or_finish(self._step(), manual=True)
        return True

    def _record_analysis(
        self, judgements: Mapping[str, Judgement]
    ) -> tuple[dict[str, Cause | None], budget.BudgetView | None]:
        """Record this analysis' verdicts and the error budget in status; return each guardrail's
        inconclusive cause and the budget's view."""
        first_in_step = self.st.last_analysis is None
        self.st.last_analysis = self.now
        previous = {g.name: g for g in self.st.guardrails}
        causes: dict[str, Cause | None] = {}
        updated: list[GuardrailStatus] = []
        for guardrail in self.spec.guardrails:
            j = judgements.get(guardrail.name) or Judgement(Verdict.INCONCLUSIVE, "not evaluated", cause=Cause.NO_DATA)
            old = previous.get(guardrail.name)
            j = labels.not_yet_labelled(guardrail, j)
            sequential = guardrail.sequential is not None
            if guardrail.labelled and old is not None:
                j = labels.check_samples(j, old.evidence, sequential=sequential)
            if cumulative(guardrail) and old is not None and not guardrail.labelled:
                # Counts since the start never go back (label guardrails: labels.check_samples).
                j = check_counts(j, old.evidence)
            if (
                sequential
                and old is not None
                and budget.Counts.of(j.evidence) is None
                and budget.Counts.of(old.evidence) is not None
            ):
                # A sequential verdict without counts keeps the last.
                j = Judgement(j.verdict, j.message, old.evidence, j.cause, j.segments)
            causes[guardrail.name] = j.cause
            streak = ((old.consecutive_inconclusive if old else 0) + 1) if j.cause in DATA_PROBLEMS else 0
            updated.append(
                GuardrailStatus(
                    name=guardrail.name,
                    verdict=j.verdict,
                    message=j.message[:1024],
                    evidence=j.evidence,
                    segments=_segments(guardrail, j, old),
                    failures=(old.failures if old else 0) + (1 if j.verdict is Verdict.FAIL else 0),
                    consecutive_inconclusive=streak,
                    last_evaluated=self.now,
                )
            )
            if guardrail.labelled:
                previous_labels = old.labels if old is not None else None
                progress = labels.progress(updated[-1], previous_labels, first_in_step=first_in_step, now=self.now)
                updated[-1] = updated[-1].model_copy(update={"labels": progress})
        self.st.guardrails = updated
        if shadow.shadowing(self.st):
            # No user is served in shadow: nothing to spend, and the budget's projections (per
            # step weight of user traffic) say nothing of comparisons arriving at the mirror's rate.
            self.st.error_budget = None
            return causes, None
        spending = self._spending()
        if first_in_step:
            self._estimate(spending)
        return causes, spending

    def _spending(self) -> budget.BudgetView | None:
        evidence = [(g, gs.evidence) for g, gs in zip(self.spec.guardrails, self.st.guardrails, strict=True)]
        # Label guardrails stay out of the budget: their counts lag the traffic by labelDelay.
        evidence = [(g, e) for g, e in evidence if not g.labelled]
        counts = [
            c
            for g, e in evidence
            if g.sequential is not None and g.segment_by is None and (c := budget.Counts.of(e)) is not None
        ]
        rate = budget.arrival_rate(counts[0], self.st.rollout_started, self.now) if counts else None
        view = budget.view(self.spec, evidence, index=self.st.current_step or 0, rate=rate)
        self.st.error_budget = None
        if view is not None:
            nxt = None if view.next_step is None else round(view.next_step, 1)
            self.st.error_budget = ErrorBudget(spent=round(view.spent, 1), left=round(view.left, 1), next_step=nxt)
        return view

    def _estimate(self, spending: budget.BudgetView | None) -> None:
        """At each step's first analysis: will the evidence come within progressDeadline at the
        traffic observed? If not, say so now (condition Feasible=False and a Warning Event)."""
        index, deadline = self.st.current_step or 0, parse_duration(self.spec.analysis.progress_deadline)
        worst: tuple[float, int, float] | None = None  # (seconds, step index, candidate requests/s)
        for g, gs in zip(self.spec.guardrails, self.st.guardrails, strict=True):
            # A segmented guardrail waits for its slowest segment, which aggregate counts cannot
            # foresee, and a label guardrail's counts lag: no estimate rather than an optimistic one.
            counts = (
                budget.Counts.of(gs.evidence)
                if g.sequential is not None and g.segment_by is None and not g.labelled
                else None
            )
            rate = budget.arrival_rate(counts, self.st.rollout_started, self.now) if counts else None
            if counts is None or not rate:
                continue
            left = spending.left if spending is not None else float(self.spec.analysis.budget)
            for i, seconds in enumerate(budget.plan(self.spec, g, counts, index, rate=rate, left=left), start=index):
                if worst is None or seconds > worst[0]:
                    worst = (seconds, i, rate * self.steps[i].weight / 100)
        if worst is None:
            return
        seconds, i, per_second = worst
        if seconds <= deadline.total_seconds():
            self._condition(
                "Feasible",
                "True",
                "EvidenceInTime",
                f"every step can conclude within {self.spec.analysis.progress_deadline}",
            )
            return
        needs = "more than a month" if not math.isfinite(seconds) else f"about {math.ceil(seconds / 60)} min"
        raise_to = "" if not math.isfinite(seconds) else f" (to at least {math.ceil(seconds * 1.25 / 300) * 5}m)"
        message = (
            f"at {per_second:.1f} req/s step {i + 1} needs {needs}; the deadline is "
            f"{format_duration(deadline)}: raise the step's weight or the deadline{raise_to}"
        )
        self._condition("Feasible", "False", Reason.DEADLINE_TOO_SHORT, message)
        self._event("Warning", Reason.DEADLINE_TOO_SHORT, message)

    def _condition(self, type_: str, status: str, reason: str, message: str) -> None:
        existing = next((c for c in self.st.conditions if c.type == type_), None)
        since = existing.last_transition_time if existing is not None and existing.status == status else self.now
        condition = Condition(
            type=type_, status=status, reason=reason, message=message[:1024], last_transition_time=since,
            observed_generation=self.inp.generation,
        )  # fmt: skip
        self.st.conditions = sorted(
            [*(c for c in self.st.conditions if c.type != type_), condition], key=lambda c: c.type
        )

    def _warn(self, causes: Mapping[str, Cause | None] | None, verdict: Assessment) -> None:
        """Warning Events for this analysis' failures, then data problems up to the one acted on."""
        by_name = {g.name: g for g in self.spec.guardrails}
        for gs in self.st.guardrails if causes is not None else []:
            if gs.verdict is Verdict.FAIL:
                self._event("Warning", Reason.GUARDRAIL_FAILED, f"{gs.name}: {gs.message}", gs=gs)
        if causes is None or verdict.reason in FAILED:
            return
        for gs in self.st.guardrails:
            if (cause := causes.get(gs.name)) not in DATA_PROBLEMS:
                continue
            # One gap is normal (a candidate's first series lands a scrape after its first
            # requests): with Wait, warn from the second inconclusive analysis in a row. Pause
            # and Rollback act now, so they say so now.
            policy = _policy(by_name[gs.name], cause)
            if policy is not DataPolicy.WAIT or gs.consecutive_inconclusive >= INCONCLUSIVE_WARN_AFTER:
                why = f"{gs.name}: {gs.message} (policy {policy.value}; never a pass)"
                self._event("Warning", Reason.GUARDRAIL_INCONCLUSIVE, why, gs=gs)
            if gs is verdict.guardrail:
                return

    def _complete_step(self, step: Step, risk: str = "") -> None:
        if step.manual_gate:
            self._pause(
                Reason.AWAITING_PROMOTION,
                f"step {self._display()} passed; manual gate: run `kubectl modelrollout promote`",
            )
            return
        self._advance_or_finish(step, manual=False, risk=risk)

    def _advance_or_finish(self, step: Step, *, manual: bool, risk: str = "") -> None:
        if shadow.shadowing(self.st):
            self._end_shadow(manual=manual)
            return
        index = self.st.current_step or 0
        if index + 1 < len(self.steps):
            self._enter_step(index + 1)
            nxt = self.steps[index + 1]
            self._set_phase(
                Phase.PROGRESSING,
                Reason.STEP_ADVANCED,
                f"step {self._display()}: {nxt.weight}% to {self._candidate().name}{risk}",
            )
            self._event("Normal", Reason.STEP_ADVANCED, self.st.message or "")
            self._record("advance", Reason.STEP_ADVANCED, self.st.message or "")
            if self._gate_open(index + 1):
                self._set_weights(Weights.for_candidate(nxt.weight))
                self.out.requeue_after = WEIGHT_SETTLE
            return
        if self.spec.canary.after_last_step is AfterLastStep.WAIT_FOR_PROMOTION and not manual:
            self._pause(Reason.AWAITING_PROMOTION, "last step passed; waiting for `kubectl modelrollout promote`")
            return
        # A human's promote is the override: automatic promotion waits for BeforePromotion gates.
        if not manual and not self._gate_open(len(self.steps)):
            return
        self._promote(by_user=manual)

    def _end_shadow(self, *, manual: bool, why: str = "") -> None:
        """Shadow passed, or a human moved past it (skipped: no evidence behind it, never recorded
        as a pass): the canary's step 1 begins, judged by the canary's guardrails on counts from
        now on; status.shadow keeps the agreement evidence."""
        assert self.st.shadow is not None
        state, reason = (
            (ShadowState.SKIPPED, Reason.SHADOW_SKIPPED) if manual else (ShadowState.PASSED, Reason.SHADOW_PASSED)
        )
        self.st.shadow.state, self.st.shadow.ended = state, self.now
        why = why or ("on a human's request" if manual else "every shadow guardrail passed")
        agreement = ""
        if self.st.shadow.rate is not None and self.st.shadow.comparisons is not None:
            agreement = f" (disagreement {self.st.shadow.rate:.2%} on {self.st.shadow.comparisons:.0f} comparisons)"
        verb = "skipped" if manual else "passed"
        self._event("Normal", reason, f"shadow {verb} {why}{agreement}")
        self._record(f"shadow-{verb}", reason, f"{why}{agreement}")
        self._use_phase_spec()
        self.st.guardrails, self.st.error_budget, self.st.rollout_started = [], None, self.now
        # The BeforeTraffic gates opened the mirror; users are another matter: asked again (a
        # load test or a ticket answered before shadow, maybe hours ago, says nothing of now).
        self.st.gates = []
        self._enter_step(0)
        first = self.steps[0]
        self._set_phase(
            Phase.PROGRESSING,
            reason,
            f"shadow {verb}; step {self._display()}: {first.weight}% to {self._candidate().name}",
        )
        if self._gate_open(0):
            self._set_weights(Weights.for_candidate(first.weight))
            self.out.requeue_after = WEIGHT_SETTLE
        else:
            self._set_weights(ALL_INCUMBENT)  # users wait for the gate; the mirror goes now

    def _restart_shadow(self) -> None:
        """spec.shadow now defines comparisons otherwise (comparator, rule, noise floor, timeout):
        the counts since shadow began would mix two definitions, so shadow starts again, judged on
        counts from now (the comparator compares only under the new definition of record)."""
        spec = self.inp.spec.shadow
        assert spec is not None and self.st.shadow is not None
        self.st.pending_mirror_removals = shadow.stale_mirrors(self.st, self.inp.spec)
        self.st.shadow = ShadowStatus(
            state=ShadowState.MIRRORING,
            started=self.now,
            comparator=spec.comparator,
            definition=shadow.definition(spec),
        )
        self.st.guardrails, self.st.error_budget, self.st.rollout_started = [], None, self.now
        self.st.paused_since, self.st.pause_reason = None, None
        self._enter_step(0)
        why = "spec.shadow changed what a comparison means: shadow restarted, comparisons count from now"
        self._set_phase(Phase.PROGRESSING, Reason.SHADOW_RESTARTED, why)
        self._event("Normal", Reason.SHADOW_RESTARTED, why)
        self._record("shadow-restarted", Reason.SHADOW_RESTARTED, why)
        self._set_weights(Weights.for_candidate(0))
        self.out.requeue_after = WEIGHT_SETTLE

    def _promote(self, *, by_user: bool = False) -> None:
        candidate = self._candidate()
        if shadow.shadowing(self.st):
            # A human's full promote straight from shadow (skipped, never a pass): the mirror
            # goes with the same write.
            assert self.st.shadow is not None
            self.st.shadow.state, self.st.shadow.ended = ShadowState.SKIPPED, self.now
            self._event("Normal", Reason.SHADOW_SKIPPED, "shadow skipped: promoted to 100% on a human's request")
        self._set_weights(ALL_CANDIDATE)
        self.st.previous_incumbent = self.st.incumbent
        self.st.incumbent = candidate
        self.st.paused_since, self.st.pause_reason = None, None
        why = "on a human's request" if by_user else "every guardrail passed at every step"
        self._set_phase(Phase.PROMOTED, Reason.PROMOTED, f"{candidate.name} promoted: {why}")
        self._event("Normal", Reason.PROMOTED, self.st.message or "")
        self._record("promote", Reason.PROMOTED, self.st.message or "")

    def _roll_back(
        self, reason: Reason, message: str, *, gs: GuardrailStatus | None = None, force: bool = False
    ) -> None:
        if self.spec.analysis.mode is AnalysisMode.ADVISORY and not force:
            self._pause(reason, f"advisory mode, not rolling back: {message}")
            return
        candidate = self._candidate()
        if shadow.shadowing(self.st):
            assert self.st.shadow is not None
            state = ShadowState.INCONCLUSIVE if reason in INCONCLUSIVE else ShadowState.FAILED
            self.st.shadow.state, self.st.shadow.ended = state, self.now
            message = f"in shadow, having served 0 users: {message}"
        self._set_weights(ALL_INCUMBENT)
        evidence: Evidence | SegmentEvidence | None = gs.evidence if gs else None
        if gs is not None and gs.segments is not None and gs.segments.worst and gs.verdict is Verdict.FAIL:
            evidence = gs.segments.worst[0]  # the failing segment's numbers, not the aggregate's
        self.st.failed_candidates = [
            *self.st.failed_candidates,
            FailedCandidate(
                model=candidate,
                time=self.now,
                reason=reason,
                guardrail=gs.name if gs else None,
                observed=evidence.candidate_value if evidence else None,
                threshold=evidence.bound if evidence else None,
                message=message[:1024],
                verdict=Verdict.INCONCLUSIVE if reason in INCONCLUSIVE else Verdict.FAIL,
            ),
        ][-MAX_FAILED_CANDIDATES:]
        self.st.paused_since, self.st.pause_reason = None, None
        self._set_phase(Phase.ROLLED_BACK, reason, f"{candidate.name} rolled back: {message}")
        kind = Reason.ROLLED_BACK_INCONCLUSIVE if reason in INCONCLUSIVE else Reason.ROLLED_BACK
        self._event("Warning", kind, self.st.message or "", gs=gs)
        self._record("rollback", reason, message)

    # -- small helpers --------------------------------------------------------------------------

    def _candidate(self) -> ModelRef:
        assert self.st.candidate is not None
        return self.st.candidate

    def _step(self) -> Step:
        index = min(self.st.current_step or 0, len(self.steps) - 1)
        return self.steps[index]

    def _display(self) -> str:
        if shadow.shadowing(self.st):
            return "shadow"
        return f"{(self.st.current_step or 0) + 1}/{len(self.steps)}"

    def _enter_step(self, index: int) -> None:
        self.st.current_step = index
        self.st.total_steps = len(self.steps)
        self.st.step_display = f"{index + 1}/{len(self.steps)}"
        if shadow.shadowing(self.st):
            self.st.total_steps = len(self.inp.spec.expanded_steps())
            self.st.step_display = "shadow"
        self.st.step_started = self.now
        self.st.last_analysis = None

    def _elapsed_in_step(self) -> timedelta:
        return self.now - (self.st.step_started or self.now)

    def _next_wake(self, step: Step) -> timedelta:
        elapsed = self._elapsed_in_step()
        deadline = parse_duration(self.spec.analysis.progress_deadline)
        interval = parse_duration(self.spec.analysis.interval)
        since = self.st.last_analysis or self.st.step_started or self.now
        # A step waiting for labels may run past the deadline by their delay (assess says so).
        candidates = [since + interval - self.now, deadline + labels.extension(self.spec.guardrails) - elapsed]
        hold_left = parse_duration(step.hold) - elapsed
        if hold_left > timedelta(0):
            candidates.append(hold_left)
        wake = min(candidates)
        return max(wake, timedelta(seconds=1))

    def _set_weights(self, weights: Weights) -> None:
        incumbent, candidate = self.st.incumbent, self.st.candidate
        assert incumbent is not None and candidate is not None
        self.out.actions.append(
            set_weights(self.st, incumbent, candidate, weights, shadow.wanted_mirror(self.inp.spec, self.st))
        )

    def _pause(self, reason: Reason, message: str) -> None:
        if self.st.paused_since is None:
            self.st.paused_since = self.now
        self.st.pause_reason = reason
        self._set_phase(Phase.PAUSED, reason, message)
        normal = reason in (Reason.PAUSED_BY_USER, Reason.AWAITING_PROMOTION)
        self._event("Normal" if normal else "Warning", Reason.PAUSED, f"{reason}: {message}")
        self._record("pause", reason, message)

    def _resume(self, reason: Reason, message: str) -> None:
        if self.st.paused_since is not None and self.st.step_started is not None:
            # Time spent paused counts neither against the hold nor the progress deadline.
            self.st.step_started += self.now - self.st.paused_since
            if self.st.last_analysis is not None:
                self.st.last_analysis += self.now - self.st.paused_since
        self.st.paused_since, self.st.pause_reason = None, None
        self._set_phase(Phase.PROGRESSING, reason, message)
        self._event("Normal", Reason.RESUMED, message)
        self._record("resume", reason, message)

    def _set_phase(self, phase: Phase, reason: Reason | str, message: str) -> None:
        self.st.phase, self.st.reason, self.st.message = phase, reason, message[:1024]

    def _event(self, type_: str, reason: Reason | str, message: str, *, gs: GuardrailStatus | None = None) -> None:
        self.out.events.append(Event(type_, reason, message[:1024]))
        hooks.notify(self.spec, self.st, reason, message, now=self.now, gs=gs)

    # -- webhooks (controller.core.hooks) -------------------------------------------------------

    def _record_hook_outcomes(self) -> None:
        refused, passed = hooks.record_answers(self.spec, self.st, self.inp.answers)
        gated = {w.name for w in self.spec.webhooks if w.type in (WebhookType.BEFORE_TRAFFIC, WebhookType.BEFORE_STEP)}
        if any(a.webhook in gated and a.step == self.st.current_step for a in passed) and self.st.phase in ACTIVE:
            # The step begins when its gates open: a wait at a gate counts against neither its
            # hold nor its progress deadline.
            self.st.step_started, self.st.last_analysis = self.now, None
        for answer in refused:
            got = f"answered {answer.code}" if answer.code is not None else "did not answer"
            self._event("Warning", Reason.GATE_REFUSED, f"webhook {answer.webhook} {got}: {answer.message}; not a pass")
        for failed in hooks.record_deliveries(self.spec, self.st, self.inp.deliveries):
            why = failed.error or f"HTTP {failed.code}"
            self._event(
                "Warning",
                Reason.WEBHOOK_DELIVERY_FAILED,
                f"webhook {failed.webhook}: delivery failed ({why}); retrying with back-off",
            )

    def _gate_open(self, index: int) -> bool:
        """Whether the gates before the weights of step `index` (len(steps): promotion) all passed
        for this candidate. If not: ask, and wait (bounded by progressDeadline) or pause."""
        kind = (
            WebhookType.BEFORE_TRAFFIC
            if index == 0
            else WebhookType.BEFORE_PROMOTION
            if index >= len(self.steps)
            else WebhookType.BEFORE_STEP
        )
        interval = parse_duration(self.spec.analysis.interval)
        view = hooks.gate(self.spec, self.st, kind, index, self.st.candidate_hash or "", now=self.now, retry=interval)
        self.out.asks.extend(view.asks)
        if view.open or view.waiting is None:
            return True
        waiting = view.waiting
        what = "promotion" if index >= len(self.steps) else f"step {index + 1}/{len(self.steps)}"
        last = f"last answer {waiting.code}" if waiting.code is not None else (waiting.message or "no answer yet")
        why = f"{what}: waiting for {kind.value} gate {waiting.name} to answer 2xx ({last})"
        if view.policy_pause:
            self._pause(Reason.GATE_REFUSED, f"{why}; onError is Pause: `kubectl modelrollout promote` opens it")
            return False
        deadline = parse_duration(self.spec.analysis.progress_deadline)
        if self.now - waiting.since >= deadline:
            why = f"{what}: {kind.value} gate {waiting.name} not answered 2xx within {self.spec.analysis.progress_deadline} ({last})"
            if self.spec.analysis.on_deadline is DeadlinePolicy.PAUSE:
                self._pause(Reason.PROGRESS_DEADLINE_EXCEEDED, why)
            else:
                self._roll_back(Reason.PROGRESS_DEADLINE_EXCEEDED, why)
            return False
        if view.first_ask:
            self._event("Normal", Reason.GATE_WAITING, why)
        self.st.reason, self.st.message = Reason.GATE_WAITING, why[:1024]
        left = waiting.since + deadline - self.now
        self.out.requeue_after = max(min(interval, left), timedelta(seconds=1))
        return False

    def _at_gate(self) -> bool:
        """A gate of this candidate has been asked and has not passed: its weights are held."""
        gates = {w.name for w in self.spec.webhooks if w.type in GATE_TYPES}
        return any(
            g.name in gates and g.candidate_hash == self.st.candidate_hash and g.state is not GateState.PASSED
            for g in self.st.gates
        )

    def _rollback_requested(self) -> bool:
        """Rollback hooks, asked every analysis interval at the step's weights: a 2xx asks for one."""
        if not hooks.asked(self.spec, WebhookType.ROLLBACK):
            return False
        interval = parse_duration(self.spec.analysis.interval)
        asks, requested = hooks.rollback_asks(
            self.spec, self.st, self.st.current_step or 0, self.st.candidate_hash or "", now=self.now, retry=interval
        )
        self.out.asks.extend(asks)
        if requested is None:
            return False
        self._roll_back(
            Reason.ROLLBACK_REQUESTED, f"rollback hook {requested.name} answered {requested.code}: {requested.message}"
        )
        return True

    def _record(self, action: str, reason: Reason | str, message: str = "") -> None:
        entry = Decision(
            time=self.now, step=self.st.current_step or 0, action=action, reason=reason[:128], message=message[:1024]
        )
        self.st.history = [*self.st.history, entry][-MAX_HISTORY:]


def set_conditions(st: ModelRolloutStatus, *, problem: bool, now: datetime, generation: int) -> None:
    """Ready / Stalled / Reconciling with kstatus meaning, from the phase (and a router problem)."""
    phase, reason, message = st.phase, st.reason or "Pending", st.message or ""
    # A verdict is Ready/Stalled only once the data plane has its weights; until then, Reconciling.
    owed = settling(st) is not None
    ready = phase is Phase.PROMOTED and not owed
    stalled = (phase in (Phase.ROLLED_BACK, Phase.FAILED) and not owed) or (problem and phase not in TERMINAL)
    reconciling = not ready and not stalled
    for type_, value in (("Ready", ready), ("Stalled", stalled), ("Reconciling", reconciling)):
        status = "True" if value else "False"
        existing = next((c for c in st.conditions if c.type == type_), None)
        since = existing.last_transition_time if existing is not None and existing.status == status else now
        condition = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=since,
            observed_generation=generation,
        )
        st.conditions = sorted([*(c for c in st.conditions if c.type != type_), condition], key=lambda c: c.type)
