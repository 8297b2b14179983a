"""Judge benchmark (`make bench-judge`): our sequential rule against peers' methods, no cluster.

Seeded, request-level simulation. Each run draws one stream of candidate requests and one of
incumbent requests (each request an error with probability p1 or p0); every method reads the
same streams, so the methods differ only in how they judge and how long they let the candidate
serve. Counts only, no timing: the same seed gives the same table on any machine.

Methods:
- ours: the real decision core. A loop plays the reconciler: it asks
  `controller.core.engine.analysis_due` whether to analyse, judges the `sequential` guardrail
  with `controller.core.judge.judge` on counts cumulative since the rollout began, hands the
  verdicts to `controller.core.engine.decide`, applies the weights it asks for at once, and
  sleeps its `requeue_after`; traffic flows at the applied weights in between. Steps, holds,
  endStepsEarly and the progress deadline are the engine's, not re-implemented here.
- threshold: Flagger/Argo style: the candidate's error rate over the last interval against a
  bound, rollback at the limit-th failed check (Flagger `threshold`, Argo `failureLimit`), steps
  advance on their holds. For each limit 1..5 the bound is tuned on the null runs to the smallest
  value whose false-rollback rate is not above ours (by failed tests: the threshold has no
  deadline to run out of), and the table shows the limit with the fewest excess bad requests at
  2x: both tunings are in-sample and favour the threshold;
- fixed-sample: Kayenta style: at the end of each step's hold a one-sided two-proportion z-test on
  that step's requests (for pass/fail data the rank test Kayenta runs reduces, asymptotically, to
  it) at the same alpha; fail rolls back.

Two traffic levels, 200 and 20 requests/s; at 20 also ours with a 2-hour progressDeadline, the
remedy when the evidence cannot come within the default one.

Per-segment guardrails (segmentBy) have tables of their own: bench/segments.py.

Wald's SPRT floor: the expected sample size of the one-sample SPRT of p0 against p1 with both
known (an oracle: it knows the incumbent's rate and the size of the regression) at the error
rates ours guarantees (alpha = the rule's significance, beta = judge.PASS_SIGNIFICANCE).
"Continuous" is Wald's approximation, checked at every request; "at the same looks" is that SPRT
simulated on the same candidate streams and checked only once per interval at the first step's
weight (the looks our analyses get while a step waits for evidence: 300 candidate requests apart
at 200 requests/s, where Wald's continuous E[N] at 5x is 101), the floor when the interval's
granularity dominates. For the null cell: the expectation under p0 of the SPRT against
p1 = (1 + minEffect) p0.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import NormalDist

import numpy as np

from bench import segments
from controller.api.models import ModelRolloutSpec, ModelRolloutStatus, Phase, Verdict, Weights
from controller.api.reasons import INCONCLUSIVE, Reason
from controller.core import engine
from controller.core.judge import PASS_SIGNIFICANCE, GuardrailData, Judgement, VariantData, judge
from controller.core.observation import Observation, ObservationStatus

P0 = 0.01  # the incumbent's error rate
MULTIPLIERS = (1.0, 1.5, 2.0, 5.0)
STEPS = ((5, 300), (25, 600), (50, 600))  # (weight %, hold s): the README's schedule without the gate
INTERVAL = 30  # s
DEADLINE = 1800  # s, progressDeadline per step
# At low traffic the evidence needs longer than the default deadline: the remedy, measured too.
LONG_DEADLINE = 7200  # s
# The target is at most 1% false rollbacks: 0.01 is the significance that guarantees it
# (the README's example uses 0.05, which guarantees 5%).
SIGNIFICANCE = 0.01
MIN_EFFECT = 0.5
MIN_SAMPLES = 100
LIMITS = (1, 2, 3, 4, 5)  # failure limits tried for the threshold checker
RATES = (200.0, 20.0)  # requests/s to the model, both variants together (examples/gateway-api.yaml assumes ~200)
ROOT = Path(__file__).resolve().parent.parent
BENCH_MD = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "bench-judge.png"
START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Outcome:
    rolled_back: bool
    time: float  # s from the rollout's start to the verdict
    samples: int  # candidate requests served until the verdict
    excess: float  # candidate errors beyond p0 * samples
    deadline: bool = False  # rolled back at the progress deadline, not by a failed test
    first_conclusive: int | None = None  # candidate samples at the judge's first pass/fail (ours only)
    inconclusive: bool = False  # rolled back without evidence (deadline, budget, data): ours only
    beyond_first: float = 0.0  # excess bad requests after the first step ended
    warning: str | None = None  # the DeadlineTooShort Event of the rollout's first analysis


class Stream:
    """One variant's requests: the positions (1-based) of its errors."""

    def __init__(self, rng: np.random.Generator, length: int, p: float) -> None:
        self.errors = np.flatnonzero(rng.random(length) < p) + 1

    def count(self, n: int) -> int:
        """Errors among the first n requests."""
        return int(np.searchsorted(self.errors, n, side="right"))

    def counts(self, n: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.errors, n, side="right")


