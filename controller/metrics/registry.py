"""Pick the metric provider for a rollout's `spec.provider` block: one entry per provider.

The reconciler never names a provider: adding one (a module behind metrics.base.MetricProvider,
its block in api.models.MetricBackend) adds one entry to `_PROVIDERS`. Done here for all: a
block's `address` is checked (metrics.address) before any fetch, its `secretRef` read by
reference, and providers cached by a digest of their settings (never by a token).

A Secret's value is kept for `TOKEN_TTL` seconds after it was read: an analysis reads at most one
Secret a minute per rollout's provider block instead of one per analysis (issue 23: a reconcile
should not read from the API server each time), and a rotated token is used within that minute.
A Secret that could not be read is asked again at the next analysis.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from controller.api.models import MetricBackend, SecretKeyRef
from controller.kube.errors import Forbidden, NotFound
from controller.kube.secrets import Secrets
from controller.metrics.address import AddressPolicy
from controller.metrics.base import MetricProvider
from controller.metrics.batch import QueryBatches
from controller.metrics.prometheus import PrometheusProvider

# Keyed by MetricBackend field: (block, its secretRef's token or None) -> provider, or Unavailable.
_PROVIDERS: dict[str, Callable[[Any, str | None], MetricProvider]] = {
    "prometheus": PrometheusProvider.from_source,
}


TOKEN_TTL = 60.0


class _Kept:
    """A token read from a Secret, and when: never shown by repr (nor by a dump of the registry)."""

    __slots__ = ("read_at", "value")

    def __init__(self, value: str) -> None:
        self.value, self.read_at = value, time.monotonic()

    def __repr__(self) -> str:
        return "<redacted>"


class Unavailable(Exception):
    """Why a rollout has no metric provider now: every guardrail is inconclusive with it."""


class MetricProviders:
    """Each rollout's metric provider; shared by the worker threads. `default` serves rollouts
    without `spec.provider` (`--prometheus-url`): the operator's own, so its address is not checked."""

    def __init__(
        self,
        *,
        secrets: Secrets,
        default: MetricBackend | None,
        address_policy: AddressPolicy,
        batches: QueryBatches | None = None,
    ) -> None:
        self.secrets, self.default = secrets, default
        # Builtin queries shared by every rollout asking in the same period (None: each asks its own).
        self.batches = batches
        # Each address is checked once (DNS included), not on every reconcile.
        self._refusal = functools.lru_cache(maxsize=4096)(address_policy.refusal)
        self._providers: dict[str, MetricProvider] = {}
        self._tokens: dict[tuple[str, str, str], _Kept] = {}
        self._tokens_lock = threading.Lock()

    def for_rollout(self, namespace: str, backend: MetricBackend | None) -> MetricProvider | str:
        """The rollout's provider, or a message saying why there is none (inconclusive)."""
        try:
            chosen = self._block(backend, check=True) or self._block(self.default, check=False)
            if chosen is None:
                return "no metric provider: set spec.provider.prometheus or the controller's --prometheus-url"
            kind, block = chosen
            ref = getattr(block, "secret_ref", None)
            token = None if ref is None else self._token(namespace, ref)
            key = hashlib.sha256(json.dumps([kind, block.wire(), token]).encode()).hexdigest()
            if key not in self._providers:
                self._providers[key] = _PROVIDERS[kind](block, token)
            return self._providers[key]
        except Unavailable as exc:
            return str(exc)

    def _block(self, backend: MetricBackend | None, *, check: bool) -> tuple[str, Any] | None:
        for kind in MetricBackend.model_fields:
            block = getattr(backend, kind, None)
            if block is not None:
                address = getattr(block, "address", None)
                if check and isinstance(address, str) and (refused := self._refusal(address)):
                    raise Unavailable(refused)
                return kind, block
        return None

    def _token(self, namespace: str, ref: SecretKeyRef) -> str:
        key = (namespace, ref.name, ref.key)
        with self._tokens_lock:
            kept = self._tokens.get(key)
        if kept is not None and time.monotonic() - kept.read_at < TOKEN_TTL:
            return kept.value
        token = self._read_token(namespace, ref)
        with self._tokens_lock:
            self._tokens[key] = _Kept(token)
        return token

    def _read_token(self, namespace: str, ref: SecretKeyRef) -> str:
        try:
            token = self.secrets.read(namespace, ref.name, ref.key)
        except (NotFound, Forbidden) as exc:
            denied = f"not allowed to read secret {ref.name}: grant the controller get on it (docs/install.md)"
            raise Unavailable(denied if isinstance(exc, Forbidden) else f"secret {ref.name} not found") from None
        if token is None:
            raise Unavailable(f"secret {ref.name} has no key {ref.key}")
        return token
