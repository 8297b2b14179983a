"""Plain-text views of rollouts: readable without colour, stable enough to snapshot.

Pure functions of the object (as the API server returns it), its Events and the time, so a
terminal test can compare the exact text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from controller.api.duration import format_duration, parse_duration
from controller.api.models import (
    Guardrail,
    GuardrailStatus,
    ModelRollout,
    ModelRolloutSpec,
    ModelRolloutStatus,
    Phase,
    Verdict,
    WebhookType,
)
from controller.api.reasons import Reason
from controller.core import labels
from controller.core.shadow import phase_spec, shadowing


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, indent: str = "") -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [indent + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def age(since: str | datetime | None, now: datetime) -> str:
    if since is None:
        return "-"
    when = datetime.fromisoformat(since.replace("Z", "+00:00")) if isinstance(since, str) else since
    seconds = int((now - when).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _weights(status: dict[str, Any]) -> tuple[str, str]:
    w = status.get("weights") or {}
    return (f"{w['incumbent']}" if "incumbent" in w else "-", f"{w['candidate']}" if "candidate" in w else "-")


def list_rows(items: Sequence[dict[str, Any]], now: datetime, *, wide: bool, all_namespaces: bool) -> str:
    headers = ["NAME", "PHASE", "STEP", "INCUMBENT%", "CANDIDATE%", "INCUMBENT", "CANDIDATE", "AGE"]
    if wide:
        headers += ["REASON", "MESSAGE"]
    if all_namespaces:
        headers = ["NAMESPACE", *headers]
    rows = []
    for obj in items:
        status = obj.get("status") or {}
        inc_w, cand_w = _weights(status)
        row = [
            obj["metadata"]["name"],
            status.get("phase", "Pending"),
            status.get("stepDisplay", "-"),
            inc_w,
            cand_w,
            (status.get("incumbent") or {}).get("name", "-"),
            obj["spec"]["candidate"]["name"],
            age(obj["metadata"].get("creationTimestamp"), now),
        ]
        if wide:
            row += [status.get("reason", "-"), (status.get("message") or "-")[:80]]
        if all_namespaces:
            row = [obj["metadata"]["namespace"], *row]
        rows.append(row)
    return table(headers, rows)


def progress_bar(fraction: float, width: int = 30) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction * 100:.0f}%"


def what_next(spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime) -> str:
    """In words: what the controller will do next, and when."""
    phase = status.phase
    if phase is None or phase is Phase.PENDING:
        return f"waiting for the controller ({status.reason or 'not reconciled yet'})"
    if phase is Phase.PROMOTED:
        return f"nothing: {status.incumbent.name if status.incumbent else 'the candidate'} serves 100%"
    if phase is Phase.ROLLED_BACK:
        return "nothing until spec.candidate changes or `kubectl modelrollout retry`"
    if phase is Phase.PAUSED:
        if status.pause_reason is Reason.PAUSED_BY_USER:
            return "paused by spec.paused: `kubectl modelrollout resume` continues"
        return f"waiting for a human ({status.reason}): `kubectl modelrollout promote` or `abort`"
    in_shadow = shadowing(status)
    real_steps = spec.expanded_steps()
    spec = phase_spec(spec, status)
    steps = spec.expanded_steps()
    index = min(status.current_step or 0, len(steps) - 1)
    step = steps[index]
    parts = []
    if status.step_started is not None:
        elapsed = now - status.step_started
        interval = parse_duration(spec.analysis.interval)
        since = status.last_analysis or status.step_started
        parts.append(f"next analysis in {_until(since + interval, now)}")
        hold_left = parse_duration(step.hold) - elapsed
        if hold_left > timedelta(0):
            held = "shadow's duration ends" if in_shadow else "hold ends"
            parts.append(f"{held} in {format_duration(hold_left)}")
        missing = [g for g in status.guardrails if g.verdict.value != "Pass"]
        after = "promote" if index + 1 == len(steps) else f"step {index + 2} at {steps[index + 1].weight}%"
        if in_shadow:
            after = f"step 1 at {real_steps[0].weight}% (shadow ends)"
        gate = " (manual gate)" if step.manual_gate else ""
        if missing:
            parts.append(f"then {after}{gate} once {', '.join(g.name for g in missing)} pass")
        else:
            parts.append(f"then {after}{gate}")
        deadline = status.step_started + parse_duration(spec.analysis.progress_deadline)
        # A step kept only by label guardrails may wait past the deadline by their labelDelay.
        waiting_for = labels.only_labels_missing(spec, [g.name for g in missing])
        if waiting_for and labels.extension(waiting_for):
            deadline += labels.extension(waiting_for)
            parts.append(f"deadline, extended by labelDelay, in {_until(deadline, now)}")
        else:
            parts.append(f"deadline in {_until(deadline, now)}")
    return "; ".join(parts)


def _webhooks(spec: ModelRolloutSpec, st: ModelRolloutStatus, now: datetime) -> list[str]:
    """Gates still waiting (with their last answer) and each receiver's last delivery."""
    if not spec.webhooks:
        return []
    out = ["", "Webhooks"]
    gates = {g.name: g for g in st.gates if g.candidate_hash == st.candidate_hash}
    box = st.notifications
    receivers = {r.name: r for r in box.receivers} if box is not None else {}
    rows = []
    for hook in spec.webhooks:
        where = hook.url or (
            f"service/{hook.service.name}:{hook.service.port}"
            if hook.service
            else f"secret/{hook.url_secret_ref.name}"
            if hook.url_secret_ref
            else "-"
        )
        if hook.type is WebhookType.NOTIFICATION:
            r = receivers.get(hook.name)
            owed = (
                sum(1 for n in box.outbox if r is not None and n.seq > r.delivered and hook.wants(n.event))
                if box
                else 0
            )
            if r is None or r.last_time is None:
                state = f"{owed} pending" if owed else "nothing sent yet"
            elif r.last_error:
                state = f"failing x{r.failures} ({age(r.last_time, now)} ago): {r.last_error}; {owed} pending"
            else:
                state = f"delivered {r.last_id or '-'} {age(r.last_time, now)} ago, HTTP {r.last_code}; {owed} pending"
        else:
            g = gates.get(hook.name)
            if g is None:
                state = "not asked yet"
            else:
                what = "promotion" if g.step >= len(spec.expanded_steps()) else f"step {g.step + 1}"
                answer = f"HTTP {g.code}" if g.code is not None else (g.message or "no answer yet")
                when = f" {age(g.answered, now)} ago" if g.answered else ""
                state = f"{g.state.value} for {what}: {answer}{when}"
                if g.state.value != "Passed":
                    state += f", waiting since {age(g.since, now)}"
        rows.append([hook.name, hook.type.value, where[:48], state[:100]])
    out.append(table(["NAME", "TYPE", "TARGET", "STATE"], rows, indent="  "))
    if box is not None and box.dropped:
        out.append(f"  {box.dropped} notices dropped undelivered (outbox full)")
    return out


