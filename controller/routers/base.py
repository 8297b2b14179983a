"""The one contract every traffic router keeps, and the one path by which any of them writes.

A router (Gateway API, Istio, KServe, replica ratio) is a `RouterPlan`: pure functions that name
the objects it routes by, read weights from them and plan the patches that ask for other
weights. `TrafficRouter` is the only code that does I/O for all of them: it gets the objects,
plans, patches in order, re-reads and re-plans when it lost a race with another writer, and turns
the API server's NotFound and Forbidden into the problems a human must fix. So every router
writes only on change, reports what it read back (the engine records only that), and fails the
same way.

Mirroring (spec.shadow, docs/shadow.md) is a second, optional part of a plan: a `MirrorPlan` also
reads and plans the share of requests mirrored to the comparator. It is written in the same
`apply` as the weights, after them, with the same care (conditional patches, read back, what the
user wrote left alone). A router without it cannot mirror: asking it to is a RouterProblem, and
asking it for no mirror is nothing to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from controller.api.models import ComparatorRef, ModelRef, Traffic, Weights
from controller.core.clock import Clock
from controller.kube.errors import Conflict, Forbidden, Invalid, NotFound
from controller.kube.objects import Objects, Resource

# One write, plus up to two re-plans after the object changed between our read and our write.
PATCH_ATTEMPTS = 3

KubeObject = dict[str, Any]


@dataclass(frozen=True)
class RouteTarget:
    """What a router needs to know about one rollout."""

    namespace: str
    rollout: str
    traffic: Traffic
    incumbent: ModelRef
    candidate: ModelRef
    # Where mirrored requests go (the shadow's comparator), to add or remove our mirror; None:
    # this rollout never mirrored, so there is no mirror of ours to read or remove.
    comparator: ComparatorRef | None = None
    # Comparators an earlier candidate's shadow mirrored to: any mirror of ours to them that the
    # pair's route still holds is removed with the next write (status.pendingMirrorRemovals).
    stale: tuple[ComparatorRef, ...] = ()


class Routing(NamedTuple):
    """What the data plane has for a target: its weights, the percent mirrored to its comparator,
    and the stale comparators the route still mirrors to."""

    weights: Weights
    mirrored: int = 0
    stale: tuple[ComparatorRef, ...] = ()


class RouterProblem(Exception):
    """The target object is missing or not shaped as the rollout says: a user must fix it.

    `reason` is CamelCase (it becomes a condition reason and an Event reason); the message says
    what is wrong and where. No write happens when this is raised.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ObjectRef:
    """One object a router reads and patches, and what to tell a user who must create it.

    `missing` completes "<Kind> <namespace>/<name> not found (...)" with where the name comes
    from, so the user knows which field to fix; `not_found` is that problem's reason. A `listed`
    ref (no name) reads every object of the kind in the namespace, as the API server's list (a
    dict with `items`), for a router that must see its objects' neighbours; it is never patched.
    """

    resource: Resource
    namespace: str
    name: str
    missing: str
    not_found: str = ""
    listed: bool = False

    def __str__(self) -> str:
        if self.listed:
            return f"the {self.resource.plural} of namespace {self.namespace}"
        return f"{self.resource.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Patch:
    """One write of a plan, to the plan's object number `index`.

    A list body is an RFC 6902 patch whose `test` ops pin what was read (422 if it moved); a dict
    body is a merge patch carrying the resourceVersion read (409 if it moved).
    """

    index: int
    body: list[dict[str, Any]] | dict[str, Any]


class RouterPlan(Protocol):
    """What a router module provides: pure functions over the objects as read, no I/O.

    Each may raise RouterProblem for an object a user must fix; nothing is written then.
    """

    def objects(self, target: RouteTarget) -> list[ObjectRef]:
        """The objects the router routes by, in the order the other two receive them."""
        ...

    def weights(self, target: RouteTarget, objects: list[KubeObject]) -> Weights:
        """The split these objects ask of the data plane now."""
        ...

    def patches(self, target: RouteTarget, objects: list[KubeObject], wanted: Weights, now: datetime) -> list[Patch]:
        """The writes, in order, that move the objects towards `wanted`; none when they are there.

        A router whose change takes several phases (the replica ratio shrinks the incumbent only
        once the candidate's pods are ready) plans only what is due now: the engine applies
        again until what it reads back is what it asked for.
        """
        ...


@runtime_checkable
class MirrorPlan(Protocol):
    """What a router that can mirror adds to its RouterPlan: pure functions too."""

    def mirrored(self, target: RouteTarget, objects: list[KubeObject]) -> int:
        """Percent of requests these objects mirror to `target.comparator` (0: no mirror of ours)."""
        ...

    def mirror_patches(self, target: RouteTarget, objects: list[KubeObject], percent: int) -> list[Patch]:
        """The writes that make our mirror `percent` (0: remove it); none when it is there."""
        ...


