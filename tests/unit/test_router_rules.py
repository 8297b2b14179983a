"""The pure parts of the routers on crafted objects: the Istio, KServe and replica-ratio rules, and
every router's plan (what it writes, given the objects as read)."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.models import ALL_CANDIDATE, ALL_INCUMBENT, ModelRef, Traffic, Weights
from controller.routers.base import Patch, RouterProblem, RouteTarget, pair_percent, same_ratio
from controller.routers.gatewayapi import HttpRouteWeights
from controller.routers.istio import Destination, VirtualServiceWeights, find_pair, split_of, weight_patch
from controller.routers.kserve import KServeCanary, predictor_of, predictor_patch
from controller.routers.kserve import split_of as kserve_split
from controller.routers.replicas import (
    SCALE_DOWN_ANNOTATION,
    WEIGHT_ANNOTATION,
    Deployment,
    ReplicaRatio,
    replica_split,
)
from controller.routers.replicas import split_of as replica_split_of

# -- shared ratio helpers ------------------------------------------------------------------------


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_pair_percent_adds_up_to_100_and_same_ratio_agrees(inc: int, cand: int) -> None:
    weights = pair_percent(inc, cand)
    if inc + cand == 0:
        assert weights is None
        return
    assert weights is not None and weights.incumbent + weights.candidate == 100
    assert same_ratio(inc * 3, cand * 3, Weights.for_candidate(50)) == (inc == cand)


# -- replica ratio -------------------------------------------------------------------------------


@given(st.integers(1, 1000), st.integers(0, 100))
def test_the_candidates_share_of_replicas_never_exceeds_its_weight(total: int, weight: int) -> None:
    inc, cand = replica_split(total, weight)
    assert inc + cand == total and inc >= 0 and cand >= 0
    assert cand * 100 <= weight * total
    # Rounded down by less than one replica.
    assert (cand + 1) * 100 > weight * total


@given(st.integers(1, 1000), st.integers(0, 99))
def test_more_weight_never_means_fewer_candidate_replicas(total: int, weight: int) -> None:
    assert replica_split(total, weight + 1)[1] >= replica_split(total, weight)[1]


def deployment(name: str, replicas: int, ready: int, *, weight: int | None = None, generation: int = 1) -> Deployment:
    annotations = {"modelrollout.dev/weight": str(weight)} if weight is not None else {}
    return Deployment.of(
        {
            "metadata": {"name": name, "generation": generation, "annotations": annotations, "resourceVersion": "1"},
            "spec": {"replicas": replicas},
            "status": {
                "observedGeneration": 1,
                "replicas": ready,
                "readyReplicas": ready,
                "updatedReplicas": ready,
            },
        }
    )


def test_a_recorded_step_is_claimed_only_when_both_deployments_serve_it() -> None:
    assert replica_split_of(deployment("a", 8, 8), deployment("b", 2, 2, weight=25), total=10, label="x") == (
        Weights.for_candidate(25)
    )
    # The incumbent's surplus pods are still ready: the ready share, rounded down.
    assert replica_split_of(deployment("a", 8, 10), deployment("b", 2, 2, weight=25), total=10, label="x") == (
        Weights.for_candidate(16)
    )
    # The Deployment controller has not seen the new spec yet.
    stale = deployment("b", 2, 2, weight=25, generation=2)
    assert replica_split_of(deployment("a", 8, 8), stale, total=10, label="x") != Weights.for_candidate(25)


def test_the_ends_read_from_the_counts_alone() -> None:
    assert replica_split_of(deployment("a", 10, 10), deployment("b", 0, 0), total=10, label="x") == ALL_INCUMBENT
    assert replica_split_of(deployment("a", 0, 0), deployment("b", 10, 10), total=10, label="x") == ALL_CANDIDATE


def test_no_ready_pod_at_all_is_a_problem() -> None:
    with pytest.raises(RouterProblem) as caught:
        replica_split_of(deployment("a", 0, 0), deployment("b", 0, 0), total=10, label="x")
    assert caught.value.reason == "NoReadyReplicas"


# -- Istio ----------------------------------------------------------------------------------------

INC, CAND = Destination("reco.svc", "v3"), Destination("reco.svc", "v4")


def vs(*routes: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"hosts": ["reco.svc"], "http": list(routes)}}


def route(name: str | None, *dests: tuple[str, str, int | None]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "route": [
            {"destination": {"host": h, "subset": s}, **({"weight": w} if w is not None else {})} for h, s, w in dests
        ]
    }
    if name:
        out["name"] = name
    return out


def test_istio_finds_the_named_route_and_reads_relative_weights() -> None:
    obj = vs(
        route("canary-debug", ("reco.svc", "v3", 50), ("reco.svc", "v4", 50)),
        route("primary", ("reco.svc", "v3", 9), ("reco.svc", "v4", 1), ("reco.svc", "legacy", 10)),
    )
    pair = find_pair(obj, label="vs", incumbent=INC, candidate=CAND, route_name="primary")
    assert pair.route_index == 1 and split_of(pair, label="vs") == Weights.for_candidate(10)
    ops = weight_patch(pair, Weights.for_candidate(20))
    assert {"op": "test", "path": "/spec/http/1/name", "value": "primary"} in ops
    assert {"op": "add", "path": "/spec/http/1/route/1/weight", "value": 20} in ops
    assert not any(op["path"].startswith("/spec/http/1/route/2") for op in ops)  # the third is not ours


def test_istio_default_is_the_first_route_with_both() -> None:
    obj = vs(route(None, ("reco.svc", "v3", 100)), route(None, ("reco.svc", "v3", 100), ("reco.svc", "v4", None)))
    pair = find_pair(obj, label="vs", incumbent=INC, candidate=CAND, route_name=None)
    # An omitted weight in a route of several destinations is 0 (proto3 default).
    assert pair.route_index == 1 and split_of(pair, label="vs") == ALL_INCUMBENT


@pytest.mark.parametrize(
    ("obj", "name", "reason", "says"),
    [
        (vs(route("primary", ("reco.svc", "v3", 100))), "primary", "BackendNotInRoute", "subset v4 (the candidate's)"),
        (vs(route("primary", ("reco.svc", "v3", 100))), "other", "BackendNotInRoute", "no http route named other"),
        (vs(route(None, ("reco.svc", "v3", 100))), None, "BackendNotInRoute", "add the candidate's destination"),
        (
            vs(route(None, ("reco.svc", "v3", 0), ("reco.svc", "v4", 0))),
            None,
            "ZeroWeights",
            "neither model gets traffic",
        ),
        (
            vs(route(None, ("reco.svc", "v3", 50), ("reco.svc", "v4", 25), ("reco.svc", "v4", 25))),
            None,
            "AmbiguousBackend",
            "2 times",
        ),
        ({"spec": {"http": "nope"}}, None, "MalformedRoute", "spec.http"),
        (vs(route(None, ("reco.svc", "v3", -1), ("reco.svc", "v4", 1))), None, "MalformedRoute", "weight is -1"),
    ],
)
def test_istio_problems_name_what_to_fix(obj: dict[str, Any], name: str | None, reason: str, says: str) -> None:
    with pytest.raises(RouterProblem) as caught:
        split_of(find_pair(obj, label="vs", incumbent=INC, candidate=CAND, route_name=name), label="vs")
    assert caught.value.reason == reason and says in caught.value.message


# -- KServe ---------------------------------------------------------------------------------------


def ref(name: str) -> ModelRef:
    return ModelRef.model_validate({"name": name, "backend": {"storageUri": f"s3://m/{name}"}})


def isvc(uri: str, percent: int | None = None, key: str = "model") -> dict[str, Any]:
    predictor: dict[str, Any] = {key: {"storageUri": uri}}
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    return {"metadata": {"resourceVersion": "7"}, "spec": {"predictor": predictor}}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (isvc("s3://m/v1"), ALL_INCUMBENT),
        (isvc("s3://m/v1", 100), ALL_INCUMBENT),
        (isvc("s3://m/v2", 20), Weights.for_candidate(20)),
        (isvc("s3://m/v2"), ALL_CANDIDATE),
        (isvc("s3://m/v2", 0), ALL_INCUMBENT),  # KServe's rollback: pinned to the rolled-out revision
        (isvc("s3://m/v9", 0), ALL_INCUMBENT),  # the same after an earlier candidate's rollback
        (isvc("s3://m/v2", 30, key="sklearn"), Weights.for_candidate(30)),
    ],
)
def test_kserve_reads_the_split_as_kserve_applies_it(obj: dict[str, Any], expected: Weights) -> None:
    predictor = predictor_of(obj, label="isvc")
    assert kserve_split(predictor, label="isvc", incumbent=ref("v1"), candidate=ref("v2")) == expected


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (isvc("s3://m/v9", 20), "ModelNotServed"),
        (isvc("s3://m/v1", 20), "CanaryInProgress"),
        ({"spec": {"predictor": {"containers": [{"name": "c", "image": "i"}]}}}, "MalformedInferenceService"),
        ({"spec": {"predictor": {"model": {}, "sklearn": {}}}}, "MalformedInferenceService"),
        ({"spec": {}}, "MalformedInferenceService"),
    ],
)
def test_kserve_problems(obj: dict[str, Any], reason: str) -> None:
    with pytest.raises(RouterProblem) as caught:
        kserve_split(predictor_of(obj, label="isvc"), label="isvc", incumbent=ref("v1"), candidate=ref("v2"))
    assert caught.value.reason == reason


def test_kserve_patches_are_kserves_own_canary_promote_and_rollback() -> None:
    predictor = predictor_of(isvc("s3://m/v1"), label="isvc")
    step = predictor_patch(predictor, Weights.for_candidate(10), ref("v2"))
    assert step == {
        "metadata": {"resourceVersion": "7"},
        "spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": "s3://m/v2"}}},
    }
    promote = predictor_patch(predictor, ALL_CANDIDATE, ref("v2"))
    assert promote["spec"]["predictor"]["canaryTrafficPercent"] is None  # removed: KServe's promote
    rollback = predictor_patch(predictor, ALL_INCUMBENT, ref("v2"))
    assert rollback["spec"]["predictor"] == {"canaryTrafficPercent": 0}


# -- plans: what each router writes, given objects as read (no API server) ------------------------
#
# routers.base.TrafficRouter gets the objects, asks the router's plan for patches, writes them in
# order and reads the weights back from what the server stored. Here a tiny stand-in for the
# server applies the patches (RFC 6902 for a list, RFC 7386 for a dict), so the plans are checked
# for what they do to the objects: reach the weights asked for, touch nothing else, write nothing
# when there is nothing to change.

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def apply_patch(obj: dict[str, Any], patch: Patch) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    if isinstance(patch.body, dict):
        return merge(out, patch.body)
    for op in patch.body:
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "test":
            assert node[last] == op["value"], op  # the server would refuse the whole patch (422)
        else:
            assert op["op"] == "add", op
            node[last] = op["value"]
    return out


def merge(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            obj.pop(key, None)
        elif isinstance(value, dict) and isinstance(obj.get(key), dict):
            merge(obj[key], value)
        else:
            obj[key] = copy.deepcopy(value)
    return obj


def target_for(block: dict[str, Any]) -> RouteTarget:
    return RouteTarget(
        namespace="models",
        rollout="fraud",
        traffic=Traffic.model_validate(block),
        incumbent=ref("v1"),
        candidate=ref("v2"),
    )


def httproute(candidate: int) -> dict[str, Any]:
    refs = [{"name": "v1", "weight": 100 - candidate}, {"name": "v2", "weight": candidate}, {"name": "v3", "weight": 7}]
    return {"metadata": {"labels": {"team": "a"}}, "spec": {"hostnames": ["x"], "rules": [{"backendRefs": refs}]}}


def virtualservice(candidate: int) -> dict[str, Any]:
    return vs(
        route("primary", ("reco.svc", "v1", 100 - candidate), ("reco.svc", "v2", candidate), ("reco.svc", "v3", 9))
    )


def inferenceservice(candidate: int) -> dict[str, Any]:
    obj = isvc("s3://m/v1") if candidate == 0 else isvc("s3://m/v2", None if candidate == 100 else candidate)
    obj["spec"]["predictor"]["minReplicas"] = 1
    return obj


def owned_fields_removed(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without the fields a router may write: what must survive its writes unchanged."""
    out = copy.deepcopy(obj)
    for rule in out["spec"].get("rules", []):
        for backend in rule["backendRefs"][:2]:
            backend.pop("weight")
    for http in out["spec"].get("http", []):
        for destination in http["route"][:2]:
            destination.pop("weight", None)
    predictor = out["spec"].get("predictor", {})
    predictor.pop("canaryTrafficPercent", None)
    predictor.get("model", {}).pop("storageUri", None)
    return out


