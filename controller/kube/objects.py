"""Generic reads and patches of namespaced objects of any API group (routers use this).

Reads are served from a watch-fed cache once `cache()` has been called (the controller does; the
CLI and tests that build an `Objects` themselves read the API server directly): one informer per
kind and scope, started the first time a router reads that kind, so a controller whose rollouts
use one router watches one kind. Until that informer has listed, and for an object it does not
have, the read goes to the API server (a route created a moment ago is not reported missing). A
kind the controller may not list or watch (RBAC granting only get and patch, as charts before
issue 23 did) or that is not installed is read from the API server, as before. `fresh=True`
reads the API server: after a write of ours was refused because the object moved (409, 422).
Every object we write or read fresh goes into the cache at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import structlog
from kubernetes import client, watch

from controller.kube.config import REQUEST_TIMEOUT
from controller.kube.errors import Gone, translated
from controller.kube.informer import Informer, KubeObject, Page

log = structlog.get_logger("objects")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def list_page(
    custom: client.CustomObjectsApi, resource: Resource, namespace: str | None, *, limit: int, cont: str
) -> Page:
    """One page of a list (of one namespace, or all): items, the list's resourceVersion, the
    continue token ('' on the last page). An expired continue token is 410 Gone: list again."""
    page = cont or None
    with translated():
        if namespace is None:
            result = cast(
                dict[str, Any],
                custom.list_cluster_custom_object(
                    resource.group, resource.version, resource.plural, limit=limit, _continue=page
                ),
            )
        else:
            result = cast(
                dict[str, Any],
                custom.list_namespaced_custom_object(
                    resource.group, resource.version, namespace, resource.plural, limit=limit, _continue=page
                ),
            )
    meta = result.get("metadata") or {}
    return list(result.get("items") or []), str(meta.get("resourceVersion") or ""), str(meta.get("continue") or "")


def watch_events(
    custom: client.CustomObjectsApi,
    resource: Resource,
    namespace: str | None,
    resource_version: str,
    *,
    timeout_seconds: int,
) -> Iterator[tuple[str, KubeObject]]:
    """(type, object) events from resource_version, bookmarks included; raises Gone when it is too
    old (list again)."""
    func: Any
    args: tuple[str, ...]
    if namespace is None:
        func, args = custom.list_cluster_custom_object, (resource.group, resource.version, resource.plural)
    else:
        func, args = (
            custom.list_namespaced_custom_object,
            (resource.group, resource.version, namespace, resource.plural),
        )
    with translated():
        for event in watch.Watch().stream(
            func,
            *args,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
            allow_watch_bookmarks=True,
            # The server ends the watch after timeout_seconds; a connection silent well past
            # that is dead: give up on it and re-list.
            _request_timeout=(REQUEST_TIMEOUT[0], timeout_seconds + 30),
        ):
            obj = event["object"]
            if event["type"] == "ERROR":
                if isinstance(obj, dict) and obj.get("code") == 410:
                    raise Gone(str(obj.get("message", "resourceVersion too old")))
                raise Gone(f"watch error: {obj}")
            yield event["type"], obj


@dataclass(frozen=True)
class KindSource:
    """The ListWatch of one kind, for its informer."""

    custom: client.CustomObjectsApi
    resource: Resource

    def list_page(self, namespace: str | None, *, limit: int, cont: str) -> Page:
        return list_page(self.custom, self.resource, namespace, limit=limit, cont=cont)

    def watch(
        self, namespace: str | None, resource_version: str, *, timeout_seconds: int
    ) -> Iterator[tuple[str, KubeObject]]:
        return watch_events(self.custom, self.resource, namespace, resource_version, timeout_seconds=timeout_seconds)


class Objects:
    """Namespaced objects as plain dicts; errors are controller.kube.errors."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._informers: dict[tuple[Resource, str | None], Informer] = {}
        self._lock = threading.Lock()
        self._scopes: list[str | None] | None = None  # None: not caching
        self._watch_timeout = 60
        self._stop = threading.Event()

    # -- the cache ------------------------------------------------------------------------------

    def cache(self, *, namespaces: list[str], watch_timeout: int, stop: threading.Event) -> None:
        """Serve reads from informers (one per kind and scope: each of `namespaces`, or all),
        each started on first use and stopped with `stop`."""
        self._scopes = [*namespaces] or [None]
        self._watch_timeout, self._stop = watch_timeout, stop

    def informers(self) -> list[Informer]:
        with self._lock:
            return list(self._informers.values())

    def _slot(self, resource: Resource, namespace: str) -> tuple[Resource, str | None] | None:
        """Which informer holds objects of this kind in `namespace`: (kind, scope), or None when
        not caching or when the namespace is outside the watched ones."""
        if self._scopes is None:
            return None
        if self._scopes == [None]:
            return resource, None
        return (resource, namespace) if namespace in self._scopes else None

    def _informer(self, resource: Resource, namespace: str) -> Informer | None:
        """The informer for this kind in `namespace`'s scope, started if it is not yet."""
        slot = self._slot(resource, namespace)
        if slot is None:
            return None
        with self._lock:
            informer = self._informers.get(slot)
            if informer is None:
                informer = Informer(
                    KindSource(self._custom, resource),
                    name=f"{resource.plural}.{resource.group or 'core'}",
                    namespace=slot[1],
                    watch_timeout=self._watch_timeout,
                )
                self._informers[slot] = informer
                threading.Thread(
                    target=informer.run, args=(self._stop,), daemon=True, name=f"informer-{informer.name}"
                ).start()
                log.info("caching", informer=informer.name, namespace=slot[1])
        return informer

    def _remember(self, resource: Resource, obj: KubeObject) -> KubeObject:
        """Put what the API server answered into the informer's cache, if there is one (never starts one)."""
        slot = self._slot(resource, str((obj.get("metadata") or {}).get("namespace") or ""))
        if slot is not None:
            with self._lock:
                informer = self._informers.get(slot)
            if informer is not None:
                informer.remember(obj)
        return obj

    # -- reads ----------------------------------------------------------------------------------

    def get(self, resource: Resource, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any]:
        informer = None if fresh else self._informer(resource, namespace)
        if informer is not None and informer.synced.is_set():
            cached = informer.get(namespace, name)
            if cached is not None:
                return cached
        with translated():
            obj = cast(
                dict[str, Any],
                self._custom.get_namespaced_custom_object(
                    resource.group, resource.version, namespace, resource.plural, name
                ),
            )
        return self._remember(resource, obj)

    def list_all(self, resource: Resource, namespace: str, *, fresh: bool = False) -> dict[str, Any]:
        """Every object of the kind in the namespace, as the API server lists them (`items`)."""
        informer = None if fresh else self._informer(resource, namespace)
        if informer is not None and informer.synced.is_set():
            return {"items": informer.in_namespace(namespace)}
        with translated():
            listed = cast(
                dict[str, Any],
                self._custom.list_namespaced_custom_object(
                    resource.group, resource.version, namespace, resource.plural
                ),
            )
            return listed

    # -- writes ---------------------------------------------------------------------------------

    def json_patch(self, resource: Resource, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        """RFC 6902 patch: `test` ops make it fail (422) instead of writing over a concurrent change."""
        with translated():
            obj = cast(
                dict[str, Any],
                self._custom.patch_namespaced_custom_object(
                    resource.group,
                    resource.version,
                    namespace,
                    resource.plural,
                    name,
                    ops,
                    _content_type="application/json-patch+json",
                ),
            )
        return self._remember(resource, obj)

    def merge_patch(self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """RFC 7386 patch; `metadata.resourceVersion` in it makes it conditional (409 if the object moved)."""
        with translated():
            obj = cast(
                dict[str, Any],
                self._custom.patch_namespaced_custom_object(
                    resource.group,
                    resource.version,
                    namespace,
                    resource.plural,
                    name,
                    patch,
                    # The client would pick json-patch for any body: say which patch this is.
                    _content_type="application/merge-patch+json",
                ),
            )
        return self._remember(resource, obj)