def streams(seed: int, p1: float, rate: float, *, longest: float | None = None) -> tuple[Stream, Stream]:
    rng = np.random.default_rng(seed)
    longest = longest or len(STEPS) * (LONG_DEADLINE + INTERVAL)
    n_c = int(rate * longest * max(w for w, _ in STEPS) / 100) + 1
    n_i = int(rate * longest * (100 - min(w for w, _ in STEPS)) / 100) + 1
    return Stream(rng, n_c, p1), Stream(rng, n_i, P0)


def _ok(value: float) -> Observation:
    return Observation(ObservationStatus.OK, value=value)


def rollout_spec(*, early: bool, deadline: int = DEADLINE) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "incumbent": {"name": "v1"},
            "candidate": {"name": "v2"},
            "traffic": {"gatewayAPI": {"httpRoute": "bench"}},
            "canary": {"steps": [{"weight": w, "hold": f"{h}s"} for w, h in STEPS]},
            # errorBudget 0: every step needs a conclusive pass, as before the budget existed (the
            # cautious schedule below measures the defaults, budget included).
            "analysis": {
                "interval": f"{INTERVAL}s",
                "progressDeadline": f"{deadline}s",
                "endStepsEarly": early,
                "errorBudget": 0,
            },
            "guardrails": [
                {
                    "name": "errors",
                    "metric": {"builtin": "ErrorRate"},
                    "minSamples": MIN_SAMPLES,
                    "sequential": {"significance": SIGNIFICANCE, "minEffect": MIN_EFFECT},
                }
            ],
        }
    )


def run_ours(spec: ModelRolloutSpec, cand: Stream, inc: Stream, rate: float) -> Outcome:
    """One rollout through engine.decide, as the reconciler runs it, with an instant router."""
    guardrail = spec.guardrails[0]
    status, now, plane = ModelRolloutStatus(), START, Weights(incumbent=100, candidate=0)
    served_c = served_i = 0.0  # requests so far, fractional between whole ones
    first: int | None = None
    first_step_end: int | None = None
    warning: str | None = None
    analysed = False
    while True:
        nc, ni = int(served_c), int(served_i)
        applied = plane if engine.pair_in_flight(status) is not None else None
        judgements = None
        if engine.analysis_due(spec, status, applied, now):
            data = GuardrailData(
                VariantData(errors=_ok(cand.count(nc)), total=_ok(nc)),
                VariantData(errors=_ok(inc.count(ni)), total=_ok(ni)),
            )
            verdict: Judgement = judge(guardrail, data)
            if first is None and verdict.verdict is not Verdict.INCONCLUSIVE:
                first = nc
            judgements = {guardrail.name: verdict}
        out = engine.decide(
            engine.RolloutInput(spec=spec, status=status, now=now, generation=1, applied=applied, judgements=judgements)
        )
        if judgements is not None and not analysed:
            analysed = True
            warning = next((e.message for e in out.events if e.reason == Reason.DEADLINE_TOO_SHORT), None)
        if first_step_end is None and status.current_step == 0 and out.status.current_step == 1:
            first_step_end = nc
        status = out.status
        for action in out.actions:
            plane = action.weights
            engine.record_weights(status, plane, now=now, generation=1)
        if status.phase in (Phase.PROMOTED, Phase.ROLLED_BACK):
            excess = cand.count(nc) - P0 * nc
            at_first = excess if first_step_end is None else cand.count(first_step_end) - P0 * first_step_end
            return Outcome(
                status.phase is Phase.ROLLED_BACK,
                (now - START).total_seconds(),
                nc,
                excess,
                deadline=status.reason == Reason.PROGRESS_DEADLINE_EXCEEDED,
                first_conclusive=first,
                inconclusive=status.phase is Phase.ROLLED_BACK and status.reason in INCONCLUSIVE,
                beyond_first=excess - at_first,
                warning=warning,
            )
        if out.requeue_after is None:
            raise RuntimeError(f"the engine stopped without a verdict: {status.phase} {status.reason}")
        seconds = out.requeue_after.total_seconds()
        served_c += rate * seconds * plane.candidate / 100
        served_i += rate * seconds * plane.incumbent / 100
        now += timedelta(seconds=seconds)