def _until(when: datetime, now: datetime) -> str:
    delta = when - now
    return "now" if delta <= timedelta(0) else format_duration(delta)


def _segments_view(guardrails: Sequence[Guardrail], latest: Mapping[str, GuardrailStatus]) -> list[str]:
    """Per segmented guardrail: how its segments stand, and the worst few with their evidence."""
    out: list[str] = []
    rows = []
    for g in guardrails:
        seg = latest[g.name].segments if g.name in latest else None
        if seg is None:
            continue
        out.append(
            f"  {g.name}: {seg.judged} segments by {seg.label} judged: {seg.passed} pass, {seg.failed} fail, "
            f"{seg.small} small, {seg.other} values in (other); {seg.policy}"
        )
        for s in seg.worst:
            samples = f"{_count(s.candidate_samples)}/{_count(s.incumbent_samples)}"
            rows.append(
                [
                    g.name,
                    f"{seg.label}={s.segment}",
                    s.verdict.value,
                    _num(s.candidate_value),
                    _num(s.incumbent_value),
                    samples,
                    s.message[:70],
                ]
            )
    if not out:
        return []
    out = ["", "Segments", *out]
    if rows:
        out.append(
            table(
                ["GUARDRAIL", "SEGMENT", "VERDICT", "CANDIDATE", "INCUMBENT", "SAMPLES C/I", "DETAIL"],
                rows,
                indent="  ",
            )
        )
    return out


