"""The metric-provider registry (controller/metrics/registry.py): which provider a rollout gets, or
why it gets none. Secrets are a table here; tests/reliability/test_bad_input.py runs the real
controller against real Secrets and listeners.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.api.models import (
    BuiltinMetric,
    GuardrailStatus,
    MetricBackend,
    ModelRef,
    ModelRolloutSpec,
    ModelRolloutStatus,
    SegmentsStatus,
    Verdict,
)
from controller.core.judge import Cause
from controller.core.observation import Observation, ObservationStatus
from controller.kube.errors import Forbidden, NotFound
from controller.main import _default_provider, parse_args
from controller.metrics import registry as registry_module
from controller.metrics.address import AddressPolicy
from controller.metrics.builtins import BuiltinQueries, by_segment
from controller.metrics.prometheus import PrometheusProvider
from controller.metrics.registry import MetricProviders
from controller.observe import observe_and_judge

ADDRESS = "http://prometheus.monitoring:9090"


class Secrets:
    def __init__(self, values: dict[tuple[str, str], Any]) -> None:
        self.values, self.reads = values, 0

    def read(self, namespace: str, name: str, key: str) -> str | None:
        self.reads += 1
        value = self.values.get((namespace, name))
        if isinstance(value, Exception):
            raise value
        if value is None:
            raise NotFound(f"secrets {name} not found")
        return value.get(key)


def providers(
    secrets: dict[tuple[str, str], Any] | None = None, default: MetricBackend | None = None
) -> MetricProviders:
    policy = AddressPolicy(resolver=lambda host: ["10.0.0.7"])
    return MetricProviders(secrets=Secrets(secrets or {}), default=default, address_policy=policy)  # type: ignore[arg-type]


def backend(**prometheus: Any) -> MetricBackend:
    return MetricBackend.model_validate({"prometheus": {"address": ADDRESS, **prometheus}})


def test_a_rollouts_block_makes_its_provider_once_per_settings() -> None:
    registry = providers({("ns", "prom"): {"token": "s3cret"}})
    first = registry.for_rollout("ns", backend(timeout="3s", staleAfter="1m"))
    assert isinstance(first, PrometheusProvider)
    assert (first.address, first.timeout, first.stale_after) == (ADDRESS, 3, 60)
    assert registry.for_rollout("ns", backend(timeout="3s", staleAfter="1m")) is first, "cached"
    with_token = registry.for_rollout("ns", backend(timeout="3s", staleAfter="1m", secretRef={"name": "prom"}))
    assert isinstance(with_token, PrometheusProvider) and with_token is not first
    assert "s3cret" not in repr(with_token) and "s3cret" not in repr(registry.__dict__)


def test_without_spec_provider_the_controllers_default_serves_unchecked() -> None:
    default = _default_provider(parse_args(["--prometheus-url", "http://127.0.0.1:9090", "--metric-timeout", "4s"]))
    registry = providers(default=default)
    provider = registry.for_rollout("ns", None)
    assert isinstance(provider, PrometheusProvider), provider
    assert (provider.address, provider.timeout, provider.stale_after) == ("http://127.0.0.1:9090", 4, 300)
    assert registry.for_rollout("ns", MetricBackend()) is provider, "an empty block is no block"
    refused = registry.for_rollout("ns", backend(address="http://127.0.0.1:9090"))
    assert isinstance(refused, str) and "loopback" in refused, "a rollout's own address is checked"


def test_no_provider_anywhere_says_how_to_set_one() -> None:
    assert _default_provider(parse_args([])) is None
    assert providers().for_rollout("ns", None) == (
        "no metric provider: set spec.provider.prometheus or the controller's --prometheus-url"
    )


def test_secret_problems_are_messages_not_exceptions() -> None:
    registry = providers({("ns", "nokey"): {"other": "x"}, ("ns", "denied"): Forbidden("forbidden")})
    assert registry.for_rollout("ns", backend(secretRef={"name": "gone"})) == "secret gone not found"
    assert registry.for_rollout("ns", backend(secretRef={"name": "nokey"})) == "secret nokey has no key token"
    denied = registry.for_rollout("ns", backend(secretRef={"name": "denied"}))
    assert denied == "not allowed to read secret denied: grant the controller get on it (docs/install.md)"


class NoBuiltins:
    """A provider that knows no builtin metric and observes a constant."""

    builtins: Mapping[BuiltinMetric, BuiltinQueries] = {}

    def builtins_by(self, label: str) -> Mapping[BuiltinMetric, BuiltinQueries]:
        return {}

    def scalar(self, query: str, *, at: datetime) -> Observation:
        return Observation.error("not asked")

    def vector(self, query: str, *, label: str, at: datetime, unlabelled: str | None = None) -> Observation:
        return Observation.error("not asked")


def test_builtins_belong_to_the_provider_and_a_missing_one_is_inconclusive() -> None:
    spec = ModelRolloutSpec.model_validate(
        {
            "candidate": {"name": "m2"},
            "traffic": {"gatewayAPI": {"httpRoute": "r"}},
            "canary": {"steps": [{"weight": 10, "hold": "1m"}]},
            "guardrails": [{"name": "errors", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 0.1}}],
        }
    )
    common: dict[str, Any] = {
        "spec": spec,
        "status": ModelRolloutStatus(),
        "namespace": "ns",
        "rollout": "r",
        "pair": (ModelRef(name="m1"), ModelRef(name="m2")),
        "now": datetime(2025, 1, 1, tzinfo=UTC),
    }
    judgement = observe_and_judge(provider=NoBuiltins(), **common)["errors"]
    assert judgement.cause is Cause.ERROR
    assert judgement.message == "the metric provider has no builtin ErrorRate"
    assert observe_and_judge(provider="no provider", **common)["errors"].message == "no provider"


class ByRegion:
    """A provider answering vectors by region from a table: what observe asks of a segmented guardrail."""

    builtins: Mapping[BuiltinMetric, BuiltinQueries] = {}

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str | None]] = []

    def builtins_by(self, label: str) -> Mapping[BuiltinMetric, BuiltinQueries]:
        return by_segment(label)

    def scalar(self, query: str, *, at: datetime) -> Observation:
        raise AssertionError("a segmented guardrail asks for vectors only")

    def vector(self, query: str, *, label: str, at: datetime, unlabelled: str | None = None) -> Observation:
        self.asked.append((query, label, unlabelled))
        candidate = 'model="m2"' in query
        errors = 'code=~"5.."' in query
        table = (
            {"us": (20.0, 4000.0), "eu": (62.0, 2000.0)}
            if candidate
            else {"us": (400.0, 36000.0), "eu": (200.0, 18000.0)}
        )
        return Observation(
            ObservationStatus.OK, vector={region: e if errors else t for region, (e, t) in table.items()}
        )


def test_a_segmented_guardrail_is_observed_by_its_label_and_judged_with_the_segments_of_record() -> None:
    spec = ModelRolloutSpec.model_validate(
        {
            "candidate": {"name": "m2"},
            "traffic": {"gatewayAPI": {"httpRoute": "r"}},
            "canary": {"steps": [{"weight": 10, "hold": "1m"}]},
            "guardrails": [
                {"name": "errors", "metric": {"builtin": "ErrorRate"}, "sequential": {}, "segmentBy": "region"}
            ],
        }
    )
    status = ModelRolloutStatus(
        guardrails=[
            GuardrailStatus(
                name="errors", verdict=Verdict.INCONCLUSIVE, segments=SegmentsStatus(label="region", named=["eu"])
            )
        ]
    )
    provider = ByRegion()
    judgement = observe_and_judge(
        spec=spec,
        status=status,
        provider=provider,
        namespace="ns",
        rollout="r",
        pair=(ModelRef(name="m1"), ModelRef(name="m2")),
        now=datetime(2025, 1, 1, tzinfo=UTC),
    )["errors"]
    # One errors and one totals query per variant, each by region, unlabelled series as "(none)".
    assert len(provider.asked) == 4
    assert all(label == "region" and unlabelled == "(none)" for _, label, unlabelled in provider.asked)
    assert all("sum by (region)" in query for query, _, _ in provider.asked)
    assert judgement.message == "errors failed in region=eu: 3.1% vs 1.1%"
    assert judgement.segments is not None and judgement.segments.named == ["eu", "us"]  # eu kept its slot first


def test_a_secret_is_read_once_a_minute_not_at_every_analysis(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = providers({("ns", "prom"): {"token": "s3cret"}})
    reader = registry.secrets
    assert isinstance(reader, Secrets)
    for _ in range(5):
        assert isinstance(registry.for_rollout("ns", backend(secretRef={"name": "prom"})), PrometheusProvider)
    assert reader.reads == 1
    monkeypatch.setattr(registry_module, "TOKEN_TTL", 0.0)  # a minute later: read again (a rotated token)
    reader.values[("ns", "prom")] = {"token": "rotated"}
    rotated = registry.for_rollout("ns", backend(secretRef={"name": "prom"}))
    assert reader.reads == 2 and isinstance(rotated, PrometheusProvider)
    assert "rotated" not in repr(rotated)


def test_a_secret_that_could_not_be_read_is_asked_again_at_the_next_analysis() -> None:
    registry = providers({})
    reader = registry.secrets
    assert isinstance(reader, Secrets)
    for _ in range(2):
        assert registry.for_rollout("ns", backend(secretRef={"name": "later"})) == "secret later not found"
    reader.values[("ns", "later")] = {"token": "t"}
    assert isinstance(registry.for_rollout("ns", backend(secretRef={"name": "later"})), PrometheusProvider)
    assert reader.reads == 3
