"""The comparator's pure parts (controller/comparator/service.py): which pair it compares, where
each model is, the incumbent's cap. Its HTTP work runs against real servers in
tests/integration/test_comparator.py."""

from __future__ import annotations

import math
import random
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from controller.api.models import ModelRef, ModelRollout
from controller.comparator.service import (
    Comparator,
    ModelAddress,
    ModelAddresses,
    ModelUrls,
    RolloutPairs,
    TokenBucket,
    admit,
    pair_of,
    path_refusal,
)
from controller.core.shadow import definition
from controller.metrics.address import AddressPolicy
from tests.support.objects import minimal_rollout

SHADOW = {
    "percent": 10,
    "duration": "5m",
    "comparator": {"service": "fraud-comparator"},
    "comparison": {"predictionPath": "$.label", "equal": {}},
    "noiseFloor": {"sample": 0.25},
    "maxIncumbentRPS": 7,
    "maxConcurrency": 3,
    "timeout": "1500ms",
    "guardrails": [{"name": "agreement", "metric": {"builtin": "ShadowDisagreement"}, "sequential": {}}],
}


def obj(state: str | None = "Mirroring", *, shadow: bool = True) -> dict[str, Any]:
    body = minimal_rollout("fraud", **({"shadow": SHADOW} if shadow else {}))
    body["metadata"]["namespace"] = "models"
    body["status"] = {"phase": "Progressing", "incumbent": {"name": "fraud-v1"}, "candidate": {"name": "fraud-v2"}}
    if state is not None:
        body["status"]["shadow"] = {"state": state, "started": "2026-11-28T10:00:00Z"}
    return body


def test_the_pair_of_a_rollout_in_shadow() -> None:
    pair = pair_of(ModelRollout.model_validate(obj()))
    assert pair is not None
    assert (pair.namespace, pair.rollout, pair.incumbent.name, pair.candidate.name) == (
        "models", "fraud", "fraud-v1", "fraud-v2"
    )  # fmt: skip
    assert (pair.noise_sample, pair.max_incumbent_rps, pair.max_concurrency, pair.timeout) == (0.25, 7, 3, 1.5)


def test_no_pair_while_spec_shadow_defines_comparisons_otherwise_than_the_shadow_of_record() -> None:
    """Review finding 9: counts since shadow began must not mix two comparison rules."""
    body = obj()
    recorded = ModelRollout.model_validate(body).spec.shadow
    assert recorded is not None
    body["status"]["shadow"]["definition"] = definition(recorded)
    assert pair_of(ModelRollout.model_validate(body)) is not None
    body["spec"]["shadow"]["comparison"] = {"predictionPath": "$.label", "numeric": {"absolute": 0.1}}
    assert pair_of(ModelRollout.model_validate(body)) is None
    body["spec"]["shadow"]["comparison"] = SHADOW["comparison"]
    body["spec"]["shadow"]["maxIncumbentRPS"] = 1  # a cap is no part of what a comparison means
    pair = pair_of(ModelRollout.model_validate(body))
    assert pair is not None and pair.max_incumbent_rps == 1


def test_no_pair_outside_shadow() -> None:
    for state in ("Passed", "Failed", "Inconclusive", None):
        assert pair_of(ModelRollout.model_validate(obj(state))) is None
    assert pair_of(ModelRollout.model_validate(obj(shadow=False))) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rollout_pairs_reads_at_most_every_refresh_and_a_failed_read_is_no_pair() -> None:
    reads: list[int] = []
    answers: list[Any] = [obj(), RuntimeError("API server down"), obj("Passed")]

    def read() -> dict[str, Any]:
        reads.append(1)
        answer = answers[min(len(reads) - 1, len(answers) - 1)]
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    clock = Clock()
    cached = RolloutPairs(read, refresh=2, clock=clock)
    assert cached() is not None and len(reads) == 1
    clock.now = 1.999
    assert cached() is not None and len(reads) == 1  # within refresh: the cached answer
    clock.now = 2.0
    assert cached() is None and len(reads) == 2  # the read failed: no pair known, nothing compared
    clock.now = 4.0
    assert cached() is None and len(reads) == 3  # shadow passed: nothing to compare


