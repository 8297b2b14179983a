"""Side by side with Argo Rollouts, progressing (issue 23): N canaries on each controller, each
holding at 50% of its pods and analysed every 30 s, on one cluster-like plane, in one run.

`python -m bench.scale --argo-canary 1000` (or `make bench-scale ARGO_CANARY=1000 SIZES= SOAK=`).
bench/argo.py compares settled objects; this compares the work a canary in flight costs. One
local etcd + kube-apiserver with the audit policy of bench/argo.py (every request but watches),
kube-controller-manager, kube-scheduler and kwok (tests/support/workload.py: Deployments and
ReplicaSets roll out, pods are scheduled and made Ready by kwok, no container runs; their client
rate limit raised to 200 requests a second so that neither side waits on them), Debian's
Prometheus scraping a test exporter with live traffic for models `model-a` and `model-b`.

The same canary on both sides: two replicas, one step of 50% held for 20 minutes (longer than
the run), judged every 30 s by one guardrail, the candidate's error rate at most 5% over 1 m,
answered by that Prometheus. Two phases, one after the other (the first one's namespaces are
deleted, pods and all, while its controller still runs to release its objects' finalizers; then
it is stopped, before the second starts):

1. ours: `modelrollout-controller` (4 workers, `--resync-period R`, `--evidence-checkpoint C`,
   no leader election, warning logs). Set-up (not measured): per rollout two Deployments in
   namespaces `mrc-*` (250 a namespace), `r<i>-a` with 2 replicas and `r<i>-b` with 0, until
   every `r<i>-a` has its 2 pods ready. Trigger: N ModelRollouts, incumbent `model-a` on
   `r<i>-a`, candidate `model-b` on `r<i>-b`, `traffic.replicas.totalReplicas: 2`, steps
   `[{weight: 50, hold: 20m}]`, the builtin ErrorRate guardrail (`absolute.max: 0.05`, analysis
   interval 30 s, window 1 m). At the step: status.weights.candidate is 50 (the replica router
   reports a step's weight once both Deployments have exactly its replicas ready).
2. Argo's: `rollouts-controller` (as in bench/argo.py, `--rollout-resync R`). Set-up (not
   measured): one ClusterAnalysisTemplate `error-rate` (the same question, as a PromQL ratio,
   `interval: 30s`, `successCondition: result[0] <= 0.05`), then N Rollouts in namespaces
   `argoc-*`, 2 replicas of image `model-a`, canary steps `[setWeight: 50, pause: 20m]`,
   background analysis from step 1 (once the weight is set, as ours), until every one is
   Healthy with its 2 stable pods ready. Trigger: each Rollout's image patched to `model-b`. At
   the step: status.currentStepIndex 1 and phase Paused (Argo moves past setWeight once the
   canary's pod is available).

Per controller, with the ratio Argo / ours:
- to the step: seconds from the trigger until every canary is at the step; API requests per
  object (audit log, by the controller's user agent) and CPU seconds over that time;
- in flight: from 5 s after the last one reached the step, a window of STEADY_S (five analysis
  intervals): API requests per object per minute and of them writes, CPU seconds per minute,
  Prometheus queries per object per interval (Prometheus' own counter of /api/v1/query: only
  the controller asks it anything during a phase), RSS (median of one sample a second in the
  window, and the largest since the controller started);
- what each canary shows after the window (ours: phase and verdict; Argo's: phase, step and its
  AnalysisRun's phase), so a window in which the canaries stalled or failed is seen.

Not the same work "to the step": ours' trigger is a new ModelRollout (its first reconcile, the
finalizer and first status, is counted), Argo's a patch of a Healthy Rollout; ours scales
Deployments and kube-controller-manager makes their ReplicaSets (under its own name: not
counted), Argo makes and scales its ReplicaSets itself (counted). In flight both do only what a
canary needs: judge, write, hold.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from kubernetes import client, config

from bench.argo import (
    ARGO_API,
    ARGO_GROUP,
    ARGO_PLURAL,
    ARGO_VERSION,
    AUDIT_ALL,
    Argo,
    Ours,
    Sampler,
    argo_binary,
    argo_crds,
    by_agent,
    list_objects,
    ratio,
    wait_for,
)
from bench.scale import AUDIT_NO_ROTATION, PER_NAMESPACE, REPO, Bench, cpu_seconds, prom_queries, rss_mib
from controller.api import GROUP, PLURAL, VERSION
from tests.support.controlplane import ControlPlane, running_control_plane
from tests.support.gatewayapi import install_gateway_api_crds
from tests.support.kube import install_crds
from tests.support.prometheus import Exporter, ModelTraffic, PrometheusServer
from tests.support.workload import Workload

INCUMBENT, CANDIDATE = "model-a", "model-b"
REPLICAS, WEIGHT = 2, 50
INTERVAL_S = 30
STEADY_S = 5 * INTERVAL_S
# The workload controllers' client rate limit (requests a second) and the kwok nodes: the pods of
# 1,000 canaries (3 a rollout at most while the canary's pod starts) on 4 nodes of 1,000 pods,
# their IPs from a /19 inside the range tests/support/netns.py guards (nothing connects to them).
WORKLOAD_QPS = 200
PODS_PER_NODE = 1000
POD_CIDR = "10.77.32.1/19"
# The candidate's share of errors over 1 m: what both sides ask Prometheus (ours as its builtin).
ERROR_RATE_QUERY = (
    f'(sum(rate(model_requests_total{{model="{CANDIDATE}",code=~"5.."}}[1m])) or vector(0))'
    f' / sum(rate(model_requests_total{{model="{CANDIDATE}"}}[1m]))'
)


def namespaces_for(prefix: str, n: int) -> tuple[list[str], list[tuple[str, str]]]:
    namespaces = [f"{prefix}-{i}" for i in range((n + PER_NAMESPACE - 1) // PER_NAMESPACE)]
    return namespaces, [(namespaces[i // PER_NAMESPACE], f"r{i}") for i in range(n)]


def create_namespaces(bench: Bench, namespaces: list[str]) -> None:
    for ns in namespaces:
        bench.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))


def pod_template(app: str, image: str, version: str) -> dict[str, Any]:
    labels = {"app": app, "version": version}
    return {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "model", "image": image}]}}


def deployment(name: str, app: str, image: str, replicas: int) -> dict[str, Any]:
    version = image.rsplit("-", 1)[-1]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app, "version": version}},
            "template": pod_template(app, image, version),
        },
    }


def ready_deployments(bench: Bench, namespaces: list[str]) -> dict[tuple[str, str], int]:
    """Ready replicas of each Deployment in these namespaces."""
    apps = client.AppsV1Api(bench.api)
    return {
        (ns, d.metadata.name): d.status.ready_replicas or 0
        for ns in namespaces
        for d in apps.list_namespaced_deployment(ns).items
    }


def wait_ready(bench: Bench, namespaces: list[str], want: dict[tuple[str, str], int], timeout: float) -> None:
    began = time.monotonic()
    while True:
        ready = ready_deployments(bench, namespaces)
        missing = [k for k, n in want.items() if ready.get(k, 0) < n]
        if not missing:
            return
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{len(missing)} of {len(want)} Deployments not ready after {timeout:.0f}s")
        time.sleep(2)


def delete_namespaces(bench: Bench, namespaces: list[str], timeout: float) -> float:
    """Delete them and wait until they are gone (the namespace controller deletes what they hold;
    a ModelRollout's finalizer needs our controller running). Seconds it took."""
    began = time.monotonic()
    for ns in namespaces:
        bench.core.delete_namespace(ns)
    while True:
        left = {ns.metadata.name for ns in bench.core.list_namespace().items} & set(namespaces)
        if not left:
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"namespaces {sorted(left)} not gone after {timeout:.0f}s")
        time.sleep(2)


