"""Settled rollouts cost nothing: no API request and no Prometheus query, however often they are
reconciled (issue 23).

Given one rollout promoted and one rolled back, under a controller that resyncs every second
(every cached rollout is queued again), when three rounds of resync have been reconciled, then
the API server's audit log shows no request from the controller about anything in the namespace
(reads of rollouts and routes, writes, Events), and Prometheus' own request counter shows no
query. The test advances by the controller's reconciles (its /metrics), never by the clock.

Not counted here, because they are not per rollout: the controller's lease renewals (another
namespace) and its watches (one per watched namespace and kind, re-opened every
--watch-timeout; 60 s by default, longer than this test's window).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import pytest
from kubernetes import client

from tests.support.audit import requests
from tests.support.controller import ControllerFactory, ControllerProcess
from tests.support.controlplane import ControlPlane
from tests.support.gatewayapi import make_httproute
from tests.support.prometheus import PrometheusServer
from tests.support.world import World, phase, rollout_body, unique

pytestmark = pytest.mark.usefixtures("gateway_api")

ANALYSIS = {"interval": "1s", "window": "10s", "progressDeadline": "60s", "inconclusiveLimit": 20}
ROUNDS = 3


def prometheus_queries(prometheus: PrometheusServer) -> float:
    """Instant queries Prometheus has answered (its own /metrics, which is not a query itself)."""
    text = httpx.get(f"{prometheus.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line
    )


def resync_rounds(controller: ControllerProcess, rollouts: int, rounds: int) -> None:
    """Wait until the controller has reconciled `rounds` more times per rollout (resyncs do that)."""
    target = controller.reconciles() + rounds * rollouts
    for _ in range(600):
        if controller.reconciles() >= target:
            return
        time.sleep(0.1)
    raise AssertionError(f"the controller reconciled fewer than {target} times: is the resync running?")


def test_promoted_and_rolled_back_rollouts_cost_no_request_and_no_query_per_resync(
    api_client: client.ApiClient,
    control_plane: ControlPlane,
    world: World,
    prometheus: PrometheusServer,
) -> None:
    factory = ControllerFactory(control_plane, prometheus_url=prometheus.url)
    try:
        controller = factory.start("settled", "--namespace", world.namespace, "--resync-period", "1")
        bad = unique("model-bad")
        world.traffic.set(bad, ok=10, errors=10)
        world.custom.create_namespaced_custom_object(
            "gateway.networking.k8s.io",
            "v1",
            world.namespace,
            "httproutes",
            make_httproute("models-bad", [(world.incumbent, 100), (bad, 0)]),
        )
        one_step = {"steps": [{"weight": 50, "hold": "2s"}]}
        world.apply(rollout_body("good", world.incumbent, world.candidate, canary=one_step, analysis=ANALYSIS))
        world.apply(
            rollout_body(
                "bad",
                world.incumbent,
                bad,
                canary=one_step,
                analysis=ANALYSIS,
                traffic={"gatewayAPI": {"httpRoute": "models-bad"}},
            )
        )
        world.wait(phase("Promoted"), name="good")
        world.wait(phase("RolledBack"), name="bad")
        # One full round first: whatever was in flight when the verdicts were read has finished.
        resync_rounds(controller, rollouts=2, rounds=1)

        began, queries_before = datetime.now(UTC), prometheus_queries(prometheus)
        resync_rounds(controller, rollouts=2, rounds=ROUNDS)
        ended, queries_after = datetime.now(UTC), prometheus_queries(prometheus)
    finally:
        factory.stop_all()

    assert control_plane.audit_log is not None
    agent = "modelrollout-controller/settled"
    ours = [r for r in requests(control_plane.audit_log, namespace=world.namespace) if r.user_agent.startswith(agent)]
    assert ours, "the audit log shows none of the controller's requests at all: wrong user agent?"
    during = [(r.verb, r.resource, r.name, r.subresource) for r in ours if began <= r.time <= ended]
    print(
        f"\n{ROUNDS} resync rounds of 2 settled rollouts: {len(during)} API requests, "
        f"{queries_after - queries_before:.0f} Prometheus queries; {len(ours)} requests in the whole test"
    )
    assert during == []
    assert queries_after == queries_before
