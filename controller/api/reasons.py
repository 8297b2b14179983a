"""Why a rollout is where it is: one name per reason, the same string on the wire.

`status.reason`, the conditions' reason, Events, `status.pauseReason`, the history and
`failedCandidates` all carry these strings; tests, docs and dashboards read them, so a value
never changes once released. Router problems carry their own reasons (controller.routers).
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # A rollout begins, or there is nothing to roll out.
    ADOPTED = "Adopted"
    ALREADY_SERVING = "AlreadyServing"
    ROLLOUT_STARTED = "RolloutStarted"
    ROLLOUT_RETRIED = "RolloutRetried"
    CANDIDATE_REPLACED = "CandidateReplaced"
    TRAFFIC_RESTORED = "TrafficRestored"
    # Forward.
    STEP_ADVANCED = "StepAdvanced"
    # The shadow phase ended in a pass: the canary's step 1 begins (docs/shadow.md).
    SHADOW_PASSED = "ShadowPassed"
    # A human moved past the shadow phase (promote, spec.shadow removed): no evidence, not a pass.
    SHADOW_SKIPPED = "ShadowSkipped"
    # spec.shadow changed what a comparison means mid-shadow: it starts again, counting from now.
    SHADOW_RESTARTED = "ShadowRestarted"
    PROMOTED = "Promoted"
    PROMOTED_BY_USER = "PromotedByUser"
    RESUMED = "Resumed"
    # Past the hold, a label guardrail waits for ground truth (docs/labels.md).
    WAITING_FOR_LABELS = "WaitingForLabels"
    # Waiting for a human (status.pauseReason).
    PAUSED_BY_USER = "PausedByUser"
    AWAITING_PROMOTION = "AwaitingPromotion"
    GUARDRAIL_INCONCLUSIVE = "GuardrailInconclusive"
    # Back to the incumbent: the candidate was shown worse...
    GUARDRAIL_FAILED = "GuardrailFailed"
    FAILURE_LIMIT_EXCEEDED = "FailureLimitExceeded"
    ABORTED_BY_USER = "AbortedByUser"
    # ...or the evidence did not come (inconclusive, never a pass).
    NO_DATA = "NoData"
    PROVIDER_ERROR = "ProviderError"
    COUNTS_WENT_BACKWARDS = "CountsWentBackwards"
    INCONSISTENT_COUNTS = "InconsistentCounts"
    INCONCLUSIVE_LIMIT_EXCEEDED = "InconclusiveLimitExceeded"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    ERROR_BUDGET_EXHAUSTED = "ErrorBudgetExhausted"
    # The evidence will not come within progressDeadline at the traffic observed (condition Feasible).
    DEADLINE_TOO_SHORT = "DeadlineTooShort"
    # Webhooks (docs/webhooks.md): a gate not yet answered 2xx, a gate refused with onError Pause
    # (status.pauseReason), a rollback hook that asked for a rollback.
    GATE_WAITING = "GateWaiting"
    GATE_REFUSED = "GateRefused"
    ROLLBACK_REQUESTED = "RollbackRequested"
    # Event reasons only.
    ROLLED_BACK = "RolledBack"
    ROLLED_BACK_INCONCLUSIVE = "RolledBackInconclusive"
    PAUSED = "Paused"
    WEBHOOK_DELIVERY_FAILED = "WebhookDeliveryFailed"


# Rollbacks without evidence that the candidate is worse: kept apart from failures in
# failedCandidates[].verdict, the RolledBackInconclusive Event and `kubectl modelrollout wait`'s exit code.
INCONCLUSIVE = frozenset(
    {
        Reason.NO_DATA,
        Reason.PROVIDER_ERROR,
        Reason.COUNTS_WENT_BACKWARDS,
        Reason.INCONSISTENT_COUNTS,
        Reason.INCONCLUSIVE_LIMIT_EXCEEDED,
        Reason.PROGRESS_DEADLINE_EXCEEDED,
        Reason.ERROR_BUDGET_EXHAUSTED,
    }
)
