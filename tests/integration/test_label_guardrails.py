"""Label guardrails end to end: the controller process, the real control plane and a real Prometheus.

Given model traffic and a labelling pipeline (a thread adding `model_feedback_total{model,
outcome}` to the exporter Prometheus scrapes, for the model that made each prediction), when a
ModelRollout judges the candidate on a LabelledErrorRate guardrail with a labelDelay, then:
labels that stall leave the guardrail inconclusive and end the step at the deadline plus the
delay, never in a pass; labels for a candidate arriving after its rollback change nothing; a
controller killed while waiting for labels resumes the same wait (the count of record, the
step's rate baseline and its clock are in status).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.api.models import BuiltinMetric
from controller.core.observation import ObservationStatus
from controller.metrics.builtins import PROMQL
from controller.metrics.prometheus import PrometheusProvider
from controller.metrics.templates import render, variables_for
from tests.support.controller import ControllerFactory
from tests.support.controlplane import ControlPlane
from tests.support.prometheus import Exporter, PrometheusServer
from tests.support.world import World, phase, rollout_body

pytestmark = pytest.mark.usefixtures("gateway_api")

FEEDBACK = "model_feedback_total"


class Labelling:
    """A labelling pipeline's counters: every `period` seconds, each model gets the outcomes set
    for it (correct, incorrect). Counters start at 0 and are scraped before the rollout begins, so
    increase() counts from the first label."""

    def __init__(self, exporter: Exporter, models: list[str], *, period: float = 0.5) -> None:
        self.exporter, self.period = exporter, period
        self.rates: dict[str, tuple[int, int]] = {}
        for model in models:
            for outcome in ("correct", "incorrect"):
                exporter.inc_counter(FEEDBACK, {"model": model, "outcome": outcome}, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labelling", daemon=True)
        self._thread.start()

    def set(self, model: str, *, correct: int, incorrect: int = 0) -> None:
        self.rates[model] = (correct, incorrect)

    def add(self, model: str, *, correct: int, incorrect: int = 0) -> None:
        with self.exporter.atomically():
            self.exporter.inc_counter(FEEDBACK, {"model": model, "outcome": "correct"}, correct)
            self.exporter.inc_counter(FEEDBACK, {"model": model, "outcome": "incorrect"}, incorrect)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            for model, (correct, incorrect) in list(self.rates.items()):
                self.add(model, correct=correct, incorrect=incorrect)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def labelling(world: World, exporter: Exporter, prometheus: PrometheusServer) -> Iterator[Labelling]:
    pipeline = Labelling(exporter, [world.incumbent, world.candidate])
    prometheus.wait_for(f'{FEEDBACK}{{model="{world.candidate}"}}', lambda r: len(r) == 2)
    yield pipeline
    pipeline.stop()


@pytest.fixture
def controllers(control_plane: ControlPlane, prometheus: PrometheusServer) -> Iterator[ControllerFactory]:
    """Controllers as the plane's admin (the chart's RBAC is covered by the engine scenarios)."""
    factory = ControllerFactory(control_plane, prometheus_url=prometheus.url)
    yield factory
    factory.stop_all()


def label_rollout(
    world: World, *, deadline: str, delay: str, min_samples: int = 20, **overrides: Any
) -> dict[str, Any]:
    guardrails = [
        {"name": "error-rate", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 0.05}, "minSamples": 5},
        {
            "name": "accuracy",
            "metric": {"builtin": "LabelledErrorRate"},
            "sequential": {"significance": 0.05, "minEffect": 0.5},
            "minSamples": min_samples,
            "labelDelay": delay,
        },
    ]
    analysis = {"interval": "2s", "window": "10s", "progressDeadline": deadline, "inconclusiveLimit": 3}
    steps = {"steps": [{"weight": 20, "hold": "2s"}, {"weight": 50, "hold": "2s"}]}
    body = rollout_body(
        "demo", world.incumbent, world.candidate, analysis=analysis, guardrails=guardrails, canary=steps
    )
    body["spec"].update(overrides)
    return body


def accuracy(obj: dict[str, Any]) -> dict[str, Any]:
    return next((g for g in obj.get("status", {}).get("guardrails", []) if g["name"] == "accuracy"), {})


def test_labels_that_stall_are_inconclusive_and_end_at_the_deadline_plus_the_delay_never_in_a_pass(
    world: World, controllers: ControllerFactory, labelling: Labelling, prometheus: PrometheusServer
) -> None:
    controllers.start("c1", "--namespace", world.namespace)
    labelling.set(world.incumbent, correct=9, incorrect=1)
    world.apply(label_rollout(world, deadline="10s", delay="8s"))
    # A few labels for the candidate, then the pipeline stalls: 6 of the 20 needed.
    at_20 = world.wait(lambda o: o.get("status", {}).get("weights", {}).get("candidate") == 20)
    # increase() over "since the rollout began" counts a jump only after a sample inside that
    # range: add the labels once Prometheus has scraped the candidate's counter at 0 after the
    # start (added at once, they were counted as 0 on a fast machine, seen in CI).
    began = next(d["time"] for d in at_20["status"]["history"] if d["action"] == "start")
    since = datetime.fromisoformat(began).timestamp()
    scraped = f'timestamp({FEEDBACK}{{model="{world.candidate}",outcome="correct"}}) > {since + 1}'
    prometheus.wait_for(scraped, lambda r: len(r) == 1)
    labelling.add(world.candidate, correct=6)

    seen: list[dict[str, Any]] = []
    waiting = world.wait(
        lambda o: seen.append(accuracy(o)) is None and o["status"].get("reason") == "WaitingForLabels", timeout=60
    )
    obj = world.wait(phase("RolledBack"), timeout=90)

    assert re.search(r"accuracy: waiting for labels: \d+ of 20 needed", waiting["status"]["message"])
    assert all(g.get("verdict") != "Pass" for g in seen)
    status = obj["status"]
    assert status["reason"] == "ProgressDeadlineExceeded", status["message"]
    assert status["failedCandidates"][-1]["verdict"] == "Inconclusive"
    assert world.candidate_writes() == [20, 0]
    # increase() extrapolates to the window's edges: about 6.
    assert accuracy(obj)["labels"]["have"] == pytest.approx(6, abs=2)
    # The step waited past the 10s deadline, by up to the 8s labelDelay.
    started = [d for d in status["history"] if d["action"] == "start"][-1]["time"]
    ended = [d for d in status["history"] if d["action"] == "rollback"][-1]["time"]
    assert _seconds_between(started, ended) >= 18
    reasons = [r for _, r, _ in world.events()]
    assert "WaitingForLabels" in reasons and "Promoted" not in reasons


def test_labels_arriving_after_a_rollback_do_not_change_the_verdict(
    world: World, controllers: ControllerFactory, labelling: Labelling, prometheus: PrometheusServer
) -> None:
    controller = controllers.start("c1", "--namespace", world.namespace)
    labelling.set(world.incumbent, correct=19, incorrect=1)
    labelling.set(world.candidate, correct=2, incorrect=2)  # 50% wrong vs 5%
    world.apply(label_rollout(world, deadline="60s", delay="4s"))

    obj = world.wait(phase("RolledBack"), timeout=90)
    assert obj["status"]["reason"] == "GuardrailFailed"
    assert obj["status"]["failedCandidates"][-1]["guardrail"] == "accuracy"
    verdict = {k: obj["status"][k] for k in ("phase", "reason", "guardrails", "failedCandidates", "history")}

    # Late labels, all correct, for the candidate's predictions, then a reconcile (an annotation).
    labelling.set(world.candidate, correct=0)
    labelling.add(world.candidate, correct=5000)
    prometheus.wait_for(
        f'sum({FEEDBACK}{{model="{world.candidate}",outcome="correct"}})', lambda r: float(r[0]["value"][1]) >= 5000
    )
    before = controller.reconciles()
    world.annotate({"example.com/poke": "late-labels"})
    deadline = time.monotonic() + 30
    while controller.reconciles() == before:
        assert time.monotonic() < deadline, "no reconcile after the annotation"
        time.sleep(0.3)
    controller.reconciles_settled()

    after = world.get()["status"]
    assert {k: after[k] for k in verdict} == verdict
    assert world.candidate_writes() == [20, 0]


def test_a_controller_killed_while_waiting_for_labels_resumes_the_same_wait(
    world: World, controllers: ControllerFactory, labelling: Labelling
) -> None:
    first = controllers.start("c1", "--namespace", world.namespace)
    labelling.set(world.incumbent, correct=9, incorrect=1)
    world.apply(label_rollout(world, deadline="60s", delay="3s", min_samples=40))
    world.wait(lambda o: o.get("status", {}).get("weights", {}).get("candidate") == 20)
    labelling.set(world.candidate, correct=1)  # 2 labels/s: 40 take about 20s

    def labels_arriving(o: dict[str, Any]) -> bool:
        return o["status"].get("reason") == "WaitingForLabels" and bool(accuracy(o).get("labels", {}).get("perMinute"))

    waiting = world.wait(labels_arriving)
    # The pipeline pauses while the controller is down, so the new one finds the same wait.
    labelling.set(world.candidate, correct=0)
    first.kill()
    recorded = accuracy(waiting)["labels"]
    controllers.start("c2", "--namespace", world.namespace)

    resumed = world.wait(lambda o: accuracy(o).get("lastEvaluated", "") > accuracy(waiting)["lastEvaluated"])
    status, labels = resumed["status"], accuracy(resumed)["labels"]
    assert status["currentStep"] == 0 and status["reason"] == "WaitingForLabels"
    assert status["stepStarted"] == waiting["status"]["stepStarted"]
    assert labels["since"] == recorded["since"] and labels["sinceHave"] == recorded["sinceHave"]
    assert labels["have"] >= recorded["have"]
    labelling.set(world.candidate, correct=2)
    obj = world.wait(phase("Promoted"), timeout=120)

    assert world.candidate_writes() == [20, 50, 100]
    assert [d["action"] for d in obj["status"]["history"]].count("start") == 1
    assert accuracy(obj)["verdict"] == "Pass" and accuracy(obj)["evidence"]["candidateSamples"] >= 40


def _seconds_between(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def test_the_label_builtins_read_feedback_counters_through_the_real_prometheus(
    exporter: Exporter, prometheus: PrometheusServer
) -> None:
    """LabelledErrorRate and LabelledLoss, as the provider asks them, on counters at 0 first."""
    model = f"m-{uuid.uuid4().hex[:10]}"
    wrong, right = {"model": model, "outcome": "incorrect"}, {"model": model, "outcome": "correct"}
    with exporter.atomically():
        for series in (wrong, right):
            exporter.set_counter(FEEDBACK, series, 0)
        exporter.set_counter("model_feedback_loss_sum", {"model": model}, 0)
        exporter.set_counter("model_feedback_loss_count", {"model": model}, 0)
    prometheus.wait_for(f'count_over_time({FEEDBACK}{{model="{model}"}}[1m]) >= 2', lambda r: len(r) == 2)
    with exporter.atomically():
        exporter.inc_counter(FEEDBACK, right, 85)
        exporter.inc_counter(FEEDBACK, wrong, 15)
        exporter.inc_counter("model_feedback_loss_sum", {"model": model}, 50.0)
        exporter.inc_counter("model_feedback_loss_count", {"model": model}, 200)

    def query(metric: BuiltinMetric, which: str) -> str:
        return render(
            getattr(PROMQL[metric], which),
            variables_for(model, None, "candidate", "d", "1m", rollout="r", incumbent="inc"),
        )

    def ask(metric: BuiltinMetric, which: str) -> float | None:
        with PrometheusProvider(address=prometheus.url, timeout=10, stale_after=300) as provider:
            # One instant for every query: increase() extrapolates by where the window ends.
            observation = provider.scalar(query(metric, which), at=at)
        assert observation.status is ObservationStatus.OK, observation.message
        return observation.value

    for metric in (BuiltinMetric.LABELLED_ERROR_RATE, BuiltinMetric.LABELLED_LOSS):
        prometheus.wait_for(query(metric, "value"), lambda r: bool(r) and float(r[0]["value"][1]) > 0)
    at = datetime.now(UTC)
    rate, errors, total = (ask(BuiltinMetric.LABELLED_ERROR_RATE, w) for w in ("value", "errors", "total"))
    assert rate == pytest.approx(0.15)
    assert errors is not None and total is not None and errors / total == pytest.approx(0.15) and total >= 100 - 1e-9
    assert ask(BuiltinMetric.LABELLED_LOSS, "value") == pytest.approx(0.25)
    assert (ask(BuiltinMetric.LABELLED_LOSS, "samples") or 0) >= 200 - 1e-9
