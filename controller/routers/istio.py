"""Istio VirtualService: the weights of the incumbent's and candidate's destinations in one http route.

A VirtualService is shared like an HTTPRoute: its matches, retries, fault injection, other http
routes and any third destination belong to someone else. This router owns exactly two `weight`
fields. Istio splits by relative weight ("the relative proportion of traffic", istio.io/api
networking v1), so the percentages are read as shares of the pair, as for Gateway API.

A destination is identified by host and subset: the host is the model's `backend.host` or the
router block's `host`, the subset the model's `backend.subset` or its name. Hosts are compared
as written (Istio does not expand `reco` to `reco.models.svc.cluster.local` for us either).

In shadow (docs/shadow.md) it also owns the http route's `mirror` (to the comparator's Service,
as host) and `mirrorPercentage`. Istio has one `mirror` per http route: a mirror the user set to
anywhere else is theirs, so the rollout stalls with MirrorInUse rather than overwrite it.

The write is an RFC 6902 patch whose `test` ops pin the route's name and each destination's
host and subset, so a concurrent reorder fails (422) rather than moving traffic to another model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.api.models import ComparatorRef, IstioTraffic, ModelRef, Weights
from controller.kube.objects import Resource
from controller.routers.base import KubeObject, ObjectRef, Patch, RouterProblem, RouteTarget, pair_percent, same_ratio

VIRTUALSERVICE = Resource(group="networking.istio.io", version="v1", plural="virtualservices", kind="VirtualService")


@dataclass(frozen=True)
class Destination:
    host: str
    subset: str

    @classmethod
    def of(cls, model: ModelRef, block: IstioTraffic) -> Destination:
        backend = model.backend
        host = backend.host if backend is not None and backend.host else block.host
        subset = backend.subset if backend is not None and backend.subset else model.name
        return cls(host=host, subset=subset)

    def __str__(self) -> str:
        return f"{self.host} subset {self.subset}"


@dataclass(frozen=True)
class Slot:
    index: int
    destination: Destination
    weight: int


@dataclass(frozen=True)
class RoutePair:
    """Both variants' destinations, found in one read of the VirtualService."""

    route_index: int
    route_name: str | None
    incumbent: Slot
    candidate: Slot

    @property
    def where(self) -> str:
        return f"http route {self.route_name}" if self.route_name else f"spec.http[{self.route_index}]"


def find_pair(
    vs: dict[str, Any], *, label: str, incumbent: Destination, candidate: Destination, route_name: str | None
) -> RoutePair:
    """The http route named `route_name`, else the first one holding both destinations."""
    for index, http in enumerate(_http_routes(vs, label)):
        if route_name is not None and http.get("name") != route_name:
            continue
        pair, missing = _pair_in(http, index, label, incumbent, candidate)
        if pair is not None:
            return pair
        if route_name is not None:
            raise RouterProblem("BackendNotInRoute", f"{label} http route {route_name} has no destination {missing}")
    if route_name is not None:
        raise RouterProblem("BackendNotInRoute", f"{label} has no http route named {route_name} (traffic.istio.route)")
    raise RouterProblem(
        "BackendNotInRoute",
        f"{label} has no http route with both {incumbent} (the incumbent's) and {candidate} (the candidate's): "
        f"add the candidate's destination with weight 0 next to the incumbent's",
    )


def _pair_in(
    http: dict[str, Any], index: int, label: str, incumbent: Destination, candidate: Destination
) -> tuple[RoutePair | None, str]:
    """Both variants' destinations in this http route, else None and which of them it lacks."""
    destinations = _destinations(http, index, label)
    found = [
        (role, dest, [i for i, d in enumerate(destinations) if _dest(d) == dest])
        for role, dest in (("incumbent", incumbent), ("candidate", candidate))
    ]
    (_, _, inc), (_, _, cand) = found
    if not inc or not cand:
        return None, " and ".join(f"{dest} (the {role}'s)" for role, dest, at in found if not at)
    for role, dest, at in found:
        if len(at) > 1:
            raise RouterProblem(
                "AmbiguousBackend", f"{label} spec.http[{index}] routes to {dest} (the {role}'s) {len(at)} times"
            )
    if inc == cand:
        raise RouterProblem(
            "AmbiguousBackend",
            f"{label} spec.http[{index}]: the incumbent and the candidate are the same destination ({incumbent})",
        )
    name = http.get("name")
    return RoutePair(
        route_index=index,
        route_name=name if isinstance(name, str) else None,
        incumbent=_slot(destinations, inc[0], index, label, incumbent),
        candidate=_slot(destinations, cand[0], index, label, candidate),
    ), ""


