"""Every traffic backend as the router contract suite sees it, on the real test API server.

Each backend's real CRD is installed: Istio's from the module istio.io/api, KServe's
InferenceService and LLMInferenceService from github.com/kserve/kserve, the InferencePool from
sigs.k8s.io/gateway-api-inference-extension, all through the Go module proxy (not committed);
Deployments are built in. A backend here creates the target objects for a pair of models, reads the split the
data plane would apply straight from the objects (never through the router under test), makes
foreign and malformed changes, and lists the writes the audit log saw.

The test plane has no kube-controller-manager and no kubelet, so for Deployments `settle()`
writes the status the deployment controller would write once the pods are ready (replicas,
readyReplicas, updatedReplicas, observedGeneration). Until it is called nothing is ready, as in
a cluster whose pods are still starting.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from controller.api.models import ModelRef, Traffic, Weights
from tests.support.audit import Write, writes
from tests.support.gatewayapi import GROUP as GW_GROUP
from tests.support.gatewayapi import PLURAL as GW_PLURAL
from tests.support.gatewayapi import VERSION as GW_VERSION
from tests.support.gatewayapi import make_httproute
from tests.support.gomodules import module_dir
from tests.support.kube import apply_crd, wait_allowed, wait_established

ISTIO_API_VERSION = os.environ.get("ISTIO_API_VERSION", "v1.32.0")
KSERVE_VERSION = os.environ.get("KSERVE_VERSION", "v0.16.0")
# LLMInferenceService canary groups (spec.router.route.group/weight) came with KServe v0.20.0.
KSERVE_LLM_VERSION = os.environ.get("KSERVE_LLM_VERSION", "v0.20.0")
# v1.6.0 ships only the pool CRDs (config/crd/bases/); the proxy may not list it, but serves it.
INFERENCE_EXTENSION_VERSION = os.environ.get("INFERENCE_EXTENSION_VERSION", "v1.6.0")
INFERENCE_GROUP = "inference.networking.k8s.io"

INCUMBENT, CANDIDATE = "fraud-v1", "fraud-v2"
HOST = "fraud.models.svc.cluster.local"
TOTAL_REPLICAS = 10


def install_istio_crds(api: client.ApiClient) -> list[str]:
    """VirtualService and DestinationRule, from istio.io/api's generated CRD file."""
    path = module_dir("istio.io/api", ISTIO_API_VERSION) / "kubernetes" / "customresourcedefinitions.gen.yaml"
    wanted = {"virtualservices.networking.istio.io", "destinationrules.networking.istio.io"}
    return _install(api, [d for d in yaml.safe_load_all(path.read_text()) if d and d["metadata"]["name"] in wanted])


def install_kserve_crds(api: client.ApiClient) -> list[str]:
    """InferenceService, the full schema (the one KServe's own install applies)."""
    path = (
        module_dir("github.com/kserve/kserve", KSERVE_VERSION)
        / "config/crd/full/serving.kserve.io_inferenceservices.yaml"
    )
    return _install(api, [d for d in yaml.safe_load_all(path.read_text()) if d])


def install_llm_inference_service_crds(api: client.ApiClient) -> list[str]:
    """LLMInferenceService (v1alpha1 and v1alpha2), the full schema of KServe v0.20.0."""
    path = (
        module_dir("github.com/kserve/kserve", KSERVE_LLM_VERSION)
        / "config/crd/full/llmisvc/serving.kserve.io_llminferenceservices.yaml"
    )
    return _install(api, [d for d in yaml.safe_load_all(path.read_text()) if d])


def install_inference_pool_crds(api: client.ApiClient) -> list[str]:
    """InferencePool (inference.networking.k8s.io/v1), the Gateway API Inference Extension's."""
    path = (
        module_dir("sigs.k8s.io/gateway-api-inference-extension", INFERENCE_EXTENSION_VERSION)
        / f"config/crd/bases/{INFERENCE_GROUP}_inferencepools.yaml"
    )
    return _install(api, [d for d in yaml.safe_load_all(path.read_text()) if d])


