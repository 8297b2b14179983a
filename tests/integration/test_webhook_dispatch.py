"""The webhook dispatcher with real HTTP receivers on loopback: a slow receiver holds one thread
and one request, never the other receivers; each receiver gets one request at a time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
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
