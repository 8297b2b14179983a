"""Webhooks in the decision core: when a gate is open, what to ask, what to tell, what is delivered.

Pure, like the engine it serves: the adapter (controller.webhooks) makes the HTTP calls on its
own threads and hands their outcomes back as `GateAnswer`s and `DeliveryResult`s; everything
kept between reconciles is in status, so a restarted controller asks again what was unanswered
and delivers again what was not acknowledged.

- A gate passes only on a recorded 2xx answer for that gate, this step and this candidate
  (`status.gates`); no answer, an error, a timeout or another code is never a pass. A Passed
  entry is final for its step and candidate: a late answer (e.g. a refusal still in flight when
  a human opened the gate) never closes it again.
- `status.gates` holds one entry per hook still in the spec (bounded by MAX_WEBHOOKS): an entry
  of a renamed or removed hook is dropped when the list is next built.
- Notifications go through a small outbox in status (`status.notifications`): each verdict is
  a `Notice` with a sequence number and an id stable across retries and restarts; each receiver
  has a cursor (`delivered`). What is pending is derived from these alone, one notice at a time
  per receiver, in order. The outbox is bounded: beyond MAX_OUTBOX the oldest notice is dropped
  and counted (`dropped`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.api.models import (
    GATE_TYPES,
    MAX_OUTBOX,
    MAX_WEBHOOKS,
    GateErrorPolicy,
    GateState,
    GateStatus,
    GuardrailStatus,
    ModelRolloutSpec,
    ModelRolloutStatus,
    Notice,
    Notifications,
    Receiver,
    Webhook,
    WebhookEvent,
    WebhookType,
)
from controller.api.reasons import Reason

# Which Event reasons are told to notification hooks, as which event.
NOTIFIED: dict[str, WebhookEvent] = {
    Reason.STEP_ADVANCED: WebhookEvent.STEP_ADVANCED,
    Reason.PAUSED: WebhookEvent.PAUSED,
    Reason.PROMOTED: WebhookEvent.PROMOTED,
    Reason.ROLLED_BACK: WebhookEvent.ROLLED_BACK,
    Reason.ROLLED_BACK_INCONCLUSIVE: WebhookEvent.ROLLED_BACK,
    Reason.GUARDRAIL_FAILED: WebhookEvent.GUARDRAIL_FAILED,
    Reason.GUARDRAIL_INCONCLUSIVE: WebhookEvent.INCONCLUSIVE,
}


@dataclass(frozen=True)
class Ask:
    """Ask this gate or rollback hook about this step of this candidate (the adapter POSTs)."""

    webhook: str
    step: int
    candidate_hash: str


@dataclass(frozen=True)
class GateAnswer:
    """What a gate or rollback hook answered: an HTTP code, or None when none came (error, timeout,
    address refused), with a short message."""

    webhook: str
    step: int
    candidate_hash: str
    code: int | None
    message: str
    time: datetime

    @property
    def passed(self) -> bool:
        return self.code is not None and 200 <= self.code < 300


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of delivering notice `seq` to receiver `webhook` (after the adapter's retries)."""

    webhook: str
    seq: int
    delivery_id: str
    code: int | None
    error: str | None
    time: datetime

    @property
    def ok(self) -> bool:
        return self.error is None and self.code is not None and 200 <= self.code < 300


def asked(spec: ModelRolloutSpec, kind: WebhookType) -> list[Webhook]:
    return [w for w in spec.webhooks if w.type is kind]


def entry(status: ModelRolloutStatus, name: str, step: int, candidate_hash: str) -> GateStatus | None:
    return next(
        (g for g in status.gates if g.name == name and g.step == step and g.candidate_hash == candidate_hash), None
    )


def _put(spec: ModelRolloutSpec, status: ModelRolloutStatus, gs: GateStatus) -> None:
    """Put `gs` in place of its hook's entry; drop entries of hooks no longer in the spec (a
    rename or removal mid-rollout), so the list stays within its maxItems."""
    names = {w.name for w in spec.webhooks}
    kept = [g for g in status.gates if g.name != gs.name and g.name in names]
    status.gates = [*kept, gs][-MAX_WEBHOOKS:]


