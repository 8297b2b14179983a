"""What only the replica-ratio router does: rounding, the order of scaling, the scale-down delay.

Real Deployments on the real API server, each test twice (`deployments`):
- `played`: the test plays the deployment controller and kubelet (`settle()` marks the pods of
  each Deployment's spec ready), so "ready" happens only when the test says so;
- `controllers`: on a plane of its own with kube-controller-manager, kube-scheduler and kwok
  (tests/support/workload.py): the real deployment controller rolls out ReplicaSets, kwok makes
  the pods Ready, and `settle()` only waits for that.
The one test about the order of scaling needs "not ready yet" to last while it looks, so it runs
`played` only. The clock is a FakeClock: the delay is checked without waiting for it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from kubernetes import client

from controller.api.models import ALL_CANDIDATE, ALL_INCUMBENT, Weights
from controller.core.clock import FakeClock
from controller.kube.objects import Objects
from controller.routers.base import RouterProblem, RouteTarget, TrafficRouter
from controller.routers.replicas import SCALE_DOWN_ANNOTATION, ReplicaRatio
from tests.support.backends import CANDIDATE, INCUMBENT, ReplicasBackend, model
from tests.support.controlplane import ControlPlane


@pytest.fixture
def played(api_client: client.ApiClient, control_plane: ControlPlane, namespace: str) -> ReplicasBackend:
    assert control_plane.audit_log is not None
    backend = ReplicasBackend(api_client, namespace, control_plane.audit_log)
    backend.create()
    return backend


@pytest.fixture(params=["played", "controllers"])
def deployments(request: pytest.FixtureRequest) -> ReplicasBackend:
    if request.param == "played":
        backend: ReplicasBackend = request.getfixturevalue("played")
        return backend
    controlled: ReplicasBackend = request.getfixturevalue("replicas_under_controllers")
    return controlled


def setup(backend: ReplicasBackend, delay: str) -> tuple[TrafficRouter, RouteTarget, FakeClock]:
    backend.scale_down_delay = delay
    clock = FakeClock()
    target = RouteTarget(
        namespace=backend.namespace,
        rollout="fraud",
        traffic=backend.traffic(),
        incumbent=model(INCUMBENT),
        candidate=model(CANDIDATE),
    )
    return TrafficRouter(ReplicaRatio(), Objects(backend.api), clock), target, clock


def test_a_step_between_replica_multiples_rounds_the_candidate_down(deployments: ReplicasBackend) -> None:
    router, target, _ = setup(deployments, "0s")
    for _ in range(2):  # the candidate's pods, then the incumbent's scale-down
        router.apply(target, Weights.for_candidate(25))
        deployments.settle()
    # 25% of 10 replicas: 2 for the candidate, 8 for the incumbent; the share served is 20%.
    assert deployments.replicas(CANDIDATE) == (2, 2) and deployments.replicas(INCUMBENT) == (8, 8)
    assert router.applied(target) == Weights.for_candidate(25)


def test_the_incumbent_shrinks_only_once_the_candidates_pods_are_ready(played: ReplicasBackend) -> None:
    deployments = played
    router, target, _ = setup(deployments, "0s")
    reported = router.apply(target, Weights.for_candidate(50))
    # Capacity first: the candidate grows, the incumbent keeps all its pods.
    assert deployments.replicas(CANDIDATE)[0] == 5 and deployments.replicas(INCUMBENT)[0] == 10
    assert reported == ALL_INCUMBENT  # nothing of the candidate is ready yet: no claim of 50%
    assert router.apply(target, Weights.for_candidate(50)) == ALL_INCUMBENT
    assert deployments.replicas(INCUMBENT)[0] == 10
    deployments.settle()
    # 5 ready of 15: the share served is 33%, below the step's 50 on the way up.
    assert router.applied(target) == Weights.for_candidate(33)
    router.apply(target, Weights.for_candidate(50))
    assert deployments.replicas(INCUMBENT)[0] == 5
    assert router.applied(target) != Weights.for_candidate(50)  # the 5 surplus pods are still there
    deployments.settle()
    assert router.applied(target) == Weights.for_candidate(50)


def test_rollback_takes_the_candidates_pods_away_at_once(deployments: ReplicasBackend) -> None:
    router, target, _ = setup(deployments, "10m")
    for _ in range(2):
        router.apply(target, Weights.for_candidate(50))
        deployments.settle()
    router.apply(target, ALL_INCUMBENT)
    # No delay and no waiting for the incumbent's new pods: the candidate goes to 0 now.
    assert deployments.replicas(CANDIDATE)[0] == 0 and deployments.replicas(INCUMBENT)[0] == 10
    deployments.settle()
    assert router.applied(target) == ALL_INCUMBENT


def test_the_incumbent_keeps_its_pods_for_the_scale_down_delay_after_promotion(deployments: ReplicasBackend) -> None:
    router, target, clock = setup(deployments, "2m")
    for _ in range(2):
        router.apply(target, Weights.for_candidate(50))
        deployments.settle()
    router.apply(target, ALL_CANDIDATE)
    assert deployments.replicas(CANDIDATE)[0] == 10 and deployments.replicas(INCUMBENT)[0] == 5
    deployments.settle()
    router.apply(target, ALL_CANDIDATE)  # the candidate is ready: the delay starts now
    annotations = deployments.get(INCUMBENT)["metadata"]["annotations"]
    assert annotations[SCALE_DOWN_ANNOTATION] == (clock.now() + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")

    clock.advance(119)
    # A restarted controller (a new router) keeps the same moment: it is on the Deployment.
    restarted = TrafficRouter(ReplicaRatio(), Objects(deployments.api), clock)
    assert restarted.apply(target, ALL_CANDIDATE) != ALL_CANDIDATE
    assert deployments.replicas(INCUMBENT)[0] == 5

    clock.advance(1)
    restarted.apply(target, ALL_CANDIDATE)
    assert deployments.replicas(INCUMBENT)[0] == 0
    assert SCALE_DOWN_ANNOTATION not in (deployments.get(INCUMBENT)["metadata"].get("annotations") or {})
    deployments.settle()
    assert restarted.applied(target) == ALL_CANDIDATE


def test_a_step_smaller_than_one_replica_is_refused_without_a_write(deployments: ReplicasBackend) -> None:
    router, target, _ = setup(deployments, "0s")
    before = len(deployments.writes())
    with pytest.raises(RouterProblem) as caught:
        router.apply(target, Weights.for_candidate(5))
    assert caught.value.reason == "WeightTooSmall"
    assert "at least 20" in caught.value.message
    assert len(deployments.writes()) == before


def test_an_hpa_on_the_candidate_stops_the_router_until_it_is_gone(deployments: ReplicasBackend) -> None:
    """A HorizontalPodAutoscaler on one of the two Deployments would fight the router over
    `replicas` (with `controllers`, the real HPA controller in kube-controller-manager runs): the
    router reports it by name and writes nothing; once it is deleted, the step goes on."""
    router, target, _ = setup(deployments, "0s")
    autoscaling = client.AutoscalingV2Api(deployments.api)
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "fraud-autoscaler"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": CANDIDATE},
            "minReplicas": 1,
            "maxReplicas": 3,
        },
    }
    autoscaling.create_namespaced_horizontal_pod_autoscaler(deployments.namespace, hpa)
    before = len(deployments.writes())
    with pytest.raises(RouterProblem) as caught:
        router.apply(target, Weights.for_candidate(20))
    assert caught.value.reason == "HorizontalPodAutoscalerConflict"
    assert f"fraud-autoscaler (scales {CANDIDATE})" in caught.value.message
    assert len(deployments.writes()) == before
    with pytest.raises(RouterProblem):
        router.applied(target)  # reading the split reports it too
    autoscaling.delete_namespaced_horizontal_pod_autoscaler("fraud-autoscaler", deployments.namespace)
    for _ in range(2):
        router.apply(target, Weights.for_candidate(20))
        deployments.settle()
    assert router.applied(target) == Weights.for_candidate(20)
