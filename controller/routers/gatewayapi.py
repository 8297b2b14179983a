"""Gateway API HTTPRoute: the weights of the incumbent's and candidate's backendRefs in one rule.

An HTTPRoute is shared: gateway controllers write its status, platform teams own its matches,
filters and other rules, and a rule may hold more backends than our two (a third model, a
fallback). So this router owns exactly two `weight` fields and nothing else. It writes them with
an RFC 6902 patch whose `test` ops pin the identity of the backendRefs it read, so a concurrent
reorder of the route fails with 422 instead of moving traffic to the wrong backend, and it does
not write at all when the route already splits traffic as asked.

A backendRef names a Service (the default) or, with the Gateway API Inference Extension, an
InferencePool (group inference.networking.k8s.io): an LLM's model servers behind an endpoint
picker. The router treats both alike: a model's `backend.inferencePool` makes its backendRef the
pool of that name, matched by group and kind as well as name, so a Service and a pool of the same
name are never confused.

In shadow (docs/shadow.md) it also owns one filter of that rule: a `RequestMirror` filter whose
backendRef is the comparator's Service, with `percent` (Gateway API v1.4). It is found by that
backendRef alone, so a user's own mirror filters (to anywhere else) are never read as ours nor
touched; it is added at the end of the rule's filters and removed by index under `test` ops that
pin the rule and the filter's backendRef, like the weights.

Finding the rule, turning weights into percentages and planning the patch are pure functions over
the route's dict, unit-tested without an API server; routers.base.TrafficRouter reads and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.api.models import ComparatorRef, GatewayApiTraffic, ModelRef, Weights
from controller.kube.objects import Resource
from controller.routers.base import KubeObject, ObjectRef, Patch, RouterProblem, RouteTarget, pair_percent, same_ratio

HTTPROUTE = Resource(group="gateway.networking.k8s.io", version="v1", plural="httproutes", kind="HTTPRoute")
INFERENCE_POOL_GROUP = "inference.networking.k8s.io"
INFERENCE_POOL_KIND = "InferencePool"

# A weight a backendRef leaves out counts as 1: the Gateway API spec says so (the CRD's schema
# default is 1 too, but a route stored before that default, or read from a copy, may lack it).
DEFAULT_WEIGHT = 1


@dataclass(frozen=True)
class BackendService:
    """The object a model is served by, as a backendRef names it: a Service or an InferencePool."""

    name: str
    port: int | None = None
    group: str = ""
    kind: str = "Service"

    @classmethod
    def of(cls, model: ModelRef) -> BackendService:
        """A model's Service defaults to its name; the port is checked only when the model gives one."""
        backend = model.backend
        if backend is None:
            return cls(name=model.name)
        if backend.inference_pool is not None:
            return cls(
                name=backend.inference_pool, port=backend.port, group=INFERENCE_POOL_GROUP, kind=INFERENCE_POOL_KIND
            )
        return cls(name=backend.service or model.name, port=backend.port)

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" + (f" port {self.port}" if self.port is not None else "")


@dataclass(frozen=True)
class BackendSlot:
    """One variant's backendRef: where it sits in the rule, what identifies it, its weight now."""

    index: int
    name: str
    port: int | None
    weight: int
    kind: str = "Service"

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class RuleBackends:
    """The rule holding both variants, found in one read of the route."""

    rule_index: int
    rule_name: str | None
    incumbent: BackendSlot
    candidate: BackendSlot

    @property
    def where(self) -> str:
        return f"rule {self.rule_name}" if self.rule_name else f"spec.rules[{self.rule_index}]"


