"""KServe InferenceService: KServe's own canary, driven one step at a time.

KServe splits traffic between the *previously rolled-out* predictor revision and the latest one:
changing the predictor's `storageUri` creates a revision, and `spec.predictor.canaryTrafficPercent`
gives it that share. This router writes only those two fields, the way KServe's canary guide does
by hand (kserve.github.io, "Canary Rollout"):

- a step: the candidate's `storageUri` and `canaryTrafficPercent: <weight>`;
- promotion: the candidate's `storageUri` and no `canaryTrafficPercent` (KServe's promote);
- rollback: `canaryTrafficPercent: 0`, which sends everything back to the rolled-out revision at
  once, without a new revision to start (KServe's rollback). The storageUri is left as it is, so
  the object reads exactly as after KServe's own rollback; the next candidate replaces it.

So reading the split back from the object: `canaryTrafficPercent: 0` means all traffic on the
rolled-out revision (the incumbent), whatever the storageUri; the candidate's storageUri with a
percent means that share; the incumbent's storageUri without a percent means all on the incumbent.

Writes are JSON merge patches carrying the resourceVersion read, so a concurrent edit makes the
API server refuse ours (409) and we read again; every other field of the object is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.api.models import ALL_CANDIDATE, ALL_INCUMBENT, KServeTraffic, ModelRef, Weights
from controller.kube.objects import Resource
from controller.routers.base import KubeObject, ObjectRef, Patch, RouterProblem, RouteTarget

INFERENCESERVICE = Resource(
    group="serving.kserve.io", version="v1beta1", plural="inferenceservices", kind="InferenceService"
)

# Predictor implementations carrying a storageUri: `model` (with modelFormat) is KServe's current
# form; the framework keys are the older one, still served by v1beta1.
IMPLEMENTATIONS = (
    "model",
    "sklearn",
    "xgboost",
    "lightgbm",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "pmml",
    "paddle",
    "huggingface",
)


@dataclass(frozen=True)
class Predictor:
    """What this router reads of an InferenceService: where the model is, and the canary share."""

    implementation: str
    storage_uri: str
    canary_percent: int | None
    resource_version: str

    @property
    def where(self) -> str:
        return f"spec.predictor.{self.implementation}.storageUri"


def predictor_of(isvc: dict[str, Any], *, label: str) -> Predictor:
    spec = isvc.get("spec")
    predictor = spec.get("predictor") if isinstance(spec, dict) else None
    if not isinstance(predictor, dict):
        raise RouterProblem("MalformedInferenceService", f"{label} has no spec.predictor")
    found = [key for key in IMPLEMENTATIONS if isinstance(predictor.get(key), dict)]
    if len(found) != 1:
        listed = ", ".join(found) if found else "none"
        raise RouterProblem(
            "MalformedInferenceService",
            f"{label}: spec.predictor must have exactly one model implementation with a storageUri "
            f"({', '.join(IMPLEMENTATIONS)}); it has {listed}",
        )
    implementation = found[0]
    uri = predictor[implementation].get("storageUri")
    if not isinstance(uri, str) or not uri:
        raise RouterProblem(
            "MalformedInferenceService",
            f"{label}: spec.predictor.{implementation} has no storageUri; this router moves traffic by storageUri",
        )
    percent = predictor.get("canaryTrafficPercent")
    if percent is not None and (not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100):
        raise RouterProblem(
            "MalformedInferenceService",
            f"{label}: spec.predictor.canaryTrafficPercent is {percent!r}, not an integer from 0 to 100",
        )
    return Predictor(
        implementation=implementation,
        storage_uri=uri,
        canary_percent=percent,
        resource_version=str(isvc.get("metadata", {}).get("resourceVersion", "")),
    )


def storage_uri(model: ModelRef) -> str | None:
    return model.backend.storage_uri if model.backend is not None else None


def split_of(predictor: Predictor, *, label: str, incumbent: ModelRef, candidate: ModelRef) -> Weights:
    """The split the InferenceService asks KServe for, between this pair."""
    if predictor.canary_percent == 0:
        return ALL_INCUMBENT  # pinned to the rolled-out revision: KServe's rollback
    if predictor.storage_uri == storage_uri(candidate):
        percent = 100 if predictor.canary_percent is None else predictor.canary_percent
        return Weights.for_candidate(percent)
    if predictor.storage_uri == storage_uri(incumbent):
        if predictor.canary_percent in (None, 100):
            return ALL_INCUMBENT
        raise RouterProblem(
            "CanaryInProgress",
            f"{label} is in a canary of its own ({predictor.where} is the incumbent's, "
            f"canaryTrafficPercent {predictor.canary_percent}): promote or roll it back in KServe first",
        )
    raise RouterProblem(
        "ModelNotServed",
        f"{label} serves {predictor.where} {predictor.storage_uri}, which is neither the incumbent's "
        f"({storage_uri(incumbent) or 'no backend.storageUri'}) nor the candidate's ({storage_uri(candidate)})",
    )


def predictor_patch(predictor: Predictor, weights: Weights, candidate: ModelRef) -> dict[str, Any]:
    """The merge patch that asks KServe for `weights` (None in a merge patch removes the field)."""
    body: dict[str, Any]
    if weights.candidate == 0:
        body = {"canaryTrafficPercent": 0}
    else:
        uri = storage_uri(candidate)
        percent = None if weights.candidate == 100 else weights.candidate
        body = {"canaryTrafficPercent": percent, predictor.implementation: {"storageUri": uri}}
    return {"metadata": {"resourceVersion": predictor.resource_version}, "spec": {"predictor": body}}


class KServeCanary:
    """RouterPlan for `traffic.kserve`: KServe's canary of an InferenceService in the rollout's namespace."""

    def objects(self, target: RouteTarget) -> list[ObjectRef]:
        return [
            ObjectRef(
                INFERENCESERVICE,
                target.namespace,
                _block(target).inference_service,
                missing=f"traffic.kserve.inferenceService of rollout {target.rollout}; is KServe installed?",
            )
        ]

    def weights(self, target: RouteTarget, objects: list[KubeObject]) -> Weights:
        return self._split(target, predictor_of(objects[0], label=self._label(target)))

    def patches(self, target: RouteTarget, objects: list[KubeObject], wanted: Weights, now: datetime) -> list[Patch]:
        if storage_uri(target.candidate) is None and wanted != ALL_INCUMBENT:
            # The API refuses a kserve rollout without it; a hand-built target may lack it.
            raise RouterProblem("MalformedRollout", "the candidate has no backend.storageUri for the kserve router")
        predictor = predictor_of(objects[0], label=self._label(target))
        # Promotion also drops a leftover canaryTrafficPercent: 100 of it would read the same.
        if self._split(target, predictor) == wanted and (wanted != ALL_CANDIDATE or predictor.canary_percent is None):
            return []
        return [Patch(0, predictor_patch(predictor, wanted, target.candidate))]

    def _label(self, target: RouteTarget) -> str:
        return f"InferenceService {target.namespace}/{_block(target).inference_service}"

    def _split(self, target: RouteTarget, predictor: Predictor) -> Weights:
        return split_of(predictor, label=self._label(target), incumbent=target.incumbent, candidate=target.candidate)


def _block(target: RouteTarget) -> KServeTraffic:
    block = target.traffic.kserve
    if block is None:
        raise ValueError(f"rollout {target.namespace}/{target.rollout} has no traffic.kserve block")
    return block
