"""The controller's own /metrics: what it did, and where each rollout stands.

Label sets are bounded: per-rollout series carry only namespace, name (and guardrail name, at
most 16 per rollout) and are removed when the rollout is deleted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from controller.api.models import ModelRolloutStatus, Phase


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconciles = Counter("modelrollout_reconciles", "Reconciles by result", ["result"], registry=r)
        self.errors = Counter(
            "modelrollout_reconcile_errors", "Reconciles that failed, by error kind", ["kind"], registry=r
        )
        self.decisions = Counter("modelrollout_decisions", "Decisions taken, by outcome", ["outcome"], registry=r)
        self.api_writes = Counter("modelrollout_api_writes", "Writes to the API server, by kind", ["kind"], registry=r)
        self.queue_depth = Gauge("modelrollout_queue_depth", "Keys waiting in the work queue", registry=r)
        self.by_phase = Gauge("modelrollout_rollouts", "Rollouts by phase", ["phase"], registry=r)
        self.weight = Gauge(
            "modelrollout_candidate_weight",
            "Candidate weight read back from the data plane",
            ["namespace", "name"],
            registry=r,
        )
        self.guardrail_value = Gauge(
            "modelrollout_guardrail_value",
            "Latest candidate value of a guardrail",
            ["namespace", "name", "guardrail"],
            registry=r,
        )
        self.guardrail_passing = Gauge(
            "modelrollout_guardrail_passing",
            "1 pass, 0 fail, -1 inconclusive",
            ["namespace", "name", "guardrail"],
            registry=r,
        )
        self.webhook_requests = Counter(
            "modelrollout_webhook_requests",
            "Webhook calls by kind (ask: gates and rollback hooks; notification) and result (ok, refused, error)",
            ["kind", "result"],
            registry=r,
        )
        self.webhook_receivers_failing = Gauge(
            "modelrollout_webhook_receivers_failing",
            "Notification receivers whose last delivery failed (retrying with back-off)",
            registry=r,
        )
        self.leader = Gauge("modelrollout_leader", "1 while this replica holds the lease", registry=r)
        self._phases: dict[tuple[str, str], str] = {}
        self._guardrails: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()
        self.depth_source: Callable[[], int] | None = None

    def observe_rollout(self, namespace: str, name: str, status: ModelRolloutStatus) -> None:
        key = (namespace, name)
        with self._lock:
            self._phases[key] = (status.phase or Phase.PENDING).value
            self._refresh_phases()
            if status.weights is not None:
                self.weight.labels(namespace, name).set(status.weights.candidate)
            seen = set()
            for g in status.guardrails:
                seen.add(g.name)
                if g.evidence.candidate_value is not None:
                    self.guardrail_value.labels(namespace, name, g.name).set(g.evidence.candidate_value)
                score = {"Pass": 1, "Fail": 0}.get(g.verdict.value, -1)
                self.guardrail_passing.labels(namespace, name, g.name).set(score)
            for gone in self._guardrails.get(key, set()) - seen:
                self._remove(self.guardrail_value, namespace, name, gone)
                self._remove(self.guardrail_passing, namespace, name, gone)
            self._guardrails[key] = seen

    def forget_rollout(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        with self._lock:
            self._phases.pop(key, None)
            self._refresh_phases()
            self._remove(self.weight, namespace, name)
            for g in self._guardrails.pop(key, set()):
                self._remove(self.guardrail_value, namespace, name, g)
                self._remove(self.guardrail_passing, namespace, name, g)

    def _refresh_phases(self) -> None:
        for phase in Phase:
            self.by_phase.labels(phase.value).set(sum(1 for p in self._phases.values() if p == phase.value))

    @staticmethod
    def _remove(gauge: Gauge, *labels: str) -> None:
        try:
            gauge.remove(*labels)
        except KeyError:
            return

    def render(self) -> bytes:
        if self.depth_source is not None:
            self.queue_depth.set(self.depth_source())
        return generate_latest(self.registry)
