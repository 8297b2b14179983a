"""The controller's own /metrics: what it did, and where each rollout stands.

Label sets are bounded: per-rollout series carry only namespace, name (and guardrail name, at
most 16 per rollout, a variant of two, a phase or condition of a fixed set) and are removed when
the rollout is deleted. The evidence series (`modelrollout_guardrail_observed` and the ones after
it, for the dashboard's charts and the alerts: docs/dashboard.md) exist only while a rollout is in
flight (Progressing or Paused), so thousands of finished rollouts cost no evidence series at all;
Prometheus keeps their history.
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
        self.analyses_unwritten = Counter(
            "modelrollout_analyses_unwritten",
            "Analyses that changed only evidence, kept in memory until the next write (--evidence-checkpoint)",
            registry=r,
        )
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
        self.shard_rollouts = Gauge(
            "modelrollout_shard_rollouts",
            "Rollouts this replica's shard owns and caches (all watched rollouts with one shard)",
            ["shard"],
            registry=r,
        )
        rollout, guardrail = ["namespace", "name"], ["namespace", "name", "guardrail"]
        # Where a rollout stands, for alerts (charts/modelrollout/templates/prometheusrule.yaml).
        self.phase = Gauge(
            "modelrollout_rollout_phase", "1 for the rollout's current phase", [*rollout, "phase"], registry=r
        )
        self.condition = Gauge(
            "modelrollout_rollout_condition",
            "1 while the kstatus condition is True",
            [*rollout, "condition"],
            registry=r,
        )
        self.paused_since = Gauge(
            "modelrollout_rollout_paused_since_seconds",
            "While Paused: since when (Unix time), and why (a reason of the fixed set)",
            [*rollout, "reason"],
            registry=r,
        )
        self.last_analysis = Gauge(
            "modelrollout_rollout_last_analysis_seconds",
            "While Progressing: when the guardrails were last analysed (Unix time)",
            rollout,
            registry=r,
        )
        self.interval = Gauge(
            "modelrollout_rollout_analysis_interval_seconds",
            "While Progressing: spec.analysis.interval",
            rollout,
            registry=r,
        )
        # The evidence behind each verdict, while in flight (the dashboard's charts).
        self.observed = Gauge(
            "modelrollout_guardrail_observed", "Latest value per variant", [*guardrail, "variant"], registry=r
        )
        self.samples = Gauge(
            "modelrollout_guardrail_samples",
            "Samples behind the value, per variant",
            [*guardrail, "variant"],
            registry=r,
        )
        self.samples_needed = Gauge(
            "modelrollout_guardrail_samples_needed",
            "Samples still missing for a conclusive verdict",
            guardrail,
            registry=r,
        )
        self.limit = Gauge(
            "modelrollout_guardrail_limit", "The bound in the candidate value's units", guardrail, registry=r
        )
        self.evidence = Gauge(
            "modelrollout_guardrail_evidence",
            "Sequential rule: log e-value per test (worse: fails at its threshold; not_worse: passes)",
            [*guardrail, "test"],
            registry=r,
        )
        self.evidence_threshold = Gauge(
            "modelrollout_guardrail_evidence_threshold",
            "Sequential rule: the level per test",
            [*guardrail, "test"],
            registry=r,
        )
        self.inconclusive_streak = Gauge(
            "modelrollout_guardrail_inconclusive_streak",
            "Consecutive inconclusive analyses of the guardrail",
            guardrail,
            registry=r,
        )
        self._series: dict[tuple[str, str], set[tuple[Gauge, tuple[str, ...]]]] = {}
        self._phases: dict[tuple[str, str], str] = {}
        self._phase_counts: dict[str, int] = dict.fromkeys((p.value for p in Phase), 0)
        for phase in Phase:  # every phase exported at 0 from the start, as alerts expect
            self.by_phase.labels(phase.value).set(0)
        self._guardrails: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()
        self.depth_source: Callable[[], int] | None = None
        # (shard index, rollouts it holds), read when /metrics is scraped.
        self.owned_source: Callable[[], tuple[int, int]] | None = None

    def observe_rollout(
        self, namespace: str, name: str, status: ModelRolloutStatus, *, interval: float | None = None
    ) -> None:
        key = (namespace, name)
        with self._lock:
            self._observe_standing(key, status, interval)
            self._set_phase(key, (status.phase or Phase.PENDING).value)
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
            self._set_phase(key, None)
            self._set_series(key, {})
            self._remove(self.weight, namespace, name)
            for g in self._guardrails.pop(key, set()):
                self._remove(self.guardrail_value, namespace, name, g)
                self._remove(self.guardrail_passing, namespace, name, g)

    def _observe_standing(self, key: tuple[str, str], status: ModelRolloutStatus, interval: float | None) -> None:
        """The alerting and evidence series of one rollout; whatever it no longer has is removed."""
        phase = status.phase or Phase.PENDING
        values: dict[tuple[Gauge, tuple[str, ...]], float] = {(self.phase, (*key, phase.value)): 1}
        for c in status.conditions:
            if c.status == "True":
                values[(self.condition, (*key, c.type))] = 1
        if phase == Phase.PAUSED and status.paused_since is not None:
            reason = status.pause_reason.value if status.pause_reason is not None else "Paused"
            values[(self.paused_since, (*key, reason))] = status.paused_since.timestamp()
        if phase == Phase.PROGRESSING:
            if status.last_analysis is not None:
                values[(self.last_analysis, key)] = status.last_analysis.timestamp()
            if interval is not None:
                values[(self.interval, key)] = interval
        if phase in (Phase.PROGRESSING, Phase.PAUSED):
            for g in status.guardrails:
                at, e = (*key, g.name), g.evidence
                numbers = {
                    (self.observed, (*at, "candidate")): e.candidate_value,
                    (self.observed, (*at, "incumbent")): e.incumbent_value,
                    (self.samples, (*at, "candidate")): e.candidate_samples,
                    (self.samples, (*at, "incumbent")): e.incumbent_samples,
                    (self.samples_needed, at): e.samples_needed,
                    (self.limit, at): e.limit,
                    (self.evidence, (*at, "worse")): e.worse,
                    (self.evidence, (*at, "not_worse")): e.not_worse,
                    (self.evidence_threshold, (*at, "worse")): e.worse_threshold,
                    (self.evidence_threshold, (*at, "not_worse")): e.not_worse_threshold,
                    (self.inconclusive_streak, at): float(g.consecutive_inconclusive),
                }
                values.update({k: v for k, v in numbers.items() if v is not None})
        self._set_series(key, values)

    def _set_series(self, key: tuple[str, str], values: dict[tuple[Gauge, tuple[str, ...]], float]) -> None:
        for gauge, labels in self._series.get(key, set()) - values.keys():
            self._remove(gauge, *labels)
        for (gauge, labels), value in values.items():
            gauge.labels(*labels).set(value)
        if values:
            self._series[key] = set(values)
        else:
            self._series.pop(key, None)

    def _set_phase(self, key: tuple[str, str], phase: str | None) -> None:
        """Move one rollout between the per-phase counts: O(1) per reconcile. (Counting every
        rollout on each reconcile, under the lock every worker takes, was O(rollouts): at 10,000
        rollouts a third of the controller's CPU, and it serialised the workers.)"""
        before = self._phases.pop(key, None)
        if phase is not None:
            self._phases[key] = phase
        if before == phase:
            return
        if before is not None:
            self._phase_counts[before] -= 1
            self.by_phase.labels(before).set(self._phase_counts[before])
        if phase is not None:
            self._phase_counts[phase] += 1
            self.by_phase.labels(phase).set(self._phase_counts[phase])

    @staticmethod
    def _remove(gauge: Gauge, *labels: str) -> None:
        try:
            gauge.remove(*labels)
        except KeyError:
            return

    def render(self) -> bytes:
        if self.depth_source is not None:
            self.queue_depth.set(self.depth_source())
        if self.owned_source is not None:
            shard, owned = self.owned_source()
            self.shard_rollouts.labels(str(shard)).set(owned)
        return generate_latest(self.registry)
