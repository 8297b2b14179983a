"""Evidence checkpoints: an analysis that decides nothing is written at most once per period.

Why: at thousands of progressing rollouts the API server's CPU for one status write per
analysis is the limit, not the controller's (docs/benchmarks.md "Five thousand progressing on
one controller": 161 writes a second at 5,000 rollouts analysed every 30 s took 1.37 of the 2
cores). Most analyses change nothing a decision reads: the same verdicts, no new failure, no
inconclusive streak, the same phase, step, reason, conditions, gates and history. Only the
evidence moves: the counts, the guardrails' messages and evaluation times, `lastAnalysis` and
the error budget's arithmetic. With `--evidence-checkpoint` set, such an analysis is kept in
this process's memory (as the JSON the API server would store) and written with the next
write that must happen (any decision), or by the first analysis once the period has passed since the analysis of
record. Every decision is written before it is carried out, as without a checkpoint.

Why a controller killed meanwhile reaches the same verdict: what it loses is evidence that
decided nothing. The analysis of record is then older than the interval, so the next
controller analyses at once. Guardrails judged on counts since the rollout began (sequential
tests, labels, shadow comparisons) ask for those counts again, and the sequential test is
always-valid: its e-values are functions of the cumulative counts, not of how many looks were
taken. Windowed guardrails ask for the latest window, as at any look. What a restart costs is
the freshness of `kubectl get` between checkpoints. One check is weaker across a restart: that
counts since the rollout began never go back (core/judge.py check_counts) compares the first
analysis after it with the counts of record, up to one period old, not the latest unwritten
ones; a provider that then answers less than those but not less than the counts of record is
not caught at that analysis.

What is never deferred, because it changes on every analysis and is read by a later one: a
segmented guardrail's segments (their counts are checked like the guardrail's), the status
message while waiting for labels (it counts them), and the answers of rollback hooks (asked at
every analysis). Such rollouts write every analysis, as without a checkpoint.

Kept evidence applies only on top of the status it was decided from: a digest of that status
is kept with it, and any other write (another shard, a human's `kubectl edit --subresource
status`, this process's own) makes it stale, so it is dropped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.api.models import ModelRolloutStatus

# What an analysis changes without changing a decision: left out when two statuses are compared.
# The shadow's numbers are a copy of its ShadowDisagreement guardrail's evidence (core/shadow.py
# summarise); a label guardrail's `since` and `sinceHave` are set at the step's first analysis and
# stay (core/labels.py progress), the rest of its progress is arithmetic on the evidence.
EVIDENCE_ONLY = ("lastAnalysis", "errorBudget")
GUARDRAIL_EVIDENCE_ONLY = ("evidence", "message", "lastEvaluated")
LABELS_EVIDENCE_ONLY = ("have", "need", "perMinute", "expectedAt")
SHADOW_EVIDENCE_ONLY = ("comparisons", "disagreements", "rate", "noiseFloorRate", "samplesNeeded", "message")


def _without(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def decisions(status: dict[str, Any]) -> dict[str, Any]:
    """`status` (wire form) without the fields an analysis changes when it decides nothing."""
    out = _without(status, EVIDENCE_ONLY)
    guardrails = []
    for g in status.get("guardrails", []):
        g = _without(g, GUARDRAIL_EVIDENCE_ONLY)
        if "labels" in g:
            g["labels"] = _without(g["labels"], LABELS_EVIDENCE_ONLY)
        guardrails.append(g)
    out["guardrails"] = guardrails
    if "shadow" in out:
        out["shadow"] = _without(out["shadow"], SHADOW_EVIDENCE_ONLY)
    return out


def digest(status: dict[str, Any]) -> str:
    return hashlib.blake2b(
        json.dumps(status, sort_keys=True, separators=(",", ":")).encode(), digest_size=16
    ).hexdigest()


@dataclass(frozen=True)
class _Kept:
    uid: str
    recorded: str  # digest of the status of record it was decided from
    status: bytes  # the unwritten status, as JSON


class EvidenceCheckpoints:
    """Unwritten analyses, per rollout, in this process. One reconcile at a time per key (the
    work queue's promise), so no lock: each key is read and replaced by one worker at a time."""

    def __init__(self, period: timedelta) -> None:
        self.period = period
        self._kept: dict[tuple[str, str], _Kept] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def current(self, key: tuple[str, str], uid: str, recorded: dict[str, Any]) -> ModelRolloutStatus | None:
        """The unwritten status to decide from, if one was kept on top of `recorded` (wire form)."""
        kept = self._kept.get(key)
        if kept is None:
            return None
        if kept.uid != uid or kept.recorded != digest(recorded):
            del self._kept[key]
            return None
        return ModelRolloutStatus.model_validate_json(kept.status)

    def keep(
        self, key: tuple[str, str], uid: str, recorded: dict[str, Any], decided: dict[str, Any], now: datetime
    ) -> bool:
        """Keep `decided` unwritten if it differs from `recorded` only in evidence and the analysis
        of record is younger than the period; False: it must be written (then, once it is, call
        `forget`). Equal statuses are never kept: there is nothing to write."""
        if self.period <= timedelta(0) or not recorded.get("lastAnalysis") or decided == recorded:
            return False
        last = datetime.fromisoformat(recorded["lastAnalysis"])
        if now - last >= self.period or decisions(recorded) != decisions(decided):
            return False
        self._kept[key] = _Kept(uid, digest(recorded), json.dumps(decided).encode())
        return True

    def forget(self, key: tuple[str, str]) -> None:
        """Drop what was kept: it has been written, or the rollout is gone."""
        self._kept.pop(key, None)