SINGLE_OBJECT = {
    "gatewayAPI": (HttpRouteWeights(), {"gatewayAPI": {"httpRoute": "models"}}, httproute),
    "istio": (
        VirtualServiceWeights(),
        {"istio": {"virtualService": "vs", "route": "primary", "host": "reco.svc"}},
        virtualservice,
    ),
    "kserve": (KServeCanary(), {"kserve": {"inferenceService": "fraud"}}, inferenceservice),
}


@pytest.mark.parametrize("backend", sorted(SINGLE_OBJECT))
@given(start=st.integers(0, 100), wanted=st.integers(0, 100))
def test_a_plan_reaches_the_weights_asked_for_and_touches_nothing_else(backend: str, start: int, wanted: int) -> None:
    plan, block, make = SINGLE_OBJECT[backend]
    target, obj = target_for(block), make(start)
    patches = plan.patches(target, [obj], Weights.for_candidate(wanted), NOW)
    # One write at most, and none when the object already asks for this split.
    assert len(patches) == (0 if start == wanted else 1)
    written = apply_patch(obj, patches[0]) if patches else obj
    assert plan.weights(target, [written]) == Weights.for_candidate(wanted)
    assert plan.patches(target, [written], Weights.for_candidate(wanted), NOW) == []
    assert owned_fields_removed(written) == owned_fields_removed(obj)