def inference_pool(name: str, port: int = 8000) -> dict[str, Any]:
    """An InferencePool selecting a model's vLLM pods, with its endpoint picker."""
    return {
        "apiVersion": f"{INFERENCE_GROUP}/v1",
        "kind": "InferencePool",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "targetPorts": [{"number": port}],
            "endpointPickerRef": {"name": f"{name}-epp", "port": {"number": 9002}},
        },
    }


def _install(api: client.ApiClient, docs: list[dict[str, Any]]) -> list[str]:
    if not docs:
        raise RuntimeError("no CRD found in the module")
    for doc in docs:
        apply_crd(api, doc)
    names = [d["metadata"]["name"] for d in docs]
    wait_established(client.ApiextensionsV1Api(api), names, timeout=60)
    return names


def uri(name: str) -> str:
    """Where a model's files are, for KServe's storageUri."""
    return f"s3://models/{name}"


def model(name: str) -> ModelRef:
    return ModelRef.model_validate({"name": name, "backend": {"storageUri": uri(name)}})


class Backend:
    """One backend's objects in one namespace. Subclasses fill in the backend's shape."""

    name = ""
    group, version, plural = "", "", ""
    malformed_reason = ""

    def __init__(self, api: client.ApiClient, namespace: str, audit_log: Path) -> None:
        self.api, self.namespace, self.audit_log = api, namespace, audit_log
        self.custom = client.CustomObjectsApi(api)

    def model_backend(self, name: str) -> dict[str, Any]:
        """A model's `backend` block for this backend (the KServe router's storageUri; others ignore it)."""
        return {"storageUri": uri(name)}

    def model(self, name: str) -> ModelRef:
        return ModelRef.model_validate({"name": name, "backend": self.model_backend(name)})

    # -- what a subclass provides ---------------------------------------------------------------

    def traffic_block(self) -> dict[str, Any]:
        raise NotImplementedError

    def create(self, incumbent: str = INCUMBENT, candidate: str = CANDIDATE) -> None:
        """The target objects with all traffic on `incumbent` and `candidate` ready at 0%."""
        raise NotImplementedError

    def object_names(self, incumbent: str, candidate: str) -> list[str]:
        """The objects whose state makes the split."""
        raise NotImplementedError

    def split(self, objects: Mapping[str, dict[str, Any]], incumbent: str, candidate: str) -> Weights | None:
        """The split the data plane applies given these objects (by name), read by the test itself
        (never through the router under test); None while nothing can serve (no ready pod)."""
        raise NotImplementedError

    def set_by_hand(self, candidate_weight: int) -> None:
        """Someone else moves the weights (a human with kubectl)."""
        raise NotImplementedError

    def foreign_change(self) -> None:
        """Someone else changes a field the router does not own."""
        raise NotImplementedError

    def foreign_change_intact(self) -> bool:
        raise NotImplementedError

    def malform(self) -> None:
        """Make the objects unusable for this pair in a way the schema still accepts."""
        raise NotImplementedError

    def delete(self) -> None:
        raise NotImplementedError

    def settle(self) -> None:
        """What the backend's own controllers would do next (only Deployments need it)."""

    # -- common ---------------------------------------------------------------------------------

    def served(self, incumbent: str = INCUMBENT, candidate: str = CANDIDATE) -> Weights:
        """The split the data plane would apply now."""
        objects = {name: self.get(name) for name in self.object_names(incumbent, candidate)}
        weights = self.split(objects, incumbent, candidate)
        assert weights is not None, f"nothing can serve: {objects}"
        return weights

    def served_history(self, incumbent: str = INCUMBENT, candidate: str = CANDIDATE) -> list[tuple[datetime, Weights]]:
        """(time, split) after every successful write of the objects that changed the split, from
        the copies of the objects in the audit log: unlike a sampler it misses no state, however
        short-lived. The time is when the API server received the write (nobody could read the
        new state earlier)."""
        names = set(self.object_names(incumbent, candidate))
        latest: dict[str, dict[str, Any]] = {}
        history: list[tuple[datetime, Weights]] = []
        for w in writes(self.audit_log, namespace=self.namespace, resource=self.plural):
            if w.name not in names or w.verb == "delete" or w.code >= 300 or not isinstance(w.response, dict):
                continue
            latest[w.name] = w.response
            weights = self.split(latest, incumbent, candidate) if len(latest) == len(names) else None
            if weights is not None and (not history or history[-1][1] != weights):
                history.append((w.time, weights))
        return history

    def traffic(self) -> Traffic:
        return Traffic.model_validate(self.traffic_block())

    def get(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            self.group, self.version, self.namespace, self.plural, name
        )
        return obj

    def create_object(self, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(self.group, self.version, self.namespace, self.plural, body)

    def merge(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            self.group,
            self.version,
            self.namespace,
            self.plural,
            name,
            patch,
            _content_type="application/merge-patch+json",
        )

    def json_patch(self, name: str, ops: list[dict[str, Any]]) -> None:
        self.custom.patch_namespaced_custom_object(
            self.group,
            self.version,
            self.namespace,
            self.plural,
            name,
            ops,
            _content_type="application/json-patch+json",
        )

    def writes(self) -> list[Write]:
        """Every write to this backend's objects in the namespace (status writes excluded)."""
        return [w for w in writes(self.audit_log, namespace=self.namespace, resource=self.plural) if not w.subresource]

    def delete_object(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(self.group, self.version, self.namespace, self.plural, name)

    def grant(self, user: str, verbs: list[str]) -> None:
        """Let a ServiceAccount (`system:serviceaccount:<ns>:<name>`) do `verbs` on this backend's
        kind in this namespace only, and wait until the API server's authorizer says so."""
        _, _, sa_namespace, sa = user.split(":")
        rbac = client.RbacAuthorizationV1Api(self.api)
        name = f"router-{'-'.join(verbs)}"
        rules = [{"apiGroups": [self.group], "resources": [self.plural], "verbs": verbs}, *self.also_read(verbs)]
        rbac.create_namespaced_role(self.namespace, {"metadata": {"name": name}, "rules": rules})
        rbac.create_namespaced_role_binding(
            self.namespace,
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_namespace}],
            },
        )
        for verb in verbs:
            wait_allowed(self.api, user, verb, self.group, self.plural, self.namespace)
        for rule in self.also_read(verbs):
            wait_allowed(self.api, user, "list", rule["apiGroups"][0], rule["resources"][0], self.namespace)

    def also_read(self, verbs: list[str]) -> list[dict[str, Any]]:
        """Rules besides the target kind that the router reads once it may read its kind (none)."""
        return []


