"""One contract for every traffic router, run against each backend's real CRD on the real API server.

Given the target objects of a backend (an HTTPRoute to Services or to InferencePools, a
VirtualService, an InferenceService, two LLMInferenceServices of one route group, two
Deployments) in a fresh namespace, when the router sets, reads, rolls back and promotes, then the
objects as the API server has them (read by the test, never through the router) and the audit
log of writes show that:
- each step's weights reach the data plane and `applied()` reads back exactly that;
- rollback gives the incumbent everything and promotion the candidate, as the backend expects;
- setting the same weights twice makes no write;
- a foreign change to a field the router does not own survives its writes;
- a missing or malformed target is a RouterProblem naming it, and nothing is written;
- what the router reports comes from the object, not from what it was asked;
- run by the reconciler as the chart's ServiceAccount with no router granted, lacking get and
  then lacking patch on the target kind: RouterForbidden, Stalled, one Warning Event, no write.

Two Deployments run the contract twice: `replicas`, where the test plays the deployment controller
and the kubelet (it writes each Deployment's status), and `replicas-controllers`, on a plane with
the real kube-controller-manager, kube-scheduler and kwok (the `replicas_under_controllers` fixture), where
nothing is written in their place. The RBAC case runs on the shared plane only: the chart's
ServiceAccount is installed there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from controller.api import GROUP, PLURAL, VERSION
from controller.api.models import ALL_CANDIDATE, ALL_INCUMBENT, Weights
from controller.core.clock import FakeClock, SystemClock
from controller.kube.events import EventRecorder
from controller.kube.objects import Objects
from controller.kube.rollouts import Rollouts
from controller.kube.secrets import Secrets
from controller.metrics.address import AddressPolicy
from controller.metrics.registry import MetricProviders
from controller.reconciler import Reconciler
from controller.routers.base import RouterProblem, RouteTarget, TrafficRouter
from controller.routers.registry import router_for
from controller.telemetry import Telemetry
from tests.support.backends import (
    BACKENDS,
    CANDIDATE,
    INCUMBENT,
    Backend,
    LlmInferenceServiceBackend,
    ReplicasWithControllers,
    install_inference_pool_crds,
    install_istio_crds,
    install_kserve_crds,
    install_llm_inference_service_crds,
    wait_allowed,
)
from tests.support.chart import chart_service_account
from tests.support.controlplane import ControlPlane
from tests.support.world import rollout_body

STEPS = (10, 20, 50)


@pytest.fixture(scope="session")
def backend_crds(api_client: client.ApiClient, gateway_api: list[str]) -> list[str]:
    return [
        *gateway_api,
        *install_istio_crds(api_client),
        *install_kserve_crds(api_client),
        *install_llm_inference_service_crds(api_client),
        *install_inference_pool_crds(api_client),
    ]


def on_the_shared_plane(request: pytest.FixtureRequest, name: str) -> Backend:
    """Backend `name`'s objects in a fresh namespace of the shared plane (its CRDs installed)."""
    request.getfixturevalue("backend_crds")
    control_plane: ControlPlane = request.getfixturevalue("control_plane")
    assert control_plane.audit_log is not None
    chosen = BACKENDS[name](
        request.getfixturevalue("api_client"), request.getfixturevalue("namespace"), control_plane.audit_log
    )
    chosen.create()
    return chosen


@pytest.fixture(params=sorted(BACKENDS))
def shared_plane_backend(request: pytest.FixtureRequest) -> Backend:
    return on_the_shared_plane(request, request.param)


