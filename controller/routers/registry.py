"""Pick the router for a rollout's traffic block: one entry per backend.

The reconciler asks here and never names a router, so adding one (a module with a
routers.base.RouterPlan) means its block in api/models.py's Traffic, one entry in `ROUTERS`,
and nothing else.
"""

from __future__ import annotations

from controller.api.models import Traffic
from controller.core.clock import Clock, SystemClock
from controller.kube.objects import Objects
from controller.routers.base import RouterPlan, RouterProblem, TrafficRouter
from controller.routers.gatewayapi import HttpRouteWeights
from controller.routers.istio import VirtualServiceWeights
from controller.routers.kserve import KServeCanary
from controller.routers.llmisvc import LlmInferenceServiceGroup
from controller.routers.replicas import ReplicaRatio

# Keyed by the Traffic field holding the router's block.
ROUTERS: dict[str, RouterPlan] = {
    "gateway_api": HttpRouteWeights(),
    "istio": VirtualServiceWeights(),
    "kserve": KServeCanary(),
    "replicas": ReplicaRatio(),
    "llm_inference_service": LlmInferenceServiceGroup(),
}


def router_for(traffic: Traffic, objects: Objects, clock: Clock | None = None) -> TrafficRouter:
    """The router for the one block set in `traffic`; RouterProblem if there is not exactly one."""
    chosen = [name for name in Traffic.model_fields if getattr(traffic, name) is not None]
    if len(chosen) != 1:
        # The API server's CEL rule and the model both refuse this; a hand-built Traffic may not.
        known = ", ".join(f"traffic.{Traffic.model_fields[name].alias or name}" for name in ROUTERS)
        raise RouterProblem("RouterNotSupported", f"exactly one traffic router must be set: one of {known}")
    return TrafficRouter(ROUTERS[chosen[0]], objects, clock or SystemClock())
