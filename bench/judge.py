"""Judge benchmark (`make bench-judge`): our sequential rule against peers' methods, no cluster.

Seeded, request-level simulation. Each run draws one stream of candidate requests and one of
incumbent requests (each request an error with probability p1 or p0); every method reads the
same streams, so the methods differ only in how they judge and how long they let the candidate
serve. Counts only, no timing: the same seed gives the same table on any machine.

Methods:
- ours: the `sequential` rule through controller.core.judge.judge, on counts cumulative since the
  rollout began, evaluated at every interval; the step schedule as the engine runs it (a step ends
  after its hold once the guardrail passed at the step's weight; with endStepsEarly as soon as it
  passed; a FAIL rolls back; a step past progressDeadline rolls back);
- threshold: Flagger/Argo style: the candidate's error rate in the last interval against a bound,
  rollback at the FAILURE_LIMIT-th failed check, steps advance on their holds; the bound is tuned
  on the null runs to the smallest value whose false-rollback rate is not above ours;
- fixed-sample: Kayenta style: at the end of each step's hold a one-sided two-proportion z-test on
  that step's requests (candidate vs incumbent) at the same alpha; fail rolls back.

Wald's SPRT floor: the expected sample size of the one-sample SPRT of p0 against p1 (p0 known) at
alpha = the rule's significance and beta = 1%; for the null cell, the expectation under p0 against
p1 = (1 + minEffect) p0.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from controller.api.models import Guardrail, Verdict
from controller.core.judge import GuardrailData, VariantData, judge
from controller.metrics.base import Observation, ObservationStatus

RATE = 200.0  # requests/s to the model, both variants together (examples/gateway-api.yaml assumes ~200)
P0 = 0.01  # the incumbent's error rate
MULTIPLIERS = (1.0, 1.5, 2.0, 5.0)
STEPS = ((5, 300), (25, 600), (50, 600))  # (weight %, hold s): the README's schedule without the gate
INTERVAL = 30  # s
DEADLINE = 1800  # s, progressDeadline per step
SIGNIFICANCE = 0.05
MIN_EFFECT = 0.5
MIN_SAMPLES = 100
FAILURE_LIMIT = 2  # the threshold checker rolls back at its 2nd failed check (Flagger `threshold: 2`)
BETA = 0.01
ROOT = Path(__file__).resolve().parent.parent
BENCH_MD = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "bench-judge.png"


@dataclass
class Outcome:
    rolled_back: bool
    time: float  # s from the rollout's start to the verdict
    samples: int  # candidate requests served until the verdict
    excess: float  # candidate errors beyond p0 * samples
    first_conclusive: int | None = None  # candidate samples at the judge's first pass/fail (ours only)


def _ok(value: float) -> Observation:
    return Observation(ObservationStatus.OK, value=value)


def _streams(seed: int, p1: float) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error counts of the candidate's and the incumbent's request streams."""
    rng = np.random.default_rng(seed)
    longest = len(STEPS) * DEADLINE
    n_c = int(RATE * longest * max(w for w, _ in STEPS) / 100) + 1
    n_i = int(RATE * longest * (100 - min(w for w, _ in STEPS)) / 100) + 1
    cand = np.concatenate(([0], np.cumsum(rng.random(n_c) < p1, dtype=np.int64)))
    inc = np.concatenate(([0], np.cumsum(rng.random(n_i) < P0, dtype=np.int64)))
    return cand, inc


def _per_interval(weight: int) -> tuple[int, int]:
    c = round(RATE * INTERVAL * weight / 100)
    return c, round(RATE * INTERVAL) - c


def run_ours(guardrail: Guardrail, cand: np.ndarray, inc: np.ndarray, *, early: bool) -> Outcome:
    t, nc, ni, step, step_start = 0, 0, 0, 0, 0
    first: int | None = None
    while True:
        t += INTERVAL
        dc, di = _per_interval(STEPS[step][0])
        nc, ni = nc + dc, ni + di
        ce = int(cand[nc])
        data = GuardrailData(
            VariantData(errors=_ok(ce), total=_ok(nc)), VariantData(errors=_ok(int(inc[ni])), total=_ok(ni))
        )
        verdict = judge(guardrail, data).verdict
        if first is None and verdict is not Verdict.INCONCLUSIVE:
            first = nc
        excess = ce - P0 * nc
        if verdict is Verdict.FAIL:
            return Outcome(True, t, nc, excess, first)
        elapsed = t - step_start
        if verdict is Verdict.PASS and (early or elapsed >= STEPS[step][1]):
            step, step_start = step + 1, t
            if step == len(STEPS):
                return Outcome(False, t, nc, excess, first)
        elif elapsed >= DEADLINE:
            return Outcome(True, t, nc, excess, first)