@pytest.fixture(params=[*sorted(BACKENDS), ReplicasWithControllers.name])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every backend of the shared plane, and two Deployments under the real deployment controller."""
    if request.param != ReplicasWithControllers.name:
        return on_the_shared_plane(request, request.param)
    controlled: Backend = request.getfixturevalue("replicas_under_controllers")
    return controlled


class Contract:
    """The router the reconciler would pick for the backend's traffic block, and its target."""

    def __init__(self, backend: Backend, api_client: client.ApiClient, clock: FakeClock | None = None) -> None:
        self.backend = backend
        self.router: TrafficRouter = router_for(backend.traffic(), Objects(api_client), clock)
        self.target = self.target_for(INCUMBENT, CANDIDATE)

    def target_for(self, incumbent: str, candidate: str) -> RouteTarget:
        return RouteTarget(
            namespace=self.backend.namespace,
            rollout="fraud",
            traffic=self.backend.traffic(),
            incumbent=self.backend.model(incumbent),
            candidate=self.backend.model(candidate),
        )

    def set(self, weights: Weights) -> Weights:
        """Apply until the data plane has it, letting the backend's controllers act in between.

        Only Deployments need more than one pass (the incumbent shrinks once the candidate's
        pods are ready); every other router must get there in one.
        """
        reported = self.router.apply(self.target, weights)
        for _ in range(3):
            if reported == weights:
                break
            self.backend.settle()
            reported = self.router.apply(self.target, weights)
        self.backend.settle()
        return self.router.applied(self.target)


@pytest.fixture
def contract(backend: Backend) -> Contract:
    return Contract(backend, backend.api)


def test_the_incumbent_starts_with_all_traffic(contract: Contract, backend: Backend) -> None:
    assert contract.router.applied(contract.target) == ALL_INCUMBENT
    assert backend.served() == ALL_INCUMBENT


def test_each_step_reaches_the_data_plane_and_reads_back(contract: Contract, backend: Backend) -> None:
    for weight in STEPS:
        assert contract.set(Weights.for_candidate(weight)) == Weights.for_candidate(weight)
        assert backend.served() == Weights.for_candidate(weight), f"step {weight}%"


def test_rollback_gives_the_incumbent_everything(contract: Contract, backend: Backend) -> None:
    contract.set(Weights.for_candidate(20))
    assert contract.set(ALL_INCUMBENT) == ALL_INCUMBENT
    assert backend.served() == ALL_INCUMBENT
    # And a retry of the same candidate starts again from there.
    assert contract.set(Weights.for_candidate(10)) == Weights.for_candidate(10)
    assert backend.served() == Weights.for_candidate(10)


def test_promotion_gives_the_candidate_everything(contract: Contract, backend: Backend) -> None:
    for weight in STEPS:
        contract.set(Weights.for_candidate(weight))
    assert contract.set(ALL_CANDIDATE) == ALL_CANDIDATE
    assert backend.served() == ALL_CANDIDATE


def test_the_next_rollout_starts_from_the_promoted_model(contract: Contract, backend: Backend) -> None:
    contract.set(Weights.for_candidate(50))
    contract.set(ALL_CANDIDATE)
    # fraud-v2 is now the incumbent; fraud-v3 (already in the objects at 0) the candidate.
    contract.target = contract.target_for(CANDIDATE, "fraud-v3")
    assert contract.router.applied(contract.target) == ALL_INCUMBENT
    assert contract.set(Weights.for_candidate(20)) == Weights.for_candidate(20)
    assert backend.served(CANDIDATE, "fraud-v3") == Weights.for_candidate(20)


def test_setting_the_same_weights_twice_writes_nothing(contract: Contract, backend: Backend) -> None:
    contract.set(Weights.for_candidate(20))
    before = len(backend.writes())
    assert contract.router.apply(contract.target, Weights.for_candidate(20)) == Weights.for_candidate(20)
    assert contract.router.apply(contract.target, Weights.for_candidate(20)) == Weights.for_candidate(20)
    assert len(backend.writes()) == before


def test_restoring_an_untouched_target_writes_nothing(contract: Contract, backend: Backend) -> None:
    before = len(backend.writes())
    assert contract.router.apply(contract.target, ALL_INCUMBENT) == ALL_INCUMBENT
    assert len(backend.writes()) == before


def test_a_foreign_change_survives_our_writes(contract: Contract, backend: Backend) -> None:
    backend.foreign_change()
    for weights in (Weights.for_candidate(20), Weights.for_candidate(50), ALL_INCUMBENT):
        contract.set(weights)
        assert backend.foreign_change_intact(), f"after setting {weights}"


