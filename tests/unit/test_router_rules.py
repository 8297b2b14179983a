"""The pure parts of the Istio, KServe and replica-ratio routers, on crafted objects."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.models import ALL_CANDIDATE, ALL_INCUMBENT, ModelRef, Weights
from controller.routers.base import RouterProblem, pair_percent, same_ratio
from controller.routers.istio import Destination, find_pair, split_of, weight_patch
from controller.routers.kserve import predictor_of, predictor_patch
from controller.routers.kserve import split_of as kserve_split
from controller.routers.replicas import Deployment, replica_split
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