@pytest.mark.parametrize("backend", sorted(SINGLE_OBJECT))
def test_a_plan_reads_one_object_named_by_the_block(backend: str) -> None:
    plan, block, _ = SINGLE_OBJECT[backend]
    [ref_] = plan.objects(target_for(block))
    assert ref_.namespace == "models" and ref_.name in {"models", "vs", "fraud"}
    assert "rollout fraud" in ref_.missing


def test_kserve_promotion_drops_a_leftover_canary_percent_of_100() -> None:
    obj = isvc("s3://m/v2", 100)
    target = target_for({"kserve": {"inferenceService": "fraud"}})
    assert KServeCanary().weights(target, [obj]) == ALL_CANDIDATE
    [patch] = KServeCanary().patches(target, [obj], ALL_CANDIDATE, NOW)
    assert "canaryTrafficPercent" not in apply_patch(obj, patch)["spec"]["predictor"]


# -- the replica ratio's plan: the candidate first, the incumbent when due -----------------------

TOTAL = 10


def replicas_target(delay: str = "0s") -> RouteTarget:
    return target_for({"replicas": {"totalReplicas": TOTAL, "scaleDownDelay": delay}})


def deployment_obj(name: str, replicas: int) -> dict[str, Any]:
    """A Deployment its controller has fully rolled out: every pod of its spec ready."""
    return settle(
        {
            "metadata": {"name": name, "generation": 1, "resourceVersion": "1", "annotations": {}},
            "spec": {"replicas": replicas},
        }
    )


