"""`make bench-webhooks`: does a slow webhook receiver slow other rollouts' reconciles?

Real parts only (as bench.scale): a local etcd + kube-apiserver with an audit log, Prometheus
scraping a test exporter, `modelrollout-controller` as its own process (4 workers), and a real
HTTP receiver on loopback (tests/support/receiver.py) that answers each request after
`--delay` seconds (30 by default).

Two sets of N rollouts on one controller, each at step 1: `baseline` without webhooks, then
`slow receiver` where every rollout has a Notification hook to that one receiver. In each, a
paced stream of spec changes (spec.paused: true, 50 a second; each pause is a notification
for the slow set) and the reconcile lag per rollout, from our PATCH to the end of the
controller's status write (audit log): p50 / p99 / max. Also: the most requests the receiver
was answering at once (one at a time per receiver: 1), and how many it got in the window.

Usage: python -m bench.webhooks [N] [--delay 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from kubernetes import config

from bench.scale import CANDIDATE, INCUMBENT, INTERVAL_S, REPO, THIRD, Bench, controller, pct, reconcile_lags, weight
from tests.support.controlplane import running_control_plane
from tests.support.gatewayapi import install_gateway_api_crds
from tests.support.kube import install_crds
from tests.support.prometheus import Exporter, ModelTraffic, PrometheusServer
from tests.support.receiver import Receiver


def spec(hooks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "incumbent": {"name": INCUMBENT},
        "candidate": {"name": CANDIDATE},
        "canary": {"steps": [{"weight": 10, "hold": "20m"}, {"weight": 50, "hold": "20m"}]},
        "analysis": {"interval": f"{INTERVAL_S}s", "window": "1m", "progressDeadline": "1h"},
        "guardrails": [
            {"name": "error-rate", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 0.05}, "minSamples": 5}
        ],
        "webhooks": hooks,
    }


def lag_run(bench: Bench, n: int, prefix: str, hooks: list[dict[str, Any]]) -> dict[str, float]:
    keys = bench.create(n, spec(hooks), prefix)
    bench.wait_all(keys, lambda o: weight(o) == 10, timeout=60 + n)
    time.sleep(3)
    t_lag = time.time()
    bench.patch_paced(keys, {"spec": {"paused": True}}, rate=50)
    bench.wait_all(keys, lambda o: (o.get("status") or {}).get("phase") == "Paused", timeout=120 + n / 10)
    time.sleep(2)
    lags = reconcile_lags(bench.audit, t_lag)
    return {"n": len(lags), "p50": pct(lags, 0.5), "p99": pct(lags, 0.99), "max": max(lags)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.webhooks")
    parser.add_argument("n", nargs="?", type=int, default=100)
    parser.add_argument("--delay", type=float, default=30.0, help="seconds the receiver takes to answer")
    args = parser.parse_args(argv)
    print(
        f"bench-webhooks on {os.cpu_count()} cores: {args.n} rollouts, receiver answers after {args.delay:g}s",
        flush=True,
    )
    exporter = Exporter()
    traffic = ModelTraffic(exporter)
    for model in (INCUMBENT, CANDIDATE, THIRD):
        traffic.set(model, ok=20)
    receiver = Receiver()
    receiver.default, receiver.delay = 200, args.delay
    rows = []
    with running_control_plane(audit=True) as plane, PrometheusServer([exporter.port]) as prom:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        install_crds(api, REPO / "crds")
        install_gateway_api_crds(api)
        bench = Bench(plane, prom)
        factory, _ = controller(plane, prom)
        try:
            base = lag_run(bench, args.n, "base", [])
            print(f"  baseline: p99 {base['p99']:.3f}s", flush=True)
            hook = [
                {
                    "name": "slow",
                    "type": "Notification",
                    "url": receiver.url("/slow"),
                    "events": ["Paused"],
                    "timeout": "5m",
                }
            ]
            slow = lag_run(bench, args.n, "slow", hook)
            print(f"  slow receiver: p99 {slow['p99']:.3f}s", flush=True)
            rows = [
                ("baseline (no webhooks)", base),
                (f"one {args.delay:g} s receiver, a notification per rollout", slow),
            ]
        finally:
            factory.stop_all()
            bench.pool.shutdown(wait=False, cancel_futures=True)
            traffic.stop()
            exporter.close()
    print()
    print(f"| {args.n} rollouts, 4 workers | lags measured | p50 (s) | p99 (s) | max (s) |")
    print("|---|---|---|---|---|")
    for label, r in rows:
        print(f"| {label} | {r['n']:.0f} | {r['p50']:.3f} | {r['p99']:.3f} | {r['max']:.3f} |")
    print(
        f"\nslow receiver: {receiver.started} requests begun, {len(receiver.requests())} answered, "
        f"at most {receiver.max_in_flight} at once"
    )
    receiver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