def find_backends(
    route: dict[str, Any],
    *,
    label: str,
    namespace: str,
    incumbent: BackendService,
    candidate: BackendService,
    rule_name: str | None = None,
) -> RuleBackends:
    """The rule named `rule_name`, else the first rule referencing both Services.

    Raises RouterProblem (MalformedRoute, BackendNotInRoute, AmbiguousBackend) naming what a
    user must change; `label` names the route in those messages.
    """
    rules = _rules(route, label)
    if rule_name is not None:
        for index, rule in enumerate(rules):
            if rule.get("name") == rule_name:
                found = _backends_in(rule, index, label, namespace, incumbent, candidate)
                if found is None:
                    raise RouterProblem(
                        "BackendNotInRoute", _missing_in_rule(rule, index, label, namespace, incumbent, candidate)
                    )
                return found
        raise RouterProblem(
            "BackendNotInRoute", f"{label} has no rule named {rule_name} (set in traffic.gatewayAPI.ruleName)"
        )

    for index, rule in enumerate(rules):
        found = _backends_in(rule, index, label, namespace, incumbent, candidate)
        if found is not None:
            return found
    raise RouterProblem("BackendNotInRoute", _missing_message(rules, label, namespace, incumbent, candidate))


def split_of(backends: RuleBackends, *, label: str) -> Weights:
    """The two weights as percentages of their sum.

    Other backendRefs of the rule are left out on purpose: the rollout is about the share of
    the candidate next to the incumbent, and a third backend's traffic is not ours to count.
    Rounding is half up, so 1:2 reads as 33/67 although the data plane splits 33.3/66.7.
    """
    weights = pair_percent(backends.incumbent.weight, backends.candidate.weight)
    if weights is None:
        # Neither model gets traffic from this rule: no split describes that, and reporting
        # "100% incumbent" would let the engine believe a restore needs no write.
        raise RouterProblem(
            "ZeroWeights",
            f"{label} {backends.where} gives weight 0 to both {backends.incumbent} and "
            f"{backends.candidate}, so neither model gets traffic from it; give the incumbent a weight",
        )
    return weights


def splits_as(backends: RuleBackends, weights: Weights) -> bool:
    """Whether the route already splits traffic exactly as asked (so there is nothing to write)."""
    return same_ratio(backends.incumbent.weight, backends.candidate.weight, weights)


def weight_patch(backends: RuleBackends, weights: Weights) -> list[dict[str, Any]]:
    """RFC 6902 ops that set the two weights and nothing else.

    The `test` ops pin what we read (the rule's name, each backendRef's port and name), so if
    someone reordered or replaced the rules or backendRefs since, the API server refuses the
    whole patch (422) rather than putting a weight on another backend. The weights themselves
    are not tested: a newer value there is simply overwritten, as a level-triggered controller
    should. Each slot's `test` of the name comes right before its weight op, so a write in the
    audit log says which Service got which weight (tests/support/audit.py reads it that way).
    """
    rule_path = f"/spec/rules/{backends.rule_index}"
    ops: list[dict[str, Any]] = []
    if backends.rule_name is not None:
        ops.append({"op": "test", "path": f"{rule_path}/name", "value": backends.rule_name})
    for slot, weight in ((backends.incumbent, weights.incumbent), (backends.candidate, weights.candidate)):
        ref_path = f"{rule_path}/backendRefs/{slot.index}"
        if slot.port is not None:
            ops.append({"op": "test", "path": f"{ref_path}/port", "value": slot.port})
        if slot.kind != "Service":
            ops.append({"op": "test", "path": f"{ref_path}/kind", "value": slot.kind})
        ops.append({"op": "test", "path": f"{ref_path}/name", "value": slot.name})
        # `add` also replaces, and works when the ref leaves its weight out.
        ops.append({"op": "add", "path": f"{ref_path}/weight", "value": weight})
    return ops


def _is_ours(f: Any, namespace: str, comparator: ComparatorRef) -> bool:
    """A RequestMirror filter to the comparator's Service (and port): the one mirror we own."""
    if not isinstance(f, dict) or f.get("type") != "RequestMirror" or not isinstance(f.get("requestMirror"), dict):
        return False
    ref = f["requestMirror"].get("backendRef")
    return (
        isinstance(ref, dict)
        and ref.get("kind", "Service") == "Service"
        and ref.get("group", "") == ""
        and ref.get("namespace", namespace) == namespace
        and ref.get("name") == comparator.service
        and ref.get("port") == comparator.port
    )


