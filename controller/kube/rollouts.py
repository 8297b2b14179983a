"""ModelRollout reads, watches, status writes and finalizers, against the API server.

The controller reads rollouts from informers (`cache`, run by the manager: one per watched
namespace, or one for all) once they have listed; the CLI and the dashboard read the API server.
A rollout the synced cache does not have is NotFound: the informer is told of every add and
delete. `fresh=True` reads the API server, for a reconcile whose write was refused with 409.
Every object we write (status, finalizers) goes into the cache at once, so our next read of it
is never older than our own write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

from kubernetes import client

from controller.api import GROUP, KIND, PLURAL, VERSION
from controller.kube.errors import NotFound, translated
from controller.kube.informer import Informer, KubeObject
from controller.kube.objects import KindSource, Resource, watch_events

FINALIZER = "modelrollout.dev/restore-traffic"
ROLLOUT = Resource(group=GROUP, version=VERSION, plural=PLURAL, kind=KIND)


class Rollouts:
    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._informers: dict[str | None, Informer] = {}

    # -- the cache ------------------------------------------------------------------------------

    def cache(
        self,
        namespaces: list[str],
        *,
        watch_timeout: int,
        on_event: Callable[[str, KubeObject], None],
        keep: Callable[[KubeObject], bool] | None = None,
    ) -> list[Informer]:
        """The informers (each of `namespaces`, or all) that reads are served from once they have
        listed. The caller runs them (Informer.run) and gets their events. With `keep` (a shard's
        ownership), they hold only the rollouts it accepts: any other is NotFound to this process."""
        source = KindSource(self._custom, ROLLOUT)
        scopes: list[str | None] = [*namespaces] or [None]
        self._informers = {
            scope: Informer(
                source, name=PLURAL, namespace=scope, watch_timeout=watch_timeout, on_event=on_event, keep=keep
            )
            for scope in scopes
        }
        return list(self._informers.values())

    def _informer(self, namespace: str) -> Informer | None:
        return self._informers.get(None) or self._informers.get(namespace)

    def _remember(self, obj: KubeObject) -> KubeObject:
        informer = self._informer(str(obj["metadata"].get("namespace") or ""))
        if informer is not None:
            informer.remember(obj)
        return obj

    # -- reads ----------------------------------------------------------------------------------

    def get(self, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any]:
        informer = None if fresh else self._informer(namespace)
        if informer is not None and informer.synced.is_set():
            cached = informer.get(namespace, name)
            if cached is None:
                raise NotFound(f"modelrollout {namespace}/{name} not found (watch cache)")
            return cached
        with translated():
            obj = cast(
                dict[str, Any], self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            )
        return self._remember(obj)

    def list_all(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """All rollouts (of one namespace or all) and the list's resourceVersion to watch from."""
        result: dict[str, Any]
        with translated():
            if namespace is None:
                result = cast(dict[str, Any], self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL))
            else:
                result = cast(
                    dict[str, Any], self._custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
                )
        return list(result.get("items", [])), str(result["metadata"]["resourceVersion"])

    def watch(
        self, namespace: str | None, resource_version: str, *, timeout_seconds: int = 300
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) events from resource_version; raises Gone when it is too old (re-list)."""
        return watch_events(self._custom, ROLLOUT, namespace, resource_version, timeout_seconds=timeout_seconds)

    # -- writes ---------------------------------------------------------------------------------

    def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """PUT /status with the resourceVersion we read: 409 if anyone wrote since (re-read, recompute)."""
        meta = obj["metadata"]
        body = {**obj, "status": status}
        with translated():
            out = cast(
                dict[str, Any],
                self._custom.replace_namespaced_custom_object_status(
                    GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body
                ),
            )
        return self._remember(out)

    def set_finalizers(self, obj: dict[str, Any], finalizers: list[str]) -> dict[str, Any]:
        meta = obj["metadata"]
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
        with translated():
            out = cast(
                dict[str, Any],
                self._custom.patch_namespaced_custom_object(
                    GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch
                ),
            )
        return self._remember(out)

    def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of spec or metadata (the CLI's requests)."""
        with translated():
            return cast(
                dict[str, Any],
                self._custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch),
            )