def _shadow_view(spec: ModelRolloutSpec, st: ModelRolloutStatus) -> list[str]:
    """The shadow phase: where it stands, its agreement evidence and what it waits for. The
    comparator shown is the one of record (where the mirror points), not the spec's."""
    sh = st.shadow
    if sh is None:
        if spec.shadow is None:
            return []
        target = f"comparator {spec.shadow.comparator.service}:{spec.shadow.comparator.port}"
        return [f"Shadow:     {spec.shadow.percent}% of requests to be mirrored to {target} before step 1"]
    comparator = sh.comparator or (spec.shadow.comparator if spec.shadow is not None else None)
    target = f"comparator {comparator.service}:{comparator.port}" if comparator is not None else "the comparator"
    read = "-" if sh.mirror_percent is None else f"{sh.mirror_percent}%"
    users = " (the candidate answers no user)" if shadowing(st) else ""
    asked = f"{spec.shadow.percent}% mirrored" if spec.shadow is not None else "mirrored"
    lines = [f"Shadow:     {sh.state.value}: {asked} to {target} (read back {read}){users}"]
    if sh.comparisons is not None:
        rate = "-" if sh.rate is None else f"{sh.rate:.2%}"
        disagreed = "-" if sh.disagreements is None else f"{sh.disagreements:.0f}"
        floor = "" if sh.noise_floor_rate is None else f"; incumbent vs itself {sh.noise_floor_rate:.2%}"
        needs = f"; needs {sh.samples_needed:g} more comparisons" if sh.samples_needed else ""
        lines.append(f"            {sh.comparisons:.0f} compared, {disagreed} disagree ({rate}){floor}{needs}")
    elif shadowing(st):
        lines.append("            no comparisons counted yet (is the comparator running?)")
    return lines


