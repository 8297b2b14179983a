"""The thin shell around the decision core: read -> observe -> decide -> act -> persist.

Level-triggered: it is given only a key and re-reads the world each time. It writes only on
change (an idle, held rollout costs no write), records the weights the router read back, and
writes status with the resourceVersion it read (a 409 means: re-read and recompute).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from controller.api.annotations import ABORT, PROMOTE, RETRY
from controller.api.duration import parse_duration
from controller.api.models import ModelRollout, ModelRolloutSpec, ModelRolloutStatus
from controller.core.clock import Clock
from controller.core.engine import (
    PROBLEM_RETRY,
    Event,
    Outcome,
    Requests,
    RolloutInput,
    analysis_due,
    decide,
    pair_in_flight,
    record_weights,
    with_problem,
)
from controller.core.judge import Judgement
from controller.core.shadow import phase_spec
from controller.evidence import EvidenceCheckpoints
from controller.kube.errors import NotFound
from controller.kube.events import EventRecorder
from controller.kube.objects import Objects
from controller.kube.rollouts import FINALIZER, Rollouts
from controller.metrics.registry import MetricProviders
from controller.observe import observe_and_judge
from controller.routers.base import RouterProblem, RouteTarget, Routing
from controller.routers.registry import router_for
from controller.telemetry import Telemetry
from controller.webhooks.dispatcher import Webhooks

log = structlog.get_logger("reconciler")


class NotLeader(Exception):
    """This replica lost the lease: it must not write."""


class Reconciler:
    def __init__(
        self,
        *,
        rollouts: Rollouts,
        objects: Objects,
        events: EventRecorder,
        providers: MetricProviders,
        clock: Clock,
        telemetry: Telemetry,
        may_write: Callable[[], bool] = lambda: True,
        webhooks: Webhooks | None = None,
        evidence_checkpoint: timedelta = timedelta(0),
    ) -> None:
        self.rollouts, self.objects, self.events, self.providers = rollouts, objects, events, providers
        self.clock, self.telemetry, self.may_write = clock, telemetry, may_write
        self.webhooks = webhooks
        self.evidence = EvidenceCheckpoints(evidence_checkpoint)

    # -- entry ----------------------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str, *, fresh: bool = False) -> timedelta | None:
        """One pass over one rollout; returns when to look again (None: on the next change).

        Reads come from the watch-fed caches (kube/informer.py), or from the API server when
        `fresh`: after a write of this rollout was refused with 409 (the cache was behind)."""
        try:
            obj = self.rollouts.get(namespace, name, fresh=fresh)
        except NotFound:
            self.evidence.forget((namespace, name))
            self.telemetry.forget_rollout(namespace, name)
            if self.webhooks is not None:
                self.webhooks.forget(namespace, name)
            return None
        meta = obj["metadata"]
        bound = log.bind(namespace=namespace, name=name, generation=meta.get("generation"))
        try:
            rollout = ModelRollout.model_validate(obj)
        except ValidationError as exc:
            self._invalid(obj, exc, bound)
            return None
        deleting = rollout.metadata.deletion_timestamp is not None
        if not deleting and FINALIZER not in rollout.metadata.finalizers:
            self._guard()
            obj = self.rollouts.set_finalizers(obj, [*rollout.metadata.finalizers, FINALIZER])
            self.telemetry.api_writes.labels("finalizer").inc()
        if deleting and FINALIZER not in rollout.metadata.finalizers:
            return None

        now = self.clock.now()
        key, uid = (namespace, name), rollout.metadata.uid or ""
        # The status of record, and what this process decided on top of it but kept unwritten
        # (evidence only, controller/evidence.py): decisions are taken from the latter.
        recorded = rollout.status.wire()
        spec, status = rollout.spec, self.evidence.current(key, uid, recorded) or rollout.status
        routing, route_problem = self._read_route(namespace, name, spec, status, fresh=fresh)
        applied = routing.weights if routing is not None else None
        mirrored = routing.mirrored if routing is not None else None
        judgements: dict[str, Judgement] | None = None
        pair = pair_in_flight(status)
        if pair is not None and route_problem is None and analysis_due(spec, status, applied, now, mirrored):
            provider = self.providers.for_rollout(namespace, spec.provider)
            # In shadow the shadow's guardrails are judged (core/shadow.py).
            judgements = observe_and_judge(
                spec=phase_spec(spec, status),
                status=status,
                provider=provider,
                namespace=namespace,
                rollout=name,
                pair=pair,
                now=now,
                batches=self.providers.batches,
            )
        answers, deliveries = self.webhooks.take(namespace, name) if self.webhooks is not None else ((), ())
        outcome = decide(
            RolloutInput(
                spec=spec,
                status=status,
                now=now,
                generation=rollout.metadata.generation,
                deleting=deleting,
                applied=applied,
                mirrored=mirrored,
                stale_mirrors=routing.stale if routing is not None else None,
                router_problem=route_problem,
                judgements=judgements,
                requests=Requests(
                    promote=rollout.metadata.annotations.get(PROMOTE),
                    abort=rollout.metadata.annotations.get(ABORT),
                    retry=rollout.metadata.annotations.get(RETRY),
                ),
                answers=answers,
                deliveries=deliveries,
            )
        )
        # The decision is recorded before it is carried out: a controller killed in between
        # finds the step of record and (re)applies its weights, so no step is skipped,
        # repeated or exceeded. status.weights changes only with what the router read back.
        decided = outcome.status.wire()
        quiet = not (outcome.events or outcome.actions or outcome.asks or outcome.release)
        if quiet and self.evidence.keep(key, uid, recorded, decided, now):
            if judgements is not None:
                self.telemetry.analyses_unwritten.inc()
        else:
            obj = self._persist(obj, recorded, decided)
            self.evidence.forget(key)  # written (or nothing to write): a failed write keeps it
        if self.webhooks is not None:
            # Only once the decision is in status: what is owed is found there again after a restart.
            self.webhooks.submit(
                namespace=namespace, name=name, uid=rollout.metadata.uid or "", spec=spec, status=outcome.status,
                asks=outcome.asks,
            )  # fmt: skip
        self._emit(obj, outcome.events, outcome.status.step_display, bound)
        problem = self._act(namespace, name, spec, outcome, bound)
        if problem is not None:
            stalled = with_problem(
                outcome.status, problem.reason, problem.message, now=now, generation=rollout.metadata.generation
            )
            if outcome.status.reason != problem.reason:
                warning = Event("Warning", problem.reason, f"{problem.message}; traffic left as it is")
                self._emit(obj, [warning], outcome.status.step_display, bound)
            self._persist(obj, decided, stalled.wire())
            return PROBLEM_RETRY
        self._persist(obj, decided, outcome.status.wire())
        if outcome.release:
            self._guard()
            latest = self.rollouts.get(namespace, name)
            finalizers = [f for f in latest["metadata"].get("finalizers", []) if f != FINALIZER]
            self.rollouts.set_finalizers(latest, finalizers)
            self.telemetry.api_writes.labels("finalizer").inc()
            self.telemetry.forget_rollout(namespace, name)
            bound.info("released", decision="release")
            return None
        interval = parse_duration(spec.analysis.interval).total_seconds()
        self.telemetry.observe_rollout(namespace, name, outcome.status, interval=interval)
        return outcome.requeue_after

    # -- read -----------------------------------------------------------------------------------

    def _read_route(
        self, namespace: str, name: str, spec: ModelRolloutSpec, status: ModelRolloutStatus, *, fresh: bool
    ) -> tuple[Routing | None, tuple[str, str] | None]:
        pair = pair_in_flight(status)
        if pair is None:
            return None, None
        # The mirrors of record (status), never the spec's: a mirror is found by the comparator
        # it was written with, even if spec.shadow changed since.
        target = RouteTarget(
            namespace=namespace,
            rollout=name,
            traffic=spec.traffic,
            incumbent=pair[0],
            candidate=pair[1],
            comparator=status.shadow.comparator if status.shadow is not None else None,
            stale=tuple(status.pending_mirror_removals),
        )
        try:
            return router_for(spec.traffic, self.objects, self.clock).routing(target, fresh=fresh), None
        except RouterProblem as problem:
            return None, (problem.reason, problem.message)

    # -- act and persist ------------------------------------------------------------------------

    def _guard(self) -> None:
        if not self.may_write():
            raise NotLeader("lost leadership: not writing")

    def _act(
        self, namespace: str, name: str, spec: ModelRolloutSpec, outcome: Outcome, bound: Any
    ) -> RouterProblem | None:
        """Carry out the weight changes in order; stop at the first problem a human must fix."""
        status = outcome.status
        for action in outcome.actions:
            self._guard()
            # Each write names the mirrors it owns (core.engine.set_weights), as decided.
            target = RouteTarget(
                namespace=namespace,
                rollout=name,
                traffic=spec.traffic,
                incumbent=action.incumbent,
                candidate=action.candidate,
                comparator=action.comparator,
                stale=action.stale,
            )
            try:
                router = router_for(spec.traffic, self.objects, self.clock)
                routing = router.apply_routing(target, action.weights, action.mirror)
                read_back = routing.weights
            except RouterProblem as problem:
                if outcome.release:
                    bound.warning("could not restore traffic on deletion", reason=problem.reason, error=problem.message)
                    continue
                return problem
            self.telemetry.api_writes.labels("weights").inc()
            bound.info(
                "weights applied",
                decision="set-weights",
                model=action.candidate.name,
                incumbent=read_back.incumbent,
                candidate=read_back.candidate,
            )
            if status.candidate is not None and action.candidate.name == status.candidate.name:
                record_weights(
                    status,
                    read_back,
                    now=self.clock.now(),
                    generation=status.observed_generation or 0,
                    mirrored=routing.mirrored,
                    stale=routing.stale,
                )
        return None

    def _emit(self, obj: dict[str, Any], events: list[Event], step: str | None, bound: Any) -> None:
        for event in events:
            self._guard()
            if self.events.emit(obj, event.type, event.reason, event.message):
                self.telemetry.api_writes.labels("event").inc()
            self.telemetry.decisions.labels(event.reason).inc()
            bound.info(event.message, decision=event.reason, event_type=event.type, step=step)

    def _persist(self, obj: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """Write status only when it changed; return the object as the API server now has it."""
        if after == before and obj.get("status"):
            return obj
        self._guard()
        written = self.rollouts.replace_status(obj, after)
        self.telemetry.api_writes.labels("status").inc()
        return written

    def _invalid(self, obj: dict[str, Any], exc: ValidationError, bound: Any) -> None:
        """An object that bypassed the CRD's rules: say so in status and an Event, touch no traffic."""
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])[:1000]
        status = dict(obj.get("status") or {})
        if status.get("reason") == "InvalidSpec" and status.get("message") == message:
            return
        self._guard()
        status.update(
            {"reason": "InvalidSpec", "message": message, "observedGeneration": obj["metadata"].get("generation")}
        )
        self.rollouts.replace_status(obj, status)
        self.events.emit(obj, "Warning", "InvalidSpec", message)
        bound.warning("invalid spec", decision="invalid", error=message)
