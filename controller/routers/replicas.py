"""Replica ratio: two Deployments behind one Service, for teams with no mesh and no gateway.

A Service spreads connections over ready endpoints, so the candidate's share of traffic is its
share of ready replicas. For a step of weight w and `totalReplicas` T the candidate gets
floor(T * w / 100) replicas and the incumbent the rest: rounding is always down for the
candidate, so its share never exceeds the step's weight (T = 10 and w = 25 gives 2 of 10).

Order of changes, so that neither capacity nor safety is lost on the way:
- a Deployment that grows is scaled at once;
- the candidate shrinks at once (a rollback must take its traffic away now);
- the incumbent shrinks only once the candidate's replicas are all ready, and at promotion
  (incumbent to 0) only `scaleDownDelay` after that, so it keeps serving while the candidate
  proves it can take all of the load. The moment it may go is an annotation on the incumbent
  Deployment (`modelrollout.dev/scale-down-at`), so a restarted controller keeps the same time.

What it reports is read back from both Deployments' status: the step's weight once both have
exactly that step's replicas ready (the weight is recorded on the candidate Deployment as
`modelrollout.dev/weight`, because 2 of 10 replicas serves any step from 20 to 29%); otherwise
the ready share rounded down. So `kubectl get mro` shows a step's weight only once the pods that
serve it are ready.

Writes are merge patches of `spec.replicas` and those annotations, carrying the resourceVersion
read (409 on a concurrent edit, then read again). Nothing else of the Deployments is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.api.duration import parse_duration
from controller.api.models import ALL_CANDIDATE, ALL_INCUMBENT, ModelRef, ReplicasRouter
from controller.core.clock import Clock
from controller.kube.errors import Conflict, Forbidden, NotFound
from controller.kube.objects import Objects, Resource
from controller.routers.base import RouterProblem, RouteTarget, Weights, forbidden, read_target

DEPLOYMENT = Resource(group="apps", version="v1", plural="deployments", kind="Deployment")
WEIGHT_ANNOTATION = "modelrollout.dev/weight"
SCALE_DOWN_ANNOTATION = "modelrollout.dev/scale-down-at"

PATCH_ATTEMPTS = 3


def replica_split(total: int, candidate_weight: int) -> tuple[int, int]:
    """(incumbent, candidate) replicas for a candidate weight: the candidate's share rounded down."""
    candidate = total * candidate_weight // 100
    return total - candidate, candidate


@dataclass(frozen=True)
class Deployment:
    """What this router reads of a Deployment."""

    name: str
    replicas: int
    ready: int
    settled_at: int | None  # the replica count its status shows fully rolled out, if any
    annotations: dict[str, str]
    resource_version: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Deployment:
        meta, spec, status = obj.get("metadata", {}), obj.get("spec") or {}, obj.get("status") or {}
        replicas = spec.get("replicas", 1)  # the Deployment default
        ready = int(status.get("readyReplicas") or 0)
        current = (status.get("observedGeneration") or 0) >= (meta.get("generation") or 0)
        pods = int(status.get("replicas") or 0)
        updated = int(status.get("updatedReplicas") or 0)
        # Settled: the controller saw this spec, and exactly `replicas` pods exist, all updated
        # and ready (no surplus old pods still serving, no pod of an older template counted).
        settled = current and pods == replicas and ready == replicas and (replicas == 0 or updated == replicas)
        return cls(
            name=str(meta.get("name")),
            replicas=int(replicas),
            ready=ready,
            settled_at=int(replicas) if settled else None,
            annotations=dict(meta.get("annotations") or {}),
            resource_version=str(meta.get("resourceVersion", "")),
        )

    def settled(self, replicas: int) -> bool:
        return self.settled_at == replicas

    def nominal_weight(self) -> int | None:
        value = self.annotations.get(WEIGHT_ANNOTATION, "")
        return int(value) if value.isdigit() and int(value) <= 100 else None