def split_of(pair: RoutePair, *, label: str) -> Weights:
    weights = pair_percent(pair.incumbent.weight, pair.candidate.weight)
    if weights is None:
        raise RouterProblem(
            "ZeroWeights",
            f"{label} {pair.where} gives weight 0 to both {pair.incumbent.destination} and "
            f"{pair.candidate.destination}, so neither model gets traffic from it; give the incumbent a weight",
        )
    return weights


def weight_patch(pair: RoutePair, weights: Weights) -> list[dict[str, Any]]:
    """Test what identifies each destination, then set its weight; nothing else is written."""
    base = f"/spec/http/{pair.route_index}"
    ops: list[dict[str, Any]] = []
    if pair.route_name is not None:
        ops.append({"op": "test", "path": f"{base}/name", "value": pair.route_name})
    for slot, weight in ((pair.incumbent, weights.incumbent), (pair.candidate, weights.candidate)):
        path = f"{base}/route/{slot.index}"
        ops.append({"op": "test", "path": f"{path}/destination/host", "value": slot.destination.host})
        ops.append({"op": "test", "path": f"{path}/destination/subset", "value": slot.destination.subset})
        ops.append({"op": "add", "path": f"{path}/weight", "value": weight})
    return ops


def _mirror_of(http: dict[str, Any], comparator: ComparatorRef, *, label: str, where: str) -> int:
    """Percent our mirror sends to the comparator (0: none); MirrorInUse if the route mirrors elsewhere."""
    mirror = http.get("mirror")
    if mirror is None:
        return 0
    port = mirror.get("port") if isinstance(mirror, dict) else None
    number = port.get("number") if isinstance(port, dict) else None
    if not isinstance(mirror, dict) or mirror.get("host") != comparator.service or number != comparator.port:
        raise RouterProblem(
            "MirrorInUse",
            f"{label} {where} already mirrors to {mirror.get('host') if isinstance(mirror, dict) else mirror!r}: "
            f"Istio allows one mirror per http route, and it is not ours to replace (shadow needs "
            f"{comparator.service} port {comparator.port})",
        )
    percentage = http.get("mirrorPercentage")
    value = percentage.get("value") if isinstance(percentage, dict) else None
    # Without mirrorPercentage Istio mirrors every request.
    return 100 if not isinstance(value, int | float) or isinstance(value, bool) else round(value)


def mirror_patch(
    vs: dict[str, Any], pair: RoutePair, *, label: str, comparator: ComparatorRef, percent: int
) -> list[dict[str, Any]]:
    """RFC 6902 ops that make our mirror `percent` (0: remove it), or [] when it already is; pinned
    by the route's name, the incumbent's destination and (when replaced or removed) the mirror's host."""
    http = _http_routes(vs, label)[pair.route_index]
    now = _mirror_of(http, comparator, label=label, where=pair.where)
    if now == percent:
        return []
    base = f"/spec/http/{pair.route_index}"
    ops: list[dict[str, Any]] = []
    if pair.route_name is not None:
        ops.append({"op": "test", "path": f"{base}/name", "value": pair.route_name})
    inc = f"{base}/route/{pair.incumbent.index}/destination"
    ops.append({"op": "test", "path": f"{inc}/host", "value": pair.incumbent.destination.host})
    ops.append({"op": "test", "path": f"{inc}/subset", "value": pair.incumbent.destination.subset})
    if now > 0:
        ops.append({"op": "test", "path": f"{base}/mirror/host", "value": comparator.service})
    if percent == 0:
        ops.append({"op": "remove", "path": f"{base}/mirror"})
        if "mirrorPercentage" in http:
            ops.append({"op": "remove", "path": f"{base}/mirrorPercentage"})
        return ops
    target = {"host": comparator.service, "port": {"number": comparator.port}}
    ops.append({"op": "add", "path": f"{base}/mirror", "value": target})
    ops.append({"op": "add", "path": f"{base}/mirrorPercentage", "value": {"value": float(percent)}})
    return ops


