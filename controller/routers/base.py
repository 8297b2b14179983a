"""The one contract every traffic router keeps (Gateway API, Istio, KServe, replica ratio).

A router moves traffic between the incumbent and the candidate and reports what the data plane
really has, read back from the object: the engine records only weights a router read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from controller.api.models import ALL_CANDIDATE, ALL_INCUMBENT, ModelRef, Traffic, Weights

__all__ = ["ALL_CANDIDATE", "ALL_INCUMBENT", "RouteTarget", "RouterProblem", "TrafficRouter", "Weights"]


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
