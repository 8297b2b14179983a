"""Label-delay benchmark (part of `make bench-judge`): the sequential rule on delayed ground truth.

Seeded, prediction-level simulation, counts only (the same seed gives the same table anywhere).
Each run draws the candidate's and the incumbent's predictions, each wrong with probability p1
or p0, at a fixed rate of predictions per second split by the applied weights. The label of a
prediction made at t arrives at t + delay. A loop plays the reconciler exactly as
bench/judge.py's does: `engine.analysis_due`, then `judge` on the LabelledErrorRate sequential
guardrail with the labelled counts since the rollout began (only predictions made before
now - delay), then `engine.decide` (its label waits: past the hold, up to progressDeadline +
labelDelay, the last step until its own predictions had labelDelay), weights applied at once.

Per label delay of 0, 1 and 5 analysis intervals: the false-rollback rate at p1 = p0 (by a failed
test, and at the deadline without evidence), the share of 2x regressions rolled back, and the
excess wrong predictions served until the verdict (labelled or not) against the no-delay case.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from bench.judge import START, Stream, write_doc
from controller.api.models import ModelRolloutSpec, ModelRolloutStatus, Phase, Weights
from controller.api.reasons import INCONCLUSIVE, Reason
from controller.core import engine
from controller.core.judge import GuardrailData, VariantData, judge
from controller.core.observation import Observation, ObservationStatus

P0 = 0.05  # the incumbent's share of wrong predictions (accuracy 0.95)
MULTIPLIERS = (1.0, 2.0)
STEPS = ((5, 300), (25, 600), (50, 600))  # the README's schedule, as bench/judge.py
INTERVAL = 30  # s
DEADLINE = 1800  # s
DELAYS = (0, 1, 5)  # analysis intervals
RATE = 20.0  # predictions/s, both variants together
SIGNIFICANCE = 0.01
MIN_EFFECT = 0.5
MIN_SAMPLES = 100
LONGEST = len(STEPS) * (DEADLINE + max(DELAYS) * INTERVAL + INTERVAL)

SECTION = "## Judge on delayed labels: the sequential rule when ground truth comes late (`make bench-judge`)"
INTRO = (
    "Reproduce with `make bench-judge` (bench/labels.py: the real engine.decide and judge, as above, on a "
    "LabelledErrorRate sequential guardrail whose labels arrive `labelDelay` after each prediction; "
    'docs/labels.md). "false rollbacks": rolled back by a failed test at p1 = p0 (the rule\'s guarantee is '
    'at most its significance); "at the deadline": rolled back without evidence, past progressDeadline + '
    'labelDelay (never a pass); "caught": 2x regressions rolled back. Excess wrong predictions: the '
    "candidate's wrong predictions beyond what p0 would have given, until the verdict, labelled or not. At "
    "p1 = p0 the share rolled back at the deadline is that of good candidates whose evidence did not come "
    "within it; it does not grow with the delay, since the step may wait progressDeadline + labelDelay."
)


@dataclass
class Outcome:
    rolled_back: bool
    failed_test: bool
    at_deadline: bool
    minutes: float
    excess: float


def _ok(value: float) -> Observation:
    return Observation(ObservationStatus.OK, value=value)


def spec(delay_s: int) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "incumbent": {"name": "v1"},
            "candidate": {"name": "v2"},
            "traffic": {"gatewayAPI": {"httpRoute": "bench"}},
            "canary": {"steps": [{"weight": w, "hold": f"{h}s"} for w, h in STEPS]},
            "analysis": {"interval": f"{INTERVAL}s", "progressDeadline": f"{DEADLINE}s"},
            "guardrails": [
                {
                    "name": "accuracy",
                    "metric": {"builtin": "LabelledErrorRate"},
                    "minSamples": MIN_SAMPLES,
                    "labelDelay": f"{delay_s}s",
                    "sequential": {"significance": SIGNIFICANCE, "minEffect": MIN_EFFECT},
                }
            ],
        }
    )


def run(rollout: ModelRolloutSpec, delay_s: float, cand: Stream, inc: Stream) -> Outcome:
    guardrail = rollout.guardrails[0]
    status, now, plane = ModelRolloutStatus(), START, Weights(incumbent=100, candidate=0)
    served_c = served_i = 0.0
    # (seconds since start, candidate predictions, incumbent predictions) after each sleep.
    served: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]
    while True:
        nc = int(served_c)
        elapsed = (now - START).total_seconds()
        applied = plane if engine.pair_in_flight(status) is not None else None
        judgements = None
        if engine.analysis_due(rollout, status, applied, now):
            lc, li = _labelled(served, elapsed - delay_s)
            data = GuardrailData(
                VariantData(errors=_ok(cand.count(lc)), total=_ok(lc)),
                VariantData(errors=_ok(inc.count(li)), total=_ok(li)),
            )
            judgements = {guardrail.name: judge(guardrail, data)}
        out = engine.decide(
            engine.RolloutInput(
                spec=rollout, status=status, now=now, generation=1, applied=applied, judgements=judgements
            )
        )
        status = out.status
        for action in out.actions:
            plane = action.weights
            engine.record_weights(status, plane, now=now, generation=1)
        if status.phase in (Phase.PROMOTED, Phase.ROLLED_BACK):
            back = status.phase is Phase.ROLLED_BACK
            return Outcome(
                back,
                back and status.reason == Reason.GUARDRAIL_FAILED,
                back and status.reason in INCONCLUSIVE,
                elapsed / 60,
                cand.count(nc) - P0 * nc,
            )
        if out.requeue_after is None:
            raise RuntimeError(f"the engine stopped without a verdict: {status.phase} {status.reason}")
        seconds = out.requeue_after.total_seconds()
        served_c += RATE * seconds * plane.candidate / 100
        served_i += RATE * seconds * plane.incumbent / 100
        now += timedelta(seconds=seconds)
        served.append(((now - START).total_seconds(), served_c, served_i))


def _labelled(served: list[tuple[float, float, float]], until: float) -> tuple[int, int]:
    """Predictions made by `until` (linear between the recorded points): those labelled now."""
    if until <= 0:
        return 0, 0
    for (t0, c0, i0), (t1, c1, i1) in itertools.pairwise(served):
        if t0 <= until <= t1:
            share = 0.0 if t1 == t0 else (until - t0) / (t1 - t0)
            return int(c0 + share * (c1 - c0)), int(i0 + share * (i1 - i0))
    _, c, i = served[-1]
    return int(c), int(i)


def cell(delay: int, multiplier: float, runs: int, seed: int) -> list[Outcome]:
    rollout = spec(delay * INTERVAL)
    outcomes = []
    for r in range(runs):
        rng = np.random.default_rng([seed, int(multiplier * 100), r])
        n_c = int(RATE * LONGEST * max(w for w, _ in STEPS) / 100) + 1
        n_i = int(RATE * LONGEST) + 1
        cand, inc = Stream(rng, n_c, P0 * multiplier), Stream(rng, n_i, P0)
        outcomes.append(run(rollout, delay * INTERVAL, cand, inc))
    return outcomes


def _pct(x: float) -> str:
    return f"{x:.1%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null-runs", type=int, default=500)
    parser.add_argument("--runs", type=int, default=200, help="runs per regression cell")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)
    started = time.monotonic()
    lines = [
        "| label delay | p1/p0 | runs | false rollbacks / caught | at the deadline | promoted | excess wrong "
        "predictions | vs no delay | minutes to verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    baseline: dict[float, float] = {}
    for delay in DELAYS:
        for m in MULTIPLIERS:
            outcomes = cell(delay, m, args.null_runs if m == 1.0 else args.runs, args.seed)
            n = len(outcomes)
            excess = float(np.mean([o.excess for o in outcomes]))
            baseline.setdefault(m, excess)
            failed = sum(o.failed_test for o in outcomes) / n
            lines.append(
                f"| {delay} x {INTERVAL}s | {m:g} | {n} | {_pct(failed)} | "
                f"{_pct(sum(o.at_deadline for o in outcomes) / n)} | "
                f"{_pct(sum(not o.rolled_back for o in outcomes) / n)} | {excess:.1f} | "
                f"{excess - baseline[m]:+.1f} | {np.mean([o.minutes for o in outcomes]):.1f} |"
            )
    head = (
        f"p0 = {P0:g} wrong predictions (accuracy {1 - P0:g}), {RATE:g} predictions/s, every one labelled; steps "
        + ", ".join(f"{w}% for {h // 60}m" for w, h in STEPS)
        + f", analysis every {INTERVAL}s, progressDeadline {DEADLINE // 60}m; LabelledErrorRate sequential rule "
        f"significance {SIGNIFICANCE:g}, minEffect {MIN_EFFECT:g}, minSamples {MIN_SAMPLES}; seed {args.seed}; "
        f"{time.monotonic() - started:.0f} s."
    )
    text = "\n".join([head, "", *lines])
    print(text)
    if args.write:
        write_doc(text, section=SECTION, intro=INTRO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