def record_answers(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, answers: Iterable[GateAnswer]
) -> tuple[list[GateAnswer], list[GateAnswer]]:
    """Record answers about this candidate's current ask in status; return the (refusals, passes)
    recorded. An answer about another step or candidate (late, or from before a restart) is dropped."""
    refused: list[GateAnswer] = []
    passed: list[GateAnswer] = []
    names = {w.name for w in spec.webhooks}
    for answer in answers:
        gs = entry(status, answer.webhook, answer.step, answer.candidate_hash)
        if gs is None or answer.webhook not in names or gs.state is GateState.PASSED:
            continue  # stale, or about an entry already passed (by a 2xx or a human): final
        updated = gs.model_copy(
            update={
                "state": GateState.PASSED if answer.passed else GateState.REFUSED,
                "code": answer.code,
                "message": answer.message[:256],
                "answered": answer.time,
            }
        )
        status.gates = [updated if g is gs else g for g in status.gates]
        (passed if answer.passed else refused).append(answer)
    return refused, passed


@dataclass(frozen=True)
class GateView:
    """Where the gates of one kind stand for one step: open, or what holds it."""

    open: bool
    asks: tuple[Ask, ...] = ()
    waiting: GateStatus | None = None  # the first gate not yet passed
    policy_pause: bool = False  # a refused gate whose onError is Pause
    first_ask: bool = False  # the controller began asking in this reconcile


def gate(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    kind: WebhookType,
    step: int,
    candidate_hash: str,
    *,
    now: datetime,
    retry: timedelta,
) -> GateView:
    """Whether every `kind` gate passed for `step`; creates the status entries of gates asked for
    the first time (one entry per hook: a new step or candidate replaces the old one)."""
    asks: list[Ask] = []
    waiting: GateStatus | None = None
    pause = first = False
    for hook in asked(spec, kind):
        gs = entry(status, hook.name, step, candidate_hash)
        if gs is None:
            gs = GateStatus(name=hook.name, step=step, candidate_hash=candidate_hash, since=now)
            _put(spec, status, gs)
            first = True
        if gs.state is GateState.PASSED:
            continue
        waiting = waiting or gs
        if gs.state is GateState.REFUSED and hook.on_error is GateErrorPolicy.PAUSE:
            pause = True
        elif gs.state is GateState.PENDING or gs.answered is None or now >= gs.answered + retry:
            asks.append(Ask(hook.name, step, candidate_hash))
    return GateView(open=waiting is None, asks=tuple(asks), waiting=waiting, policy_pause=pause, first_ask=first)


def open_by_human(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, candidate_hash: str, request: str, now: datetime
) -> list[str]:
    """A human's promote opens the gates this candidate waits at; returns their names. Only gates:
    a Rollback hook's entry is never touched (Passed there means "roll back")."""
    gate_names = {w.name for w in spec.webhooks if w.type in GATE_TYPES}
    opened = []
    gates = []
    for g in status.gates:
        if g.name in gate_names and g.candidate_hash == candidate_hash and g.state is not GateState.PASSED:
            g = g.model_copy(
                update={"state": GateState.PASSED, "message": f"opened by a human ({request})"[:256], "answered": now}
            )
            opened.append(g.name)
        gates.append(g)
    status.gates = gates
    return opened


def rollback_asks(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    step: int,
    candidate_hash: str,
    *,
    now: datetime,
    retry: timedelta,
) -> tuple[list[Ask], GateStatus | None]:
    """Rollback hooks due to be asked again (every `retry`), and the one that asked for a rollback."""
    asks, requested = [], None
    for hook in asked(spec, WebhookType.ROLLBACK):
        gs = entry(status, hook.name, step, candidate_hash)
        if gs is None:
            gs = GateStatus(name=hook.name, step=step, candidate_hash=candidate_hash, since=now)
            _put(spec, status, gs)
        if gs.state is GateState.PASSED:
            requested = requested or gs
        elif gs.state is GateState.PENDING or gs.answered is None or now >= gs.answered + retry:
            asks.append(Ask(hook.name, step, candidate_hash))
    return asks, requested


# -- notifications ------------------------------------------------------------------------------