def hold_looks(rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per interval of the hold schedule: time, cumulative candidate and incumbent requests."""
    times, cs, is_ = [], [], []
    t, nc, ni = 0, 0, 0
    for weight, hold in STEPS:
        for _ in range(hold // INTERVAL):
            t += INTERVAL
            nc += round(rate * INTERVAL * weight / 100)
            ni += round(rate * INTERVAL * (100 - weight) / 100)
            times.append(t)
            cs.append(nc)
            is_.append(ni)
    return np.array(times), np.array(cs), np.array(is_)


def window_rates(cand: Stream, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times, samples, _ = hold_looks(rate)
    errors = cand.counts(samples)
    per = np.diff(np.concatenate(([0], samples)))
    window_errors = np.diff(np.concatenate(([0], errors)))
    rates = np.where(per > 0, window_errors / np.maximum(per, 1), 0.0)
    return times, samples, rates


def run_threshold(cand: Stream, bound: float, limit: int, rate: float) -> Outcome:
    times, samples, rates = window_rates(cand, rate)
    failed = np.flatnonzero(rates > bound)
    end = failed[limit - 1] if len(failed) >= limit else len(times) - 1
    n = int(samples[end])
    return Outcome(len(failed) >= limit, float(times[end]), n, cand.count(n) - P0 * n)


def critical_bound(cand: Stream, limit: int, rate: float) -> float:
    """The smallest bound under which this run is not rolled back: its limit-th largest window rate."""
    _, _, rates = window_rates(cand, rate)
    return float(np.sort(rates)[-limit])


def run_fixed(cand: Stream, inc: Stream, alpha: float, rate: float) -> Outcome:
    z_crit = NormalDist().inv_cdf(1 - alpha)
    t, nc, ni = 0, 0, 0
    for weight, hold in STEPS:
        sc = round(rate * INTERVAL * weight / 100) * (hold // INTERVAL)
        si = round(rate * INTERVAL * (100 - weight) / 100) * (hold // INTERVAL)
        ec, ei = cand.count(nc + sc) - cand.count(nc), inc.count(ni + si) - inc.count(ni)
        t, nc, ni = t + hold, nc + sc, ni + si
        pooled = (ec + ei) / (sc + si)
        se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / sc + 1 / si))
        if (ec / sc - ei / si) / se > z_crit:
            return Outcome(True, t, nc, cand.count(nc) - P0 * nc)
    return Outcome(False, t, nc, cand.count(nc) - P0 * nc)


def _kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def wald_design(multiplier: float) -> tuple[float, float]:
    """(p1 the SPRT is designed for, true p): the oracle's alternative is the true rate."""
    p_true = P0 * multiplier
    return (p_true if multiplier > 1 else P0 * (1 + MIN_EFFECT)), p_true


def wald_expected(multiplier: float, alpha: float, beta: float) -> float:
    """Wald's approximation of the SPRT's expected sample size, H0 p0 against H1 p1."""
    p1, p_true = wald_design(multiplier)
    a, b = math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))
    if p_true > P0:
        return ((1 - beta) * a + beta * b) / _kl(p_true, P0)
    return (alpha * a + (1 - alpha) * b) / -_kl(P0, p1)


def wald_at_looks(cand: Stream, multiplier: float, alpha: float, beta: float, rate: float) -> tuple[int, bool]:
    """Candidate samples at which Wald's SPRT, checked once per interval at the first step's weight
    (the looks a candidate gets while that step waits for evidence), first decides, and whether it
    did within three deadlines (if not, the samples by then)."""
    p1, _ = wald_design(multiplier)
    per_look = round(rate * INTERVAL * STEPS[0][0] / 100)
    samples = per_look * np.arange(1, len(STEPS) * DEADLINE // INTERVAL + 1)
    errors = cand.counts(samples)
    llr = errors * math.log(p1 / P0) + (samples - errors) * math.log((1 - p1) / (1 - P0))
    a, b = math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))
    decided = np.flatnonzero((llr >= a) | (llr <= b))
    return (int(samples[decided[0]]), True) if len(decided) else (int(samples[-1]), False)


def _mean(values: list[tuple[int, bool]]) -> tuple[float, float]:
    """Mean samples, a run that never decided counted at its last (a lower bound), and the share decided."""
    return float(np.mean([n for n, _ in values])), sum(done for _, done in values) / len(values)


@dataclass
class Row:
    method: str
    multiplier: float
    runs: int
    rollback_rate: float
    deadline_rate: float
    excess: float
    minutes: float
    samples: float


