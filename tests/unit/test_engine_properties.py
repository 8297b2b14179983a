"""Hypothesis state-machine tests of the rules the decision core keeps, whatever happens.

Random interleavings of analyses (pass, fail, no data, too few samples), time passing, candidate
changes, user pauses and promote requests, with the status going through JSON between
reconciles (as through the API server).
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from controller.api.duration import parse_duration
from controller.api.models import ModelRolloutSpec, Phase, Verdict, Weights
from controller.core.judge import Cause, Judgement
from tests.support.simulator import Simulator

OUTCOMES = {
    "pass": Judgement(Verdict.PASS, "ok"),
    "fail": Judgement(Verdict.FAIL, "bad"),
    "nodata": Judgement(Verdict.INCONCLUSIVE, "no series", cause=Cause.NO_DATA),
    "error": Judgement(Verdict.INCONCLUSIVE, "timeout", cause=Cause.ERROR),
    "few": Judgement(Verdict.INCONCLUSIVE, "10 of 100", cause=Cause.INSUFFICIENT),
}
WEIGHTS = [5, 20, 50, 80]


def make_spec(candidate: str, *, paused: bool = False, gate: bool = False) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "incumbent": {"name": "m0"},
            "candidate": {"name": candidate},
            "traffic": {"gatewayAPI": {"httpRoute": "r"}},
            "canary": {"steps": [{"weight": w, "hold": "1m", "manualGate": gate and w == 20} for w in WEIGHTS]},
            "analysis": {
                "interval": "20s",
                "progressDeadline": "5m",
                "inconclusiveLimit": 4,
                "failureLimit": 1,
                # Odd candidates end steps on their first pass (evidence-driven), even ones hold.
                "endStepsEarly": int(candidate[1:]) % 2 == 1,
            },
            "guardrails": [
                {"name": "a", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 0.1}},
                {
                    "name": "b",
                    "metric": {"builtin": "LatencyP99"},
                    "relative": {"maxRatio": 1.2},
                    "critical": False,
                    "failureTolerance": 1,
                },
            ],
            "paused": paused,
        }
    )


class Rollouts(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.candidate = "m1"
        self.gate = False
        self.paused = False
        self.outcomes = {"a": "pass", "b": "pass"}
        self.sim = Simulator(make_spec(self.candidate), judge=lambda name, _: OUTCOMES[self.outcomes[name]])
        self.rolled_back: set[str] = set()
        self.judged: list[tuple[str, dict[str, str]]] = []
        self.promotions = 0
        self.crashed = False

    def _reconcile(self, *, crash: bool = False) -> None:
        before = self.sim.analyses
        phase_before = self.sim.status.phase
        out = self.sim.reconcile(crash_before_acting=crash)
        self.crashed = crash
        if self.sim.analyses > before:
            self.judged.append((self.candidate, dict(self.outcomes)))
        if (
            self.sim.status.phase is Phase.PROMOTED
            and phase_before is not Phase.PROMOTED
            and self.sim.status.reason != "Adopted"
        ):
            self.promotions += 1
            self._check_promotion()
        if self.sim.status.phase is Phase.ROLLED_BACK:
            self.rolled_back.add(self.candidate)
        self.last_requeue = out.requeue_after

    def _check_promotion(self) -> None:
        # Promotion only when every guardrail passed at the last step, or a human promoted.
        if self.sim.status.reason == "Promoted" and self.sim.status.history[-2:][0].reason != "PromotedByUser":
            assert all(g.verdict is Verdict.PASS for g in self.sim.status.guardrails)
            assert self.judged and self.judged[-1][1] == {"a": "pass", "b": "pass"}

    @rule(a=st.sampled_from(sorted(OUTCOMES)), b=st.sampled_from(sorted(OUTCOMES)))
    def set_outcomes(self, a: str, b: str) -> None:
        self.outcomes = {"a": a, "b": b}

    @rule(seconds=st.sampled_from([1, 5, 20, 30, 60]))
    def time_passes_then_reconcile(self, seconds: int) -> None:
        self.sim.advance(seconds)
        self._reconcile()

    @rule(times=st.integers(1, 30))
    def controller_runs_for_a_while(self, times: int) -> None:
        """Sleep each requeue time and reconcile, as the controller does, `times` times."""
        self._reconcile()
        for _ in range(times):
            if self.last_requeue is None:
                return
            self.sim.clock.advance(self.last_requeue)
            self._reconcile()

    @rule(seconds=st.sampled_from([1, 20, 60]))
    def controller_killed_between_status_and_route_writes(self, seconds: int) -> None:
        self.sim.advance(seconds)
        self._reconcile(crash=True)

    @rule(gate=st.booleans())
    def new_candidate(self, gate: bool) -> None:
        self.candidate = f"m{int(self.candidate[1:]) + 1}"
        self.gate = gate
        self.sim.spec = make_spec(self.candidate, paused=self.paused, gate=gate)
        self._reconcile()
        assert self.sim.status.guardrails == []
        assert self.sim.status.current_step in (0, None)

    @rule(paused=st.booleans())
    def user_pause(self, paused: bool) -> None:
        self.paused = paused
        self.sim.spec = make_spec(self.candidate, paused=paused, gate=self.gate)
        self._reconcile()

    @precondition(lambda self: self.sim.status.phase is Phase.PAUSED)
    @rule()
    def promote_request(self) -> None:
        self.sim.promote_request = f"req-{len(self.sim.writes)}-{self.sim.clock.now().timestamp()}"
        self._reconcile()

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def weight_never_exceeds_the_current_step(self) -> None:
        st_ = self.sim.status
        weights = self.sim.plane.get(self.candidate)
        if weights is None or st_.phase is Phase.PROMOTED:
            return
        step = st_.current_step or 0
        assert weights.candidate <= WEIGHTS[step], (weights, step)

    @invariant()
    def no_step_is_skipped(self) -> None:
        for name in {n for n, _ in self.sim.writes}:
            written = [w for w in self.sim.candidate_weights(name) if w not in (0, 100)]
            # Each candidate's weights climb the steps in order, one at a time (a repeat is a re-apply).
            distinct = [w for i, w in enumerate(written) if i == 0 or written[i - 1] != w]
            assert distinct == WEIGHTS[: len(distinct)], (name, written)

    @invariant()
    def rollback_is_sticky(self) -> None:
        if self.candidate in self.rolled_back:
            assert self.sim.status.phase is Phase.ROLLED_BACK
            if not self.crashed:
                assert self.sim.plane.get(self.candidate, Weights(incumbent=100, candidate=0)).candidate == 0

    @invariant()
    def every_wait_ends_by_the_deadline(self) -> None:
        st_ = self.sim.status
        if st_.phase is Phase.PROGRESSING and st_.step_started is not None:
            overdue = self.sim.clock.now() - st_.step_started
            # A reconcile can come late by one jump of the test's clock (at most 60 s here).
            assert overdue <= parse_duration("5m") + timedelta(seconds=60)


TestRollouts = Rollouts.TestCase
TestRollouts.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