def notice_id(candidate_hash: str, seq: int, event: WebhookEvent, time: datetime) -> str:
    return hashlib.sha256(f"{candidate_hash}/{seq}/{event.value}/{time.isoformat()}".encode()).hexdigest()[:20]


def notify(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    gs: GuardrailStatus | None = None,
) -> None:
    """Put a notice in the outbox for an Event of `reason`, when a receiver wants it."""
    event = NOTIFIED.get(reason)
    if event is None or status.candidate is None or not any(w.wants(event) for w in spec.webhooks):
        return
    box = status.notifications or Notifications()
    seq = box.next_seq
    notice = Notice(
        seq=seq,
        id=notice_id(status.candidate_hash or "", seq, event, now),
        event=event,
        time=now,
        candidate=status.candidate.name,
        step=status.current_step or 0,
        # A transition says why through status.reason (e.g. GuardrailFailed for a RolledBack).
        reason=(
            reason if event in (WebhookEvent.GUARDRAIL_FAILED, WebhookEvent.INCONCLUSIVE) else status.reason or reason
        )[:128],
        message=message[:1024],
        guardrail=gs.name if gs else None,
        evidence=gs.evidence if gs else None,
    )
    outbox = [*box.outbox, notice]
    dropped = max(0, len(outbox) - MAX_OUTBOX)
    status.notifications = box.model_copy(
        update={"next_seq": seq + 1, "outbox": outbox[dropped:], "dropped": box.dropped + dropped}
    )
    _ensure_receivers(spec, status)


def _ensure_receivers(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> None:
    box = status.notifications
    if box is None:
        return
    have = {r.name: r for r in box.receivers}
    # A receiver added later starts after the notices already in the outbox' past (seq before its
    # creation are not sent to it): it begins at the first notice created after it existed.
    start = box.outbox[-1].seq - 1 if box.outbox else box.next_seq - 1
    receivers = [
        have.get(w.name) or Receiver(name=w.name, delivered=start)
        for w in spec.webhooks
        if w.type is WebhookType.NOTIFICATION
    ]
    box.receivers = receivers


def pending(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> list[tuple[Webhook, Notice]]:
    """For each receiver, the next notice it wants and has not acknowledged (one at a time, in order)."""
    box = status.notifications
    if box is None:
        return []
    cursors = {r.name: r.delivered for r in box.receivers}
    out = []
    for hook in spec.webhooks:
        if hook.type is not WebhookType.NOTIFICATION or hook.name not in cursors:
            continue
        nxt = next((n for n in box.outbox if n.seq > cursors[hook.name] and hook.wants(n.event)), None)
        if nxt is not None:
            out.append((hook, nxt))
    return out


def record_deliveries(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, results: Sequence[DeliveryResult]
) -> list[DeliveryResult]:
    """Move receivers' cursors past acknowledged notices, count failures, trim the outbox of what
    every receiver has; return the failures (for a Warning Event)."""
    box = status.notifications
    if box is None or not results:
        return []
    failed = []
    by_name = {r.name: r for r in box.receivers}
    for result in results:
        receiver = by_name.get(result.webhook)
        if receiver is None:
            continue
        if result.ok:
            by_name[result.webhook] = receiver.model_copy(
                update={
                    "delivered": max(receiver.delivered, result.seq),
                    "last_id": result.delivery_id,
                    "last_time": result.time,
                    "last_code": result.code,
                    "last_error": None,
                    "failures": 0,
                }
            )
        else:
            failed.append(result)
            by_name[result.webhook] = receiver.model_copy(
                update={
                    "last_time": result.time,
                    "last_code": result.code,
                    "last_error": (result.error or f"HTTP {result.code}")[:256],
                    "failures": receiver.failures + 1,
                }
            )
    box.receivers = [by_name[r.name] for r in box.receivers]
    hooks = {w.name: w for w in spec.webhooks if w.type is WebhookType.NOTIFICATION}

    def owed(n: Notice) -> bool:
        return any(r.name in hooks and hooks[r.name].wants(n.event) and n.seq > r.delivered for r in box.receivers)

    box.outbox = [n for n in box.outbox if owed(n)]
    return failed