class OursCanary(Ours):
    prefix = "mrc"

    def __init__(self, plane: ControlPlane, resync: int, prometheus_url: str, checkpoint: str) -> None:
        super().__init__(plane, resync, prometheus_url=prometheus_url, extra=("--evidence-checkpoint", checkpoint))

    def set_up(self, bench: Bench, n: int) -> list[tuple[str, str]]:
        namespaces, keys = namespaces_for(self.prefix, n)
        create_namespaces(bench, namespaces)
        apps = client.AppsV1Api(bench.api)

        def one(key: tuple[str, str]) -> None:
            ns, name = key
            apps.create_namespaced_deployment(ns, deployment(f"{name}-a", name, INCUMBENT, REPLICAS))
            apps.create_namespaced_deployment(ns, deployment(f"{name}-b", name, CANDIDATE, 0))

        list(bench.pool.map(one, keys))
        wait_ready(bench, namespaces, {(ns, f"{name}-a"): REPLICAS for ns, name in keys}, timeout=300 + n)
        return keys

    def trigger(self, bench: Bench, keys: list[tuple[str, str]]) -> None:
        def one(key: tuple[str, str]) -> None:
            ns, name = key
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelRollout",
                "metadata": {"name": name},
                "spec": {
                    "incumbent": {"name": INCUMBENT, "backend": {"deployment": f"{name}-a"}},
                    "candidate": {"name": CANDIDATE, "backend": {"deployment": f"{name}-b"}},
                    "traffic": {"replicas": {"totalReplicas": REPLICAS}},
                    "canary": {"steps": [{"weight": WEIGHT, "hold": "20m"}]},
                    "analysis": {"interval": f"{INTERVAL_S}s", "window": "1m", "progressDeadline": "1h"},
                    "guardrails": [
                        {"name": "error-rate", "metric": {"builtin": "ErrorRate"}, "absolute": {"max": 0.05}}
                    ],
                },
            }
            bench.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

        list(bench.pool.map(one, keys))

    def at_step(self, obj: dict[str, Any]) -> bool:
        return int(((obj.get("status") or {}).get("weights") or {}).get("candidate", -1)) == WEIGHT

    def describe(self, obj: dict[str, Any]) -> str:
        status = obj.get("status") or {}
        verdicts = Counter(g.get("verdict") for g in status.get("guardrails") or [])
        weight = (status.get("weights") or {}).get("candidate")
        return f"{status.get('phase')} at {weight}%, verdicts {dict(verdicts) or '-'}"


