"""The one contract every traffic router keeps (Gateway API, Istio, KServe, replica ratio).

A router moves traffic between the incumbent and the candidate and reports what the data plane
really has, read back from the object: the engine records only weights a router read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from controller.api.models import ALL_CANDIDATE, ALL_INCUMBENT, ModelRef, Traffic, Weights
from controller.kube.errors import Forbidden, NotFound
from controller.kube.objects import Objects, Resource

__all__ = [
    "ALL_CANDIDATE",
    "ALL_INCUMBENT",
    "RouteTarget",
    "RouterProblem",
    "TrafficRouter",
    "Weights",
    "pair_percent",
    "read_target",
    "same_ratio",
]


@dataclass(frozen=True)
class RouteTarget:
    """What a router needs to know about one rollout."""

    namespace: str
    rollout: str
    traffic: Traffic
    incumbent: ModelRef
    candidate: ModelRef


class RouterProblem(Exception):
    """The target object is missing or not shaped as the rollout says: a user must fix it.

    `reason` is CamelCase (it becomes a condition reason and an Event reason); the message says
    what is wrong and where. No write happens when this is raised.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class TrafficRouter(Protocol):
    def applied(self, target: RouteTarget) -> Weights:
        """The weights the data plane has now. Raises RouterProblem, or KubeError for API failures."""
        ...

    def apply(self, target: RouteTarget, weights: Weights) -> Weights:
        """Set the weights (no write when they are already set) and return what was read back."""
        ...


def pair_percent(incumbent: int, candidate: int) -> Weights | None:
    """Two relative weights as percentages of their sum, rounded half up; None when both are 0.

    Gateway API and Istio both split by relative weight, so 1:2 reads as 33/67 (the data plane
    splits 33.3/66.7). Other destinations of the same rule are not counted: the rollout is about
    the candidate's share next to the incumbent.
    """
    total = incumbent + candidate
    if total <= 0:
        return None
    share = (200 * candidate + total) // (2 * total)
    return Weights(incumbent=100 - share, candidate=share)


def same_ratio(incumbent: int, candidate: int, weights: Weights) -> bool:
    """Whether two relative weights already split as asked: 9:1 is 90/10, rewriting it moves nothing."""
    return incumbent + candidate > 0 and incumbent * weights.candidate == candidate * weights.incumbent


def read_target(objects: Objects, resource: Resource, namespace: str, name: str, *, missing: str) -> dict[str, Any]:
    """One read of a router's target object; a missing or forbidden one is a RouterProblem.

    `missing` completes the not-found message with where the name comes from, so the user knows
    which field to fix.
    """
    try:
        return objects.get(resource, namespace, name)
    except NotFound:
        raise RouterProblem(
            f"{resource.kind}NotFound", f"{resource.kind} {namespace}/{name} not found ({missing})"
        ) from None
    except Forbidden:
        raise forbidden(resource, namespace, name, "get") from None


def forbidden(resource: Resource, namespace: str, name: str, verb: str) -> RouterProblem:
    return RouterProblem(
        "RouterForbidden",
        f"the controller may not {verb} {resource.plural}.{resource.group or 'core'} (here {namespace}/{name}): "
        f"grant it in the chart (values routers.*, docs/routers.md)",
    )
