"""The webhook dispatcher with real HTTP receivers on loopback: a slow receiver holds one thread
and one request, never the other receivers; each receiver gets one request at a time."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog.testing
from kubernetes import client

from controller.api.models import ModelRef, ModelRolloutSpec, ModelRolloutStatus, Phase
from controller.core import hooks
from controller.core.clock import SystemClock
from controller.kube.secrets import Secrets
from controller.metrics.address import AddressPolicy
from controller.telemetry import Telemetry
from controller.webhooks.dispatcher import Webhooks
from controller.webhooks.sender import Sender
from tests.support.receiver import Receiver

N = 6


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    slow, fast = Receiver(), Receiver()
    slow.default = fast.default = 200
    slow.delay = 60.0
    yield slow, fast
    slow.close()
    fast.close()


def _rollout(slow: Receiver, fast: Receiver) -> tuple[ModelRolloutSpec, ModelRolloutStatus]:
    spec = ModelRolloutSpec.model_validate(
        {
            "candidate": {"name": "m2"},
            "traffic": {"gatewayAPI": {"httpRoute": "r"}},
            "canary": {"steps": [{"weight": 10}]},
            "webhooks": [
                {"name": "slow", "type": "Notification", "url": slow.url("/slow"), "timeout": "5m"},
                {"name": "fast", "type": "Notification", "url": fast.url("/fast")},
            ],
        }
    )
    status = ModelRolloutStatus(phase=Phase.PROMOTED, candidate=ModelRef(name="m2"), candidate_hash="h")
    hooks.notify(spec, status, "Promoted", "m2 promoted", now=datetime(2026, 1, 1, tzinfo=UTC))
    return spec, status


def test_a_slow_receiver_holds_one_thread_and_one_request_never_the_others(
    receivers: tuple[Receiver, Receiver], api_client: client.ApiClient
) -> None:
    slow, fast = receivers
    woken: list[tuple[str, str]] = []
    done = threading.Event()

    def wake(key: tuple[str, str]) -> None:
        woken.append(key)
        if len(fast.requests()) >= N:
            done.set()

    webhooks = Webhooks(
        sender=Sender(AddressPolicy(allow_loopback=True)),
        secrets=Secrets(api_client),
        clock=SystemClock(),
        telemetry=Telemetry(),
        workers=2,
    )
    webhooks.wake = wake
    try:
        for i in range(N):
            spec, status = _rollout(slow, fast)
            webhooks.submit(namespace="ns", name=f"r{i}", uid=f"u{i}", spec=spec, status=status, asks=[])
            # A reconcile again before anything was answered: nothing is queued twice.
            webhooks.submit(namespace="ns", name=f"r{i}", uid=f"u{i}", spec=spec, status=status, asks=[])
        assert done.wait(timeout=30), f"fast receiver got {len(fast.requests())} of {N}"

        assert len(fast.requests()) == N and len({r.headers["x-modelrollout-delivery"] for r in fast.requests()}) == N
        assert slow.in_flight == 1 and slow.requests() == [], "the slow receiver is still on its first request"
        assert slow.max_in_flight == 1 and fast.max_in_flight == 1, "one request at a time per receiver"
        answers, deliveries = webhooks.take("ns", "r0")
        assert answers == () and [d.webhook for d in deliveries] == ["fast"] and deliveries[0].ok
    finally:
        webhooks.close()


def test_a_receiver_that_was_down_gets_the_notice_once_it_is_back(api_client: client.ApiClient) -> None:
    """Reconciles simulated as the reconciler does them: take the outcomes, record them in status,
    submit what status still owes. Back-off scaled down (0.05 s doubling, capped at 0.4 s)."""
    receiver = Receiver()
    receiver.default = 200
    receiver.down()
    spec = ModelRolloutSpec.model_validate(
        {
            "candidate": {"name": "m2"},
            "traffic": {"gatewayAPI": {"httpRoute": "r"}},
            "canary": {"steps": [{"weight": 10}]},
            "webhooks": [{"name": "audit", "type": "Notification", "url": receiver.url("/audit"), "timeout": "2s"}],
        }
    )
    status = ModelRolloutStatus(phase=Phase.PROMOTED, candidate=ModelRef(name="m2"), candidate_hash="h")
    hooks.notify(spec, status, "Promoted", "m2 promoted", now=datetime(2026, 1, 1, tzinfo=UTC))
    woken = threading.Event()
    webhooks = Webhooks(
        sender=Sender(AddressPolicy(allow_loopback=True)),
        secrets=Secrets(api_client),
        clock=SystemClock(),
        telemetry=Telemetry(),
        base=0.05,
        cap=0.4,
    )
    webhooks.wake = lambda key: woken.set()
    try:
        failures = 0
        for _ in range(200):
            _, deliveries = webhooks.take("ns", "r")
            failures += sum(1 for d in deliveries if not d.ok)
            hooks.record_deliveries(spec, status, deliveries)
            assert status.notifications is not None
            if status.notifications.receivers[0].delivered == 1:
                break
            if failures >= 4 and receiver._server is None:
                receiver.up()  # back, on the same port
            woken.clear()
            webhooks.submit(namespace="ns", name="r", uid="u", spec=spec, status=status, asks=[])
            woken.wait(timeout=30)
        box = status.notifications
        assert box is not None and box.receivers[0].delivered == 1 and box.outbox == []
        assert failures >= 4 and box.receivers[0].failures == 0 and box.receivers[0].last_code == 200
        got = receiver.requests("/audit")
        assert len(got) == 1 and got[0].json()["event"] == "Promoted"
        assert got[0].headers["x-modelrollout-delivery"] == box.receivers[0].last_id
    finally:
        webhooks.close()
        receiver.close()


def test_a_crash_on_a_secret_url_names_the_secret_never_the_host(api_client: client.ApiClient, namespace: str) -> None:
    """A URL kept in a Secret whose name httpx cannot encode (a UnicodeEncodeError, not an httpx
    error, escapes the sender): the outcome, the status, the Events' text and the log name the
    Secret and the exception's type, never the host."""
    secret_url = "http://sécret-hôst@127.0.0.1:9/hook"
    client.CoreV1Api(api_client).create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="hooks"), string_data={"url": secret_url}),
    )
    ref = {"name": "hooks", "key": "url"}
    spec = ModelRolloutSpec.model_validate(
        {
            "candidate": {"name": "m2"},
            "traffic": {"gatewayAPI": {"httpRoute": "r"}},
            "canary": {"steps": [{"weight": 10}]},
            "webhooks": [
                {"name": "audit", "type": "Notification", "urlSecretRef": ref, "timeout": "2s"},
                {"name": "ticket", "type": "BeforeStep", "urlSecretRef": ref, "timeout": "2s"},
            ],
        }
    )
    status = ModelRolloutStatus(phase=Phase.PROMOTED, candidate=ModelRef(name="m2"), candidate_hash="h")
    hooks.notify(spec, status, "Promoted", "m2 promoted", now=datetime(2026, 1, 1, tzinfo=UTC))
    outcomes = threading.Event()
    webhooks = Webhooks(
        sender=Sender(AddressPolicy(allow_loopback=True)),
        secrets=Secrets(api_client),
        clock=SystemClock(),
        telemetry=Telemetry(),
        base=0.05,
        cap=0.4,
    )
    answers: list[hooks.GateAnswer] = []
    deliveries: list[hooks.DeliveryResult] = []

    def wake(_key: tuple[str, str]) -> None:
        got = webhooks.take(namespace, "r")
        answers.extend(got[0])
        deliveries.extend(got[1])
        if answers and deliveries:
            outcomes.set()

    webhooks.wake = wake
    try:
        with structlog.testing.capture_logs() as logs:
            webhooks.submit(
                namespace=namespace, name="r", uid="u", spec=spec, status=status, asks=[hooks.Ask("ticket", 1, "h")]
            )
            assert outcomes.wait(timeout=30), "both calls end with an outcome"
    finally:
        webhooks.close()
    failed = hooks.record_deliveries(spec, status, deliveries)
    assert status.notifications is not None
    texts = [
        *(a.message for a in answers),
        *(f.error or "" for f in failed),
        status.notifications.receivers[0].last_error or "",
        json.dumps(status.wire()),
        json.dumps(logs, default=str),
    ]
    for text in texts:
        for secret in ("sécret", "hôst", "s\\u00e9cret", "h\\u00f4st", "127.0.0.1:9"):
            assert secret not in text, (secret, text)
    shown = f"(the url in secret {namespace}/hooks/url)"
    assert answers[0].code is None and "UnicodeEncodeError" in answers[0].message and shown in answers[0].message
    assert "UnicodeEncodeError" in (status.notifications.receivers[0].last_error or "")