class TrafficRouter:
    """Any RouterPlan against the API server: the only place a router reads or writes."""

    def __init__(self, plan: RouterPlan, objects: Objects, clock: Clock) -> None:
        self.plan, self._objects, self._clock = plan, objects, clock

    def applied(self, target: RouteTarget, *, fresh: bool = False) -> Weights:
        """The weights the data plane has now (`fresh`: read from the API server, not the cache).
        Raises RouterProblem, or KubeError for API failures."""
        return self.routing(target, fresh=fresh).weights

    def routing(self, target: RouteTarget, *, fresh: bool = False) -> Routing:
        """The weights, and the mirrors of ours, the data plane has now (`fresh` as in applied)."""
        objects = self._read(self.plan.objects(target), fresh=fresh)
        return self._routing(target, objects)

    def apply(self, target: RouteTarget, weights: Weights) -> Weights:
        """Set the weights (no write when they are already set) and return what was read back;
        a mirror of ours is removed with them (see apply_routing)."""
        return self.apply_routing(target, weights, 0).weights

    def apply_routing(self, target: RouteTarget, weights: Weights, mirror: int) -> Routing:
        """Set the weights, then remove our stale mirrors and make our mirror `mirror` percent (0:
        none); return what was read back.

        A 409 or 422 answer means the object changed since our read (a `test` op or the
        resourceVersion no longer holds): read again from the API server (the cache may not have
        the change yet) and re-plan at once, since the new state is already there to read. If it
        keeps changing, the error goes to the work queue's back-off.
        """
        mirror_plan = self.plan if isinstance(self.plan, MirrorPlan) else None
        if mirror > 0 and (mirror_plan is None or target.comparator is None):
            raise RouterProblem(
                "MirrorNotSupported",
                f"rollout {target.rollout}: this router cannot mirror requests; spec.shadow needs traffic.gatewayAPI "
                "or traffic.istio",
            )
        retrying = Retrying(
            stop=stop_after_attempt(PATCH_ATTEMPTS), retry=retry_if_exception_type((Conflict, Invalid)), reraise=True
        )
        for attempt in retrying:
            with attempt:
                refs = self.plan.objects(target)
                objects = self._read(refs, fresh=attempt.retry_state.attempt_number > 1)
                for patch in self.plan.patches(target, objects, weights, self._clock.now()):
                    objects[patch.index] = self._write(refs[patch.index], patch)
                if mirror_plan is not None:
                    # Planned on the objects as the weight writes left them (their test ops hold):
                    # earlier shadows' mirrors first (Istio has room for one), then ours.
                    wanted = [(replace(target, comparator=c), 0) for c in target.stale if c != target.comparator]
                    if target.comparator is not None:
                        wanted.append((target, mirror))
                    for one, percent in wanted:
                        for patch in mirror_plan.mirror_patches(one, objects, percent):
                            objects[patch.index] = self._write(refs[patch.index], patch)
                # What the API server stored, not what we asked for (an admission webhook may differ).
                return self._routing(target, objects)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _routing(self, target: RouteTarget, objects: list[KubeObject]) -> Routing:
        weights = self.plan.weights(target, objects)
        if not isinstance(self.plan, MirrorPlan):
            return Routing(weights)
        mirrored = self.plan.mirrored(target, objects) if target.comparator is not None else 0
        stale = tuple(
            c
            for c in target.stale
            if c != target.comparator and self.plan.mirrored(replace(target, comparator=c), objects) > 0
        )
        return Routing(weights, mirrored, stale)

    def _read(self, refs: list[ObjectRef], *, fresh: bool) -> list[KubeObject]:
        objects = []
        for ref in refs:
            if ref.listed:
                with _problems(ref, "list"):
                    objects.append(self._objects.list_all(ref.resource, ref.namespace, fresh=fresh))
            else:
                with _problems(ref, "get"):
                    objects.append(self._objects.get(ref.resource, ref.namespace, ref.name, fresh=fresh))
        return objects

    def _write(self, ref: ObjectRef, patch: Patch) -> KubeObject:
        with _problems(ref, "patch"):
            if isinstance(patch.body, list):
                return self._objects.json_patch(ref.resource, ref.namespace, ref.name, patch.body)
            return self._objects.merge_patch(ref.resource, ref.namespace, ref.name, patch.body)


@contextmanager
def _problems(ref: ObjectRef, verb: str) -> Iterator[None]:
    """A missing object or a missing RBAC grant is for a human to fix: a RouterProblem."""
    try:
        yield
    except NotFound:
        raise RouterProblem(
            ref.not_found or f"{ref.resource.kind}NotFound", f"{ref} not found ({ref.missing})"
        ) from None
    except Forbidden:
        where = ref.namespace if ref.listed else f"{ref.namespace}/{ref.name}"
        raise RouterProblem(
            "RouterForbidden",
            f"the controller may not {verb} {ref.resource.plural}.{ref.resource.group or 'core'} "
            f"(here {where}): grant it in the chart (values routers.*, docs/routers.md)",
        ) from None


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
