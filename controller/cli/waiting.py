"""What `kubectl modelrollout wait` waits for, as pure functions of the object.

A verdict counts only when the status describes the current spec (observedGeneration, the
candidate of record, no retry still pending) and its weights reached the data plane (the
Ready / Stalled conditions say so).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from controller.api.annotations import ABORT, PROMOTE, RETRY
from controller.api.reasons import INCONCLUSIVE


class Verdict(Enum):
    PROMOTED = ("promoted", 0)
    ROLLED_BACK = ("rolled back", 1)
    PAUSED = ("paused for a human", 3)
    # Rolled back without evidence either way (deadline, error budget, no data): not a failed candidate.
    INCONCLUSIVE = ("rolled back, inconclusive", 4)

    def __init__(self, text: str, exit_code: int) -> None:
        self.text = text
        self.exit_code = exit_code


def _conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c.get("type", ""): c.get("status", "") for c in status.get("conditions", [])}


def is_current(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    meta = obj["metadata"]
    if (status.get("observedGeneration") or 0) < (meta.get("generation") or 0):
        return False
    if (status.get("candidate") or {}).get("name") != obj["spec"]["candidate"]["name"]:
        return False
    annotations = meta.get("annotations") or {}
    if status.get("phase") not in ("Promoted", "RolledBack", "Failed"):
        # A promote or abort the controller has not acted on yet: the Paused it shows is stale
        # (`promote` then `wait` must not exit 3 on the pause the promote ends).
        for request, handled in ((PROMOTE, "handledPromote"), (ABORT, "handledAbort")):
            value = annotations.get(request)
            if value and value != status.get(handled):
                return False
    retry = annotations.get(RETRY)
    return not (status.get("phase") == "RolledBack" and retry and retry != status.get("handledRetry"))


def verdict_of(obj: dict[str, Any]) -> Verdict | None:
    if not is_current(obj):
        return None
    status = obj.get("status") or {}
    phase, conditions = status.get("phase"), _conditions(status)
    if phase == "Promoted" and conditions.get("Ready") == "True":
        return Verdict.PROMOTED
    if phase in ("RolledBack", "Failed") and conditions.get("Stalled") == "True":
        return Verdict.INCONCLUSIVE if status.get("reason") in INCONCLUSIVE else Verdict.ROLLED_BACK
    if phase == "Paused":
        return Verdict.PAUSED
    return None


def transition_line(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    weights = status.get("weights") or {}
    weight = f"{weights['candidate']}%" if "candidate" in weights else "-"
    message = status.get("message") or ""
    return (
        f"{obj['metadata']['name']}: {status.get('phase', 'Pending')} step {status.get('stepDisplay', '-')} "
        f"candidate {weight} ({status.get('reason', '-')}) {message}"
    ).rstrip()