class GatewayApiBackend(Backend):
    name = "gatewayAPI"
    group, version, plural = GW_GROUP, GW_VERSION, GW_PLURAL
    malformed_reason = "BackendNotInRoute"
    rule = 0  # the rule holding the models' backendRefs

    def traffic_block(self) -> dict[str, Any]:
        return {"gatewayAPI": {"httpRoute": "models"}}

    def create(self, incumbent: str = INCUMBENT, candidate: str = CANDIDATE) -> None:
        self.create_object(make_httproute("models", [(incumbent, 100), (candidate, 0), ("fraud-v3", 0)]))

    def object_names(self, incumbent: str, candidate: str) -> list[str]:
        return ["models"]

    def split(self, objects: Mapping[str, dict[str, Any]], incumbent: str, candidate: str) -> Weights | None:
        refs = {r["name"]: r.get("weight", 1) for r in objects["models"]["spec"]["rules"][self.rule]["backendRefs"]}
        return _share(refs[incumbent], refs[candidate])

    def set_by_hand(self, candidate_weight: int) -> None:
        at = f"/spec/rules/{self.rule}/backendRefs"
        self.json_patch(
            "models",
            [
                {"op": "replace", "path": f"{at}/0/weight", "value": 100 - candidate_weight},
                {"op": "replace", "path": f"{at}/1/weight", "value": candidate_weight},
            ],
        )

    def foreign_change(self) -> None:
        self.merge("models", {"metadata": {"labels": {"team": "fraud"}}, "spec": {"hostnames": ["fraud.example.com"]}})

    def foreign_change_intact(self) -> bool:
        route = self.get("models")
        return route["metadata"]["labels"].get("team") == "fraud" and route["spec"]["hostnames"] == [
            "fraud.example.com"
        ]

    def malform(self) -> None:
        self.json_patch("models", [{"op": "remove", "path": f"/spec/rules/{self.rule}/backendRefs/1"}])

    def delete(self) -> None:
        self.delete_object("models")


