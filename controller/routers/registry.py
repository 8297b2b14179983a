"""Pick the router for a rollout's traffic block: one entry per implemented backend.

The reconciler asks here and never names a router, so adding one (a module behind
routers.base.TrafficRouter) means one entry in `_ROUTERS` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.api.models import Traffic
from controller.kube.objects import Objects
from controller.routers.base import RouterProblem, TrafficRouter
from controller.routers.gatewayapi import GatewayApiRouter

# Keyed by the Traffic field holding the router's block.
_ROUTERS: dict[str, Callable[[Objects], TrafficRouter]] = {
    "gateway_api": GatewayApiRouter,
}


def router_for(traffic: Traffic, objects: Objects) -> TrafficRouter:
    """The router for the one block set in `traffic`; RouterProblem if it is not implemented."""
    chosen = [name for name in Traffic.model_fields if getattr(traffic, name) is not None]
    implemented = ", ".join(f"traffic.{_wire_name(name)}" for name in _ROUTERS)
    if len(chosen) != 1:
        # The API server's CEL rule and the model both refuse this; a hand-built Traffic may not.
        raise RouterProblem(
            "RouterNotSupported", f"exactly one traffic router must be set; this version supports {implemented}"
        )
    name = chosen[0]
    factory = _ROUTERS.get(name)
    if factory is None:
        # The API accepts these blocks already so manifests can be written ahead of the code.
        raise RouterProblem(
            "RouterNotSupported",
            f"traffic.{_wire_name(name)} is not implemented yet in this version of modelrollout: "
            f"a later release adds the Istio, KServe and replica-ratio routers; use {implemented} for now",
        )
    return factory(objects)


def _wire_name(field: str) -> str:
    return Traffic.model_fields[field].alias or field
