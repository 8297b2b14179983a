"""Drive the pure decision core the way the reconciler does, with a fake clock and data plane.

Unit tests only: the data plane is a dict of weights per candidate and one of mirrors per
comparator (as a real route holds one mirror per comparator Service, whichever candidate is in
flight), and every status goes through its JSON form between reconciles, as it does through the
API server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from controller.api.models import ModelRolloutSpec, ModelRolloutStatus, Verdict, Weights
from controller.core import hooks
from controller.core.clock import FakeClock
from controller.core.engine import (
    Event,
    Outcome,
    Requests,
    RolloutInput,
    analysis_due,
    decide,
    pair_in_flight,
    record_weights,
)
from controller.core.judge import Cause, Judgement
from controller.core.shadow import phase_spec

JudgeFn = Callable[[str, "Simulator"], Judgement]
# A webhook's HTTP code for an ask or a notice (None: no answer), as the adapter would report it.
HookFn = Callable[[str, int, "Simulator"], int | None]


def passing(_: str, __: Simulator) -> Judgement:
    return Judgement(Verdict.PASS, "ok")


def failing(_: str, __: Simulator) -> Judgement:
    return Judgement(Verdict.FAIL, "too many errors")


def no_data(_: str, __: Simulator) -> Judgement:
    return Judgement(Verdict.INCONCLUSIVE, "no series", cause=Cause.NO_DATA)


@dataclass
class Simulator:
    spec: ModelRolloutSpec
    judge: JudgeFn = passing
    clock: FakeClock = field(default_factory=FakeClock)
    status: ModelRolloutStatus = field(default_factory=ModelRolloutStatus)
    # Weights on the data plane, per candidate backend: what a router would read back.
    plane: dict[str, Weights] = field(default_factory=dict)
    # Percent mirrored, per comparator Service (spec.shadow), and every change of a mirror written.
    mirrors: dict[str, int] = field(default_factory=dict)
    mirror_writes: list[tuple[str, int]] = field(default_factory=list)
    writes: list[tuple[str, int]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    analyses: int = 0
    promote_request: str | None = None
    abort_request: str | None = None
    retry_request: str | None = None
    generation: int = 1
    released: bool = False
    # Webhooks: the code each ask gets (by hook name and step), and each notice delivery.
    gate: HookFn | None = None
    receiver: HookFn | None = None
    asks: list[hooks.Ask] = field(default_factory=list)
    delivered: list[tuple[str, hooks.DeliveryResult]] = field(default_factory=list)
    _outcomes: list[hooks.GateAnswer | hooks.DeliveryResult] = field(default_factory=list)

    def reconcile(self, *, deleting: bool = False, crash_before_acting: bool = False) -> Outcome:
        """One reconcile; `crash_before_acting` persists the decision but carries out nothing,
        as a controller killed between its status write and its route write would."""
        pair = pair_in_flight(self.status)
        applied = self.plane.get(pair[1].name, Weights(incumbent=100, candidate=0)) if pair else None
        shadow = self.status.shadow
        comparator = shadow.comparator if shadow is not None and shadow.comparator is not None else None
        mirrored = (self.mirrors.get(comparator.service, 0) if comparator is not None else 0) if pair else None
        stale = (
            tuple(c for c in self.status.pending_mirror_removals if self.mirrors.get(c.service, 0) > 0)
            if pair
            else None
        )
        judgements = None
        if analysis_due(self.spec, self.status, applied, self.clock.now(), mirrored):
            self.analyses += 1
            # In shadow the shadow's guardrails are judged (core/shadow.py), as the reconciler does.
            in_force = phase_spec(self.spec, self.status)
            judgements = {g.name: self.judge(g.name, self) for g in in_force.guardrails}
        out = decide(
            RolloutInput(
                spec=self.spec,
                status=self.status,
                now=self.clock.now(),
                generation=self.generation,
                deleting=deleting,
                applied=applied,
                mirrored=mirrored,
                stale_mirrors=stale,
                judgements=judgements,
                requests=Requests(promote=self.promote_request, abort=self.abort_request, retry=self.retry_request),
                answers=tuple(o for o in self._outcomes if isinstance(o, hooks.GateAnswer)),
                deliveries=tuple(o for o in self._outcomes if isinstance(o, hooks.DeliveryResult)),
            )
        )
        self._outcomes = []
        now = self.clock.now()
        for ask in out.asks:
            self.asks.append(ask)
            if self.gate is not None:
                code = self.gate(ask.webhook, ask.step, self)
                self._outcomes.append(hooks.GateAnswer(ask.webhook, ask.step, ask.candidate_hash, code, "sim", now))
        for hook, notice in hooks.pending(self.spec, out.status) if self.receiver is not None else []:
            code = self.receiver(hook.name, notice.seq, self)
            error = None if code is not None and 200 <= code < 300 else f"HTTP {code}"
            result = hooks.DeliveryResult(hook.name, notice.seq, f"{notice.id}.{hook.name}", code, error, now)
            self.delivered.append((notice.event.value, result))
            self._outcomes.append(result)
        for action in [] if crash_before_acting else out.actions:
            self.plane[action.candidate.name] = action.weights
            self.writes.append((action.candidate.name, action.weights.candidate))
            # As a router does: the stale mirrors removed, then the action's own comparator's set.
            owned = [(c.service, 0) for c in action.stale if c != action.comparator]
            if action.comparator is not None:
                owned.append((action.comparator.service, action.mirror))
            for service, percent in owned:
                if percent != self.mirrors.get(service, 0):
                    self.mirror_writes.append((service, percent))
                self.mirrors[service] = percent
            if out.status.candidate is not None and action.candidate.name == out.status.candidate.name:
                mine = self.mirrors.get(action.comparator.service, 0) if action.comparator is not None else 0
                left = tuple(c for c in action.stale if self.mirrors.get(c.service, 0) > 0)
                record_weights(
                    out.status,
                    action.weights,
                    now=self.clock.now(),
                    generation=self.generation,
                    mirrored=mine,
                    stale=left,
                )
        self.events.extend(out.events)
        self.released = self.released or out.release
        # Persist as the API server would: JSON in, JSON out.
        self.status = ModelRolloutStatus.model_validate(json.loads(json.dumps(out.status.wire())))
        return out

    def run(self, *, max_reconciles: int = 500, until: Callable[[Simulator], bool] | None = None) -> None:
        """Reconcile, then sleep the requeue time; stop when idle (no requeue) or `until` holds."""
        for _ in range(max_reconciles):
            out = self.reconcile()
            if until is not None and until(self):
                return
            if out.requeue_after is None:
                return
            self.clock.advance(out.requeue_after)
        raise AssertionError(f"no verdict after {max_reconciles} reconciles: {self.status.phase} {self.status.reason}")

    def advance(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    def candidate_weights(self, name: str) -> list[int]:
        return [w for n, w in self.writes if n == name]