def summarise(method: str, multiplier: float, outcomes: list[Outcome]) -> Row:
    return Row(
        method,
        multiplier,
        len(outcomes),
        sum(o.rolled_back for o in outcomes) / len(outcomes),
        sum(o.deadline for o in outcomes) / len(outcomes),
        float(np.mean([o.excess for o in outcomes])),
        float(np.mean([o.time for o in outcomes])) / 60,
        float(np.mean([o.samples for o in outcomes])),
    )


@dataclass
class Table:
    rate: float
    rows: list[Row]
    wald: dict[float, float]
    wald_looks: dict[float, tuple[float, float]]  # (mean samples of the runs that decided, share decided)
    first: dict[float, tuple[float, float]]
    limits: dict[int, tuple[float, float, float]]  # limit -> (bound, false rollbacks, excess at 2x)
    chosen: int
    null_frr: float


OURS = "sequential (ours)"
EARLY = "sequential + endStepsEarly"
LONG = f"sequential + endStepsEarly, progressDeadline {LONG_DEADLINE // 60}m"


def bench(rate: float, null_runs: int, runs: int, seed: int) -> Table:
    specs = {OURS: rollout_spec(early=False), EARLY: rollout_spec(early=True)}
    if rate < RATES[0]:
        specs[LONG] = rollout_spec(early=True, deadline=LONG_DEADLINE)
    cells = {
        m: [streams(seed + 100_000 * i + r, P0 * m, rate) for r in range(null_runs if m == 1.0 else runs)]
        for i, m in enumerate(MULTIPLIERS)
    }
    ours = {(name, m): [run_ours(s, c, i, rate) for c, i in cells[m]] for name, s in specs.items() for m in MULTIPLIERS}
    # The threshold is tuned to our rollbacks by a failed test: it has no deadline of its own (its steps
    # end on their holds), so our deadline rollbacks, reported apart, say nothing about its bound.
    null_frr = max(
        sum(o.rolled_back and not o.deadline for o in ours[(name, 1.0)]) / null_runs for name in (OURS, EARLY)
    )
    limits: dict[int, tuple[float, float, float]] = {}
    outcomes: dict[int, dict[float, list[Outcome]]] = {}
    for limit in LIMITS:
        crit = sorted((critical_bound(c, limit, rate) for c, _ in cells[1.0]), reverse=True)
        bound = crit[min(int(null_frr * len(crit)), len(crit) - 1)]
        outcomes[limit] = {m: [run_threshold(c, bound, limit, rate) for c, _ in cells[m]] for m in MULTIPLIERS}
        frr = sum(o.rolled_back for o in outcomes[limit][1.0]) / null_runs
        limits[limit] = (bound, frr, float(np.mean([o.excess for o in outcomes[limit][2.0]])))
    chosen = min(LIMITS, key=lambda k: limits[k][2])
    rows = [summarise(name, m, o) for (name, m), o in ours.items()]
    for m in MULTIPLIERS:
        rows.append(summarise(f"threshold {limits[chosen][0]:.4f}, limit {chosen}", m, outcomes[chosen][m]))
        rows.append(
            summarise(
                f"fixed-sample z per step, alpha {SIGNIFICANCE:g}",
                m,
                [run_fixed(c, i, SIGNIFICANCE, rate) for c, i in cells[m]],
            )
        )
    wald = {m: wald_expected(m, SIGNIFICANCE, PASS_SIGNIFICANCE) for m in MULTIPLIERS}
    looks = {
        m: _mean([wald_at_looks(c, m, SIGNIFICANCE, PASS_SIGNIFICANCE, rate) for c, _ in cells[m]]) for m in MULTIPLIERS
    }
    first = {
        m: _mean(
            [(o.samples, False) if o.first_conclusive is None else (o.first_conclusive, True) for o in ours[(OURS, m)]]
        )
        for m in MULTIPLIERS
    }
    return Table(rate, rows, wald, looks, first, limits, chosen, null_frr)


# --------------------------------------------------------------------------------------------
# The cautious schedule (issue 16): small first steps, a new user's defaults, 100 and 10 req/s.
# --------------------------------------------------------------------------------------------

CAUTIOUS_STEPS = ((1, 300), (5, 300), (10, 300), (25, 300), (50, 300))
CAUTIOUS_RATES = (100.0, 10.0)
CAUTIOUS_LONGEST = 6 * 3600  # s of traffic drawn per run: more than any rollout here takes