class GatewayApiInferencePoolBackend(GatewayApiBackend):
    """An HTTPRoute whose models are InferencePools (the Gateway API Inference Extension).

    A first rule sends /debug to Services named like the pools: the router must match the
    backendRef's group and kind, not only its name, and so pass over that rule."""

    name = "gatewayAPI-inferencePool"
    rule = 1

    def model_backend(self, name: str) -> dict[str, Any]:
        return {**super().model_backend(name), "inferencePool": name}

    def create(self, incumbent: str = INCUMBENT, candidate: str = CANDIDATE) -> None:
        for name in (incumbent, candidate, "fraud-v3"):
            self.custom.create_namespaced_custom_object(
                INFERENCE_GROUP, "v1", self.namespace, "inferencepools", inference_pool(name)
            )
        debug = make_httproute("models", [(incumbent, 50), (candidate, 50)])["spec"]["rules"][0]
        debug["matches"] = [{"path": {"type": "PathPrefix", "value": "/debug"}}]
        pools = [
            {"group": INFERENCE_GROUP, "kind": "InferencePool", "name": name, "weight": weight}
            for name, weight in ((incumbent, 100), (candidate, 0), ("fraud-v3", 0))
        ]
        route = make_httproute("models", [])
        route["spec"]["rules"] = [
            debug,
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}], "backendRefs": pools},
        ]
        self.create_object(route)

    def foreign_change_intact(self) -> bool:
        # The /debug rule's Services, named like the pools, kept their weights too.
        debug = self.get("models")["spec"]["rules"][0]["backendRefs"]
        return super().foreign_change_intact() and [r["weight"] for r in debug] == [50, 50]


class IstioBackend(Backend):
    name = "istio"
    group, version, plural = "networking.istio.io", "v1", "virtualservices"
    malformed_reason = "BackendNotInRoute"

    def traffic_block(self) -> dict[str, Any]:
        return {"istio": {"virtualService": "fraud", "route": "primary", "host": HOST}}

    def create(self, incumbent: str = INCUMBENT, candidate: str = CANDIDATE) -> None:
        def dest(subset: str, weight: int) -> dict[str, Any]:
            return {"destination": {"host": HOST, "subset": subset, "port": {"number": 8080}}, "weight": weight}

        self.create_object(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "fraud"},
                "spec": {
                    "hosts": [HOST],
                    "http": [
                        # A debug route first: the named route is found by name, not position.
                        {
                            "name": "debug",
                            "match": [{"headers": {"x-debug": {"exact": "1"}}}],
                            "route": [dest("fraud-v3", 100)],
                        },
                        {
                            "name": "primary",
                            "route": [dest(incumbent, 100), dest(candidate, 0), dest("fraud-v3", 0)],
                            "retries": {"attempts": 2},
                        },
                    ],
                },
            }
        )
        self.custom.create_namespaced_custom_object(
            "networking.istio.io",
            "v1",
            self.namespace,
            "destinationrules",
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "fraud"},
                "spec": {
                    "host": HOST,
                    "subsets": [{"name": s, "labels": {"version": s}} for s in (incumbent, candidate, "fraud-v3")],
                },
            },
        )

    def object_names(self, incumbent: str, candidate: str) -> list[str]:
        return ["fraud"]

    def split(self, objects: Mapping[str, dict[str, Any]], incumbent: str, candidate: str) -> Weights | None:
        route = objects["fraud"]["spec"]["http"][1]["route"]
        weights = {d["destination"]["subset"]: d.get("weight", 0) for d in route}
        return _share(weights[incumbent], weights[candidate])

    def set_by_hand(self, candidate_weight: int) -> None:
        self.json_patch(
            "fraud",
            [
                {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 100 - candidate_weight},
                {"op": "replace", "path": "/spec/http/1/route/1/weight", "value": candidate_weight},
            ],
        )

    def foreign_change(self) -> None:
        self.json_patch(
            "fraud",
            [
                {"op": "add", "path": "/spec/http/1/timeout", "value": "3s"},
                {"op": "add", "path": "/metadata/labels", "value": {"team": "fraud"}},
            ],
        )

    def foreign_change_intact(self) -> bool:
        vs = self.get("fraud")
        primary = vs["spec"]["http"][1]
        return (
            primary.get("timeout") == "3s"
            and primary.get("retries") == {"attempts": 2}
            and vs["metadata"]["labels"] == {"team": "fraud"}
            and vs["spec"]["http"][0]["route"][0]["weight"] == 100
        )

    def malform(self) -> None:
        self.json_patch("fraud", [{"op": "remove", "path": "/spec/http/1/route/1"}])

    def delete(self) -> None:
        self.delete_object("fraud")


