"""Pick the router for a rollout's traffic block: one entry per backend."""

from __future__ import annotations

from controller.api.models import Traffic
from controller.kube.objects import Objects
from controller.routers.base import RouterProblem, TrafficRouter
from controller.routers.gatewayapi import GatewayApiRouter


def router_for(traffic: Traffic, objects: Objects) -> TrafficRouter:
    if traffic.gateway_api is not None:
        return GatewayApiRouter(objects)
    kind = "istio" if traffic.istio else "kserve" if traffic.kserve else "replicas"
    raise RouterProblem("RouterNotSupported", f"the {kind} router is not available in this version yet; use gatewayAPI")
