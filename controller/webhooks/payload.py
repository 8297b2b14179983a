"""What a webhook receives: the bodies (gate asks; notifications as JSON, CloudEvents 1.0 or Slack),
the delivery id a receiver dedupes on, and the HMAC-SHA256 signature header.

Pure functions of the rollout's status, so the same notice gives the same body and delivery id
after retries and controller restarts (only the signature's timestamp changes). docs/webhooks.md
shows each body and how to check the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from controller.api.models import (
    ModelRolloutSpec,
    ModelRolloutStatus,
    Notice,
    Webhook,
    WebhookEvent,
    WebhookFormat,
    WebhookType,
)
from controller.api.reasons import INCONCLUSIVE
from controller.core.hooks import Ask

SIGNATURE_HEADER = "X-ModelRollout-Signature"
DELIVERY_HEADER = "X-ModelRollout-Delivery"
EVENT_HEADER = "X-ModelRollout-Event"
SOURCE = "/apis/modelrollout.dev/v1alpha1/namespaces/{namespace}/modelrollouts/{name}"
_ICON = {
    WebhookEvent.STEP_ADVANCED: ":arrow_forward:",
    WebhookEvent.PAUSED: ":double_vertical_bar:",
    WebhookEvent.PROMOTED: ":white_check_mark:",
    WebhookEvent.ROLLED_BACK: ":rewind:",
    WebhookEvent.GUARDRAIL_FAILED: ":x:",
    WebhookEvent.INCONCLUSIVE: ":grey_question:",
}


def delivery_id(uid: str, kind: str, *parts: object) -> str:
    """Stable for one rollout (uid), one notice or ask, one receiver: what a receiver dedupes on."""
    return hashlib.sha256("/".join([uid, kind, *map(str, parts)]).encode()).hexdigest()[:32]


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`: the timestamp is signed too, so a
    receiver that refuses old timestamps refuses replays."""
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _rollout(namespace: str, name: str, uid: str, status: ModelRolloutStatus) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "name": name,
        "uid": uid,
        "candidate": status.candidate.wire() if status.candidate else None,
        "incumbent": status.incumbent.wire() if status.incumbent else None,
        "phase": status.phase.value if status.phase else None,
    }


def gate_body(
    *,
    namespace: str,
    name: str,
    uid: str,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    hook: Webhook,
    ask: Ask,
    delivery: str,
    now: datetime,
) -> bytes:
    steps = spec.expanded_steps()
    weight = 100 if ask.step >= len(steps) else steps[ask.step].weight
    body = {
        "kind": "Gate" if hook.type is not WebhookType.ROLLBACK else "RollbackCheck",
        "type": hook.type.value,
        "hook": hook.name,
        "deliveryId": delivery,
        **_rollout(namespace, name, uid, status),
        "candidateHash": ask.candidate_hash,
        "step": min(ask.step + 1, len(steps)) if hook.type is not WebhookType.BEFORE_PROMOTION else len(steps),
        "totalSteps": len(steps),
        "weight": weight,
        "guardrails": [
            {"name": g.name, "verdict": g.verdict.value, "message": g.message, "evidence": g.evidence.wire()}
            for g in status.guardrails
        ],
        "time": now.isoformat(),
    }
    return json.dumps(body, sort_keys=True).encode()


def verdict(notice: Notice) -> str | None:
    if notice.event is WebhookEvent.PROMOTED:
        return "Pass"
    if notice.event is WebhookEvent.GUARDRAIL_FAILED:
        return "Fail"
    if notice.event is WebhookEvent.INCONCLUSIVE:
        return "Inconclusive"
    if notice.event is WebhookEvent.ROLLED_BACK:
        return "Inconclusive" if notice.reason in INCONCLUSIVE else "Fail"
    return None


def notice_data(
    *,
    namespace: str,
    name: str,
    uid: str,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    notice: Notice,
    delivery: str,
) -> dict[str, Any]:
    total = len(spec.expanded_steps())
    data = {
        "kind": "Notification",
        "event": notice.event.value,
        "deliveryId": delivery,
        **_rollout(namespace, name, uid, status),
        # The candidate the notice is about (status may have moved on to another since).
        "candidate": {"name": notice.candidate},
        "step": notice.step + 1,
        "totalSteps": total,
        "reason": notice.reason,
        "message": notice.message,
        "verdict": verdict(notice),
        "guardrail": notice.guardrail,
        "evidence": notice.evidence.wire() if notice.evidence else None,
        "time": notice.time.isoformat(),
    }
    if status.candidate is not None and status.candidate.name == notice.candidate:
        # Every guardrail's latest verdict and evidence for this candidate (e.g. behind a promotion).
        data["guardrails"] = [
            {"name": g.name, "verdict": g.verdict.value, "message": g.message, "evidence": g.evidence.wire()}
            for g in status.guardrails
        ]
    return data


def _slack(data: dict[str, Any]) -> dict[str, Any]:
    event = WebhookEvent(data["event"])
    head = (
        f"{_ICON[event]} *{data['namespace']}/{data['name']}*: {data['candidate']['name']} "
        f"{event.value} at step {data['step']}/{data['totalSteps']} ({data['reason']})"
    )
    lines = [head, data["message"]]
    ev = data.get("evidence") or {}
    if data.get("guardrail"):
        lines.append(
            f"guardrail `{data['guardrail']}`: observed {ev.get('candidateValue', '-')} "
            f"(incumbent {ev.get('incumbentValue', '-')}), bound {ev.get('bound', '-')}, "
            f"samples {ev.get('candidateSamples', '-')}/{ev.get('incumbentSamples', '-')}"
        )
    lines.append(f"delivery {data['deliveryId']}")
    return {"text": "\n".join(line for line in lines if line)}


def notice_body(hook: Webhook, data: dict[str, Any]) -> tuple[bytes, str]:
    """(body, content type) in the hook's format."""
    if hook.format is WebhookFormat.CLOUD_EVENTS:
        envelope = {
            "specversion": "1.0",
            "id": data["deliveryId"],
            "source": SOURCE.format(namespace=data["namespace"], name=data["name"]),
            "type": f"dev.modelrollout.rollout.{data['event']}",
            "subject": data["candidate"]["name"],
            "time": data["time"],
            "datacontenttype": "application/json",
            "data": data,
        }
        return json.dumps(envelope, sort_keys=True).encode(), "application/cloudevents+json"
    if hook.format is WebhookFormat.SLACK:
        return json.dumps(_slack(data)).encode(), "application/json"
    return json.dumps(data, sort_keys=True).encode(), "application/json"
