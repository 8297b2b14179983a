"""Webhooks end to end: the controller process, the real control plane, real HTTP receivers on loopback.

Given a rollout whose gates, rollback hooks and notification hooks point at a receiver on
loopback (tests/support/receiver.py, a stand-in for CI, a ticket tool or Slack), when the
receiver answers or does not, then the route's weights (from the API server's audit log),
the status and the requests the receiver got tell whether each gate held and what was sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.support.controller import ControllerFactory
from tests.support.controlplane import ControlPlane, free_port
from tests.support.prometheus import PrometheusServer
from tests.support.receiver import Received, Receiver, private_ca
from tests.support.world import World, phase, rollout_body

pytestmark = pytest.mark.usefixtures("gateway_api")

ANALYSIS = {"interval": "1s", "window": "10s", "progressDeadline": "60s", "inconclusiveLimit": 10}
STEPS = {"steps": [{"weight": 20, "hold": "2s"}, {"weight": 50, "hold": "2s"}]}


@pytest.fixture
def controllers(control_plane: ControlPlane, prometheus: PrometheusServer) -> Iterator[ControllerFactory]:
    factory = ControllerFactory(control_plane, prometheus_url=prometheus.url)
    yield factory
    factory.stop_all()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _asks(received: list[Received], path: str) -> list[dict[str, Any]]:
    return [r.json() for r in received if r.path == path]


def _gate(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in obj.get("status", {}).get("gates", []) if g["name"] == name)


def _candidate_weight(obj: dict[str, Any]) -> int:
    return int((obj.get("status", {}).get("weights") or {}).get("candidate", 0))


def test_each_gate_holds_until_it_answers_2xx_and_notifications_are_signed(
    world: World, controllers: ControllerFactory, receiver: Receiver, api_client: client.ApiClient
) -> None:
    client.CoreV1Api(api_client).create_namespaced_secret(
        world.namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="hooks"),
            string_data={"hmac": "right-key", "slack-url": receiver.url("/slack")},
        ),
    )
    receiver.answer("/audit", 200)
    receiver.answer("/events", 200)
    receiver.answer("/slack", 200)
    hooks = [
        {"name": "load-test", "type": "BeforeTraffic", "url": receiver.url("/traffic")},
        {"name": "ticket", "type": "BeforeStep", "url": receiver.url("/step")},
        {"name": "owner", "type": "BeforePromotion", "url": receiver.url("/promote")},
        {"name": "audit", "type": "Notification", "url": receiver.url("/audit"), "secretRef": {"name": "hooks", "key": "hmac"},
         "events": ["StepAdvanced", "Promoted"]},
        {"name": "bus", "type": "Notification", "url": receiver.url("/events"), "format": "CloudEvents", "events": ["Promoted"]},
        {"name": "chat", "type": "Notification", "urlSecretRef": {"name": "hooks", "key": "slack-url"}, "format": "Slack", "events": ["Promoted"]},
    ]  # fmt: skip
    controller = controllers.start("c1", "--namespace", world.namespace)
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=STEPS, analysis=ANALYSIS, webhooks=hooks))

    # Before traffic: asked, refused (503), asked again; no weight reaches the route.
    receiver.wait(lambda got: len(_asks(got, "/traffic")) >= 2)
    obj = world.wait(lambda o: _gate(o, "load-test").get("code") == 503)
    assert world.candidate_writes() == [] and _gate(obj, "load-test")["state"] == "Refused"
    assert obj["status"]["reason"] == "GateWaiting"
    receiver.answer("/traffic", 200)
    world.wait(lambda o: _candidate_weight(o) == 20)

    # Before step 2: held at 20% until it answers 2xx.
    got = receiver.wait(lambda got: len(_asks(got, "/step")) >= 2)
    assert {a["step"] for a in _asks(got, "/step")} == {2} and _asks(got, "/step")[0]["weight"] == 50
    assert world.candidate_writes() == [20]
    receiver.answer("/step", 200)

    # Before promotion: held at 50% until it answers 2xx.
    got = receiver.wait(lambda got: len(_asks(got, "/promote")) >= 2)
    assert world.candidate_writes() == [20, 50] and world.get()["status"]["phase"] == "Progressing"
    ask = _asks(got, "/promote")[0]
    assert ask["type"] == "BeforePromotion" and ask["guardrails"][0]["name"] == "error-rate"
    receiver.answer("/promote", 200)
    obj = world.wait(phase("Promoted"))
    assert world.candidate_writes() == [20, 50, 100]
    assert _gate(obj, "owner")["state"] == "Passed" and _gate(obj, "owner")["code"] == 200

    # Notifications: every body signed with the Secret's key (and not with another), each
    # notice once after dedupe by delivery id, with the rollout's uid and the evidence.
    audit = receiver.wait(
        lambda got: any(r.path == "/audit" and r.json()["event"] == "Promoted" for r in got)
    )  # fmt: skip
    audit = [r for r in audit if r.path == "/audit"]
    assert all(r.signed_with(b"right-key") for r in audit)
    assert not any(r.signed_with(b"another-key") for r in audit)
    unique = {r.headers["x-modelrollout-delivery"]: r.json() for r in audit}
    events = sorted(body["event"] for body in unique.values())
    assert events == ["Promoted", "StepAdvanced"], events
    promoted = next(b for b in unique.values() if b["event"] == "Promoted")
    assert promoted["uid"] == obj["metadata"]["uid"] and promoted["candidate"]["name"] == world.candidate
    assert promoted["verdict"] == "Pass" and promoted["guardrails"][0]["evidence"]["candidateSamples"] >= 5
    cloud = receiver.wait(lambda got: bool(_asks(got, "/events")))
    envelope = next(r for r in cloud if r.path == "/events")
    assert envelope.headers["content-type"] == "application/cloudevents+json"
    doc = envelope.json()
    assert doc["specversion"] == "1.0" and doc["type"] == "dev.modelrollout.rollout.Promoted"
    assert doc["id"] == envelope.headers["x-modelrollout-delivery"] and doc["data"]["uid"] == obj["metadata"]["uid"]
    assert "x-modelrollout-signature" not in envelope.headers, "no secretRef: not signed"

    slack = receiver.wait(lambda got: bool(_asks(got, "/slack")))
    text = next(r for r in slack if r.path == "/slack").json()["text"]
    assert world.candidate in text and "Promoted" in text
    obj = world.wait(lambda o: not (o["status"].get("notifications") or {}).get("outbox"))
    shown = json.dumps(obj["status"]) + json.dumps(world.events())
    assert receiver.url("/slack") not in shown, "a URL kept in a Secret is never shown"
    receivers = {r["name"]: r for r in obj["status"]["notifications"]["receivers"]}
    assert receivers["audit"]["lastCode"] == 200 and receivers["audit"]["failures"] == 0
    metrics = controller.metrics()
    assert 'modelrollout_webhook_requests_total{kind="ask",result="refused"}' in metrics
    assert 'modelrollout_webhook_requests_total{kind="notification",result="ok"}' in metrics


def test_a_receiver_that_is_down_never_passes_its_gate(world: World, controllers: ControllerFactory) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/gate"  # nothing listens there
    hooks = [{"name": "ci", "type": "BeforeStep", "url": nobody, "timeout": "2s"}]
    analysis = {**ANALYSIS, "progressDeadline": "12s"}
    controllers.start("c1", "--namespace", world.namespace)
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=STEPS, analysis=analysis, webhooks=hooks))

    obj = world.wait(phase("RolledBack"), timeout=90)

    assert world.candidate_writes() == [20, 0], "never beyond the step before the gate"
    status = obj["status"]
    assert status["reason"] == "ProgressDeadlineExceeded" and "gate ci not answered 2xx" in status["message"]
    assert status["failedCandidates"][-1]["verdict"] == "Inconclusive"
    assert _gate(obj, "ci")["state"] == "Refused" and _gate(obj, "ci").get("code") is None
    warnings = [m for t, r, m in world.events() if t == "Warning" and r == "GateRefused"]
    assert warnings and "did not answer" in warnings[0]


def test_loopback_is_refused_without_the_flag_and_nothing_is_sent(
    world: World, controllers: ControllerFactory, receiver: Receiver
) -> None:
    receiver.answer("/gate", 200)
    hooks = [{"name": "ci", "type": "BeforeTraffic", "url": receiver.url("/gate")}]
    controllers.start("c1", "--namespace", world.namespace, allow_loopback_metrics=False)
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=STEPS, analysis=ANALYSIS, webhooks=hooks))

    obj = world.wait(
        lambda o: "loopback" in _gate(o, "ci").get("message", "") if o.get("status", {}).get("gates") else False
    )

    assert receiver.requests() == [], "a listener on loopback sees 0 requests"
    assert world.candidate_writes() == []
    assert _gate(obj, "ci")["state"] == "Refused"
    assert json.dumps(obj["status"]).count("refused") >= 1


def test_tls_is_verified_against_the_ca_bundle_its_secret_names(
    world: World, controllers: ControllerFactory, api_client: client.ApiClient, tmp_path: Path
) -> None:
    context, ca_pem = private_ca(tmp_path)
    receiver = Receiver(tls=context)
    receiver.default = 200
    try:
        client.CoreV1Api(api_client).create_namespaced_secret(
            world.namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="ca"), string_data={"ca.crt": ca_pem})
        )
        hooks = [
            # By name: the controller connects to the address it checked, and verifies the name.
            {"name": "trusted", "type": "BeforeTraffic", "url": f"https://localhost:{receiver.port}/trusted", "caBundleRef": {"name": "ca", "key": "ca.crt"}},
            {"name": "untrusted", "type": "BeforeStep", "url": receiver.url("/untrusted")},
        ]  # fmt: skip
        controllers.start("c1", "--namespace", world.namespace)
        world.apply(
            rollout_body("demo", world.incumbent, world.candidate, canary=STEPS, analysis=ANALYSIS, webhooks=hooks)
        )

        obj = world.wait(
            lambda o: any(
                g["name"] == "untrusted" and g["state"] == "Refused" for g in o.get("status", {}).get("gates", [])
            )
        )

        assert receiver.requests("/trusted"), "verified against the Secret's CA: answered"
        assert receiver.requests("/untrusted") == [], "the system CAs do not know this one: nothing sent"
        assert "CERTIFICATE_VERIFY_FAILED" in _gate(obj, "untrusted")["message"]
        assert world.candidate_writes() == [20]
    finally:
        receiver.close()


def test_a_rollback_hook_rolls_back_only_when_it_answers_2xx(
    world: World, controllers: ControllerFactory, receiver: Receiver
) -> None:
    receiver.answer("/rollback", 404)
    hooks = [{"name": "incidents", "type": "Rollback", "url": receiver.url("/rollback")}]
    steps = {"steps": [{"weight": 20, "hold": "50s"}, {"weight": 50, "hold": "2s"}]}
    controllers.start("c1", "--namespace", world.namespace)
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps, analysis=ANALYSIS, webhooks=hooks))

    got = receiver.wait(lambda got: len(_asks(got, "/rollback")) >= 2)
    assert {a["kind"] for a in _asks(got, "/rollback")} == {"RollbackCheck"}
    assert world.get()["status"]["phase"] == "Progressing", "a 404 asks for nothing"
    receiver.answer("/rollback", 200)
    obj = world.wait(phase("RolledBack"))

    assert obj["status"]["reason"] == "RollbackRequested"
    assert world.candidate_writes() == [20, 0]
