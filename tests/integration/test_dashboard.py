"""`kubectl modelrollout dashboard` in a real browser, while the controller runs real rollouts.

Given the controller on the real control plane with model traffic in Prometheus, a second
Prometheus scraping the controller's own /metrics, and the dashboard (the installed plugin, as a
user runs it) reading that Prometheus: Debian's Chromium, headless, opens the list and a rollout's
page, clicks promote at a manual gate, and follows another rollout's rollback as it happens, through
the page's event stream (no reload). Then each query of the chart's Grafana dashboard returns data
from the Prometheus that scraped that controller. DASHBOARD_SCREENSHOTS=<dir> saves the pictures
of docs/dashboard.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from controller.api.annotations import PROMOTE
from tests.support.browser import Browser
from tests.support.chart import CHART, create_namespace
from tests.support.controller import ControllerFactory, ControllerProcess
from tests.support.controlplane import ControlPlane
from tests.support.gatewayapi import make_httproute
from tests.support.prometheus import Exporter, ModelTraffic, PrometheusServer
from tests.support.world import World, rollout_body, unique

pytestmark = pytest.mark.usefixtures("gateway_api")
SHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")
# The page as the test reads it: phase of the rollout page, rows of the list.
PHASE = "const b = document.querySelector('#phase [data-phase]'); return b ? b.dataset.phase : null;"
PHASE_IS = "const b = document.querySelector('#phase [data-phase]'); return !!b && b.dataset.phase === arguments[0];"
# The list's rows as [namespace/name, phase], once there are at least arguments[0] of them.
ROWS = (
    "const r = [...document.querySelectorAll('#rollouts tr.rollout')]"
    ".map(row => [row.dataset.key, row.querySelector('[data-phase]').dataset.phase]);"
    "return r.length >= arguments[0] ? r : null;"
)


@dataclass
class Scene:
    world: World
    controller: ControllerProcess
    scraper: PrometheusServer  # scrapes the controller
    url: str  # the dashboard's
    other: tuple[str, str]  # the second rollout's incumbent and candidate
    started: float


def _plugin(plane: ControlPlane, namespace: str, *args: str) -> list[str]:
    plugin = Path(sys.executable).parent / "kubectl-modelrollout"
    return [str(plugin), "--kubeconfig", str(plane.kubeconfig), "-n", namespace, *args]


@pytest.fixture(scope="module")
def scene(
    api_client: client.ApiClient, control_plane: ControlPlane, exporter: Exporter, prometheus: PrometheusServer
) -> Iterator[Scene]:
    namespace = create_namespace(api_client, unique("dashboard"))
    traffic = ModelTraffic(exporter)
    world = World(api_client, control_plane, namespace, traffic)
    other = (unique("model-c"), unique("model-d"))
    route = make_httproute("other", [(other[0], 100), (other[1], 0)])
    world.custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", route)
    traffic.set(other[0], ok=20)
    traffic.set(other[1], ok=20)
    factory = ControllerFactory(control_plane, prometheus_url=prometheus.url)
    dashboard: subprocess.Popen[bytes] | None = None
    scraper = PrometheusServer()
    try:
        controller = factory.start("dashboard", "--namespace", namespace)
        scraper = PrometheusServer([controller.port]).start()
        log_path = control_plane.workdir / f"dashboard-{namespace}.log"
        with open(log_path, "wb") as log:  # a file, not a pipe nobody reads: its log lines never block it
            dashboard = subprocess.Popen(
                _plugin(control_plane, namespace, "dashboard", "--port", "0", "--prometheus", scraper.url),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while not (found := re.search(r"http://127\.0\.0\.1:\d+/", log_path.read_text())):
            assert dashboard.poll() is None and time.monotonic() < deadline, f"no dashboard: {log_path.read_text()}"
            time.sleep(0.1)
        yield Scene(world, controller, scraper, found.group(0), other, time.time())
    finally:
        if dashboard is not None:
            dashboard.terminate()
            dashboard.wait(10)
        scraper.close()
        factory.stop_all()
        traffic.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


def _events(world: World, name: str) -> list[tuple[str, str]]:
    items = client.CoreV1Api(world.api).list_namespaced_event(world.namespace).items
    return [(e.reason, e.message) for e in items if e.involved_object.name == name]


def test_the_dashboard_shows_rollouts_and_promotes_at_a_manual_gate(scene: Scene, browser: Browser) -> None:
    world = scene.world
    gated = {"steps": [{"weight": 20, "hold": "2s"}, {"weight": 50, "hold": "2s", "manualGate": True}]}
    guardrails = [
        {"name": "error-rate", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 0.05}, "minSamples": 5},
        {"name": "p99-latency", "metric": {"builtin": "LatencyP99"}, "relative": {"maxRatio": 2.0}, "minSamples": 5},
    ]
    world.apply(rollout_body("gate", world.incumbent, world.candidate, canary=gated, guardrails=guardrails))

    browser.open(scene.url)
    rows = browser.wait(ROWS, 1, what="the rollout in the list")
    assert [key for key, _ in rows] == [f"{world.namespace}/gate"]

    browser.open(f"{scene.url}rollouts/{world.namespace}/gate")
    awaiting = f"{PHASE_IS[:-1]} && document.querySelector('#reason').textContent.includes('AwaitingPromotion');"
    browser.wait(awaiting, "Paused", timeout=90, what="the rollout waiting at its manual gate")
    steps = browser.run(
        "return [...document.querySelectorAll('#steps .step')].map(s => s.className + ' ' + s.textContent)"
    )
    assert (
        len(steps) == 3 and "current" in steps[1] and "manual gate" in steps[1] and "read back: 50% / 50%" in steps[1]
    )
    points = browser.wait(
        'return document.querySelectorAll(\'[data-guardrail="error-rate"] svg.chart circle[data-series="candidate"]\').length',
        what="points of the error-rate chart",
    )
    assert points >= 1
    assert browser.run("return document.querySelector('#source').textContent") == "history: prometheus"
    loaded = browser.run("return window.__dashboard.loadedAt")
    # (for the Grafana test: the wait is in Prometheus, three scrapes of it, before the human acts)
    paused = f'count_over_time(modelrollout_rollout_paused_since_seconds{{namespace="{world.namespace}"}}[1m])'
    scene.scraper.wait_for(paused, lambda r: bool(r) and float(r[0]["value"][1]) >= 3)
    if SHOTS:
        browser.screenshot(Path(SHOTS) / "dashboard-gate.png")

    browser.click("#do-promote")
    assert browser.alert_text() == "Promote gate past step 2?"
    browser.accept_alert()

    browser.wait(PHASE_IS, "Promoted", timeout=60, what="Promoted")
    obj = world.get("gate")
    assert obj["metadata"]["annotations"][PROMOTE].startswith("step-") and obj["metadata"]["annotations"][
        PROMOTE
    ].endswith("-1")
    requested = [m for reason, m in _events(world, "gate") if reason == "PromoteRequested"]
    assert requested and requested[0].startswith("promotion past step 2, requested by ")
    assert browser.run("return window.__dashboard.loadedAt") == loaded, "the page followed the change without a reload"
    browser.wait("return document.querySelector('#events [data-reason=\"PromoteRequested\"]')", what="the Event")


def test_the_page_follows_another_rollouts_rollback_live(scene: Scene, browser: Browser) -> None:
    world = scene.world
    held = {"steps": [{"weight": 20, "hold": "10m"}]}
    guardrails = [
        {"name": "error-rate", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 0.05}, "minSamples": 5},
        {
            "name": "errors-vs-incumbent",
            "metric": {"builtin": "ErrorRate"},
            "sequential": {"minEffect": 0.5, "minAbsoluteEffect": 0.2},
            "minSamples": 100000,  # never enough here: the chart of samples against those needed
        },
    ]
    analysis = {"interval": "2s", "window": "10s", "progressDeadline": "15m", "inconclusiveLimit": 1000}
    body = rollout_body("other", *scene.other, canary=held, guardrails=guardrails, analysis=analysis)
    body["spec"]["traffic"]["gatewayAPI"]["httpRoute"] = "other"
    world.apply(body)
    browser.open(f"{scene.url}rollouts/{world.namespace}/other")
    browser.wait(
        'return document.querySelectorAll(\'[data-guardrail="errors-vs-incumbent"] svg.chart circle[data-series="worse"]\').length >= 2',
        timeout=90,
        what="the sequential evidence chart",
    )
    assert browser.run(PHASE) == "Progressing"
    assert browser.wait(
        'return document.querySelectorAll(\'[data-guardrail="errors-vs-incumbent"] svg.chart path[data-series="needed"]\').length'
    )
    scene.scraper.wait_for(f'modelrollout_guardrail_samples_needed{{namespace="{world.namespace}"}}', bool)
    loaded, updates = browser.run("return [window.__dashboard.loadedAt, window.__dashboard.updates]")

    world.traffic.set(scene.other[1], ok=10, errors=10)  # the candidate breaks: the controller rolls it back

    browser.wait(PHASE_IS, "RolledBack", timeout=60, what="RolledBack")
    now_loaded, now_updates = browser.run("return [window.__dashboard.loadedAt, window.__dashboard.updates]")
    assert now_loaded == loaded and now_updates > updates, "the rollback came through the event stream, no reload"
    assert "GuardrailFailed" in browser.run("return document.querySelector('#reason').textContent")
    # The failing analysis (above the bound) is on the chart: the status has it, as the evidence
    # series in Prometheus end when the rollout does.
    failing = browser.wait(
        'return [...document.querySelectorAll(\'[data-guardrail="error-rate"] svg.chart circle[data-series="candidate"]\')]'
        ".filter(c => parseFloat(c.textContent.split(' ')[1]) > 0.05).length"
    )
    assert failing >= 1
    assert world.get("other")["status"]["phase"] == "RolledBack"
    if SHOTS:
        time.sleep(3)  # one more scrape, so the picture shows the breach on the chart
        browser.open(f"{scene.url}rollouts/{world.namespace}/other")
        browser.wait("return document.querySelector('svg.chart')")
        browser.screenshot(Path(SHOTS) / "dashboard-rollback.png")
        browser.open(scene.url)
        browser.wait(ROWS, 2)
        browser.screenshot(Path(SHOTS) / "dashboard-list.png")

    browser.open(scene.url)
    rows = dict(browser.wait(ROWS, 2))
    assert rows == {f"{world.namespace}/gate": "Promoted", f"{world.namespace}/other": "RolledBack"}


def test_requests_need_the_pages_token_and_the_dashboards_own_host(scene: Scene) -> None:
    name = f"{scene.url}api/rollouts/{scene.world.namespace}/other/retry"
    assert httpx.post(name, timeout=10).status_code == 403  # no token: not from the page
    page = httpx.get(scene.url, timeout=10).text
    token = re.search(r'name="modelrollout-token" content="([^"]+)"', page)
    assert token
    rebinding = httpx.get(scene.url, headers={"Host": f"evil.example:{scene.url.rsplit(':', 1)[1]}"}, timeout=10)
    assert rebinding.status_code == 403
    unknown = httpx.post(
        name.replace("/retry", "/delete"), headers={"X-Modelrollout-Token": token.group(1)}, timeout=10
    )
    assert unknown.status_code == 404


def test_each_grafana_panel_query_returns_data_from_a_prometheus_scraping_the_controller(scene: Scene) -> None:
    board = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    values = {"$namespace": scene.world.namespace, "$name": ".*", "$guardrail": ".*", "$__rate_interval": "1m"}
    end = time.time()
    empty: list[str] = []
    for panel in board["panels"]:
        for target in panel["targets"]:
            query = target["expr"]
            for var, value in values.items():
                query = query.replace(var, value)
            reply = httpx.get(
                f"{scene.scraper.url}/api/v1/query_range",
                params={"query": query, "start": scene.started, "end": end, "step": 1},
                timeout=30,
            ).json()
            assert reply["status"] == "success", (panel["title"], reply)
            if not reply["data"]["result"]:
                empty.append(f"{panel['title']}: {target['expr']}")
    assert empty == []
