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

A HorizontalPodAutoscaler that scales either Deployment would fight this router over
`spec.replicas` (each write undoing the other's, the split flapping), so the router also lists
the namespace's HPAs and, if one targets either Deployment, reports `HorizontalPodAutoscalerConflict`
naming it and writes nothing: traffic stays where it is until the HPA is removed or retargeted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.api.duration import parse_duration
from controller.api.models import ALL_CANDIDATE, ALL_INCUMBENT, ModelRef, ReplicasTraffic, Weights
from controller.kube.objects import Resource
from controller.routers.base import KubeObject, ObjectRef, Patch, RouterProblem, RouteTarget

DEPLOYMENT = Resource(group="apps", version="v1", plural="deployments", kind="Deployment")
HPA = Resource(group="autoscaling", version="v2", plural="horizontalpodautoscalers", kind="HorizontalPodAutoscaler")
WEIGHT_ANNOTATION = "modelrollout.dev/weight"
SCALE_DOWN_ANNOTATION = "modelrollout.dev/scale-down-at"


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


class ReplicaRatio:
    """RouterPlan for `traffic.replicas`: two Deployments in the rollout's namespace."""

    def objects(self, target: RouteTarget) -> list[ObjectRef]:
        names = deployment_name(target.incumbent), deployment_name(target.candidate)
        if names[0] == names[1]:
            raise RouterProblem(
                "AmbiguousBackend",
                f"the incumbent and the candidate are both served by Deployment {names[0]}: "
                f"give the models different backend.deployment",
            )
        return [
            ObjectRef(
                DEPLOYMENT,
                target.namespace,
                name,
                missing=f"the {role}'s backend.deployment, default its model name, in rollout {target.rollout}",
            )
            for role, name in (("incumbent", names[0]), ("candidate", names[1]))
        ] + [ObjectRef(HPA, target.namespace, "", missing="autoscaling/v2 is built into every API server", listed=True)]

    def weights(self, target: RouteTarget, objects: list[KubeObject]) -> Weights:
        check_autoscalers(objects[2], (deployment_name(target.incumbent), deployment_name(target.candidate)), target)
        incumbent, candidate = (Deployment.of(obj) for obj in objects[:2])
        return split_of(incumbent, candidate, total=_block(target).total_replicas, label=_label(target))

    def patches(self, target: RouteTarget, objects: list[KubeObject], wanted: Weights, now: datetime) -> list[Patch]:
        """The candidate first (growing adds capacity, shrinking takes traffic away at once), then
        the incumbent if it is due; the engine applies again until the split reads back."""
        block = _block(target)
        inc_want, cand_want = replica_split(block.total_replicas, wanted.candidate)
        if wanted.candidate > 0 and cand_want == 0:
            raise RouterProblem(
                "WeightTooSmall",
                f"{wanted.candidate}% of traffic.replicas.totalReplicas {block.total_replicas} is less than one "
                f"replica, so the candidate would get no traffic; raise totalReplicas to at least "
                f"{-(-100 // wanted.candidate)} or the step's weight",
            )
        # Both at zero ready replicas is someone's deliberate state or an outage: not ours to undo.
        self.weights(target, objects)
        incumbent, candidate = (Deployment.of(obj) for obj in objects[:2])
        # 0% and 100% read back exactly from the counts; a step in between needs its weight
        # recorded (2 of 10 replicas serves any step from 20 to 29%).
        unrecorded = 0 < wanted.candidate < 100 and candidate.nominal_weight() != wanted.candidate
        weight = {WEIGHT_ANNOTATION: str(wanted.candidate)} if candidate.replicas != cand_want or unrecorded else {}
        grow_or_shrink = _patch(1, candidate, cand_want, weight)
        # Any write to a Deployment (annotations too) bumps its generation: once written, the
        # candidate is not settled until its controller has seen it, so the incumbent waits.
        settled = grow_or_shrink is None and candidate.settled(cand_want)
        scale_incumbent = _patch(0, incumbent, *_incumbent_scale(block, incumbent, settled, inc_want, now))
        return [patch for patch in (grow_or_shrink, scale_incumbent) if patch is not None]


def check_autoscalers(listed: KubeObject, deployments: tuple[str, str], target: RouteTarget) -> None:
    """RouterProblem if a HorizontalPodAutoscaler in the list scales one of the two Deployments."""
    fighting = sorted(
        (str(hpa.get("metadata", {}).get("name")), str(ref.get("name")))
        for hpa in listed.get("items") or []
        for ref in [(hpa.get("spec") or {}).get("scaleTargetRef") or {}]
        if ref.get("kind") == "Deployment"
        and str(ref.get("apiVersion", "apps/v1")).split("/")[0] == "apps"
        and ref.get("name") in deployments
    )
    if fighting:
        named = ", ".join(f"{hpa} (scales {deployment})" for hpa, deployment in fighting)
        raise RouterProblem(
            "HorizontalPodAutoscalerConflict",
            f"HorizontalPodAutoscaler {target.namespace}/{named}: traffic.replicas sets the replicas of "
            f"Deployments {deployments[0]} and {deployments[1]} itself, and an HPA on either would undo each "
            f"step; delete the HPA or point it elsewhere for the rollout (traffic stays as it is until then)",
        )


def _incumbent_scale(
    block: ReplicasTraffic, incumbent: Deployment, candidate_settled: bool, want: int, now: datetime
) -> tuple[int, dict[str, str | None]]:
    """The incumbent's replicas and scale-down annotation due now (its count as it is: no change)."""
    pending = incumbent.annotations.get(SCALE_DOWN_ANNOTATION)
    if want >= incumbent.replicas:
        return want, {SCALE_DOWN_ANNOTATION: None}
    # Shrinking the incumbent: only once the candidate serves its share with ready pods.
    if not candidate_settled:
        return incumbent.replicas, {}
    delay = parse_duration(block.scale_down_delay)
    if want > 0 or delay <= timedelta(0):
        return want, {SCALE_DOWN_ANNOTATION: None}
    due = _parse_time(pending)
    if due is None:
        return incumbent.replicas, {SCALE_DOWN_ANNOTATION: (now + delay).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if now < due:
        return incumbent.replicas, {}
    return 0, {SCALE_DOWN_ANNOTATION: None}


def _patch(index: int, deployment: Deployment, replicas: int, annotations: Mapping[str, str | None]) -> Patch | None:
    """A merge patch of what differs, carrying the resourceVersion read; None if nothing does."""
    changed = {k: v for k, v in annotations.items() if deployment.annotations.get(k) != v}
    if replicas == deployment.replicas and not changed:
        return None
    body: dict[str, Any] = {"metadata": {"resourceVersion": deployment.resource_version}}
    if changed:
        body["metadata"]["annotations"] = changed
    if replicas != deployment.replicas:
        body["spec"] = {"replicas": replicas}
    return Patch(index, body)


def deployment_name(model: ModelRef) -> str:
    backend = model.backend
    return backend.deployment if backend is not None and backend.deployment else model.name


def _block(target: RouteTarget) -> ReplicasTraffic:
    block = target.traffic.replicas
    if block is None:
        raise ValueError(f"rollout {target.namespace}/{target.rollout} has no traffic.replicas block")
    return block


def _label(target: RouteTarget) -> str:
    return f"Deployments {target.namespace}/{deployment_name(target.incumbent)} and {deployment_name(target.candidate)}"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None  # a hand-edited annotation: start the delay again rather than act on garbage