def test_weights_reported_come_from_the_object(contract: Contract, backend: Backend) -> None:
    """Someone else moves the weights: the router says what the object has, not what it wrote."""
    contract.set(Weights.for_candidate(20))
    backend.set_by_hand(50)
    assert contract.router.applied(contract.target) == Weights.for_candidate(50)


def test_a_missing_target_is_a_problem_and_nothing_is_written(contract: Contract, backend: Backend) -> None:
    backend.delete()
    before = len(backend.writes())
    for call in (
        lambda: contract.router.applied(contract.target),
        lambda: contract.router.apply(contract.target, Weights.for_candidate(10)),
    ):
        with pytest.raises(RouterProblem) as caught:
            call()
        assert caught.value.reason.endswith("NotFound"), caught.value.reason
        assert backend.namespace in caught.value.message
    assert len(backend.writes()) == before


def test_a_malformed_target_is_a_problem_and_nothing_is_written(contract: Contract, backend: Backend) -> None:
    backend.malform()
    before = len(backend.writes())
    for call in (
        lambda: contract.router.applied(contract.target),
        lambda: contract.router.apply(contract.target, Weights.for_candidate(10)),
        lambda: contract.router.apply(contract.target, ALL_INCUMBENT),
    ):
        with pytest.raises(RouterProblem) as caught:
            call()
        assert caught.value.reason == backend.malformed_reason, caught.value.message
    assert len(backend.writes()) == before


# -- RBAC: the chart did not grant the router ---------------------------------------------------


@pytest.fixture(scope="session")
def routerless(
    control_plane: ControlPlane, api_client: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """(user, kubeconfig) of the chart's ServiceAccount with every router off: it may run rollouts
    (ModelRollouts, their status, Events) but neither get nor patch anything a router routes by."""
    workdir = tmp_path_factory.mktemp("routerless")
    _, user, kubeconfig = chart_service_account(
        control_plane, api_client, workdir, values=("--set", "routers.gatewayAPI=false"), release="mr-routerless"
    )
    wait_allowed(api_client, user, "get", GROUP, PLURAL, "default")
    return user, kubeconfig


@pytest.mark.parametrize("granted", [[], ["get", "list"]], ids=["lacking-get", "lacking-patch"])
def test_a_router_the_controller_may_not_use_is_router_forbidden_once_and_writes_nothing(
    shared_plane_backend: Backend, api_client: client.ApiClient, routerless: tuple[str, Path], granted: list[str]
) -> None:
    backend, (user, kubeconfig) = shared_plane_backend, routerless
    if granted:
        backend.grant(user, granted)
    lacking = "patch" if granted else "get"
    as_controller = config.new_client_from_config(config_file=str(kubeconfig))
    reconciler = Reconciler(
        rollouts=Rollouts(as_controller),
        objects=Objects(as_controller),
        events=EventRecorder(as_controller, host="contract"),
        providers=MetricProviders(secrets=Secrets(as_controller), default=None, address_policy=AddressPolicy()),
        clock=SystemClock(),
        telemetry=Telemetry(),
    )
    rollout = rollout_body("fraud", INCUMBENT, CANDIDATE, traffic=backend.traffic_block())
    for variant, name in (("incumbent", INCUMBENT), ("candidate", CANDIDATE)):
        rollout["spec"][variant]["backend"] = backend.model_backend(name)
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, backend.namespace, PLURAL, rollout
    )
    before = len(backend.writes())

    for _ in range(3):  # the first pass starts the rollout, the next ones find the same problem
        reconciler.reconcile(backend.namespace, "fraud")

    status = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        GROUP, VERSION, backend.namespace, PLURAL, "fraud"
    )["status"]
    assert status["reason"] == "RouterForbidden", status
    assert f"may not {lacking} {backend.plural}.{backend.group}" in status["message"]
    assert "routers." in status["message"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Stalled"] == "True"
    events = client.CoreV1Api(api_client).list_namespaced_event(backend.namespace).items
    warnings = [(e.reason, e.count) for e in events if e.type == "Warning" and e.involved_object.name == "fraud"]
    assert warnings == [("RouterForbidden", 1)]
    # No write reached the objects: lacking get, none was tried; lacking patch, each was refused.
    tried = backend.writes()[before:]
    assert [(w.verb, w.code) for w in tried] == ([] if lacking == "get" else [("patch", 403)] * len(tried))
    assert tried or lacking == "get"
    assert backend.served() == ALL_INCUMBENT


# -- the LLM docs' objects ------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _yaml_docs(page: str) -> list[dict[str, Any]]:
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return [d for block in blocks for d in yaml.safe_load_all(block) if isinstance(d, dict) and "kind" in d]


@pytest.mark.parametrize("page", ["llm.md", "routers.md"])
def test_the_docs_llm_objects_are_accepted_by_the_real_crds(
    backend_crds: list[str], api_client: client.ApiClient, namespace: str, page: str
) -> None:
    """Every InferencePool, LLMInferenceService, HTTPRoute and ModelRollout of the page, as written,
    is accepted by the API server with the real CRDs (server-side dry run, strict fields)."""
    kinds = {
        "InferencePool": ("inference.networking.k8s.io", "v1", "inferencepools"),
        "LLMInferenceService": ("serving.kserve.io", "v1alpha2", "llminferenceservices"),
        "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes"),
        "ModelRollout": (GROUP, VERSION, PLURAL),
    }
    checked = []
    for doc in _yaml_docs(page):
        if doc["kind"] not in kinds or "apiVersion" not in doc:
            continue
        group, version, plural = kinds[doc["kind"]]
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            group, version, namespace, plural, doc, dry_run="All", field_validation="Strict"
        )
        checked.append(doc["kind"])
    if page == "llm.md":
        assert sorted(set(checked)) == sorted(kinds), checked
    else:
        assert "LLMInferenceService" in checked


