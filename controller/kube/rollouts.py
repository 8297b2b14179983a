"""ModelRollout reads, watches, status writes and finalizers, against the API server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from kubernetes import client, watch

from controller.api import GROUP, PLURAL, VERSION
from controller.kube.config import REQUEST_TIMEOUT
from controller.kube.errors import Gone, translated

FINALIZER = "modelrollout.dev/restore-traffic"


class Rollouts:
    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        with translated():
            obj = cast(
                dict[str, Any], self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            )
            return obj

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
        w = watch.Watch()
        func: Any
        args: tuple[str, ...]
        if namespace is None:
            func, args = self._custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL)
        else:
            func, args = self._custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL)
        with translated():
            for event in w.stream(
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
            return out

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
            return out

    def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of spec or metadata (the CLI's requests)."""
        with translated():
            return cast(
                dict[str, Any],
                self._custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch),
            )
