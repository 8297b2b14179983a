"""KServe LLMInferenceService canary groups: the weights of two members of one route group.

KServe v0.20 lets several LLMInferenceServices (serving.kserve.io, v1alpha2) share one route:
members naming the same `spec.router.route.group` split its traffic by their
`spec.router.route.weight`, with Gateway API weight semantics (relative weights, an absent weight
counting as 0; KServe writes them as backendRef weights of the group's HTTPRoute). KServe's guide
rolls out a new model server or base model by editing those weights by hand; this router edits
the same two fields the same way, and nothing else:

- a step: the candidate's weight and the incumbent's, as percentages;
- promotion: the candidate 100, the incumbent 0 (it stays a member, at 0: deleting it is the
  platform team's call, and KServe's finaliser keeps the route consistent when they do);
- rollback: the incumbent 100, the candidate 0.

KServe splits a group only among members serving the same model names (`spec.model.name`,
defaulting to the object's name, plus LoRA adapter names); a member serving other names gets
none of the group's traffic. So a pair that does not serve the same names, or is not in the
group the rollout names, is a RouterProblem saying what to change, and nothing is written.
The router lists the namespace's LLMInferenceServices too: a third member of the group serving
the same names with a weight above 0 takes traffic the pair's split does not show (the reported
split, the guardrails' comparison and the promotion would all be wrong), so it is a RouterProblem
(GroupHasOtherMembers) naming that member, and nothing is written.

Two objects means two writes, and for a moment the split is the new weight of one beside the old
weight of the other. Of the two orders, the router takes the one that gives the candidate the
smaller share in between: never more than the larger of the old and new shares (of the two
orders' shares, at most one can exceed it), so a rollback takes traffic off the candidate with
its first write, and a step forward never overshoots (90:10 -> 50:50 passes through 50:10, 17%).
Each write is a merge patch carrying the resourceVersion read (409 if the object moved).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.api.models import LlmInferenceServiceTraffic, ModelRef, Weights
from controller.kube.objects import Resource
from controller.routers.base import KubeObject, ObjectRef, Patch, RouterProblem, RouteTarget, pair_percent, same_ratio

LLMINFERENCESERVICE = Resource(
    group="serving.kserve.io", version="v1alpha2", plural="llminferenceservices", kind="LLMInferenceService"
)


@dataclass(frozen=True)
class Member:
    """What this router reads of one LLMInferenceService."""

    name: str
    group: str | None
    weight: int
    served: tuple[str, ...]  # the model names KServe compares between members
    resource_version: str


def member_name(model: ModelRef) -> str:
    backend = model.backend
    return backend.llm_inference_service if backend is not None and backend.llm_inference_service else model.name


def member_of(obj: dict[str, Any], *, label: str) -> Member:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise RouterProblem("MalformedLLMInferenceService", f"{label} has no spec")
    router = spec.get("router") or {}
    route = router.get("route") if isinstance(router, dict) else None
    route = route if isinstance(route, dict) else {}
    group, weight = route.get("group"), route.get("weight", 0)
    # KServe reads an absent weight as 0 (ptr.Deref(weight, 0)); bool is an int in Python.
    if weight is None:
        weight = 0
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
        raise RouterProblem(
            "MalformedLLMInferenceService",
            f"{label}: spec.router.route.weight is {weight!r}, not a non-negative integer",
        )
    name = str(obj.get("metadata", {}).get("name", ""))
    model = spec.get("model")
    model = model if isinstance(model, dict) else {}
    served = [str(model.get("name") or name)]
    lora = model.get("lora")
    adapters = (lora.get("adapters") if isinstance(lora, dict) else None) or []
    served += [str(a["name"]) for a in adapters if isinstance(a, dict) and a.get("name")]
    return Member(
        name=name,
        group=group if isinstance(group, str) else None,
        weight=weight,
        served=tuple(sorted(set(served))),
        resource_version=str(obj.get("metadata", {}).get("resourceVersion", "")),
    )


def check_pair(incumbent: Member, candidate: Member, *, group: str, namespace: str) -> None:
    """Raise RouterProblem unless both members are in `group` and serve the same model names."""
    for role, member in (("incumbent", incumbent), ("candidate", candidate)):
        if member.group != group:
            now = f"names group {member.group}" if member.group else "is in no group"
            raise RouterProblem(
                "NotInRouteGroup",
                f"LLMInferenceService {namespace}/{member.name} (the {role}'s) {now}: set its "
                f"spec.router.route.group to {group} (traffic.llmInferenceService.group)",
            )
    if incumbent.served != candidate.served:
        raise RouterProblem(
            "GroupMembersDiverge",
            f"LLMInferenceServices {namespace}/{incumbent.name} and {candidate.name} serve different model names "
            f"({', '.join(incumbent.served)} vs {', '.join(candidate.served)}): KServe splits a group only among "
            f"members serving the same spec.model.name (and LoRA adapters); give them the same",
        )


def check_others(incumbent: Member, candidate: Member, listed: dict[str, Any], *, group: str, namespace: str) -> None:
    """Raise RouterProblem if a member of `group` other than the pair, serving the pair's model
    names, has a weight above 0: it takes a share of the group's traffic the pair does not see."""
    items = listed.get("items")
    others = []
    for obj in items if isinstance(items, list) else []:
        name = str(obj.get("metadata", {}).get("name", "")) if isinstance(obj, dict) else ""
        if not name or name in (incumbent.name, candidate.name):
            continue
        member = member_of(obj, label=f"LLMInferenceService {namespace}/{name}")
        if member.group == group and member.served == incumbent.served and member.weight > 0:
            others.append(member)
    if others:
        named = ", ".join(f"{m.name} (weight {m.weight})" for m in sorted(others, key=lambda m: m.name))
        raise RouterProblem(
            "GroupHasOtherMembers",
            f"route group {group} in {namespace} has other members serving {', '.join(incumbent.served)} with a "
            f"weight above 0: {named}; they take traffic the rollout of {incumbent.name} -> {candidate.name} "
            f"cannot see: set their spec.router.route.weight to 0 or move them to another group",
        )