class KServeBackend(Backend):
    name = "kserve"
    group, version, plural = "serving.kserve.io", "v1beta1", "inferenceservices"
    malformed_reason = "MalformedInferenceService"

    def traffic_block(self) -> dict[str, Any]:
        return {"kserve": {"inferenceService": "fraud"}}

    def create(self, incumbent: str = INCUMBENT, candidate: str = CANDIDATE) -> None:
        self.create_object(
            {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {"name": "fraud"},
                "spec": {
                    "predictor": {
                        "minReplicas": 1,
                        "model": {
                            "modelFormat": {"name": "sklearn"},
                            "storageUri": uri(incumbent),
                            "resources": {"limits": {"cpu": "1"}},
                        },
                    }
                },
            }
        )

    def object_names(self, incumbent: str, candidate: str) -> list[str]:
        return ["fraud"]

    def split(self, objects: Mapping[str, dict[str, Any]], incumbent: str, candidate: str) -> Weights | None:
        # KServe's rules: canaryTrafficPercent 0 pins the rolled-out revision (the incumbent);
        # otherwise the latest revision (this storageUri) gets the percent, absent meaning 100.
        predictor = objects["fraud"]["spec"]["predictor"]
        percent = predictor.get("canaryTrafficPercent")
        serving = predictor["model"]["storageUri"]
        if percent == 0 or (serving == uri(incumbent) and percent in (None, 100)):
            return Weights.for_candidate(0)
        assert serving == uri(candidate), f"the InferenceService serves {serving}"
        return Weights.for_candidate(100 if percent is None else percent)

    def set_by_hand(self, candidate_weight: int) -> None:
        self.merge(
            "fraud",
            {
                "spec": {
                    "predictor": {"canaryTrafficPercent": candidate_weight, "model": {"storageUri": uri(CANDIDATE)}}
                }
            },
        )

    def foreign_change(self) -> None:
        self.merge(
            "fraud",
            {"metadata": {"labels": {"team": "fraud"}}, "spec": {"predictor": {"maxReplicas": 4}}},
        )

    def foreign_change_intact(self) -> bool:
        isvc = self.get("fraud")
        predictor = isvc["spec"]["predictor"]
        return (
            isvc["metadata"]["labels"] == {"team": "fraud"}
            and predictor["maxReplicas"] == 4
            and predictor["minReplicas"] == 1
            and predictor["model"]["resources"] == {"limits": {"cpu": "1"}}
            and predictor["model"]["modelFormat"] == {"name": "sklearn"}
        )

    def malform(self) -> None:
        # A custom container predictor: schema-valid, but no storageUri to move traffic by.
        self.merge(
            "fraud",
            {"spec": {"predictor": {"model": None, "containers": [{"name": "kserve-container", "image": "fraud:v1"}]}}},
        )

    def delete(self) -> None:
        self.delete_object("fraud")