# -- two objects, two writes: what the data plane has in between ---------------------------------


def test_llm_inference_service_writes_never_give_the_candidate_more_in_between(
    backend_crds: list[str], api_client: client.ApiClient, control_plane: ControlPlane, namespace: str
) -> None:
    """Each of the router's two writes is a split KServe applies at once: after every write (from
    the audit log's copies of the objects), the candidate's share is at most the larger of the
    share before and the share asked for, through steps, a rollback, a retry and a promotion."""
    assert control_plane.audit_log is not None
    backend = LlmInferenceServiceBackend(api_client, namespace, control_plane.audit_log)
    backend.create()
    contract = Contract(backend, api_client)
    before = 0
    for weight in (10, 50, 0, 20, 100):
        seen = len(backend.served_history())
        assert contract.set(Weights.for_candidate(weight)) == Weights.for_candidate(weight)
        states = [w.candidate for _, w in backend.served_history()[seen:]]
        assert states and states[-1] == weight, states
        assert all(share <= max(before, weight) for share in states), (before, weight, states)
        before = weight


def test_llm_inference_service_group_with_a_third_member_taking_traffic_is_a_problem_and_nothing_is_written(
    backend_crds: list[str], api_client: client.ApiClient, control_plane: ControlPlane, namespace: str
) -> None:
    """fraud-v3, in the same group and serving the same name, at weight 20: KServe gives it a share
    the pair's weights do not show, so neither the split nor a promotion can be read from the pair."""
    assert control_plane.audit_log is not None
    backend = LlmInferenceServiceBackend(api_client, namespace, control_plane.audit_log)
    backend.create()
    backend.merge("fraud-v3", {"spec": {"router": {"route": {"weight": 20}}}})
    contract = Contract(backend, api_client)
    before = len(backend.writes())
    for call in (
        lambda: contract.router.applied(contract.target),
        lambda: contract.router.apply(contract.target, Weights.for_candidate(10)),
        lambda: contract.router.apply(contract.target, ALL_CANDIDATE),
    ):
        with pytest.raises(RouterProblem) as caught:
            call()
        assert caught.value.reason == "GroupHasOtherMembers", caught.value.message
        assert "fraud-v3 (weight 20)" in caught.value.message and namespace in caught.value.message
    assert len(backend.writes()) == before
    # Back at weight 0 it takes nothing: the pair is the group's traffic again.
    backend.merge("fraud-v3", {"spec": {"router": {"route": {"weight": 0}}}})
    assert contract.set(Weights.for_candidate(10)) == Weights.for_candidate(10)