def cautious_spec(deadline: str | None = None) -> ModelRolloutSpec:
    """The README's error-rate guardrail on the cautious schedule; every other setting a default
    (progressDeadline 15m, errorBudget 100, onDeadline Rollback, minSamples 100), unless `deadline`."""
    analysis: dict[str, str] = {"interval": f"{INTERVAL}s"}
    if deadline is not None:
        analysis["progressDeadline"] = deadline
    return ModelRolloutSpec.model_validate(
        {
            "incumbent": {"name": "v1"},
            "candidate": {"name": "v2"},
            "traffic": {"gatewayAPI": {"httpRoute": "bench"}},
            "canary": {"steps": [{"weight": w, "hold": f"{h}s"} for w, h in CAUTIOUS_STEPS]},
            "analysis": analysis,
            "guardrails": [
                {
                    "name": "errors",
                    "metric": {"builtin": "ErrorRate"},
                    "sequential": {"significance": SIGNIFICANCE, "minEffect": MIN_EFFECT},
                }
            ],
        }
    )


def recommended_deadline(warnings: list[str | None]) -> str | None:
    """The largest deadline the start-of-rollout warnings recommend ("... (to at least 80m)")."""
    minutes = [int(m.group(1)) for w in warnings if w and (m := re.search(r"to at least (\d+)m", w))]
    return f"{max(minutes)}m" if minutes else None


@dataclass
class CautiousRow:
    setting: str
    rate: float
    multiplier: float
    outcomes: list[Outcome]


def cautious(rate: float, null_runs: int, runs: int, seed: int) -> tuple[list[CautiousRow], str | None]:
    cells = {
        m: [
            streams(seed + 100_000 * i + r, P0 * m, rate, longest=CAUTIOUS_LONGEST)
            for r in range(null_runs if m == 1.0 else runs)
        ]
        for i, m in enumerate(MULTIPLIERS)
    }
    settings: list[tuple[str, ModelRolloutSpec]] = [("defaults (progressDeadline 15m)", cautious_spec())]
    rows = [CautiousRow(settings[0][0], rate, m, [run_ours(settings[0][1], c, i, rate) for c, i in cells[m]])
            for m in MULTIPLIERS]  # fmt: skip
    recommended = recommended_deadline([o.warning for row in rows for o in row.outcomes])
    if recommended is not None:
        spec = cautious_spec(recommended)
        name = f"defaults, progressDeadline {recommended} (as the warning recommends)"
        rows += [CautiousRow(name, rate, m, [run_ours(spec, c, i, rate) for c, i in cells[m]]) for m in MULTIPLIERS]
    return rows, recommended


