"""Generic reads and patches of namespaced objects of any API group (routers use this)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client

from controller.kube.errors import translated


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


class Objects:
    """Namespaced objects as plain dicts; errors are controller.kube.errors."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        with translated():
            obj = cast(
                dict[str, Any],
                self._custom.get_namespaced_custom_object(
                    resource.group, resource.version, namespace, resource.plural, name
                ),
            )
            return obj

    def list_all(self, resource: Resource, namespace: str) -> dict[str, Any]:
        """Every object of the kind in the namespace, as the API server lists them (`items`)."""
        with translated():
            listed = cast(
                dict[str, Any],
                self._custom.list_namespaced_custom_object(
                    resource.group, resource.version, namespace, resource.plural
                ),
            )
            return listed

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
            return obj

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
            return obj
