"""Gateway API HTTPRoute: the weights of the incumbent's and candidate's backendRefs in one rule.

We patch exactly those two `weight` fields with an RFC 6902 patch whose `test` ops pin the
backendRefs' names, so a concurrent reorder of the route fails (422) instead of moving traffic
to the wrong backend; everything else in the route (other rules, backends, filters, fields of
other controllers) is left alone. No write happens when the weights are already right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.api.models import ModelRef
from controller.kube.errors import Invalid, NotFound
from controller.kube.objects import Objects, Resource
from controller.routers.base import RouterProblem, RouteTarget, Weights

HTTPROUTE = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")


@dataclass(frozen=True)
class BackendSlot:
    """Where one variant's backendRef sits in the route, and its weight there."""

    rule: int
    ref: int
    name: str
    weight: int


def service_of(model: ModelRef) -> tuple[str, int | None]:
    backend = model.backend
    return (backend.service if backend and backend.service else model.name), (backend.port if backend else None)


def _matches(ref: Any, service: str, port: int | None) -> bool:
    if not isinstance(ref, dict):
        return False
    if ref.get("kind", "Service") != "Service" or ref.get("group", "") not in ("", "core"):
        return False
    return ref.get("name") == service and (port is None or ref.get("port") == port)


def find_slots(route: dict[str, Any], target: RouteTarget) -> tuple[BackendSlot, BackendSlot]:
    """The incumbent's and candidate's backendRefs, or RouterProblem saying what is missing."""
    name = f"HTTPRoute {target.namespace}/{route.get('metadata', {}).get('name')}"
    rules = route.get("spec", {}).get("rules")
    if not isinstance(rules, list):
        raise RouterProblem("MalformedRoute", f"{name} has no spec.rules list")
    router = target.traffic.gateway_api
    wanted_rule = router.rule_name if router else None
    inc_service, inc_port = service_of(target.incumbent)
    cand_service, cand_port = service_of(target.candidate)
    for r, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise RouterProblem("MalformedRoute", f"{name}: spec.rules[{r}] is not an object")
        if wanted_rule is not None and rule.get("name") != wanted_rule:
            continue
        refs = rule.get("backendRefs") or []
        if not isinstance(refs, list):
            raise RouterProblem("MalformedRoute", f"{name}: spec.rules[{r}].backendRefs is not a list")
        inc = next((i for i, ref in enumerate(refs) if _matches(ref, inc_service, inc_port)), None)
        cand = next((i for i, ref in enumerate(refs) if _matches(ref, cand_service, cand_port)), None)
        if inc is not None and cand is not None:
            return _slot(name, r, inc, refs[inc]), _slot(name, r, cand, refs[cand])
        if wanted_rule is not None:
            missing = cand_service if cand is None else inc_service
            raise RouterProblem(
                "BackendNotInRoute", f"{name}: rule {wanted_rule} has no backendRef to Service {missing}"
            )
    if wanted_rule is not None:
        raise RouterProblem("BackendNotInRoute", f"{name} has no rule named {wanted_rule}")
    raise RouterProblem(
        "BackendNotInRoute",
        f"{name} has no rule with backendRefs to both Service {inc_service} (incumbent) and Service {cand_service} "
        f"(candidate): add the candidate's backendRef with weight 0",
    )


def _slot(route: str, rule: int, index: int, ref: dict[str, Any]) -> BackendSlot:
    weight = ref.get("weight", 1)  # the Gateway API default weight is 1
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
        raise RouterProblem(
            "MalformedRoute", f"{route}: spec.rules[{rule}].backendRefs[{index}].weight is not a weight"
        )
    return BackendSlot(rule=rule, ref=index, name=str(ref.get("name")), weight=weight)


def as_percent(incumbent: BackendSlot, candidate: BackendSlot) -> Weights:
    """Relative weights of the two refs as percentages (other backends of the rule aside)."""
    total = incumbent.weight + candidate.weight
    if total == 0:
        return Weights(incumbent=100, candidate=0)
    cand = round(100 * candidate.weight / total)
    return Weights(incumbent=100 - cand, candidate=cand)


class GatewayApiRouter:
    def __init__(self, objects: Objects) -> None:
        self.objects = objects

    def _route(self, target: RouteTarget) -> dict[str, Any]:
        router = target.traffic.gateway_api
        assert router is not None
        try:
            return self.objects.get(HTTPROUTE, target.namespace, router.http_route)
        except NotFound:
            raise RouterProblem(
                "RouteNotFound", f"HTTPRoute {target.namespace}/{router.http_route} not found"
            ) from None

    def applied(self, target: RouteTarget) -> Weights:
        return as_percent(*find_slots(self._route(target), target))

    def apply(self, target: RouteTarget, weights: Weights) -> Weights:
        for _ in range(3):
            route = self._route(target)
            inc, cand = find_slots(route, target)
            if (inc.weight, cand.weight) == (weights.incumbent, weights.candidate):
                return as_percent(inc, cand)
            ops: list[dict[str, Any]] = []
            for slot, weight in ((inc, weights.incumbent), (cand, weights.candidate)):
                path = f"/spec/rules/{slot.rule}/backendRefs/{slot.ref}"
                ops.append({"op": "test", "path": f"{path}/name", "value": slot.name})
                ops.append({"op": "add", "path": f"{path}/weight", "value": weight})
            try:
                patched = self.objects.json_patch(HTTPROUTE, target.namespace, str(route["metadata"]["name"]), ops)
            except Invalid:
                continue  # the route changed under us (a test op failed): read it again
            return as_percent(*find_slots(patched, target))
        raise RouterProblem("RouteChanging", "the HTTPRoute kept changing while we patched it; will retry")
