"""Pick the router for a rollout's traffic block: one entry per backend.

The reconciler asks here and never names a router, so adding one (a module behind
routers.base.TrafficRouter) means one entry in `_ROUTERS` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.api.models import Traffic
from controller.core.clock import Clock, SystemClock
from controller.kube.objects import Objects
from controller.routers.base import RouterProblem, TrafficRouter
from controller.routers.gatewayapi import GatewayApiRouter
from controller.routers.istio import IstioVirtualServiceRouter
from controller.routers.kserve import KServeInferenceServiceRouter
from controller.routers.replicas import ReplicaRatioRouter

# Keyed by the Traffic field holding the router's block.
_ROUTERS: dict[str, Callable[[Objects, Clock], TrafficRouter]] = {
    "gateway_api": lambda objects, _clock: GatewayApiRouter(objects),
    "istio": lambda objects, _clock: IstioVirtualServiceRouter(objects),
    "kserve": lambda objects, _clock: KServeInferenceServiceRouter(objects),
    "replicas": ReplicaRatioRouter,
}


def router_for(traffic: Traffic, objects: Objects, clock: Clock | None = None) -> TrafficRouter:
    """The router for the one block set in `traffic`; RouterProblem if there is not exactly one."""
    chosen = [name for name in Traffic.model_fields if getattr(traffic, name) is not None]
    if len(chosen) != 1:
        # The API server's CEL rule and the model both refuse this; a hand-built Traffic may not.
        known = ", ".join(f"traffic.{_wire_name(name)}" for name in _ROUTERS)
        raise RouterProblem("RouterNotSupported", f"exactly one traffic router must be set: one of {known}")
    return _ROUTERS[chosen[0]](objects, clock or SystemClock())


def _wire_name(field: str) -> str:
    return Traffic.model_fields[field].alias or field