def split_of(incumbent: Member, candidate: Member, *, namespace: str) -> Weights:
    weights = pair_percent(incumbent.weight, candidate.weight)
    if weights is None:
        raise RouterProblem(
            "ZeroWeights",
            f"LLMInferenceServices {namespace}/{incumbent.name} and {candidate.name} both have "
            f"spec.router.route.weight 0 (or none), so neither gets traffic; give the incumbent a weight",
        )
    return weights


def _candidate_share(incumbent: int, candidate: int) -> float:
    # 0:0 sends the group's traffic nowhere: worse than any split.
    return candidate / (incumbent + candidate) if incumbent + candidate else math.inf


def weight_patches(incumbent: Member, candidate: Member, wanted: Weights) -> list[Patch]:
    """The merge patches setting both weights, in the order that exposes the candidate least in
    between; none when the members already split so."""
    if same_ratio(incumbent.weight, candidate.weight, wanted):
        return []
    writes = [(0, incumbent, wanted.incumbent), (1, candidate, wanted.candidate)]
    candidate_first = _candidate_share(incumbent.weight, wanted.candidate)
    incumbent_first = _candidate_share(wanted.incumbent, candidate.weight)
    if candidate_first < incumbent_first:
        writes.reverse()
    return [
        Patch(
            index,
            {
                "metadata": {"resourceVersion": member.resource_version},
                "spec": {"router": {"route": {"weight": weight}}},
            },
        )
        for index, member, weight in writes
        if member.weight != weight
    ]


class LlmInferenceServiceGroup:
    """RouterPlan for `traffic.llmInferenceService`: two members of one KServe route group (and a
    list of the namespace's members, to see that no other one takes traffic)."""

    def objects(self, target: RouteTarget) -> list[ObjectRef]:
        return [
            ObjectRef(
                LLMINFERENCESERVICE,
                target.namespace,
                member_name(model),
                missing=f"the {role}'s LLMInferenceService of rollout {target.rollout} (backend.llmInferenceService, "
                f"default the model name); is KServe v0.20+ installed?",
                not_found="LLMInferenceServiceNotFound",
            )
            for role, model in (("incumbent", target.incumbent), ("candidate", target.candidate))
        ] + [
            ObjectRef(
                LLMINFERENCESERVICE,
                target.namespace,
                "",
                missing="is KServe v0.20+ installed?",
                not_found="LLMInferenceServiceNotFound",
                listed=True,
            )
        ]

    def weights(self, target: RouteTarget, objects: list[KubeObject]) -> Weights:
        incumbent, candidate = self._members(target, objects)
        return split_of(incumbent, candidate, namespace=target.namespace)

    def patches(self, target: RouteTarget, objects: list[KubeObject], wanted: Weights, now: datetime) -> list[Patch]:
        incumbent, candidate = self._members(target, objects)
        return weight_patches(incumbent, candidate, wanted)

    def _members(self, target: RouteTarget, objects: list[KubeObject]) -> tuple[Member, Member]:
        refs = self.objects(target)
        incumbent, candidate = (member_of(obj, label=str(ref)) for obj, ref in zip(objects[:2], refs[:2], strict=True))
        group = _block(target).group
        check_pair(incumbent, candidate, group=group, namespace=target.namespace)
        check_others(incumbent, candidate, objects[2], group=group, namespace=target.namespace)
        return incumbent, candidate


def _block(target: RouteTarget) -> LlmInferenceServiceTraffic:
    block = target.traffic.llm_inference_service
    if block is None:
        raise ValueError(f"rollout {target.namespace}/{target.rollout} has no traffic.llmInferenceService block")
    return block