def test_model_urls() -> None:
    urls = ModelUrls("http://{service}.{namespace}.svc.cluster.local:{port}", port=8080, overrides={"b": "http://x:1/"})
    assert urls(ModelRef(name="a"), "models") == "http://a.models.svc.cluster.local:8080"
    backend = ModelRef.model_validate({"name": "a", "backend": {"service": "svc-a", "port": 9000}})
    assert urls(backend, "models") == "http://svc-a.models.svc.cluster.local:9000"
    assert urls(ModelRef(name="b"), "models") == "http://x:1"


def test_token_bucket_bursts_one_second_then_holds_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(5, clock=clock)
    assert [bucket.take() for _ in range(5)] == [0.0] * 5 and bucket.take() is None
    clock.now = 0.2
    assert bucket.take() == 0.2 and bucket.take() is None
    assert bucket.take(2) is None  # the noise floor's two calls need two tokens
    clock.now = 100.0
    assert bucket.take(5) == 100.0 and bucket.take() is None  # never more than a second's worth saved up


@given(st.lists(st.tuples(st.floats(0, 2), st.integers(1, 2)), max_size=200), st.integers(1, 50))
def test_token_bucket_never_lets_through_more_than_rate_times_time_plus_a_burst(
    steps: list[tuple[float, int]], rate: int
) -> None:
    clock = Clock()
    bucket = TokenBucket(rate, clock=clock)
    taken = 0
    for dt, n in steps:
        clock.now += dt
        if bucket.take(n) is not None:
            taken += n
    assert taken <= bucket.burst + rate * clock.now + 1e-6 and bucket.burst == max(rate, 2)


# -- where a mirrored request may go (review finding 2: the path and the model's address) --------


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ("/v1/models/fraud:predict", False),
        ("/predict?user=a@example.com&x=1", False),  # '@' in the query names no host
        ("/", False),
        ("@169.254.169.254/latest/meta-data", True),
        ("//169.254.169.254/latest", True),
        ("/x@169.254.169.254/latest", True),
        ("\\\\169.254.169.254/latest", True),
        ("/a\\b", True),
        ("/a#frag", True),
        ("/a b", True),
        ("/a\r\nHost: x", True),
        ("/caf\u00e9", True),
        ("predict", True),
        ("", True),
        ("http://169.254.169.254/latest", True),
    ],
)
def test_path_refusal(path: str, refused: bool) -> None:
    assert (path_refusal(path) is not None) is refused


@given(st.text(max_size=40))
def test_a_path_let_through_never_changes_the_models_host(path: str) -> None:
    address = ModelAddress(url=httpx.URL("http://10.0.0.7:8080"), host="fraud-v1.models:8080", server_name="fraud-v1")
    if path_refusal(path) is None:
        url = address.for_path(path)
        assert (url.scheme, url.host, url.port) == ("http", "10.0.0.7", 8080)
        assert url.raw_path == path.encode("ascii")


def resolver(table: dict[str, list[str]]) -> Any:
    return lambda host: table.get(host, [])


def test_model_addresses_are_checked_by_the_controllers_policy_and_pinned() -> None:
    clock = Clock()
    names = {
        "fraud-v1.models.svc.cluster.local": ["10.0.0.7"],
        "metadata.models.svc.cluster.local": ["169.254.169.254"],
        "api.models.svc.cluster.local": ["10.96.0.1"],
        "local.models.svc.cluster.local": ["127.0.0.1"],
    }
    policy = AddressPolicy.for_api_server(["https://10.96.0.1:443"], allow_loopback=False, resolver=resolver(names))
    addresses = ModelAddresses(policy, ttl=30, clock=clock)

    found = addresses("http://fraud-v1.models.svc.cluster.local:8080")
    assert isinstance(found, ModelAddress)
    assert (found.url.host, found.url.port, found.host) == ("10.0.0.7", 8080, "fraud-v1.models.svc.cluster.local:8080")
    assert found.server_name == "fraud-v1.models.svc.cluster.local"
    for base, why in (
        ("http://metadata.models.svc.cluster.local:80", "link-local"),
        ("https://api.models.svc.cluster.local:443", "Kubernetes API server"),
        ("http://local.models.svc.cluster.local:8080", "loopback"),
        ("http://169.254.169.254", "link-local"),
        ("http://kubernetes.default.svc", "Kubernetes API server"),
        ("http://nowhere.models.svc.cluster.local:8080", "does not resolve"),
    ):
        refused = addresses(base)
        assert isinstance(refused, str) and why in refused, (base, refused)
    allowed = ModelAddresses(AddressPolicy(allow_loopback=True, resolver=resolver(names)))
    assert isinstance(allowed("http://local.models.svc.cluster.local:8080"), ModelAddress)


