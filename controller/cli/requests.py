"""What a human asks of a rollout, as the API requests that carry it: one definition for the
command line and the dashboard, so a button does exactly what `kubectl modelrollout promote` does.

Each request is a spec field or an annotation the controller honours once per value (so asking
twice is safe), followed by an Event naming who asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.api.annotations import ABORT, PROMOTE, RETRY
from controller.kube.events import EventRecorder
from controller.kube.identity import whoami
from controller.kube.rollouts import Rollouts

# The requests the dashboard offers (set-candidate stays on the command line: it takes a model).
ACTIONS = ("promote", "promote-full", "pause", "resume", "abort", "retry")


class CliError(Exception):
    """A problem to report in one line with exit code 1 (or as the dashboard's HTTP 409)."""


@dataclass(frozen=True)
class Request:
    patch: dict[str, Any]
    reason: str  # the Event's reason
    what: str  # what was asked, for the Event and the reply


def _hash(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    if not status.get("candidateHash"):
        raise CliError("the controller has not picked this rollout up yet (status.candidateHash is empty)")
    return str(status["candidateHash"])


def _require_phase(obj: dict[str, Any], phases: tuple[str, ...], what: str) -> None:
    phase = (obj.get("status") or {}).get("phase", "Pending")
    if phase not in phases:
        raise CliError(f"cannot {what}: the rollout is {phase} (needs {' or '.join(phases)})")


def plan(action: str, obj: dict[str, Any]) -> Request:
    """The request for `action` (one of ACTIONS) on the rollout as read; CliError if it cannot be asked now."""
    status = obj.get("status") or {}
    if action in ("promote", "promote-full"):
        _require_phase(obj, ("Progressing", "Paused"), "promote")
        digest = _hash(obj)
        step = status.get("currentStep", 0)
        full = action == "promote-full"
        token = f"full-{digest}" if full else f"step-{digest}-{step}"
        what = "full promotion" if full else f"promotion past step {step + 1}"
        return Request({"metadata": {"annotations": {PROMOTE: token}}}, "PromoteRequested", what)
    if action == "pause":
        return Request({"spec": {"paused": True}}, "PauseRequested", "paused")
    if action == "resume":
        return Request({"spec": {"paused": False}}, "ResumeRequested", "resumed")
    if action == "abort":
        _require_phase(obj, ("Progressing", "Paused"), "abort")
        return Request({"metadata": {"annotations": {ABORT: f"abort-{_hash(obj)}"}}}, "AbortRequested", "abort")
    if action == "retry":
        _require_phase(obj, ("RolledBack",), "retry")
        token = f"retry-{_hash(obj)}-{len(status.get('failedCandidates', []))}"
        return Request({"metadata": {"annotations": {RETRY: token}}}, "RetryRequested", "retry")
    raise CliError(f"unknown request {action!r} (one of {', '.join(ACTIONS)})")


def send(api: Any, obj: dict[str, Any], request: Request) -> dict[str, Any]:
    """Make the request and record who asked as an Event on the rollout; returns the patched object."""
    meta = obj["metadata"]
    updated = Rollouts(api).patch(meta["namespace"], meta["name"], request.patch)
    who = whoami(api)
    EventRecorder(api, component="kubectl-modelrollout").emit(
        updated, "Normal", request.reason, f"{request.what}, requested by {who}"
    )
    return updated