def split_of(incumbent: Deployment, candidate: Deployment, *, total: int, label: str) -> Weights:
    """The split the two Deployments serve now (see the module doc)."""
    nominal = candidate.nominal_weight()
    if nominal is not None:
        inc, cand = replica_split(total, nominal)
        if incumbent.settled(inc) and candidate.settled(cand):
            return Weights.for_candidate(nominal)
    if candidate.settled(0) and incumbent.ready > 0:
        return ALL_INCUMBENT
    if incumbent.settled(0) and candidate.ready > 0:
        return ALL_CANDIDATE
    ready = incumbent.ready + candidate.ready
    if ready == 0:
        raise RouterProblem(
            "NoReadyReplicas",
            f"{label}: neither Deployment {incumbent.name} nor {candidate.name} has a ready replica, so no model "
            f"serves traffic; check their pods",
        )
    return Weights.for_candidate(100 * candidate.ready // ready)


class ReplicaRatioRouter:
    """TrafficRouter for `traffic.replicas`: two Deployments in the rollout's namespace."""

    def __init__(self, objects: Objects, clock: Clock) -> None:
        self._objects = objects
        self._clock = clock

    def applied(self, target: RouteTarget) -> Weights:
        incumbent, candidate = self._read(target)
        return split_of(incumbent, candidate, total=_router(target).total_replicas, label=_label(target))

    def apply(self, target: RouteTarget, weights: Weights) -> Weights:
        router = _router(target)
        inc_want, cand_want = replica_split(router.total_replicas, weights.candidate)
        if weights.candidate > 0 and cand_want == 0:
            raise RouterProblem(
                "WeightTooSmall",
                f"{weights.candidate}% of traffic.replicas.totalReplicas {router.total_replicas} is less than one "
                f"replica, so the candidate would get no traffic; raise totalReplicas to at least "
                f"{-(-100 // weights.candidate)} or the step's weight",
            )
        for attempt in range(1, PATCH_ATTEMPTS + 1):
            incumbent, candidate = self._read(target)
            # Both at zero ready replicas is someone's deliberate state or an outage: not ours to undo.
            split_of(incumbent, candidate, total=router.total_replicas, label=_label(target))
            try:
                # 0% and 100% read back exactly from the counts; a step in between needs its weight
                # recorded (2 of 10 replicas serves any step from 20 to 29%).
                unrecorded = 0 < weights.candidate < 100 and candidate.nominal_weight() != weights.candidate
                if candidate.replicas != cand_want or unrecorded:
                    # Grow or shrink at once: growing adds capacity, shrinking takes traffic away.
                    candidate = self._patch(target, candidate, cand_want, {WEIGHT_ANNOTATION: str(weights.candidate)})
                incumbent = self._scale_incumbent(target, router, incumbent, candidate, inc_want, cand_want)
            except Conflict:
                if attempt == PATCH_ATTEMPTS:
                    raise
                continue
            return split_of(incumbent, candidate, total=router.total_replicas, label=_label(target))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _scale_incumbent(
        self,
        target: RouteTarget,
        router: ReplicasRouter,
        incumbent: Deployment,
        candidate: Deployment,
        want: int,
        cand_want: int,
    ) -> Deployment:
        pending = incumbent.annotations.get(SCALE_DOWN_ANNOTATION)
        if want >= incumbent.replicas:
            if want == incumbent.replicas and pending is None:
                return incumbent
            return self._patch(target, incumbent, want, {SCALE_DOWN_ANNOTATION: None})
        # Shrinking the incumbent: only once the candidate serves its share with ready pods.
        if not candidate.settled(cand_want):
            return incumbent
        delay = parse_duration(router.scale_down_delay)
        if want > 0 or delay <= timedelta(0):
            return self._patch(target, incumbent, want, {SCALE_DOWN_ANNOTATION: None})
        now = self._clock.now()
        due = _parse_time(pending)
        if due is None:
            when = (now + delay).strftime("%Y-%m-%dT%H:%M:%SZ")
            return self._patch(target, incumbent, incumbent.replicas, {SCALE_DOWN_ANNOTATION: when})
        if now < due:
            return incumbent
        return self._patch(target, incumbent, 0, {SCALE_DOWN_ANNOTATION: None})

    def _patch(
        self, target: RouteTarget, deployment: Deployment, replicas: int, annotations: dict[str, str | None]
    ) -> Deployment:
        changed = {k: v for k, v in annotations.items() if deployment.annotations.get(k) != v}
        if replicas == deployment.replicas and not changed:
            return deployment
        body: dict[str, Any] = {"metadata": {"resourceVersion": deployment.resource_version}}
        if changed:
            body["metadata"]["annotations"] = changed
        if replicas != deployment.replicas:
            body["spec"] = {"replicas": replicas}
        try:
            patched = self._objects.merge_patch(DEPLOYMENT, target.namespace, deployment.name, body)
        except NotFound:
            raise _missing(target, deployment.name) from None
        except Forbidden:
            raise forbidden(DEPLOYMENT, target.namespace, deployment.name, "patch") from None
        return Deployment.of(patched)

    def _read(self, target: RouteTarget) -> tuple[Deployment, Deployment]:
        names = deployment_name(target.incumbent), deployment_name(target.candidate)
        if names[0] == names[1]:
            raise RouterProblem(
                "AmbiguousBackend",
                f"the incumbent and the candidate are both served by Deployment {names[0]}: "
                f"give the models different backend.deployment",
            )
        read = [
            Deployment.of(
                read_target(
                    self._objects,
                    DEPLOYMENT,
                    target.namespace,
                    name,
                    missing=f"the {role}'s backend.deployment, default its model name, in rollout {target.rollout}",
                )
            )
            for role, name in (("incumbent", names[0]), ("candidate", names[1]))
        ]
        return read[0], read[1]


def deployment_name(model: ModelRef) -> str:
    backend = model.backend
    return backend.deployment if backend is not None and backend.deployment else model.name


def _router(target: RouteTarget) -> ReplicasRouter:
    router = target.traffic.replicas
    if router is None:
        raise ValueError(f"rollout {target.namespace}/{target.rollout} has no traffic.replicas block")
    return router


def _label(target: RouteTarget) -> str:
    return f"Deployments {target.namespace}/{deployment_name(target.incumbent)} and {deployment_name(target.candidate)}"


def _missing(target: RouteTarget, name: str) -> RouterProblem:
    return RouterProblem(
        "DeploymentNotFound", f"Deployment {target.namespace}/{name} not found (rollout {target.rollout})"
    )


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None  # a hand-edited annotation: start the delay again rather than act on garbage