def no_hpas() -> dict[str, Any]:
    """The namespace's HorizontalPodAutoscalers as listed (the router's third object): none."""
    return {"items": []}


def hpa(name: str, target: str, *, kind: str = "Deployment", api_version: str = "apps/v1") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"scaleTargetRef": {"apiVersion": api_version, "kind": kind, "name": target}, "maxReplicas": 5},
    }


def settle(obj: dict[str, Any]) -> dict[str, Any]:
    """What the deployment controller and the kubelet do next: the spec's pods become ready."""
    if "items" in obj:
        return obj  # the HPA list
    n = obj["spec"]["replicas"]
    obj["status"] = {
        "observedGeneration": obj["metadata"]["generation"],
        "replicas": n,
        "readyReplicas": n,
        "updatedReplicas": n,
    }
    return obj


def write(obj: dict[str, Any], patch: Patch) -> dict[str, Any]:
    """The API server's side of a Deployment write: the resourceVersion must match, and any change
    to spec or annotations bumps the generation (the apps strategy does)."""
    assert isinstance(patch.body, dict)
    assert patch.body["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"], "409"
    out = apply_patch(obj, patch)
    out["metadata"]["generation"] += 1
    out["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
    return out


def replicas_of(objects: list[dict[str, Any]]) -> tuple[int, int]:
    return objects[0]["spec"]["replicas"], objects[1]["spec"]["replicas"]


def one_pass(objects: list[dict[str, Any]], wanted: Weights, now: datetime, delay: str = "0s") -> list[dict[str, Any]]:
    """One TrafficRouter.apply: plan on what was read, write each patch to its object."""
    out = list(objects)
    for patch in ReplicaRatio().patches(replicas_target(delay), objects, wanted, now):
        out[patch.index] = write(out[patch.index], patch)
    return out


def test_replicas_reads_both_deployments_incumbent_first() -> None:
    refs = ReplicaRatio().objects(replicas_target())
    assert [(r.resource.kind, r.name, r.listed) for r in refs] == [
        ("Deployment", "v1", False),
        ("Deployment", "v2", False),
        ("HorizontalPodAutoscaler", "", True),
    ]


@pytest.mark.parametrize("target", ["v1", "v2"])
def test_an_hpa_on_either_deployment_is_a_problem_and_nothing_is_written(target: str) -> None:
    listed = {"items": [hpa("other", "unrelated"), hpa("pricing", target)]}
    objects = [deployment_obj("v1", 10), deployment_obj("v2", 0), listed]
    for plan in (
        lambda: ReplicaRatio().weights(replicas_target(), objects),
        lambda: ReplicaRatio().patches(replicas_target(), objects, Weights.for_candidate(20), NOW),
    ):
        with pytest.raises(RouterProblem) as caught:
            plan()
        assert caught.value.reason == "HorizontalPodAutoscalerConflict"
        assert f"pricing (scales {target})" in caught.value.message and "delete the HPA" in caught.value.message


def test_hpas_on_other_targets_are_not_a_problem() -> None:
    listed = {
        "items": [
            hpa("elsewhere", "v3"),
            hpa("a-statefulset", "v1", kind="StatefulSet"),
            hpa("another-group", "v2", api_version="example.com/v1"),
            {"metadata": {"name": "malformed"}, "spec": {}},
        ]
    }
    objects = [deployment_obj("v1", 10), deployment_obj("v2", 0), listed]
    assert ReplicaRatio().weights(replicas_target(), objects) == ALL_INCUMBENT


def test_a_step_grows_the_candidate_first_and_shrinks_the_incumbent_once_it_is_ready() -> None:
    objects = [deployment_obj("v1", 10), deployment_obj("v2", 0), no_hpas()]
    objects = one_pass(objects, Weights.for_candidate(20), NOW)
    assert replicas_of(objects) == (10, 2)
    assert objects[1]["metadata"]["annotations"] == {WEIGHT_ANNOTATION: "20"}
    # Not ready yet: nothing more to do, and the split read back is not the step's.
    assert one_pass(objects, Weights.for_candidate(20), NOW) == objects
    assert ReplicaRatio().weights(replicas_target(), objects) == ALL_INCUMBENT
    objects = one_pass([settle(o) for o in objects], Weights.for_candidate(20), NOW)
    assert replicas_of(objects) == (8, 2)
    assert ReplicaRatio().weights(replicas_target(), [settle(o) for o in objects]) == Weights.for_candidate(20)


def test_a_rollback_takes_the_candidates_pods_and_regrows_the_incumbent_at_once() -> None:
    objects = [deployment_obj("v1", 8), deployment_obj("v2", 2), no_hpas()]
    objects[1]["metadata"]["annotations"] = {WEIGHT_ANNOTATION: "20"}
    patches = ReplicaRatio().patches(replicas_target(), objects, ALL_INCUMBENT, NOW)
    assert [p.index for p in patches] == [1, 0]  # the candidate first
    assert replicas_of(one_pass(objects, ALL_INCUMBENT, NOW)) == (10, 0)


def test_recording_a_new_weight_on_the_candidate_holds_the_incumbent_for_that_pass() -> None:
    # 25% and 20% of 10 replicas are both 2: only the annotation changes, which is a write, so
    # the candidate is not settled until its controller has seen it.
    objects = [deployment_obj("v1", 10), deployment_obj("v2", 2), no_hpas()]
    objects[1]["metadata"]["annotations"] = {WEIGHT_ANNOTATION: "20"}
    [patch] = ReplicaRatio().patches(replicas_target(), objects, Weights.for_candidate(25), NOW)
    assert patch.index == 1 and patch.body["metadata"]["annotations"] == {WEIGHT_ANNOTATION: "25"}


def test_promotion_keeps_the_incumbent_for_the_scale_down_delay() -> None:
    objects = [deployment_obj("v1", 10), deployment_obj("v2", 0), no_hpas()]
    objects = [settle(o) for o in one_pass(objects, ALL_CANDIDATE, NOW, "2m")]
    assert replicas_of(objects) == (10, 10)
    objects = one_pass(objects, ALL_CANDIDATE, NOW, "2m")  # the candidate is ready: the delay starts
    assert objects[0]["metadata"]["annotations"] == {SCALE_DOWN_ANNOTATION: "2026-01-01T00:02:00Z"}
    assert replicas_of(objects) == (10, 10)
    objects = [settle(o) for o in objects]
    assert one_pass(objects, ALL_CANDIDATE, NOW + timedelta(seconds=119), "2m") == objects
    objects = one_pass(objects, ALL_CANDIDATE, NOW + timedelta(seconds=120), "2m")
    assert replicas_of(objects) == (0, 10) and objects[0]["metadata"]["annotations"] == {}


def test_a_step_worth_less_than_a_replica_is_refused() -> None:
    objects = [deployment_obj("v1", 10), deployment_obj("v2", 0), no_hpas()]
    with pytest.raises(RouterProblem) as caught:
        ReplicaRatio().patches(replicas_target(), objects, Weights.for_candidate(5), NOW)
    assert caught.value.reason == "WeightTooSmall" and "at least 20" in caught.value.message


def test_one_deployment_for_both_models_is_ambiguous() -> None:
    target = replicas_target()
    same = ModelRef.model_validate({"name": "v2", "backend": {"deployment": "v1"}})
    with pytest.raises(RouterProblem) as caught:
        ReplicaRatio().objects(dataclasses.replace(target, candidate=same))
    assert caught.value.reason == "AmbiguousBackend"


@given(
    weights=st.lists(st.sampled_from([0, 10, 20, 25, 50, 70, 100]), min_size=1, max_size=6),
    delay=st.sampled_from(["0s", "30s"]),
    ready_every=st.integers(1, 3),
)
def test_the_replica_ratio_never_drops_capacity_and_always_gets_there(
    weights: list[int], delay: str, ready_every: int
) -> None:
    """Whatever the steps and however slowly pods become ready: the incumbent's replicas plus the
    candidate's ready pods never fall below the total, the candidate never has more replicas than
    its weight's share, and applying again reaches the weights asked for."""
    objects = [deployment_obj("v1", TOTAL), deployment_obj("v2", 0), no_hpas()]
    now = NOW
    for weight in weights:
        wanted = Weights.for_candidate(weight)
        for attempt in range(12):
            objects = one_pass(objects, wanted, now, delay)
            incumbent, candidate = objects[0], objects[1]
            assert incumbent["spec"]["replicas"] + candidate["status"]["readyReplicas"] >= TOTAL
            assert candidate["spec"]["replicas"] * 100 <= weight * TOTAL
            if attempt % ready_every == 0:
                objects = [settle(o) for o in objects]
            now += timedelta(seconds=20)
            if ReplicaRatio().weights(replicas_target(delay), objects) == wanted:
                break
        assert ReplicaRatio().weights(replicas_target(delay), objects) == wanted, (weight, objects)