def threshold_windows(cand: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per interval of the fixed schedule: time, cumulative candidate samples, window error rate."""
    times, samples, rates = [], [], []
    t, nc = 0, 0
    for weight, hold in STEPS:
        dc, _ = _per_interval(weight)
        for _ in range(hold // INTERVAL):
            t += INTERVAL
            rate = (cand[nc + dc] - cand[nc]) / dc
            nc += dc
            times.append(t)
            samples.append(nc)
            rates.append(rate)
    return np.array(times), np.array(samples), np.array(rates)


def run_threshold(cand: np.ndarray, bound: float) -> Outcome:
    times, samples, rates = threshold_windows(cand)
    failed = np.flatnonzero(rates > bound)
    end = failed[FAILURE_LIMIT - 1] if len(failed) >= FAILURE_LIMIT else len(times) - 1
    n = int(samples[end])
    return Outcome(len(failed) >= FAILURE_LIMIT, float(times[end]), n, float(cand[n] - P0 * n))


def critical_bound(cand: np.ndarray) -> float:
    """The smallest bound under which this run is not rolled back: its FAILURE_LIMIT-th largest window rate."""
    _, _, rates = threshold_windows(cand)
    return float(np.sort(rates)[-FAILURE_LIMIT])


def run_fixed(cand: np.ndarray, inc: np.ndarray, alpha: float) -> Outcome:
    z_crit = NormalDist().inv_cdf(1 - alpha)
    t, nc, ni = 0, 0, 0
    for weight, hold in STEPS:
        dc, di = _per_interval(weight)
        sc, si = dc * (hold // INTERVAL), di * (hold // INTERVAL)
        ec, ei = int(cand[nc + sc] - cand[nc]), int(inc[ni + si] - inc[ni])
        t, nc, ni = t + hold, nc + sc, ni + si
        pooled = (ec + ei) / (sc + si)
        se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / sc + 1 / si))
        if (ec / sc - ei / si) / se > z_crit:
            return Outcome(True, t, nc, float(cand[nc] - P0 * nc))
    return Outcome(False, t, nc, float(cand[nc] - P0 * nc))


def _kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def wald_expected(p_true: float, alpha: float, beta: float) -> float:
    """Wald's approximation of the SPRT's expected sample size, H0 p0 against H1 p1."""
    a, b = math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))
    if p_true > P0:
        return ((1 - beta) * a + beta * b) / _kl(p_true, P0)
    p1 = (1 + MIN_EFFECT) * P0
    return (alpha * a + (1 - alpha) * b) / -_kl(P0, p1)


@dataclass
class Row:
    method: str
    multiplier: float
    runs: int
    rollback_rate: float
    excess: float
    minutes: float
    samples: float


def summarise(method: str, multiplier: float, outcomes: list[Outcome]) -> Row:
    return Row(
        method,
        multiplier,
        len(outcomes),
        sum(o.rolled_back for o in outcomes) / len(outcomes),
        float(np.mean([o.excess for o in outcomes])),
        float(np.mean([o.time for o in outcomes])) / 60,
        float(np.mean([o.samples for o in outcomes])),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null-runs", type=int, default=500)
    parser.add_argument("--runs", type=int, default=200, help="runs per regression cell")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md and the plot")
    args = parser.parse_args(argv)
    started = time.monotonic()
    guardrail = Guardrail.model_validate(
        {
            "name": "errors",
            "metric": {"builtin": "ErrorRate"},
            "minSamples": MIN_SAMPLES,
            "sequential": {"significance": SIGNIFICANCE, "minEffect": MIN_EFFECT},
        }
    )
    streams = {
        m: [_streams(args.seed + 100_000 * i + r, P0 * m) for r in range(args.null_runs if m == 1.0 else args.runs)]
        for i, m in enumerate(MULTIPLIERS)
    }
    ours: dict[tuple[str, float], list[Outcome]] = {}
    for m, runs in streams.items():
        ours[("sequential (ours)", m)] = [run_ours(guardrail, c, i, early=False) for c, i in runs]
        ours[("sequential + endStepsEarly", m)] = [run_ours(guardrail, c, i, early=True) for c, i in runs]
    null_frr = max(
        sum(o.rolled_back for o in ours[(k, 1.0)]) / args.null_runs
        for k in ("sequential (ours)", "sequential + endStepsEarly")
    )
    crit = sorted((critical_bound(c) for c, _ in streams[1.0]), reverse=True)
    bound = crit[min(int(null_frr * len(crit)), len(crit) - 1)]
    rows: list[Row] = []
    for (method, m), outcomes in ours.items():
        rows.append(summarise(method, m, outcomes))
    for m, runs in streams.items():
        rows.append(
            summarise(f"threshold {bound:.4f}, limit {FAILURE_LIMIT}", m, [run_threshold(c, bound) for c, _ in runs])
        )
        rows.append(
            summarise(
                f"fixed-sample z per step, alpha {SIGNIFICANCE:g}", m, [run_fixed(c, i, SIGNIFICANCE) for c, i in runs]
            )
        )
    wald = {m: wald_expected(P0 * m, SIGNIFICANCE, BETA) for m in MULTIPLIERS}
    first = {
        m: float(
            np.mean(
                [o.first_conclusive for o in ours[("sequential (ours)", m)] if o.first_conclusive is not None]
                or [math.nan]
            )
        )
        for m in MULTIPLIERS
    }
    elapsed = time.monotonic() - started
    table = render(rows, wald, first, args, elapsed)
    print(table)
    if args.write:
        write_doc(table)
        print(plot(rows))
    return 0


def render(
    rows: list[Row], wald: dict[float, float], first: dict[float, float], args: argparse.Namespace, elapsed: float
) -> str:
    lines = [
        f"p0 = {P0:g}, {RATE:g} requests/s in all, steps "
        + ", ".join(f"{w}% for {h // 60}m" for w, h in STEPS)
        + f", analysis every {INTERVAL}s, progressDeadline {DEADLINE // 60}m; sequential rule significance "
        f"{SIGNIFICANCE:g}, minEffect {MIN_EFFECT:g}, minSamples {MIN_SAMPLES}; {args.null_runs} null runs, "
        f"{args.runs} per regression cell, seed {args.seed}; {elapsed:.0f} s.",
        "",
        "| method | p1/p0 | runs | rolled back | promoted | excess bad requests | minutes to verdict | candidate requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r.multiplier, r.method)):
        lines.append(
            f"| {r.method} | {r.multiplier:g} | {r.runs} | {r.rollback_rate:.1%} | {1 - r.rollback_rate:.1%} | "
            f"{r.excess:.1f} | {r.minutes:.1f} | {r.samples:.0f} |"
        )
    lines += [
        "",
        "| p1/p0 | Wald SPRT E[N] (alpha "
        f"{SIGNIFICANCE:g}, beta {BETA:g}) | ours: candidate requests at the first pass/fail | ratio |",
        "|---|---|---|---|",
    ]
    for m in MULTIPLIERS:
        lines.append(f"| {m:g} | {wald[m]:.0f} | {first[m]:.0f} | {first[m] / wald[m]:.2f} |")
    return "\n".join(lines)


SECTION = "## Judge: sequential rule against threshold and fixed-sample checks (`make bench-judge`)"


def write_doc(table: str) -> None:
    text = BENCH_MD.read_text()
    body = (
        f"{SECTION}\n\n"
        "Reproduce with `make bench-judge` (bench/judge.py; method in its docstring and in "
        'docs/guardrails.md). "rolled back" at p1/p0 = 1 is the false-rollback rate; "promoted" at '
        "p1/p0 > 1 are missed regressions. Excess bad requests: the candidate's errors beyond what p0 "
        "would have given, until the verdict. Plot: [bench-judge.png](bench-judge.png).\n\n"
        f"{table}\n"
    )
    pattern = re.compile(re.escape(SECTION) + r".*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _: body, text) if SECTION in text else text.rstrip("\n") + "\n\n" + body
    BENCH_MD.write_text(text)


def plot(rows: list[Row]) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method in sorted({r.method for r in rows}):
        mine = sorted((r for r in rows if r.method == method), key=lambda r: r.multiplier)
        xs = [r.multiplier for r in mine]
        axes[0].plot(xs, [r.excess for r in mine], marker="o", label=method)
        axes[1].plot(xs, [r.minutes for r in mine], marker="o", label=method)
    axes[0].set(xlabel="p1 / p0", ylabel="mean excess bad requests", title="Harm before the verdict")
    axes[1].set(xlabel="p1 / p0", ylabel="mean minutes to verdict", title="Time to verdict")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    return f"wrote {PLOT.relative_to(ROOT)}"


if __name__ == "__main__":
    sys.exit(main())
