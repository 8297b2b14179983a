"""Kubernetes Events for every transition, so `kubectl describe mro` tells the story.

Repeats of the same reason and message on one object are counted on one Event (as client-go's
recorder does) instead of flooding the namespace.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from controller.api import API_VERSION, KIND
from controller.kube.errors import Conflict, KubeError, NamespaceTerminating, translated

COMPONENT = "modelrollout-controller"


class EventRecorder:
    def __init__(self, api: client.ApiClient, *, host: str = "", component: str = COMPONENT) -> None:
        self._core = client.CoreV1Api(api)
        self._host = host
        self._component = component

    def emit(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> bool:
        """Record an Event about `obj`; False if its namespace is being deleted (no Event can be
        created there, and it would go with the namespace: a rollout's release must not wait)."""
        meta = obj["metadata"]
        digest = hashlib.sha256(f"{meta.get('uid')}/{type_}/{reason}/{message}".encode()).hexdigest()[:12]
        name = f"{meta['name']}.{digest}"
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=name, namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=API_VERSION,
                kind=KIND,
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            reason=reason,
            message=message,
            type=type_,
            count=1,
            first_timestamp=now,
            last_timestamp=now,
            source=client.V1EventSource(component=self._component, host=self._host or None),
            reporting_component=self._component,
            reporting_instance=self._host or self._component,
        )
        try:
            with translated():
                self._core.create_namespaced_event(meta["namespace"], body)
        except Conflict:
            self._bump(meta["namespace"], name, now)
        except NamespaceTerminating:
            return False
        return True

    def _bump(self, namespace: str, name: str, now: datetime) -> None:
        try:
            with translated():
                existing = self._core.read_namespaced_event(name, namespace)
                patch = {"count": (existing.count or 1) + 1, "lastTimestamp": now.isoformat().replace("+00:00", "Z")}
                self._core.patch_namespaced_event(name, namespace, patch)
        except KubeError:
            # An Event is best effort: losing a repeat count must never fail a reconcile.
            return

    def list_for(self, namespace: str, name: str, uid: str | None = None) -> list[dict[str, Any]]:
        """Events about one rollout, oldest first, as plain dicts (type, reason, message, count, last)."""
        selector = f"involvedObject.kind={KIND},involvedObject.name={name}"
        with translated():
            items = self._core.list_namespaced_event(namespace, field_selector=selector).items
        out = []
        for e in items:
            if uid and e.involved_object.uid not in (None, uid):
                continue
            when = e.last_timestamp or e.event_time or e.first_timestamp
            out.append({"type": e.type, "reason": e.reason, "message": e.message, "count": e.count or 1, "time": when})
        return sorted(out, key=lambda e: e["time"] or datetime.min.replace(tzinfo=UTC))