def _filters(route: dict[str, Any], backends: RuleBackends, label: str) -> list[Any]:
    filters = route["spec"]["rules"][backends.rule_index].get("filters") or []
    if not isinstance(filters, list):
        raise RouterProblem("MalformedRoute", f"{label}: spec.rules[{backends.rule_index}].filters is not a list")
    return filters


def mirror_percent(f: dict[str, Any]) -> int:
    """A RequestMirror filter's share in percent: `percent`, else `fraction`, else all (the spec's default)."""
    mirror = f["requestMirror"]
    percent = mirror.get("percent")
    if isinstance(percent, int) and not isinstance(percent, bool):
        return percent
    fraction = mirror.get("fraction")
    numerator = fraction.get("numerator") if isinstance(fraction, dict) else None
    denominator = fraction.get("denominator", 100) if isinstance(fraction, dict) else None
    if isinstance(numerator, int) and isinstance(denominator, int) and denominator > 0:
        return round(100 * numerator / denominator)
    return 100


def mirror_filter(comparator: ComparatorRef, percent: int) -> dict[str, Any]:
    return {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {"name": comparator.service, "port": comparator.port}, "percent": percent},
    }


def mirror_patch(
    route: dict[str, Any],
    backends: RuleBackends,
    *,
    label: str,
    namespace: str,
    comparator: ComparatorRef,
    percent: int,
) -> list[dict[str, Any]]:
    """RFC 6902 ops that make our mirror filter `percent` (0: remove it), or [] when it already is.

    Pinned by `test` ops on the rule's name and the incumbent's backendRef (the rule is still the
    one we read) and on each filter's backendRef name before it is replaced or removed. Removal
    goes from the last index down, so earlier indices stay valid within the one patch.
    """
    filters = _filters(route, backends, label)
    ours = [i for i, f in enumerate(filters) if _is_ours(f, namespace, comparator)]
    keep = ours[:1] if percent > 0 else []
    if percent > 0 and len(ours) == 1 and mirror_percent(filters[ours[0]]) == percent:
        return []
    if percent == 0 and not ours:
        return []
    rule_path = f"/spec/rules/{backends.rule_index}"
    ops: list[dict[str, Any]] = []
    if backends.rule_name is not None:
        ops.append({"op": "test", "path": f"{rule_path}/name", "value": backends.rule_name})
    incumbent = f"{rule_path}/backendRefs/{backends.incumbent.index}/name"
    ops.append({"op": "test", "path": incumbent, "value": backends.incumbent.name})
    for index in sorted(set(ours) - set(keep), reverse=True):
        path = f"{rule_path}/filters/{index}"
        ops.append({"op": "test", "path": f"{path}/requestMirror/backendRef/name", "value": comparator.service})
        ops.append({"op": "remove", "path": path})
    if keep:
        path = f"{rule_path}/filters/{keep[0]}"
        ops.append({"op": "test", "path": f"{path}/requestMirror/backendRef/name", "value": comparator.service})
        ops.append({"op": "replace", "path": path, "value": mirror_filter(comparator, percent)})
    elif percent > 0 and route["spec"]["rules"][backends.rule_index].get("filters") is not None:
        ops.append({"op": "add", "path": f"{rule_path}/filters/-", "value": mirror_filter(comparator, percent)})
    elif percent > 0:
        ops.append({"op": "add", "path": f"{rule_path}/filters", "value": [mirror_filter(comparator, percent)]})
    return ops


