"""The Given of engine and CLI scenarios: a namespace with an HTTPRoute, model traffic, helpers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from controller.api import GROUP, PLURAL, VERSION
from tests.support.audit import route_weight_writes
from tests.support.controlplane import ControlPlane
from tests.support.gatewayapi import make_httproute
from tests.support.prometheus import ModelTraffic


def unique(base: str) -> str:
    return f"{base}-{os.urandom(4).hex()}"


def rollout_body(name: str, incumbent: str, candidate: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "incumbent": {"name": incumbent},
        "candidate": {"name": candidate},
        "traffic": {"gatewayAPI": {"httpRoute": "models"}},
        "canary": {"steps": [{"weight": 20, "hold": "4s"}, {"weight": 50, "hold": "4s"}]},
        "analysis": {"interval": "2s", "window": "10s", "progressDeadline": "60s", "inconclusiveLimit": 5},
        "guardrails": [
            {"name": "error-rate", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 0.05}, "minSamples": 5}
        ],
    }
    spec.update(overrides)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelRollout", "metadata": {"name": name}, "spec": spec}


class World:
    """The Given of every scenario: a namespace with a route, traffic and a controller."""

    def __init__(self, api: client.ApiClient, plane: ControlPlane, namespace: str, traffic: ModelTraffic) -> None:
        self.api, self.plane, self.namespace, self.traffic = api, plane, namespace, traffic
        self.custom = client.CustomObjectsApi(api)
        self.incumbent, self.candidate = unique("model-a"), unique("model-b")
        route = make_httproute("models", [(self.incumbent, 100), (self.candidate, 0)])
        self.custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", route)
        traffic.set(self.incumbent, ok=20)
        traffic.set(self.candidate, ok=20)

    def apply(self, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def annotate(self, annotations: dict[str, str], name: str = "demo") -> None:
        """What `kubectl annotate` (and the CLI's promote/abort/retry) does."""
        patch = {"metadata": {"annotations": annotations}}
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, patch)

    def get(self, name: str = "demo") -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        return obj

    def wait(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 120, name: str = "demo"
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        obj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            obj = self.get(name)
            if predicate(obj):
                return obj
            time.sleep(0.3)
        raise AssertionError(f"timed out; status: {obj.get('status')}")

    def route_weights(self) -> dict[str, int]:
        route = self.custom.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", "models"
        )
        return {ref["name"]: ref.get("weight", 1) for ref in route["spec"]["rules"][0]["backendRefs"]}

    def candidate_writes(self, service: str | None = None) -> list[int]:
        assert self.plane.audit_log is not None
        return [w for _, w in route_weight_writes(self.plane.audit_log, self.namespace, service or self.candidate)]

    def events(self) -> list[tuple[str, str, str]]:
        items = client.CoreV1Api(self.api).list_namespaced_event(self.namespace).items
        return [(e.type, e.reason, e.message) for e in sorted(items, key=lambda e: e.first_timestamp)]


def phase(value: str) -> Callable[[dict[str, Any]], bool]:
    """The phase, and for a verdict the condition that says its weights reached the route."""
    settled = {"Promoted": "Ready", "RolledBack": "Stalled"}.get(value)

    def check(obj: dict[str, Any]) -> bool:
        status = obj.get("status", {})
        if status.get("phase") != value:
            return False
        return settled is None or {c["type"]: c["status"] for c in status.get("conditions", [])}.get(settled) == "True"

    return check
