"""Read one key of a referenced Secret (metric provider credentials). Values never get logged."""

from __future__ import annotations

import base64

from kubernetes import client

from controller.kube.errors import translated


class Secrets:
    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)

    def read(self, namespace: str, name: str, key: str) -> str | None:
        """The decoded value, or None when the Secret lacks the key. NotFound propagates."""
        with translated():
            secret = self._core.read_namespaced_secret(name, namespace)
        raw = (secret.data or {}).get(key)
        return None if raw is None else base64.b64decode(raw).decode().strip()