def test_a_model_address_is_checked_again_after_its_ttl() -> None:
    clock, names = Clock(), {"m.models": ["10.0.0.7"]}
    addresses = ModelAddresses(AddressPolicy(resolver=resolver(names)), ttl=30, clock=clock)
    assert isinstance(addresses("http://m.models:8080"), ModelAddress)
    names["m.models"] = ["169.254.169.254"]  # the name now points elsewhere
    clock.now = 29.0
    assert isinstance(addresses("http://m.models:8080"), ModelAddress)
    clock.now = 30.0
    refused = addresses("http://m.models:8080")
    assert isinstance(refused, str) and "link-local" in refused


def test_a_pairs_series_start_at_zero_when_it_is_read_before_any_request() -> None:
    """Review finding 12: series born with their first increment hide it from increase(); the
    comparator's refresh (every --refresh seconds) creates them when the pair is first read."""
    registry = CollectorRegistry()
    pair = pair_of(ModelRollout.model_validate(obj()))
    comparator = Comparator(
        namespace="models",
        rollout="fraud",
        pairs=lambda: pair,
        urls=ModelUrls("http://{service}:{port}"),
        policy=AddressPolicy(),
        registry=registry,
    )
    try:
        assert comparator.refresh() == pair
        for model, variant in (("fraud-v2", "candidate"), ("fraud-v1", "incumbent")):
            for outcome in ("agree", "disagree", "candidate_error", "incumbent_error"):
                labels = {
                    "namespace": "models", "rollout": "fraud", "model": model, "reference": "fraud-v1",
                    "variant": variant, "outcome": outcome,
                }  # fmt: skip
                assert registry.get_sample_value("modelrollout_shadow_comparisons_total", labels) == 0.0
    finally:
        comparator.close()


def test_a_request_needs_the_noise_floors_token_whether_or_not_it_is_drawn() -> None:
    clock = Clock()
    bucket = TokenBucket(1, clock=clock)  # a burst of 2: a noise-floor request can ever be paid
    assert bucket.take(2) == 0.0 and bucket.take(1, need=2) is None
    clock.now = 1.0
    assert bucket.take(1, need=2) is None  # one token there, but two needed
    clock.now = 2.0
    assert bucket.take(1, need=2) == 2.0 and bucket.take(1) == 2.0 and bucket.take(1) is None


def test_the_noise_floors_share_of_compared_requests_is_its_sample_at_any_load() -> None:
    """Review finding 8: drawn after admission and only when a second token was left, the noise
    floor's share fell with load; the sequential test treats it as the allocation, a constant."""
    for rate, every in ((100.0, 0.001), (5.0, 0.01), (1.0, 0.05)):  # from idle to 20x over the cap
        clock, draw = Clock(), random.Random(8)
        bucket, compared, sampled = TokenBucket(rate, clock=clock), 0, 0
        for _ in range(40_000):
            clock.now += every
            admitted = admit(bucket, draw, 0.25)
            if admitted is not None:
                compared, sampled = compared + 1, sampled + admitted[1]
        # Binomial(compared, 0.25): 5 standard deviations either way.
        assert compared > 100 and abs(sampled - 0.25 * compared) <= 5 * math.sqrt(compared * 0.25 * 0.75), (
            rate,
            compared,
            sampled,
        )
