"""Gates, rollback hooks and the notification outbox in the pure decision core (fake clock, fake answers)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.models import MAX_OUTBOX, MAX_WEBHOOKS, ModelRolloutSpec, Notice, Phase, Webhook, WebhookEvent
from controller.core import hooks
from controller.webhooks import payload
from tests.support.simulator import Simulator, failing, passing
from tests.unit.test_engine import spec as base_spec

STEPS = [10, 50, 80]


def spec(*webhooks: dict[str, Any], **overrides: Any) -> ModelRolloutSpec:
    return base_spec(webhooks=list(webhooks), **overrides)


def hook(name: str, type_: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "url": f"https://{name}.example.com/hook", **extra}


def always(code: int | None) -> Any:
    return lambda _name, _step, _sim: code


@pytest.mark.parametrize("code", [None, 199, 302, 403, 500, 503])
def test_a_gate_that_never_answers_2xx_never_lets_traffic_through(code: int | None) -> None:
    sim = Simulator(spec(hook("ci", "BeforeTraffic")), judge=passing, gate=always(code))
    sim.run()
    assert set(sim.candidate_weights("fraud-v2")) <= {0}, "no traffic without a 2xx"
    assert sim.status.phase is Phase.ROLLED_BACK and sim.status.reason == "ProgressDeadlineExceeded"
    assert sim.status.failed_candidates[-1].verdict.value == "Inconclusive"
    assert "gate ci not answered 2xx" in sim.status.message  # type: ignore[operator]
    assert len(sim.asks) > 1, "asked again every interval"


def test_each_gate_type_holds_until_it_answers_2xx() -> None:
    opened: set[tuple[str, int]] = set()

    def answer(name: str, step: int, s: Simulator) -> int:
        return 200 if (name, step) in opened else 503

    sim = Simulator(
        spec(hook("load-test", "BeforeTraffic"), hook("ticket", "BeforeStep"), hook("owner", "BeforePromotion")),
        judge=passing,
        gate=answer,
    )
    expected: list[int] = []
    for step, (name, weight) in enumerate([("load-test", 10), ("ticket", 50), ("ticket", 80), ("owner", 100)]):
        # Held: time passes, nothing is written beyond what was opened.
        for _ in range(5):
            sim.reconcile()
            sim.advance(30)
        assert sim.candidate_weights("fraud-v2") == expected, (name, step)
        assert sim.status.phase is Phase.PROGRESSING and sim.status.reason == "GateWaiting"
        opened.add((name, step))
        sim.run(until=lambda s, w=weight: s.candidate_weights("fraud-v2")[-1:] == [w])
        expected.append(weight)
    sim.run()
    assert sim.status.phase is Phase.PROMOTED
    assert sim.candidate_weights("fraud-v2") == [10, 50, 80, 100]
    gate = next(g for g in sim.status.gates if g.name == "owner")
    assert gate.state.value == "Passed" and gate.code == 200 and gate.answered is not None


def test_a_wait_at_a_gate_counts_against_neither_hold_nor_deadline() -> None:
    opened = False
    sim = Simulator(spec(hook("ticket", "BeforeStep")), judge=passing, gate=lambda *_: 200 if opened else 500)
    sim.run(until=lambda s: s.status.reason == "GateWaiting")
    sim.advance(9 * 60)  # most of the 10m deadline spent waiting for the gate
    sim.reconcile()
    opened = True
    sim.reconcile()
    sim.run()
    assert sim.status.phase is Phase.PROMOTED


def test_on_error_pause_waits_for_a_human_who_opens_the_gate() -> None:
    sim = Simulator(spec(hook("ticket", "BeforeStep", onError="Pause")), judge=passing, gate=always(409))
    sim.run(until=lambda s: s.status.phase is Phase.PAUSED)
    assert sim.status.pause_reason == "GateRefused"
    assert sim.candidate_weights("fraud-v2") == [10]
    for _ in range(3):
        sim.advance(600)
        sim.reconcile()
    assert sim.status.phase is Phase.PAUSED and sim.candidate_weights("fraud-v2") == [10]
    sim.promote_request = "open-1"
    sim.run(until=lambda s: s.candidate_weights("fraud-v2")[-1:] == [50])
    assert sim.candidate_weights("fraud-v2") == [10, 50], "a promote opens the gate, skips no step"
    assert "opened by a human" in next(g for g in sim.status.gates if g.name == "ticket").message


def test_a_late_answer_about_another_step_or_candidate_is_not_a_pass() -> None:
    s = base_spec(webhooks=[hook("ticket", "BeforeStep")])
    sim = Simulator(s, judge=passing, gate=always(None))
    sim.run(until=lambda x: x.status.reason == "GateWaiting")
    chash = sim.status.candidate_hash or ""
    st = sim.status.model_copy(deep=True)
    stale = [
        hooks.GateAnswer("ticket", 2, chash, 200, "other step", sim.clock.now()),
        hooks.GateAnswer("ticket", 1, "0" * 16, 200, "other candidate", sim.clock.now()),
    ]
    refused, passed = hooks.record_answers(s, st, stale)
    assert refused == passed == []
    assert next(g for g in st.gates if g.name == "ticket").state.value != "Passed"


def test_a_rollback_hook_answering_2xx_rolls_back() -> None:
    sim = Simulator(
        spec(hook("incidents", "Rollback")),
        judge=passing,
        gate=lambda _n, step, _s: 200 if step == 1 else 404,
    )
    sim.run()
    assert sim.status.phase is Phase.ROLLED_BACK and sim.status.reason == "RollbackRequested"
    assert sim.candidate_weights("fraud-v2") == [10, 50, 0]


def test_notifications_carry_the_evidence_and_are_delivered_in_order_once_acknowledged() -> None:
    down = True
    sim = Simulator(
        spec(hook("slack", "Notification", format="Slack"), hook("pager", "Notification", events=["RolledBack"])),
        judge=failing,
        receiver=lambda name, _seq, _s: 503 if down and name == "pager" else 200,
    )
    sim.run()
    sim.reconcile()
    box = sim.status.notifications
    assert box is not None
    slack_events = [e for e, r in sim.delivered if r.webhook == "slack" and r.ok]
    assert slack_events == ["GuardrailFailed", "RolledBack"]
    # pager is down: its RolledBack stays in the outbox, the failures are counted.
    pager = next(r for r in box.receivers if r.name == "pager")
    assert pager.delivered == 0 and pager.failures >= 1 and pager.last_error == "HTTP 503"
    owed = [n for n in box.outbox]
    assert [n.event.value for n in owed] == ["RolledBack"]
    rolled = owed[0]
    assert rolled.guardrail == "errors" and rolled.reason == "GuardrailFailed" and rolled.candidate == "fraud-v2"
    ids = {r.delivery_id for e, r in sim.delivered if r.webhook == "pager"}
    assert len(ids) == 1, "the same delivery id on every retry"
    down = False
    sim.reconcile()
    sim.reconcile()
    box = sim.status.notifications
    assert box is not None and box.outbox == []
    assert next(r for r in box.receivers if r.name == "pager").delivered == rolled.seq
    assert any(e.reason == "WebhookDeliveryFailed" and e.type == "Warning" for e in sim.events)


def test_the_outbox_is_bounded_and_counts_what_it_dropped() -> None:
    s = spec(hook("audit", "Notification"))
    sim = Simulator(s, judge=passing)
    sim.run(until=lambda x: x.status.phase is Phase.PROGRESSING)
    st = sim.status.model_copy(deep=True)
    for i in range(MAX_OUTBOX + 5):
        hooks.notify(s, st, "StepAdvanced", f"n{i}", now=datetime(2026, 1, 1, 0, i, tzinfo=UTC))
    assert st.notifications is not None
    assert len(st.notifications.outbox) == MAX_OUTBOX and st.notifications.dropped >= 5
    assert [h.name for h, _ in hooks.pending(s, st)] == ["audit"]


def test_no_receiver_no_outbox() -> None:
    sim = Simulator(spec(hook("ci", "BeforeTraffic")), judge=passing, gate=always(200))
    sim.run()
    assert sim.status.phase is Phase.PROMOTED and sim.status.notifications is None


def _notice() -> Notice:
    return Notice.model_validate(
        {
            "seq": 3, "id": "abc", "event": "RolledBack", "time": "2026-01-01T00:00:00Z", "candidate": "fraud-v2",
            "step": 1, "reason": "GuardrailFailed", "message": "fraud-v2 rolled back: errors 0.2 > 0.01",
            "guardrail": "errors",
            "evidence": {"candidateValue": 0.2, "incumbentValue": 0.001, "bound": "<= 0.01", "candidateSamples": 500},
        }
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["JSON", "CloudEvents", "Slack"])
def test_each_format_carries_the_verdict_and_its_evidence(fmt: str) -> None:
    s = spec()
    sim = Simulator(s, judge=passing)
    sim.run(until=lambda x: x.status.phase is Phase.PROGRESSING)
    h = Webhook.model_validate(hook("out", "Notification", format=fmt))
    data = payload.notice_data(
        namespace="ns", name="fraud", uid="u-1", spec=s, status=sim.status, notice=_notice(), delivery="d-1"
    )
    body, content_type = payload.notice_body(h, data)
    doc = json.loads(body)
    if fmt == "CloudEvents":
        assert content_type == "application/cloudevents+json"
        assert {"specversion", "id", "source", "type", "time", "datacontenttype", "data"} <= doc.keys()
        assert doc["id"] == "d-1" and doc["specversion"] == "1.0"
        doc = doc["data"]
    if fmt == "Slack":
        assert "errors" in doc["text"] and "0.2" in doc["text"] and "<= 0.01" in doc["text"]
        return
    assert doc["verdict"] == "Fail" and doc["uid"] == "u-1" and doc["step"] == 2
    assert doc["evidence"]["candidateValue"] == 0.2 and doc["evidence"]["bound"] == "<= 0.01"


def test_the_signature_verifies_with_the_key_and_not_with_another() -> None:
    body = b'{"event":"Promoted"}'
    header = payload.sign(b"right-key", 1_700_000_000, body)
    t, v1 = (part.split("=", 1)[1] for part in header.split(","))
    expected = hmac.new(b"right-key", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1, expected)
    other = hmac.new(b"other-key", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(v1, other)


def test_delivery_ids_are_stable_and_distinct() -> None:
    a = payload.delivery_id("uid", "notice", "n1", "slack")
    assert a == payload.delivery_id("uid", "notice", "n1", "slack")
    assert (
        len(
            {
                a,
                payload.delivery_id("uid", "notice", "n1", "pager"),
                payload.delivery_id("uid2", "notice", "n1", "slack"),
            }
        )
        == 3
    )
    assert hooks.notice_id("h", 1, WebhookEvent.PROMOTED, datetime(2026, 1, 1, tzinfo=UTC)) == hooks.notice_id(
        "h", 1, WebhookEvent.PROMOTED, datetime(2026, 1, 1, tzinfo=UTC)
    )


def test_the_signature_check_in_the_docs_accepts_ours_and_refuses_a_tampered_body() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 10
    scope: dict[str, Any] = {}
    exec(code, scope)  # the docs' own snippet
    import time

    body = b'{"event":"RolledBack"}'
    header = payload.sign(b"k", int(time.time()), body)
    assert scope["verify"](body, header, b"k")
    assert not scope["verify"](body + b" ", header, b"k")
    assert not scope["verify"](body, header, b"other")
    assert not scope["verify"](body, payload.sign(b"k", int(time.time()) - 3600, body), b"k"), "a replay"


def test_a_human_promote_after_a_gate_deadline_pause_opens_the_gate_and_skips_no_step() -> None:
    sim = Simulator(
        spec(
            hook("ticket", "BeforeStep"), analysis={"interval": "30s", "progressDeadline": "10m", "onDeadline": "Pause"}
        ),
        judge=passing,
        gate=always(None),
    )
    sim.run(until=lambda s: s.status.phase is Phase.PAUSED)
    assert sim.status.pause_reason == "ProgressDeadlineExceeded" and sim.candidate_weights("fraud-v2") == [10]
    sim.promote_request = "go"
    sim.run(until=lambda s: s.candidate_weights("fraud-v2")[-1:] == [50])
    assert sim.candidate_weights("fraud-v2") == [10, 50], "the held step's weight comes next"
    sim.run(until=lambda s: s.status.phase is Phase.PAUSED)  # step 3's gate does not answer either
    assert sim.candidate_weights("fraud-v2") == [10, 50]
    sim.promote_request = "go-again"
    sim.run()
    assert sim.status.phase is Phase.PROMOTED and sim.candidate_weights("fraud-v2") == [10, 50, 80, 100]


@pytest.mark.parametrize(
    ("url", "ip", "target", "host"),
    [
        ("https://hooks.example.com/x?y=1", "203.0.113.7", "https://203.0.113.7/x?y=1", "hooks.example.com"),
        ("http://ci.svc:8080/run", "10.0.0.9", "http://10.0.0.9:8080/run", "ci.svc:8080"),
        ("https://v6.example.com:8443/", "2001:db8::1", "https://[2001:db8::1]:8443/", "v6.example.com:8443"),
    ],
)
def test_a_request_goes_to_the_checked_address_under_its_name(url: str, ip: str, target: str, host: str) -> None:
    from controller.webhooks.sender import _pinned

    assert _pinned(url, ip) == (target, host, host.split(":")[0])


@given(answers=st.lists(st.sampled_from([None, 200, 204, 302, 404, 409, 500, 503]), min_size=1, max_size=12))
def test_no_weight_is_written_before_its_gate_answered_2xx(answers: list[int | None]) -> None:
    """Whatever the gates answer, in whatever order: every weight the router is asked for comes
    after a 2xx of that step's gate (100% after the promotion gate's), and the rollout ends."""
    passed: set[tuple[str, int]] = set()
    calls = 0

    def answer(name: str, step: int, _: Simulator) -> int | None:
        nonlocal calls
        code = answers[calls % len(answers)]
        calls += 1
        if code is not None and 200 <= code < 300:
            passed.add((name, step))
        return code

    sim = Simulator(
        spec(hook("t", "BeforeTraffic"), hook("s", "BeforeStep"), hook("p", "BeforePromotion")),
        judge=passing,
        gate=answer,
    )
    for _ in range(400):
        before = len(sim.writes)
        out = sim.reconcile()
        for _, weight in sim.writes[before:]:
            if weight == 0:
                continue  # back to the incumbent: never gated
            need = ("p", 3) if weight == 100 else ("t", 0) if weight == STEPS[0] else ("s", STEPS.index(weight))
            assert need in passed, f"{weight}% written before {need} answered 2xx: {sim.writes}"
        if out.requeue_after is None:
            break
        sim.clock.advance(out.requeue_after)
    assert sim.status.phase in (Phase.PROMOTED, Phase.ROLLED_BACK)
    assert (sim.status.phase is Phase.PROMOTED) == (("p", 3) in passed)


def test_a_human_promote_at_a_promotion_gate_promotes_and_never_reads_as_a_rollback_request() -> None:
    """The promote opens the BeforePromotion gate only: the Rollback hook's entry (it said "no
    rollback") is not a gate, and opening it would read as the hook asking for a rollback."""
    sim = Simulator(
        spec(hook("incidents", "Rollback"), hook("cab", "BeforePromotion")),
        judge=passing,
        gate=lambda name, _step, _s: 404 if name == "incidents" else None,
    )
    sim.run(until=lambda s: s.status.reason == "GateWaiting" and s.status.current_step == 2)
    sim.promote_request = "full-go"
    sim.run()
    assert sim.status.phase is Phase.PROMOTED, (sim.status.reason, sim.status.message)
    assert sim.candidate_weights("fraud-v2") == [10, 50, 80, 100]
    assert all(e.reason != "RollbackRequested" for e in sim.events)
    incidents = next(g for g in sim.status.gates if g.name == "incidents")
    assert incidents.state.value != "Passed" and "human" not in incidents.message