def analysis_template(prometheus_url: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{ARGO_GROUP}/{ARGO_API}",
        "kind": "ClusterAnalysisTemplate",
        "metadata": {"name": "error-rate"},
        "spec": {
            "metrics": [
                {
                    "name": "error-rate",
                    "interval": f"{INTERVAL_S}s",
                    "successCondition": "result[0] <= 0.05",
                    "failureLimit": 3,
                    "provider": {"prometheus": {"address": prometheus_url, "query": ERROR_RATE_QUERY}},
                }
            ]
        },
    }


def argo_canary(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{ARGO_GROUP}/{ARGO_API}",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, INCUMBENT, "a"),
            "strategy": {
                "canary": {
                    "steps": [{"setWeight": WEIGHT}, {"pause": {"duration": "20m"}}],
                    "analysis": {
                        "templates": [{"templateName": "error-rate", "clusterScope": True}],
                        "startingStep": 1,
                    },
                }
            },
        },
    }


class ArgoCanary(Argo):
    prefix = "argoc"

    def __init__(self, plane: ControlPlane, resync: int, binary: Path, version: str, prometheus_url: str) -> None:
        super().__init__(plane, resync, binary, version)
        self.prometheus_url = prometheus_url

    def set_up(self, bench: Bench, n: int) -> list[tuple[str, str]]:
        bench.custom.create_cluster_custom_object(
            ARGO_GROUP, ARGO_API, "clusteranalysistemplates", analysis_template(self.prometheus_url)
        )
        namespaces, keys = namespaces_for(self.prefix, n)
        create_namespaces(bench, namespaces)

        def one(key: tuple[str, str]) -> None:
            ns, name = key
            bench.custom.create_namespaced_custom_object(ARGO_GROUP, ARGO_API, ns, ARGO_PLURAL, argo_canary(name))

        list(bench.pool.map(one, keys))
        wait_for(bench, self, keys, self.settled, "Healthy", timeout=300 + n)
        return keys

    def trigger(self, bench: Bench, keys: list[tuple[str, str]]) -> None:
        def one(key: tuple[str, str]) -> None:
            ns, name = key
            patch = {"spec": {"template": pod_template(name, CANDIDATE, "b")}}
            bench.custom.patch_namespaced_custom_object(ARGO_GROUP, ARGO_API, ns, ARGO_PLURAL, name, patch)

        list(bench.pool.map(one, keys))

    def at_step(self, obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        return status.get("currentStepIndex") == 1 and status.get("phase") == "Paused"

    def describe(self, obj: dict[str, Any]) -> str:
        status = obj.get("status") or {}
        analysis = ((status.get("canary") or {}).get("currentBackgroundAnalysisRunStatus") or {}).get("status", "-")
        return f"{status.get('phase')} at step {status.get('currentStepIndex')}, analysis {analysis}"


CanarySide = OursCanary | ArgoCanary


def measure_canaries(bench: Bench, side: CanarySide, n: int, prom: PrometheusServer) -> dict[str, Any]:
    r: dict[str, Any] = {"controller": side.label, "n": n}
    pid = side.start()
    sampler = Sampler(pid)
    try:
        time.sleep(5)
        r["rss_idle"] = rss_mib(pid)
        began = time.monotonic()
        keys = side.set_up(bench, n)
        r["set_up_s"] = time.monotonic() - began
        t0, cpu0 = time.time(), cpu_seconds(pid)
        side.trigger(bench, keys)
        r["phases"] = wait_for(bench, side, keys, side.at_step, "at the step", timeout=300 + n)
        t1 = time.time()
        cpu1 = cpu_seconds(pid)
        r["to_step_s"] = t1 - t0
        r["to_step_cpu_s"] = cpu1 - cpu0
        to_step = by_agent(bench, t0, t1, side.agents)
        r["to_step_api_per_object"] = len(to_step) / n
        print(
            f"  {side.label}: set up in {r['set_up_s']:.0f}s; {n} canaries at {WEIGHT}% "
            f"{r['to_step_s']:.1f}s after the trigger, {r['to_step_api_per_object']:.2f} API requests per "
            f"object, {r['to_step_cpu_s']:.1f} CPU s",
            flush=True,
        )

        time.sleep(5)
        t2, cpu2, q2 = time.time(), cpu_seconds(pid), prom_queries(prom)
        time.sleep(STEADY_S)
        t3, cpu3, q3 = time.time(), cpu_seconds(pid), prom_queries(prom)
        minutes = (t3 - t2) / 60
        window = by_agent(bench, t2, t3, side.agents)
        r["window_s"] = t3 - t2
        r["api_per_object_min"] = len(window) / n / minutes
        r["writes_per_object_min"] = sum(1 for e in window if e["verb"] not in ("get", "list")) / n / minutes
        r["window_requests"] = dict(
            Counter(f"{e['verb']} {e['resource']}{'/' + e['sub'] if e['sub'] else ''}" for e in window).most_common(8)
        )
        r["cpu_s_per_min"] = (cpu3 - cpu2) / minutes
        r["prom_per_object_interval"] = (q3 - q2) / n / ((t3 - t2) / INTERVAL_S)
        r["rss_steady"] = sampler.median(t2, t3)
        r["rss_max"] = sampler.max()
        r["phases_after"] = dict(Counter(side.describe(o) for o in list_objects(bench, side, keys).values()))
        r["log"] = side.log_summary()
        print(
            f"  {side.label}: in flight {r['window_s']:.0f}s: {r['api_per_object_min']:.2f} API req/object/min "
            f"({r['writes_per_object_min']:.2f} writes) {r['window_requests']}, {r['cpu_s_per_min']:.2f} CPU s/min, "
            f"{r['prom_per_object_interval']:.3f} Prometheus queries/object/interval, RSS {r['rss_steady']:.0f} "
            f"steady / {r['rss_max']:.0f} max MiB; after it {r['phases_after']}; its log {r['log']}",
            flush=True,
        )
        r["delete_s"] = delete_namespaces(bench, sorted({ns for ns, _ in keys}), timeout=600 + n)
    finally:
        sampler.stop()
        side.stop()
    return r


def run_canaries_side_by_side(
    n: int, resync: int, checkpoint: str = "0s", version: str = ARGO_VERSION
) -> dict[str, Any]:
    """Ours, then Argo's, each with N canaries in flight, on one plane in one run."""
    out: dict[str, Any] = {"n": n, "resync_s": resync, "version": version, "evidence_checkpoint": checkpoint}
    binary = argo_binary(version)  # a failure to build stops the run: it has nothing to compare
    crds = argo_crds(version)
    exporter = Exporter()
    traffic = ModelTraffic(exporter)
    for model in (INCUMBENT, CANDIDATE):
        traffic.set(model, ok=20)
    try:
        with (
            running_control_plane(audit=True, apiserver_args=AUDIT_NO_ROTATION, audit_policy=AUDIT_ALL) as plane,
            PrometheusServer([exporter.port]) as prom,
        ):
            nodes = max(1, -(-3 * n // PODS_PER_NODE))
            workload = Workload(
                plane, nodes=nodes, pods_per_node=PODS_PER_NODE, pod_cidr=POD_CIDR, api_qps=WORKLOAD_QPS
            )
            workload.start()
            try:
                api = config.new_client_from_config(config_file=str(plane.kubeconfig))
                install_crds(api, REPO / "crds")
                install_gateway_api_crds(api)
                install_crds(api, crds)
                bench = Bench(plane, prom)
                try:
                    out["ours"] = measure_canaries(bench, OursCanary(plane, resync, prom.url, checkpoint), n, prom)
                    out["argo"] = measure_canaries(bench, ArgoCanary(plane, resync, binary, version, prom.url), n, prom)
                finally:
                    bench.pool.shutdown(wait=False, cancel_futures=True)
            finally:
                workload.stop()
    finally:
        traffic.stop()
        exporter.close()
    return out


COLUMNS: list[tuple[str, str, str]] = [
    ("to_step_s", f"all at {WEIGHT}% after (s)", ".1f"),
    ("to_step_api_per_object", "API req / object to the step", ".2f"),
    ("to_step_cpu_s", "CPU s to the step", ".1f"),
    ("api_per_object_min", "API req / object / min, in flight", ".2f"),
    ("writes_per_object_min", "of which writes", ".2f"),
    ("prom_per_object_interval", "Prometheus queries / object / interval", ".3f"),
    ("cpu_s_per_min", "CPU s / min, in flight", ".2f"),
    ("rss_idle", "RSS, no object (MiB)", ".0f"),
    ("rss_steady", "RSS in flight (MiB)", ".0f"),
    ("rss_max", "RSS max (MiB)", ".0f"),
]


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| canaries | controller | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for res in results:
        rows = [res[k] for k in ("ours", "argo") if k in res]
        for r in rows:
            lines.append(
                f"| {res['n']:,} | {r['controller']} | " + " | ".join(format(r[k], f) for k, _, f in COLUMNS) + " |"
            )
        if len(rows) == 2:
            ours, argo = rows
            lines.append(
                f"| {res['n']:,} | ratio Argo / ours | "
                + " | ".join(ratio(argo[k], ours[k]) for k, _, _ in COLUMNS)
                + " |"
            )
    return "\n".join(lines)
