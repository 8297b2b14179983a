"""The comparator's pure parts (controller/comparator/service.py): which pair it compares, where
each model is, the incumbent's cap. Its HTTP work runs against real servers in
tests/integration/test_comparator.py."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from controller.api.models import ModelRef, ModelRollout
from controller.comparator.service import ModelUrls, RolloutPairs, TokenBucket, pair_of
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


def test_no_pair_outside_shadow() -> None:
    for state in ("Passed", "Failed", "Inconclusive", None):
        assert pair_of(ModelRollout.model_validate(obj(state))) is None
    assert pair_of(ModelRollout.model_validate(obj(shadow=False))) is None


def test_rollout_pairs_reads_at_most_every_refresh_and_a_failed_read_is_no_pair() -> None:
    reads: list[int] = []
    answers: list[Any] = [obj(), RuntimeError("API server down"), obj("Passed")]

    def read() -> dict[str, Any]:
        reads.append(1)
        answer = answers[min(len(reads) - 1, len(answers) - 1)]
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    cached = RolloutPairs(read, refresh=3600)
    assert cached() is not None and cached() is not None and len(reads) == 1
    every_time = RolloutPairs(read, refresh=0)
    assert every_time() is None  # the read failed: no pair known, nothing compared
    assert every_time() is None  # shadow passed: nothing to compare


def test_model_urls() -> None:
    urls = ModelUrls("http://{service}.{namespace}.svc.cluster.local:{port}", port=8080, overrides={"b": "http://x:1/"})
    assert urls(ModelRef(name="a"), "models") == "http://a.models.svc.cluster.local:8080"
    backend = ModelRef.model_validate({"name": "a", "backend": {"service": "svc-a", "port": 9000}})
    assert urls(backend, "models") == "http://svc-a.models.svc.cluster.local:9000"
    assert urls(ModelRef(name="b"), "models") == "http://x:1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_bursts_one_second_then_holds_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(5, clock=clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    clock.now = 0.2
    assert bucket.take() and not bucket.take()
    assert not bucket.take(2)  # the noise floor's two calls need two tokens
    clock.now = 100.0
    assert bucket.take(5) and not bucket.take()  # never more than a second's worth saved up


@given(st.lists(st.tuples(st.floats(0, 2), st.integers(1, 2)), max_size=200), st.integers(1, 50))
def test_token_bucket_never_lets_through_more_than_rate_times_time_plus_a_burst(
    steps: list[tuple[float, int]], rate: int
) -> None:
    clock = Clock()
    bucket = TokenBucket(rate, clock=clock)
    taken = 0
    for dt, n in steps:
        clock.now += dt
        if bucket.take(n):
            taken += n
    assert taken <= rate + rate * clock.now + 1e-6