class HttpRouteWeights:
    """RouterPlan and MirrorPlan for `traffic.gatewayAPI`: two backendRef weights of an HTTPRoute in
    the rollout's namespace, and in shadow our RequestMirror filter in their rule."""

    def mirrored(self, target: RouteTarget, objects: list[KubeObject]) -> int:
        if target.comparator is None:
            return 0
        backends = self._find(target, objects[0])
        filters = _filters(objects[0], backends, self._label(target))
        ours = [mirror_percent(f) for f in filters if _is_ours(f, target.namespace, target.comparator)]
        return max(ours, default=0)

    def mirror_patches(self, target: RouteTarget, objects: list[KubeObject], percent: int) -> list[Patch]:
        if target.comparator is None:
            return []
        ops = mirror_patch(
            objects[0],
            self._find(target, objects[0]),
            label=self._label(target),
            namespace=target.namespace,
            comparator=target.comparator,
            percent=percent,
        )
        return [Patch(0, ops)] if ops else []

    def objects(self, target: RouteTarget) -> list[ObjectRef]:
        return [
            ObjectRef(
                HTTPROUTE,
                target.namespace,
                _block(target).http_route,
                missing=f"traffic.gatewayAPI.httpRoute of rollout {target.rollout}; is the Gateway API installed "
                f"and the route created?",
                not_found="RouteNotFound",
            )
        ]

    def weights(self, target: RouteTarget, objects: list[KubeObject]) -> Weights:
        return split_of(self._find(target, objects[0]), label=self._label(target))

    def patches(self, target: RouteTarget, objects: list[KubeObject], wanted: Weights, now: datetime) -> list[Patch]:
        backends = self._find(target, objects[0])
        return [] if splits_as(backends, wanted) else [Patch(0, weight_patch(backends, wanted))]

    def _label(self, target: RouteTarget) -> str:
        return f"HTTPRoute {target.namespace}/{_block(target).http_route}"

    def _find(self, target: RouteTarget, route: dict[str, Any]) -> RuleBackends:
        return find_backends(
            route,
            label=self._label(target),
            namespace=target.namespace,
            incumbent=BackendService.of(target.incumbent),
            candidate=BackendService.of(target.candidate),
            rule_name=_block(target).rule_name,
        )


def _block(target: RouteTarget) -> GatewayApiTraffic:
    block = target.traffic.gateway_api
    if block is None:
        # The registry hands this router only rollouts with a gatewayAPI block.
        raise ValueError(f"rollout {target.namespace}/{target.rollout} has no traffic.gatewayAPI block")
    return block


# -- reading the route's shape ------------------------------------------------------------------


def _rules(route: dict[str, Any], label: str) -> list[dict[str, Any]]:
    spec = route.get("spec")
    if not isinstance(spec, dict):
        raise RouterProblem("MalformedRoute", f"{label} has no spec object")
    # An absent (or null) list is an empty one: such a route references no backend.
    rules = spec.get("rules") or []
    if not isinstance(rules, list):
        raise RouterProblem("MalformedRoute", f"{label}: spec.rules is not a list")
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise RouterProblem("MalformedRoute", f"{label}: spec.rules[{index}] is not an object")
    return rules


def _refs(rule: dict[str, Any], rule_index: int, label: str) -> list[dict[str, Any]]:
    refs = rule.get("backendRefs") or []
    if not isinstance(refs, list):
        raise RouterProblem("MalformedRoute", f"{label}: spec.rules[{rule_index}].backendRefs is not a list")
    for index, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise RouterProblem(
                "MalformedRoute", f"{label}: spec.rules[{rule_index}].backendRefs[{index}] is not an object"
            )
    return refs


def _refers_to(ref: dict[str, Any], namespace: str, service: BackendService) -> bool:
    """Whether a backendRef points at this Service or InferencePool (kind Service and core group are
    the defaults)."""
    if ref.get("kind", "Service") != service.kind or ref.get("group", "") != service.group:
        return False
    # A ref into another namespace is another Service, whatever its name.
    if ref.get("namespace", namespace) != namespace:
        return False
    return ref.get("name") == service.name and (service.port is None or ref.get("port") == service.port)


def _matching(refs: list[dict[str, Any]], namespace: str, service: BackendService) -> list[int]:
    return [i for i, ref in enumerate(refs) if _refers_to(ref, namespace, service)]