def status_view(obj: dict[str, Any], events: Sequence[dict[str, Any]], now: datetime) -> str:
    try:
        rollout = ModelRollout.model_validate(obj)
    except ValidationError as exc:
        return f"ModelRollout {obj['metadata'].get('name')}: invalid ({exc.error_count()} errors): {exc.errors()[0]['msg']}"
    spec, st, meta = rollout.spec, rollout.status, rollout.metadata
    steps = spec.expanded_steps()
    out: list[str] = []
    observed = st.observed_generation if st.observed_generation is not None else "-"
    out.append(f"ModelRollout {meta.namespace}/{meta.name}   generation {meta.generation} (observed {observed})")
    out.append(f"Phase:      {(st.phase or Phase.PENDING).value} ({st.reason or '-'})")
    if st.message:
        out.append(f"            {st.message}")
    out.append(f"Incumbent:  {st.incumbent.name if st.incumbent else '-'}")
    version = f" ({spec.candidate.version})" if spec.candidate.version else ""
    out.append(f"Candidate:  {spec.candidate.name}{version}")
    if st.weights is not None:
        out.append(f"Weights:    incumbent {st.weights.incumbent}% / candidate {st.weights.candidate}% (read back)")
        out.append(f"Traffic:    {progress_bar(st.weights.candidate / 100)}")
    else:
        out.append("Weights:    - (not read back yet)")
    if st.error_budget is not None:
        eb = st.error_budget
        nxt = "" if eb.next_step is None else f"; next step may cost up to {eb.next_step:g}"
        out.append(
            f"Budget:     {eb.spent:g} of {spec.analysis.budget} excess bad requests spent, {eb.left:g} left{nxt}"
        )
    out += _shadow_view(spec, st)
    out.append(f"Next:       {what_next(spec, st, now)}")
    out.append("")
    out.append("Steps")
    rows = []
    if spec.shadow is not None:
        state = st.shadow.state.value if st.shadow is not None else ""
        mark = ">" if shadowing(st) else ("x" if state in ("Passed", "Skipped") else " ")
        rows.append([mark, "shadow", f"0% ({spec.shadow.percent}% mirrored)", spec.shadow.duration, state])
    for i, step in enumerate(steps):
        done = st.current_step is not None and (i < st.current_step or st.phase is Phase.PROMOTED)
        active = i == st.current_step and st.phase in (Phase.PROGRESSING, Phase.PAUSED) and not shadowing(st)
        mark = ">" if active else ("x" if done else " ")
        rows.append([mark, str(i + 1), f"{step.weight}%", step.hold, "manual" if step.manual_gate else ""])
    out.append(table(["", "#", "WEIGHT", "HOLD", "GATE"], rows, indent="  "))
    out.append("")
    in_force = phase_spec(spec, st)
    out.append("Guardrails (shadow: judged on the mirrored requests)" if shadowing(st) else "Guardrails")
    if in_force.guardrails:
        latest = {g.name: g for g in st.guardrails}
        rows = []
        for g in in_force.guardrails:
            gs = latest.get(g.name)
            if gs is None:
                rows.append([g.name, "-", "-", "-", "-", "-", "not evaluated yet"])
                continue
            ev = gs.evidence
            samples = f"{_count(ev.candidate_samples)}/{_count(ev.incumbent_samples)}"
            detail = gs.message
            if gs.labels is not None and gs.verdict is Verdict.INCONCLUSIVE:
                # Ground truth comes late: what the wait stands on, not the judge's raw message.
                detail = labels.waiting(gs.labels, now)
            elif ev.samples_needed:
                detail += f" (needs {ev.samples_needed:g} more samples)"
            rows.append(
                [
                    g.name,
                    gs.verdict.value,
                    _num(ev.candidate_value),
                    _num(ev.incumbent_value),
                    ev.bound or "-",
                    samples,
                    detail[:90],
                ]
            )
        out.append(
            table(["NAME", "VERDICT", "CANDIDATE", "INCUMBENT", "BOUND", "SAMPLES C/I", "DETAIL"], rows, indent="  ")
        )
        out += _segments_view(in_force.guardrails, latest)
    else:
        out.append("  (none: steps advance on their holds alone)")
    out.extend(_webhooks(spec, st, now))
    if st.history:
        out.append("")
        out.append("Recent decisions")
        rows = [[age(d.time, now), str(d.step + 1), d.action, d.reason, d.message[:90]] for d in st.history[-8:]]
        out.append(table(["AGE", "STEP", "ACTION", "REASON", "MESSAGE"], rows, indent="  "))
    if st.failed_candidates:
        out.append("")
        out.append("Rolled back")
        rows = [
            [f.model.name, f.verdict.value, f.reason, f.guardrail or "-", _num(f.observed), f.threshold or "-"]
            for f in st.failed_candidates[-5:]
        ]
        out.append(table(["CANDIDATE", "VERDICT", "REASON", "GUARDRAIL", "OBSERVED", "BOUND"], rows, indent="  "))
    if events:
        out.append("")
        out.append("Events")
        rows = [
            [
                age(e.get("time"), now),
                str(e.get("type")),
                str(e.get("reason")),
                f"{e.get('message')}" + (f" (x{e['count']})" if e.get("count", 1) > 1 else ""),
            ]
            for e in events[-10:]
        ]
        out.append(table(["AGE", "TYPE", "REASON", "MESSAGE"], rows, indent="  "))
    return "\n".join(out) + "\n"