class LlmInferenceServiceBackend(Backend):
    """Three KServe LLMInferenceServices in one route group, serving the same model name."""

    name = "llmInferenceService"
    group, version, plural = "serving.kserve.io", "v1alpha2", "llminferenceservices"
    malformed_reason = "GroupMembersDiverge"

    def traffic_block(self) -> dict[str, Any]:
        return {"llmInferenceService": {"group": "fraud"}}

    def create(self, incumbent: str = INCUMBENT, candidate: str = CANDIDATE) -> None:
        for name, weight in ((incumbent, 100), (candidate, 0), ("fraud-v3", 0)):
            self.create_object(
                {
                    "apiVersion": "serving.kserve.io/v1alpha2",
                    "kind": "LLMInferenceService",
                    "metadata": {"name": name},
                    "spec": {
                        # One served name for the group: KServe splits only members serving the same.
                        "model": {"uri": f"hf://example/{name}", "name": "fraud-llm"},
                        "replicas": 1,
                        "router": {"route": {"group": "fraud", "weight": weight}},
                    },
                }
            )

    def object_names(self, incumbent: str, candidate: str) -> list[str]:
        return [incumbent, candidate]

    def split(self, objects: Mapping[str, dict[str, Any]], incumbent: str, candidate: str) -> Weights | None:
        # KServe's reading: members of one group split by route.weight, an absent weight is 0.
        def weight(name: str) -> int:
            return int(objects[name]["spec"].get("router", {}).get("route", {}).get("weight") or 0)

        return _share(weight(incumbent), weight(candidate))

    def set_by_hand(self, candidate_weight: int) -> None:
        self.merge(INCUMBENT, {"spec": {"router": {"route": {"weight": 100 - candidate_weight}}}})
        self.merge(CANDIDATE, {"spec": {"router": {"route": {"weight": candidate_weight}}}})

    def foreign_change(self) -> None:
        for name in (INCUMBENT, CANDIDATE):
            self.merge(name, {"metadata": {"labels": {"team": "fraud"}}, "spec": {"replicas": 2}})

    def foreign_change_intact(self) -> bool:
        for name in (INCUMBENT, CANDIDATE):
            obj = self.get(name)
            spec = obj["spec"]
            if obj["metadata"]["labels"] != {"team": "fraud"} or spec["replicas"] != 2:
                return False
            if spec["model"] != {"uri": f"hf://example/{name}", "name": "fraud-llm"}:
                return False
            if spec["router"]["route"]["group"] != "fraud":
                return False
        return True

    def malform(self) -> None:
        # The candidate serves another model name: KServe would give it none of the group's traffic.
        self.merge(CANDIDATE, {"spec": {"model": {"name": "other-llm"}}})

    def delete(self) -> None:
        self.delete_object(CANDIDATE)