def _backends_in(
    rule: dict[str, Any],
    rule_index: int,
    label: str,
    namespace: str,
    incumbent: BackendService,
    candidate: BackendService,
) -> RuleBackends | None:
    """Both variants' slots in this rule, or None if the rule lacks one of them."""
    refs = _refs(rule, rule_index, label)
    rule_name = _rule_name(rule)
    where = _where(rule, rule_index)
    inc, cand = _matching(refs, namespace, incumbent), _matching(refs, namespace, candidate)
    if not inc or not cand:
        return None
    for role, service, found in (("incumbent", incumbent, inc), ("candidate", candidate, cand)):
        if len(found) > 1:
            hint = "set backend.port on the model to pick one" if service.port is None else "remove the duplicate"
            raise RouterProblem(
                "AmbiguousBackend", f"{label} {where} references {service} (the {role}'s) {len(found)} times: {hint}"
            )
    if inc == cand:
        raise RouterProblem(
            "AmbiguousBackend",
            f"{label} {where}: the incumbent and the candidate both resolve to backendRef {inc[0]} ({incumbent}); "
            f"give the models different backend.service or backend.port",
        )
    return RuleBackends(
        rule_index=rule_index,
        rule_name=rule_name,
        incumbent=_slot(refs[inc[0]], inc[0], rule_index, label),
        candidate=_slot(refs[cand[0]], cand[0], rule_index, label),
    )


def _rule_name(rule: dict[str, Any]) -> str | None:
    name = rule.get("name")
    return name if isinstance(name, str) else None


def _where(rule: dict[str, Any], rule_index: int) -> str:
    name = _rule_name(rule)
    return f"rule {name}" if name else f"spec.rules[{rule_index}]"


def _missing_in_rule(
    rule: dict[str, Any],
    rule_index: int,
    label: str,
    namespace: str,
    incumbent: BackendService,
    candidate: BackendService,
) -> str:
    refs = _refs(rule, rule_index, label)
    missing = " and ".join(
        f"{service} (the {role}'s)"
        for role, service in (("incumbent", incumbent), ("candidate", candidate))
        if not _matching(refs, namespace, service)
    )
    return f"{label} {_where(rule, rule_index)} has no backendRef to {missing}"


def _slot(ref: dict[str, Any], index: int, rule_index: int, label: str) -> BackendSlot:
    weight = ref.get("weight", DEFAULT_WEIGHT)
    # bool is an int in Python, but `true` is not a weight.
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
        raise RouterProblem(
            "MalformedRoute",
            f"{label}: spec.rules[{rule_index}].backendRefs[{index}].weight is {weight!r}, not a non-negative integer",
        )
    port = ref.get("port")
    return BackendSlot(
        index=index,
        name=str(ref["name"]),
        port=port if isinstance(port, int) and not isinstance(port, bool) else None,
        weight=weight,
        kind=str(ref.get("kind", "Service")),
    )


def _missing_message(
    rules: list[dict[str, Any]], label: str, namespace: str, incumbent: BackendService, candidate: BackendService
) -> str:
    """Say which Service is missing, so the fix is obvious."""
    refs = [ref for index, rule in enumerate(rules) for ref in _refs(rule, index, label)]
    has_inc = any(_refers_to(ref, namespace, incumbent) for ref in refs)
    has_cand = any(_refers_to(ref, namespace, candidate) for ref in refs)
    if not has_inc and not has_cand:
        return f"{label} has no backendRef to {incumbent} (the incumbent's) nor to {candidate} (the candidate's)"
    if not has_cand:
        return (
            f"{label} has no backendRef to {candidate} (the candidate's): add it with weight 0 to the rule "
            f"that holds {incumbent}"
        )
    if not has_inc:
        return f"{label} has no backendRef to {incumbent} (the incumbent's)"
    return (
        f"{label} references {incumbent} and {candidate} in different rules, never both in one: put both in "
        f"one rule, or name the rule in traffic.gatewayAPI.ruleName"
    )