class VirtualServiceWeights:
    """RouterPlan and MirrorPlan for `traffic.istio`: two destination weights of a VirtualService in
    the rollout's namespace, and in shadow the http route's mirror to the comparator."""

    def mirrored(self, target: RouteTarget, objects: list[KubeObject]) -> int:
        if target.comparator is None:
            return 0
        pair = self._find(target, objects[0])
        http = _http_routes(objects[0], self._label(target))[pair.route_index]
        try:
            return _mirror_of(http, target.comparator, label=self._label(target), where=pair.where)
        except RouterProblem:
            return 0  # someone else's mirror: none of ours (apply says so when it must add one)

    def mirror_patches(self, target: RouteTarget, objects: list[KubeObject], percent: int) -> list[Patch]:
        if target.comparator is None:
            return []
        pair = self._find(target, objects[0])
        if percent == 0 and self.mirrored(target, objects) == 0:
            return []
        ops = mirror_patch(objects[0], pair, label=self._label(target), comparator=target.comparator, percent=percent)
        return [Patch(0, ops)] if ops else []

    def objects(self, target: RouteTarget) -> list[ObjectRef]:
        return [
            ObjectRef(
                VIRTUALSERVICE,
                target.namespace,
                _block(target).virtual_service,
                missing=f"traffic.istio.virtualService of rollout {target.rollout}; is Istio installed?",
            )
        ]

    def weights(self, target: RouteTarget, objects: list[KubeObject]) -> Weights:
        return split_of(self._find(target, objects[0]), label=self._label(target))

    def patches(self, target: RouteTarget, objects: list[KubeObject], wanted: Weights, now: datetime) -> list[Patch]:
        pair = self._find(target, objects[0])
        if same_ratio(pair.incumbent.weight, pair.candidate.weight, wanted):
            return []
        return [Patch(0, weight_patch(pair, wanted))]

    def _label(self, target: RouteTarget) -> str:
        return f"VirtualService {target.namespace}/{_block(target).virtual_service}"

    def _find(self, target: RouteTarget, vs: dict[str, Any]) -> RoutePair:
        block = _block(target)
        return find_pair(
            vs,
            label=self._label(target),
            incumbent=Destination.of(target.incumbent, block),
            candidate=Destination.of(target.candidate, block),
            route_name=block.route,
        )


def _block(target: RouteTarget) -> IstioTraffic:
    block = target.traffic.istio
    if block is None:
        raise ValueError(f"rollout {target.namespace}/{target.rollout} has no traffic.istio block")
    return block


# -- reading the VirtualService's shape --------------------------------------------------------


def _http_routes(vs: dict[str, Any], label: str) -> list[dict[str, Any]]:
    spec = vs.get("spec")
    if not isinstance(spec, dict):
        raise RouterProblem("MalformedRoute", f"{label} has no spec object")
    routes = spec.get("http") or []
    if not isinstance(routes, list) or not all(isinstance(r, dict) for r in routes):
        raise RouterProblem("MalformedRoute", f"{label}: spec.http is not a list of objects")
    return routes


def _destinations(http: dict[str, Any], index: int, label: str) -> list[dict[str, Any]]:
    route = http.get("route") or []
    if not isinstance(route, list) or not all(isinstance(d, dict) for d in route):
        raise RouterProblem("MalformedRoute", f"{label}: spec.http[{index}].route is not a list of objects")
    return route


def _dest(entry: dict[str, Any]) -> Destination | None:
    dest = entry.get("destination")
    if not isinstance(dest, dict) or not isinstance(dest.get("host"), str):
        return None
    subset = dest.get("subset")
    return Destination(host=dest["host"], subset=subset) if isinstance(subset, str) else None


def _slot(destinations: list[dict[str, Any]], index: int, route_index: int, label: str, dest: Destination) -> Slot:
    # An omitted weight is 0 in a route with several destinations (proto3 default); ours has two.
    weight = destinations[index].get("weight", 0)
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
        raise RouterProblem(
            "MalformedRoute",
            f"{label}: spec.http[{route_index}].route[{index}].weight is {weight!r}, not a non-negative integer",
        )
    return Slot(index=index, destination=dest, weight=weight)