class ReplicasBackend(Backend):
    name = "replicas"
    group, version, plural = "apps", "v1", "deployments"
    malformed_reason = "NoReadyReplicas"

    def __init__(self, api: client.ApiClient, namespace: str, audit_log: Path) -> None:
        super().__init__(api, namespace, audit_log)
        self.apps = client.AppsV1Api(api)
        self.scale_down_delay = "0s"

    def traffic_block(self) -> dict[str, Any]:
        return {"replicas": {"totalReplicas": TOTAL_REPLICAS, "scaleDownDelay": self.scale_down_delay}}

    def also_read(self, verbs: list[str]) -> list[dict[str, Any]]:
        # The router lists the namespace's HPAs (HorizontalPodAutoscalerConflict), as the chart grants.
        read = {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["get", "list"]}
        return [read] if verbs else []

    def create(self, incumbent: str = INCUMBENT, candidate: str = CANDIDATE) -> None:
        for name, replicas in ((incumbent, TOTAL_REPLICAS), (candidate, 0), ("fraud-v3", 0)):
            self.create_object(_deployment(name, replicas))
        self.settle()

    def settle(self) -> None:
        """Act as the deployment controller and kubelet: every Deployment's pods become ready."""
        for item in self.apps.list_namespaced_deployment(self.namespace).items:
            n = item.spec.replicas
            self.apps.patch_namespaced_deployment_status(
                item.metadata.name,
                self.namespace,
                {
                    "status": {
                        "observedGeneration": item.metadata.generation,
                        "replicas": n,
                        "readyReplicas": n,
                        "updatedReplicas": n,
                        "availableReplicas": n,
                    }
                },
            )

    def replicas(self, name: str) -> tuple[int, int]:
        """(spec.replicas, status.readyReplicas) of a Deployment."""
        d = self.get(name)
        return d["spec"]["replicas"], _ready(d)

    def object_names(self, incumbent: str, candidate: str) -> list[str]:
        return [incumbent, candidate]

    def split(self, objects: Mapping[str, dict[str, Any]], incumbent: str, candidate: str) -> Weights | None:
        # A Service spreads over ready endpoints: the candidate's share of ready pods, rounded
        # down as docs/routers.md states (2 of 12 ready is 16%).
        inc, cand = (_ready(objects[incumbent]), _ready(objects[candidate]))
        if inc + cand == 0:
            return None
        return Weights.for_candidate(100 * cand // (inc + cand))

    def set_by_hand(self, candidate_weight: int) -> None:
        cand = TOTAL_REPLICAS * candidate_weight // 100
        self.merge(INCUMBENT, {"spec": {"replicas": TOTAL_REPLICAS - cand}})
        self.merge(CANDIDATE, {"spec": {"replicas": cand}})
        self.settle()

    def foreign_change(self) -> None:
        for name in (INCUMBENT, CANDIDATE):
            self.merge(name, {"metadata": {"labels": {"team": "fraud"}}, "spec": {"minReadySeconds": 5}})

    def foreign_change_intact(self) -> bool:
        for name in (INCUMBENT, CANDIDATE):
            d = self.get(name)
            template = d["spec"]["template"]["spec"]["containers"][0]
            if d["metadata"]["labels"].get("team") != "fraud" or d["spec"].get("minReadySeconds") != 5:
                return False
            if template["image"] != f"registry.example/{name}:1":
                return False
        return True

    def malform(self) -> None:
        # Both Deployments scaled to zero by someone: no model serves, nothing to split.
        for name in (INCUMBENT, CANDIDATE):
            self.merge(name, {"spec": {"replicas": 0}})
        self.settle()

    def delete(self) -> None:
        self.delete_object(CANDIDATE)


class ReplicasWithControllers(ReplicasBackend):
    """ReplicasBackend on a plane with the workload controllers (tests/support/workload.py): the
    real deployment controller creates ReplicaSets, the scheduler binds their pods and kwok makes
    them Ready. Nothing is written by the test in their place: `settle()` only waits until every
    Deployment has rolled out its spec (all replicas updated, ready and available, no old pod)."""

    name = "replicas-controllers"

    def settle(self, timeout: float = 120.0) -> None:
        from tests.support.workload import rolled_out, until

        for item in self.apps.list_namespaced_deployment(self.namespace).items:
            until(
                f"{item.metadata.name} rolled out",
                lambda name=item.metadata.name: rolled_out(self.apps, self.namespace, name),
                timeout=timeout,
            )


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": "fraud", "version": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": "fraud"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": copy.deepcopy(labels)},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "model", "image": f"registry.example/{name}:1"}]},
            },
        },
    }


def _share(incumbent: int, candidate: int) -> Weights:
    total = incumbent + candidate
    assert total > 0, "neither model gets traffic"
    return Weights.for_candidate(round(100 * candidate / total))


BACKENDS: dict[str, type[Backend]] = {
    b.name: b
    for b in (
        GatewayApiBackend,
        GatewayApiInferencePoolBackend,
        IstioBackend,
        KServeBackend,
        LlmInferenceServiceBackend,
        ReplicasBackend,
    )
}


def _ready(deployment: dict[str, Any]) -> int:
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)