def test_renamed_hooks_leave_no_entries_behind_and_the_gates_stay_within_max_items() -> None:
    """Renaming hooks mid-rollout drops the old names' entries: the status stays writable (the
    simulator persists through the schema, as the API server would, and refuses a longer list)."""
    names = [f"h{i}" for i in range(MAX_WEBHOOKS)]
    sim = Simulator(spec(*(hook(n, "BeforeStep") for n in names)), judge=passing, gate=always(200))
    sim.run(until=lambda s: s.candidate_weights("fraud-v2")[-1:] == [50])
    assert len(sim.status.gates) == MAX_WEBHOOKS
    renamed = [f"z{i}" if i < 3 else n for i, n in enumerate(names)]
    sim.spec = spec(*(hook(n, "BeforeStep") for n in renamed))
    sim.run()
    assert sim.status.phase is Phase.PROMOTED
    assert {g.name for g in sim.status.gates} == set(renamed)


def test_a_late_refusal_never_closes_a_gate_a_human_opened() -> None:
    sim = Simulator(spec(hook("ticket", "BeforeStep", onError="Pause")), judge=passing, gate=always(409))
    sim.run(until=lambda s: s.status.phase is Phase.PAUSED)
    sim.gate = None  # the next ask stays in flight
    sim.promote_request = "open-1"
    sim.reconcile()
    ticket = next(g for g in sim.status.gates if g.name == "ticket")
    assert ticket.state.value == "Passed"
    # The refusal of an ask sent before the promote arrives now.
    late = hooks.GateAnswer("ticket", ticket.step, ticket.candidate_hash, 409, "still no", sim.clock.now())
    refused, passed = hooks.record_answers(sim.spec, sim.status, [late])
    assert refused == passed == []
    ticket = next(g for g in sim.status.gates if g.name == "ticket")
    assert ticket.state.value == "Passed" and "opened by a human" in ticket.message
    sim.gate = always(409)
    sim.run(until=lambda s: s.candidate_weights("fraud-v2")[-1:] == [50])
    assert sim.candidate_weights("fraud-v2") == [10, 50]
