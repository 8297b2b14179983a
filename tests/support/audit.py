"""Read the test API server's audit log: what was written, by whom, when."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Write:
    time: datetime
    verb: str
    resource: str
    namespace: str
    name: str
    subresource: str
    user_agent: str
    request: Any
    code: int
    # The object after the write, where the audit policy keeps it (RequestResponse level).
    response: Any = None


def writes(audit_log: Path, *, namespace: str, resource: str | None = None) -> list[Write]:
    return [r for r in requests(audit_log, namespace=namespace, resource=resource) if r.verb not in ("get", "list")]


def requests(audit_log: Path, *, namespace: str, resource: str | None = None) -> list[Write]:
    """Every audited request in a namespace: writes, and reads of rollouts and routes."""
    out = []
    for line in audit_log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        ref = event.get("objectRef") or {}
        if event.get("stage") != "ResponseComplete" or event.get("verb") == "watch":
            continue
        if ref.get("namespace") != namespace or (resource and ref.get("resource") != resource):
            continue
        out.append(
            Write(
                time=datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")),
                verb=event["verb"],
                resource=ref.get("resource", ""),
                namespace=namespace,
                name=ref.get("name", ""),
                subresource=ref.get("subresource", ""),
                user_agent=event.get("userAgent", ""),
                request=event.get("requestObject"),
                code=(event.get("responseStatus") or {}).get("code", 0),
                response=event.get("responseObject"),
            )
        )
    return out


def route_weight_writes(audit_log: Path, namespace: str, candidate_service: str) -> list[tuple[datetime, int]]:
    """(time, candidate weight) of each successful patch of an HTTPRoute that set the candidate's weight."""
    result = []
    for w in writes(audit_log, namespace=namespace, resource="httproutes"):
        if w.verb != "patch" or w.code >= 300 or not isinstance(w.request, list):
            continue
        ops = w.request
        for i, op in enumerate(ops):
            if op.get("op") == "test" and op.get("value") == candidate_service and i + 1 < len(ops):
                result.append((w.time, int(ops[i + 1]["value"])))
    return result


def status_claims(audit_log: Path, namespace: str, name: str = "demo") -> list[tuple[datetime, int]]:
    """(time, candidate weight) of every successful status write of a rollout that claimed weights.

    Every status write is in the audit log, so unlike a sampler this misses no claim, however
    short-lived."""
    out = []
    for w in writes(audit_log, namespace=namespace, resource="modelrollouts"):
        if w.name != name or w.subresource != "status" or w.code >= 300 or not isinstance(w.request, dict):
            continue
        weights = (w.request.get("status") or {}).get("weights")
        if weights is not None:
            out.append((w.time, int(weights["candidate"])))
    return out