def render_cautious(rows: list[CautiousRow], recommended: dict[float, str | None], wald2: float) -> list[str]:
    budget = cautious_spec().analysis.budget
    holds = sum(h for _, h in CAUTIOUS_STEPS) / 60
    lines = [
        "| req/s | setting | p1/p0 | runs | rolled back | by a failed test | inconclusive (deadline) | promoted | "
        "excess bad requests | beyond step 1: p99 | beyond step 1 within budget | minutes to verdict | "
        "warned at the start |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        o = row.outcomes
        n = len(o)
        beyond = [x.beyond_first for x in o]
        lines.append(
            f"| {row.rate:g} | {row.setting} | {row.multiplier:g} | {n} | {_pct(sum(x.rolled_back for x in o) / n)} | "
            f"{_pct(sum(x.rolled_back and not x.inconclusive for x in o) / n)} | "
            f"{_pct(sum(x.inconclusive for x in o) / n)} | {_pct(sum(not x.rolled_back for x in o) / n)} | "
            f"{np.mean([x.excess for x in o]):.1f} | {np.quantile(beyond, 0.99):.1f} | "
            f"{_pct(sum(b <= budget for b in beyond) / n)} | {np.mean([x.time for x in o]) / 60:.1f} | "
            f"{_pct(sum(x.warning is not None for x in o) / n)} |"
        )
    lines += ["", "Against the targets:", ""]

    def cell(rate: float, setting_prefix: str, m: float) -> list[Outcome] | None:
        return next(
            (r.outcomes for r in rows if r.rate == rate and r.multiplier == m and r.setting.startswith(setting_prefix)),
            None,
        )

    def mark(ok: bool) -> str:
        return "met" if ok else "**missed**"

    for rate in CAUTIOUS_RATES:
        setting = "defaults (" if rate == CAUTIOUS_RATES[0] else "defaults, progressDeadline"
        null, two = cell(rate, setting, 1.0), cell(rate, setting, 2.0)
        if null is None or two is None:
            lines.append(f"- {rate:g} req/s: no run with the recommended deadline (no warning recommended one)")
            continue
        frr = sum(x.rolled_back for x in null) / len(null)
        caught = sum(x.rolled_back for x in two) / len(two)
        by_test = sum(x.rolled_back and not x.inconclusive for x in two) / len(two)
        excess2 = float(np.mean([x.excess for x in two]))
        within = min(
            sum(x.beyond_first <= budget for x in o) / len(o)
            for m in MULTIPLIERS
            if (o := cell(rate, setting, m)) is not None
        )
        label = f"{rate:g} req/s" + ("" if rate == CAUTIOUS_RATES[0] else f", progressDeadline {recommended[rate]}")
        lines.append(f"- {label}: false rollbacks {_pct(frr)} (target ≤ 1%: {mark(frr <= 0.01)}); 2x caught "
                     f"{_pct(caught)} (≥ 99%: {mark(caught >= 0.99)}), {_pct(by_test)} by a failed test and "
                     f"{_pct(caught - by_test)} at the deadline; excess at 2x {excess2:.1f} against 2x Wald's "
                     f"continuous floor {2 * wald2:.1f} ({mark(excess2 <= 2 * wald2)}); beyond step 1 within the "
                     f"budget of {budget} in {_pct(within)} of runs at the worst multiplier (≥ 99%: "
                     f"{mark(within >= 0.99)})")  # fmt: skip
        if rate == CAUTIOUS_RATES[0]:
            promoted = [x.time / 60 for x in null if not x.rolled_back]
            minutes = float(np.mean(promoted)) if promoted else math.inf
            lines[-1] += (
                f"; minutes to promote a good candidate {minutes:.1f} against 1.5x the holds, "
                f"{1.5 * holds:.1f} ({mark(minutes <= 1.5 * holds)})"
            )
        else:
            warned = cell(rate, "defaults (", 1.0)
            share = sum(x.warning is not None for x in warned) / len(warned) if warned else 0.0
            lines[-1] += f"; the feasibility warning fired at the first analysis in {_pct(share)} of default runs"
        lines[-1] += "."
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null-runs", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=200, help="runs per regression cell")
    parser.add_argument("--low-traffic-runs", type=int, default=200, help="null and regression runs at 20 req/s")
    parser.add_argument("--cautious-null-runs", type=int, default=1000, help="null runs per rate, cautious schedule")
    parser.add_argument("--cautious-runs", type=int, default=200, help="runs per regression cell, cautious schedule")
    parser.add_argument("--only-cautious", action="store_true", help="skip the original schedule's tables")
    parser.add_argument("--segment-null-runs", type=int, default=4000, help="per-segment bench, equal candidate")
    parser.add_argument("--segment-runs", type=int, default=1000, help="per-segment bench, one segment 3x worse")
    parser.add_argument("--only-segments", action="store_true", help="only the per-segment tables")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--write", action="store_true", help="write the tables into docs/benchmarks.md and the plot")
    args = parser.parse_args(argv)
    started = time.monotonic()
    found_segments, checked = segments.run(null_runs=args.segment_null_runs, runs=args.segment_runs, seed=args.seed)
    segments_text = segments.render(
        found_segments,
        null_runs=args.segment_null_runs,
        runs=args.segment_runs,
        seed=args.seed,
        checked=checked,
        elapsed=time.monotonic() - started,
    )
    print(segments_text)
    if args.write:
        write_doc(segments_text, section=segments.SECTION, intro=segments.INTRO)
    if args.only_segments:
        return 0
    started = time.monotonic()
    rows: list[CautiousRow] = []
    recommended: dict[float, str | None] = {}
    for rate in CAUTIOUS_RATES:
        found, recommended[rate] = cautious(rate, args.cautious_null_runs, args.cautious_runs, args.seed)
        rows += found
    wald2 = (2 * P0 - P0) * wald_expected(2.0, SIGNIFICANCE, PASS_SIGNIFICANCE)
    head = (
        f"p0 = {P0:g}, steps " + ", ".join(f"{w}%" for w, _ in CAUTIOUS_STEPS) + f", each held "
        f"{CAUTIOUS_STEPS[0][1] // 60}m, analysis every {INTERVAL}s; the README's guardrail (sequential, "
        f"significance {SIGNIFICANCE:g}, minEffect {MIN_EFFECT:g}), every other setting a new user's default "
        f"(errorBudget {cautious_spec().analysis.budget}, progressDeadline 15m, onDeadline Rollback, minSamples "
        f"100); seed {args.seed}; {time.monotonic() - started:.0f} s. Wald's SPRT at 2x, continuous: "
        f"{wald2:.1f} excess bad requests."
    )
    cautious_text = "\n".join([head, "", *render_cautious(rows, recommended, wald2)])
    print(cautious_text)
    if args.write:
        write_doc(cautious_text, section=CAUTIOUS_SECTION, intro=CAUTIOUS_INTRO)
    if args.only_cautious:
        return 0
    started = time.monotonic()
    tables = [
        bench(RATES[0], args.null_runs, args.runs, args.seed),
        bench(RATES[1], args.low_traffic_runs, args.low_traffic_runs, args.seed),
    ]
    elapsed = time.monotonic() - started
    text = render(tables, args, elapsed)
    print(text)
    if args.write:
        write_doc(text)
        print(plot(tables[0]))
    return 0


def _pct(x: float) -> str:
    return f"{x:.1%}"


def render_table(t: Table, null_runs: int, runs: int) -> list[str]:
    lines = [
        f"### {t.rate:g} requests/s in all ({null_runs} null runs, {runs} per regression cell)",
        "",
        "| method | p1/p0 | runs | rolled back | of which at the deadline | promoted | excess bad requests | "
        "minutes to verdict | candidate requests |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(t.rows, key=lambda r: (r.multiplier, r.method)):
        lines.append(
            f"| {r.method} | {r.multiplier:g} | {r.runs} | {_pct(r.rollback_rate)} | {_pct(r.deadline_rate)} | "
            f"{_pct(1 - r.rollback_rate)} | {r.excess:.1f} | {r.minutes:.1f} | {r.samples:.0f} |"
        )
    ours2 = next(r for r in t.rows if r.method == OURS and r.multiplier == 2.0)
    lines += [
        "",
        f"Threshold checker, each failure limit with its bound tuned to a false-rollback rate of at most "
        f"{_pct(t.null_frr)} (ours); the table shows limit {t.chosen}, the fewest excess bad requests at 2x:",
        "",
        "| limit | bound | false rollbacks | excess bad requests at 2x | ours: times fewer |",
        "|---|---|---|---|---|",
    ]
    for limit, (bound, frr, excess) in t.limits.items():
        lines.append(f"| {limit} | {bound:.4f} | {_pct(frr)} | {excess:.1f} | {excess / ours2.excess:.2f} |")
    lines += [
        "",
        f"| p1/p0 | Wald SPRT E[N], continuous (alpha {SIGNIFICANCE:g}, beta {PASS_SIGNIFICANCE:g}) | Wald SPRT at the same looks "
        "(share decided) | ours: candidate requests at the first pass/fail (share decided) | ours / continuous | "
        "ours / same looks |",
        "|---|---|---|---|---|---|",
    ]
    for m in MULTIPLIERS:
        (looks, looks_share), (first, first_share) = t.wald_looks[m], t.first[m]
        # Runs that never decided count at their last samples, so those means are lower bounds.
        lo_l, lo_f = ("≥ " if looks_share < 1 else ""), ("≥ " if first_share < 1 else "")
        lines.append(
            f"| {m:g} | {t.wald[m]:.0f} | {lo_l}{looks:.0f} ({_pct(looks_share)}) | {lo_f}{first:.0f} "
            f"({_pct(first_share)}) | {lo_f}{first / t.wald[m]:.2f} | "
            f"{'~' if lo_l or lo_f else ''}{first / looks:.2f} |"
        )
    return lines


def render(tables: list[Table], args: argparse.Namespace, elapsed: float) -> str:
    head = [
        f"p0 = {P0:g}, steps " + ", ".join(f"{w}% for {h // 60}m" for w, h in STEPS) + f", analysis every {INTERVAL}s, "
        f"progressDeadline {DEADLINE // 60}m, errorBudget 0 (every step needs a conclusive pass); sequential rule "
        f"significance {SIGNIFICANCE:g}, minEffect "
        f"{MIN_EFFECT:g}, minSamples {MIN_SAMPLES}; seed {args.seed}; {elapsed:.0f} s.",
    ]
    t = tables[0]
    ours2 = next(r for r in t.rows if r.method == OURS and r.multiplier == 2.0)
    threshold2 = t.limits[t.chosen][2]
    floor = (2 * P0 - P0) * t.wald[2.0]
    floor_looks = (2 * P0 - P0) * t.wald_looks[2.0][0]
    head += [
        "",
        f"Feasibility at 2x, {t.rate:g} requests/s: by Wald's identity a method's mean excess bad requests is "
        f"(p1 - p0) E[N], and Wald's SPRT has the smallest E[N] of any test with its error rates, so no test "
        f"can let through fewer than {floor:.1f} (continuous) or {floor_looks:.1f} (checked at our looks). "
        f"The tuned threshold lets through {threshold2:.1f}; 5x fewer would be {threshold2 / 5:.1f}, "
        f"{threshold2 / 5 / floor:.2f}x the continuous floor and {threshold2 / 5 / floor_looks:.2f}x the "
        f"floor at our looks: below what any test can do when under 1. The most any test could do is "
        f"{threshold2 / floor:.1f}x (continuous) or {threshold2 / floor_looks:.1f}x (same looks) fewer. Ours: "
        f"{ours2.excess:.1f}, "
        f"{threshold2 / ours2.excess:.2f}x fewer.",
    ]
    body = head
    for table, (n0, n1) in zip(
        tables, ((args.null_runs, args.runs), (args.low_traffic_runs, args.low_traffic_runs)), strict=True
    ):
        body += ["", *render_table(table, n0, n1)]
    return "\n".join(body)


SECTION = "## Judge: sequential rule against threshold and fixed-sample checks (`make bench-judge`)"


CAUTIOUS_SECTION = (
    "## Judge on a cautious schedule: error budget, feasibility, a new user's defaults (`make bench-judge`)"
)
CAUTIOUS_INTRO = (
    "Reproduce with `make bench-judge` (bench/judge.py `cautious`: the real engine.decide, as above). "
    '"by a failed test": rolled back on evidence; "inconclusive": at the progress deadline or with the error '
    "budget spent, without evidence either way (failedCandidates[].verdict Inconclusive). Excess bad requests: "
    'the candidate\'s errors beyond what p0 would have given, until the verdict; "beyond step 1" counts only '
    "those after the first step ended (the first step's risk is its weight and hold, before any evidence). "
    '"warned at the start": the DeadlineTooShort Warning Event at the rollout\'s first analysis. At 10 req/s '
    "the runs are repeated with the largest deadline those warnings recommended. Before the error budget, the same "
    "schedule at 100 req/s rolled back 96.4% of good candidates at the 15m deadline (issue 16); at 10 req/s every "
    "candidate."
)


def write_doc(text: str, *, section: str = SECTION, intro: str | None = None) -> None:
    doc = BENCH_MD.read_text()
    if intro is not None:
        body = f"{section}\n\n{intro}\n\n{text}\n"
        pattern = re.compile(re.escape(section) + r".*?(?=\n## |\Z)", re.S)
        doc = pattern.sub(lambda _: body, doc) if section in doc else doc.rstrip("\n") + "\n\n" + body
        BENCH_MD.write_text(doc)
        return
    body = (
        f"{SECTION}\n\n"
        "Reproduce with `make bench-judge` (bench/judge.py; method in its docstring and in "
        'docs/guardrails.md). "rolled back" at p1/p0 = 1 is the false-rollback rate, whether a test failed '
        'the candidate or the progress deadline ran out waiting for evidence ("of which at the deadline"); '
        '"promoted" at p1/p0 > 1 are missed regressions. Excess bad requests: the candidate\'s errors beyond '
        "what p0 would have given, until the verdict. Plot: [bench-judge.png](bench-judge.png).\n\n"
        f"{text}\n"
    )
    pattern = re.compile(re.escape(SECTION) + r".*?(?=\n## |\Z)", re.S)
    doc = pattern.sub(lambda _: body, doc) if SECTION in doc else doc.rstrip("\n") + "\n\n" + body
    BENCH_MD.write_text(doc)


def plot(t: Table) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method in sorted({r.method for r in t.rows}):
        mine = sorted((r for r in t.rows if r.method == method), key=lambda r: r.multiplier)
        xs = [r.multiplier for r in mine]
        axes[0].plot(xs, [r.excess for r in mine], marker="o", label=method)
        axes[1].plot(xs, [r.minutes for r in mine], marker="o", label=method)
    floor = [(m - 1) * P0 * t.wald[m] for m in MULTIPLIERS]
    axes[0].plot(MULTIPLIERS, floor, "k--", label="Wald floor (continuous)")
    looks = [(m - 1) * P0 * t.wald_looks[m][0] for m in MULTIPLIERS]
    axes[0].plot(MULTIPLIERS, looks, "k:", label="Wald floor (same looks)")
    axes[0].set(
        xlabel="p1 / p0",
        ylabel="mean excess bad requests",
        title=f"Harm before the verdict ({t.rate:g} req/s)",
        yscale="symlog",
    )
    axes[1].set(xlabel="p1 / p0", ylabel="mean minutes to verdict", title="Time to verdict")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    return f"wrote {PLOT.relative_to(ROOT)}"


if __name__ == "__main__":
    sys.exit(main())
