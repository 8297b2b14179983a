"""`make bench-scale`: N ModelRollouts progressing at once on K controller shards, on this machine.

Real parts only: a local etcd + kube-apiserver (with an audit log), Debian's Prometheus
scraping a test exporter with live model traffic, and `modelrollout-controller` as its own
process (4 workers, info logs, leader election on). Each rollout has its own HTTPRoute; all
route the same two model Services, so Prometheus answers the same small queries for each
(the controller's costs are per rollout, Prometheus' are not what is measured here).

`--shards K` (default 1: one process, as before sharding) starts one process per shard
(`--shards K --shard k`), each the leader of its own Lease of one set. No standbys: a standby
only watches its Lease, and what is measured is the work of the leaders. One code path for any K:
every per-controller figure below is taken from each process and summed (requests, CPU, queries
are the whole set's) or listed per shard (RSS, rollouts owned). Each status write is attributed
to its shard by the user agent the API server logs (`modelrollout-controller/<identity>`), which
also checks that no rollout (nor its route) was written by two shards (target 0).

For each N it reports:
- settled (with `--settled S`, S rollouts created first, each adopting its model: Promoted with
  nothing in flight): API requests and Prometheus queries per settled rollout per minute, over a
  window in which the controller resyncs every cached rollout (`--resync`, 30 s here) at least
  twice, and again while the N progressing ones run beside them (target: 0 and 0);
- start: seconds from the first create until every rollout has step 1's weight read back;
- reconcile lag: a paced stream of spec changes (spec.paused: true, 50 a second); per rollout,
  from our PATCH to the end of the controller's status write that records it, both times from
  the API server's audit log; p50 / p99 / max;
- API requests per rollout per minute by the controller (audit log), in a steady window where
  every rollout is holding and analysing;
- Prometheus queries per rollout per analysis interval (Prometheus' own request counter);
- controller RSS (VmRSS) at the end of each phase, per shard;
- CPU seconds per wall second of each shard, kube-apiserver, etcd and Prometheus (steady window);
- rollouts owned per shard (each process's `modelrollout_shard_rollouts`, settled ones included);
- writes by the controller while every rollout is paused and nothing changes (target 0);
- rollouts written by more than one shard over the whole run (target 0).

`--soak`: M rollouts through C cycles (a new candidate each cycle, one step, promoted), RSS
after each cycle, growth after warm-up, the longest status.history and the controller's
per-rollout metric series count.

`--argo N[,N...]`: side by side with Argo Rollouts, N settled objects on each controller, one
plane, one run (bench/argo.py; without sizes, only that). `--argo-canary N[,N...]`: the same with
N canaries in flight on each, on a plane that runs pods (bench/argo_canary.py).

Usage: python -m bench.scale 100 1000 [--shards 2] [--settled 1000] [--soak 500x20] [--argo 1000]
       [--argo-canary 1000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config

from controller.api import GROUP, PLURAL, VERSION
from controller.sharding import lease_name
from tests.support.controller import ControllerFactory, ControllerProcess
from tests.support.controlplane import ControlPlane, running_control_plane
from tests.support.gatewayapi import install_gateway_api_crds, make_httproute
from tests.support.kube import install_crds
from tests.support.prometheus import Exporter, ModelTraffic, PrometheusServer

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
UA = "bench-scale"
# kube-apiserver rotates its audit log at 100 MB unless told otherwise (lumberjack's default);
# the reader follows one file, so a rotation left every later request uncounted: at 10,000
# rollouts every count after the settled phase read 0 (API requests, lag, even the Lease).
AUDIT_NO_ROTATION = ["--audit-log-maxsize=1000000"]
PER_NAMESPACE = 250
INTERVAL_S = 30
INCUMBENT, CANDIDATE, THIRD = "model-a", "model-b", "model-c"


# -- helpers --------------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def shard_names(shards: int) -> list[str]:
    """What each controller process is called in the output: "controller" when it is the only one."""
    return ["controller"] if shards == 1 else [f"shard-{k}" for k in range(shards)]


def component_cpu(plane: ControlPlane, prom: PrometheusServer, procs: list[ControllerProcess]) -> dict[str, float]:
    pids = {name: proc.proc.pid for name, proc in zip(shard_names(len(procs)), procs, strict=True)}
    for name, child in (("kube-apiserver", plane.apiserver), ("etcd", plane.etcd), ("prometheus", prom.proc)):
        if child is not None:
            pids[name] = child.pid
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def prom_queries(prom: PrometheusServer) -> float:
    text = httpx.get(f"{prom.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Audit:
    """Incremental reader of the audit log: only what the bench needs."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0
        self.events: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        if self.path.stat().st_size < self.offset:
            raise RuntimeError(f"{self.path} shrank under the reader (rotated?): the counts would miss requests")
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("stage") == "ResponseComplete":
                ref = event.get("objectRef") or {}
                self.events.append(
                    {
                        "verb": event.get("verb"),
                        "ua": event.get("userAgent", ""),
                        "resource": ref.get("resource", ""),
                        "sub": ref.get("subresource", ""),
                        "ns": ref.get("namespace", ""),
                        "name": ref.get("name", ""),
                        "code": (event.get("responseStatus") or {}).get("code", 0),
                        "received": stamp(event["requestReceivedTimestamp"]),
                        "done": stamp(event["stageTimestamp"]),
                    }
                )
        return self.events

    def between(self, start: float, end: float, ua_prefix: str) -> list[dict[str, Any]]:
        return [e for e in self.read() if start <= e["received"] < end and e["ua"].startswith(ua_prefix)]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Bench:
    def __init__(self, plane: ControlPlane, prom: PrometheusServer | None = None) -> None:
        self.plane, self.prom = plane, prom
        self.api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        self.api.user_agent = UA
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        assert plane.audit_log is not None
        self.audit = Audit(plane.audit_log)
        self.pool = ThreadPoolExecutor(16)
        self.keys: list[tuple[str, str]] = []

    # -- objects ----------------------------------------------------------------------------------

    def create(self, n: int, spec: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
        namespaces = [f"{prefix}-{i}" for i in range((n + PER_NAMESPACE - 1) // PER_NAMESPACE)]
        for ns in namespaces:
            self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        keys = [(namespaces[i // PER_NAMESPACE], f"r{i}") for i in range(n)]

        def one(key: tuple[str, str]) -> None:
            ns, name = key
            route = make_httproute(name, [(INCUMBENT, 100), (CANDIDATE, 0), (THIRD, 0)])
            self.custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", ns, "httproutes", route)
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelRollout",
                "metadata": {"name": name},
                "spec": {**spec, "traffic": {"gatewayAPI": {"httpRoute": name}}},
            }
            self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

        list(self.pool.map(one, keys))
        return keys

    def statuses(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for ns in sorted({ns for ns, _ in keys}):
            for obj in self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]:
                out[(ns, obj["metadata"]["name"])] = obj
        return out

    def wait_all(self, keys: list[tuple[str, str]], predicate: Any, timeout: float) -> float:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            objs = self.statuses(keys)
            done = sum(1 for k in keys if k in objs and predicate(objs[k]))
            if done == len(keys):
                return time.monotonic() - began
            time.sleep(1)
        raise TimeoutError(f"only {done}/{len(keys)} after {timeout}s")

    def patch_paced(self, keys: list[tuple[str, str]], body: dict[str, Any], rate: float) -> None:
        began = time.monotonic()
        for i, (ns, name) in enumerate(keys):
            delay = began + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.pool.submit(self.custom.patch_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, name, body)


WORKERS = 4  # the controller's default; --workers overrides
# Seconds between the controller's resyncs of every cached rollout (its default is 600): short
# here, so that the settled window holds resyncs, and what they cost is measured.
RESYNC_S = 30


SHARDS = 1  # --shards
CHECKPOINT = "0s"  # --evidence-checkpoint: the controller's, "0s" (its default) writes every analysis
LEASE = "modelrollout-scale"  # the Leases' set: LEASE with one shard, LEASE-<k> with more


def controllers(
    plane: ControlPlane, prom: PrometheusServer, program: list[str] | None = None
) -> tuple[ControllerFactory, list[ControllerProcess]]:
    """One process per shard (identity scale-s<k>), each the leader of its own Lease before any
    rollout is created; with one shard, the one controller of before sharding. `program`: how
    to run it, if not the console script (the soak's memory census: bench/census_controller.py)."""
    factory = ControllerFactory(plane, prometheus_url=prom.url, program=program)
    procs = []
    try:
        for k in range(SHARDS):
            procs.append(
                factory.start(
                    f"scale-s{k}",
                    *("--workers", str(WORKERS), "--log-level", "info", "--resync-period", str(RESYNC_S)),
                    *("--evidence-checkpoint", CHECKPOINT),
                    *("--shards", str(SHARDS), "--shard", str(k)),
                    lease_name=LEASE,
                )
            )
        for k, proc in enumerate(procs):
            factory.wait_leader(proc, lease_name(LEASE, SHARDS, k))
    except BaseException:
        factory.stop_all()
        raise
    return factory, procs


def rss_each(procs: list[ControllerProcess]) -> list[float]:
    return [rss_mib(proc.proc.pid) for proc in procs]


def record_rss(result: dict[str, Any], phase: str, procs: list[ControllerProcess]) -> float:
    """Each shard's RSS at the end of `phase`: the list in result["rss_shards"][phase], the
    largest in result["rss_<phase>"] (with one shard, the controller's, as before sharding)."""
    each = rss_each(procs)
    result.setdefault("rss_shards", {})[phase] = each
    result[f"rss_{phase}"] = max(each)
    return max(each)


def rss_text(result: dict[str, Any], phase: str) -> str:
    each = result["rss_shards"][phase]
    return (
        f"{max(each):.0f}" if len(each) == 1 else f"{max(each):.0f} (max; " + ", ".join(f"{v:.0f}" for v in each) + ")"
    )


def owned(proc: ControllerProcess) -> int:
    """The rollouts this process's shard owns and caches (its modelrollout_shard_rollouts)."""
    return int(proc.metric("modelrollout_shard_rollouts"))


AGENT = re.compile(r"^modelrollout-controller/(\S+)")


def writer(user_agent: str) -> str:
    """The identity of the controller process that sent a request ("" if none did): its user agent
    is modelrollout-controller/<identity> (controller/main.py)."""
    match = AGENT.match(user_agent)
    return match.group(1) if match is not None else ""


def writers(audit: Audit, prefixes: tuple[str, ...]) -> dict[tuple[str, str], set[str]]:
    """Per rollout in namespaces named `<prefix>-*`, the identities of the controller processes
    that wrote it (status, finalizers) or its route (named as the rollout), over the whole run."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in audit.read():
        if (
            writer(e["ua"])
            and e["verb"] not in ("get", "list", "watch")
            and e["resource"] in ("modelrollouts", "httproutes")
            and e["ns"].startswith(tuple(f"{p}-" for p in prefixes))
        ):
            out[(e["ns"], e["name"])].add(writer(e["ua"]))
    return out


def weight(obj: dict[str, Any]) -> int:
    return int(((obj.get("status") or {}).get("weights") or {}).get("candidate", -1))


def reconcile_lags(audit: Audit, since: float) -> list[tuple[float, str]]:
    """Per rollout, from our first PATCH after `since` to the end of the controller's first status
    write after it (both from the API server's audit log), in seconds, with the identity of the
    process that wrote it."""
    events = audit.between(since - 1, time.time(), "")
    patched: dict[tuple[str, str], float] = {}
    written: dict[tuple[str, str], tuple[float, str]] = defaultdict(lambda: (float("inf"), ""))
    for e in events:
        key = (e["ns"], e["name"])
        if e["resource"] != "modelrollouts":
            continue
        if e["ua"].startswith(UA) and e["verb"] == "patch" and key not in patched:
            patched[key] = e["received"]
    for e in events:
        key = (e["ns"], e["name"])
        if (
            e["ua"].startswith("modelrollout-controller/")
            and e["sub"] == "status"
            and e["verb"] == "update"
            and e["code"] == 200
            and key in patched
            and e["received"] >= patched[key]
        ):
            written[key] = min(written[key], (e["done"], writer(e["ua"])))
    return [(written[k][0] - patched[k], written[k][1]) for k in patched if written[k][0] != float("inf")]


# -- the N-rollouts run ---------------------------------------------------------------------------


def queue_depth(procs: list[ControllerProcess]) -> list[int]:
    """Keys waiting in each process's work queue (modelrollout_queue_depth)."""
    return [int(proc.metric("modelrollout_queue_depth")) for proc in procs]


def reconciles(procs: list[ControllerProcess]) -> int:
    return sum(proc.reconciles() for proc in procs)


def unwritten(procs: list[ControllerProcess]) -> int:
    """Analyses the processes kept in memory, unwritten (modelrollout_analyses_unwritten_total)."""
    return sum(int(proc.metric("modelrollout_analyses_unwritten_total")) for proc in procs)


def per_rollout_min(events: list[dict[str, Any]], prefix: str, rollouts: int, seconds: float) -> float:
    """Requests about objects in the namespaces named `prefix-*`, per rollout per minute."""
    mine = sum(1 for e in events if e["ns"].startswith(prefix + "-") and e["verb"] != "watch")
    return mine / max(rollouts, 1) / (seconds / 60)


def rollout_spec() -> dict[str, Any]:
    """A progressing rollout's spec (without its route): holds at step 1 (10%), analysed every 30 s."""
    return {
        "incumbent": {"name": INCUMBENT},
        "candidate": {"name": CANDIDATE},
        "canary": {"steps": [{"weight": 10, "hold": "20m"}, {"weight": 50, "hold": "20m"}]},
        "analysis": {"interval": f"{INTERVAL_S}s", "window": "1m", "progressDeadline": "1h"},
        "guardrails": [
            {
                "name": "error-rate",
                "metric": {"builtin": "ErrorRate"},
                "absolute": {"max": 0.05},
                "minSamples": 5,
            }
        ],
    }


def adopting_spec() -> dict[str, Any]:
    """A settled rollout's spec: adopted at once (no incumbent), Promoted, nothing in flight, no
    analysis ever due."""
    return {k: v for k, v in rollout_spec().items() if k != "incumbent"}


def run_scale(n: int, settled: int = 0) -> dict[str, Any]:
    exporter = Exporter()
    traffic = ModelTraffic(exporter)
    for model in (INCUMBENT, CANDIDATE, THIRD):
        traffic.set(model, ok=20)
    result: dict[str, Any] = {
        "n": n, "settled": settled, "resync_s": RESYNC_S, "shards": SHARDS, "evidence_checkpoint": CHECKPOINT,
    }  # fmt: skip
    with (
        running_control_plane(audit=True, apiserver_args=AUDIT_NO_ROTATION) as plane,
        PrometheusServer([exporter.port]) as prom,
    ):
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        install_crds(api, REPO / "crds")
        install_gateway_api_crds(api)
        bench = Bench(plane, prom)
        factory, procs = controllers(plane, prom)
        try:
            spec = rollout_spec()
            if settled:
                settled_keys = bench.create(settled, adopting_spec(), "settled")
                bench.wait_all(
                    settled_keys, lambda o: (o.get("status") or {}).get("phase") == "Promoted", timeout=60 + settled
                )
                time.sleep(5)
                r0, q0, t0 = reconciles(procs), prom_queries(prom), time.time()
                # At least two resyncs of every settled rollout, counted by the controllers themselves.
                while reconciles(procs) < r0 + 2 * settled or time.time() - t0 < 2 * RESYNC_S:
                    if time.time() - t0 > 10 * RESYNC_S:
                        raise TimeoutError(f"{reconciles(procs) - r0} reconciles of {settled} settled rollouts")
                    time.sleep(1)
                r1, q1, t1 = reconciles(procs), prom_queries(prom), time.time()
                ctrl = bench.audit.between(t0, t1, "modelrollout-controller/")
                result["settled_window_s"] = t1 - t0
                result["settled_reconciles"] = r1 - r0
                result["settled_api_per_rollout_min"] = per_rollout_min(ctrl, "settled", settled, t1 - t0)
                result["settled_prom_per_rollout_min"] = (q1 - q0) / settled / ((t1 - t0) / 60)
                record_rss(result, "settled", procs)
                print(
                    f"  {settled} settled: {r1 - r0} reconciles in {t1 - t0:.0f}s, "
                    f"{result['settled_api_per_rollout_min']:.4f} API req and "
                    f"{result['settled_prom_per_rollout_min']:.4f} queries per rollout per minute, "
                    f"RSS {rss_text(result, 'settled')} MiB",
                    flush=True,
                )
            began = time.monotonic()
            keys = bench.create(n, spec, "scale")
            created = time.monotonic() - began
            result["create_s"] = created
            result["start_s"] = created + bench.wait_all(keys, lambda o: weight(o) == 10, timeout=60 + n)
            record_rss(result, "started", procs)
            print(f"  N={n}: created in {created:.1f}s, all at step 1 after {result['start_s']:.1f}s", flush=True)

            # Steady window: every rollout holds at step 1 and is analysed every interval.
            window = max(2 * INTERVAL_S, 60)
            time.sleep(5)
            q0, t0, cpu0 = prom_queries(prom), time.time(), component_cpu(plane, prom, procs)
            u0 = unwritten(procs)
            time.sleep(window)
            q1, t1, cpu1 = prom_queries(prom), time.time(), component_cpu(plane, prom, procs)
            u1 = unwritten(procs)
            # Where the cores went in the steady window: CPU seconds per wall second, by process.
            result["cpu_share"] = {name: (cpu1[name] - cpu0[name]) / (t1 - t0) for name in cpu0}
            ctrl = bench.audit.between(t0, t1, "modelrollout-controller/")
            minutes = (t1 - t0) / 60
            progressing = [e for e in ctrl if e["ns"].startswith("scale-") and e["verb"] != "watch"]
            result["api_per_rollout_min"] = len(progressing) / n / minutes
            result["api_writes_per_rollout_min"] = (
                sum(1 for e in progressing if e["verb"] not in ("get", "list")) / n / minutes
            )
            result["api_reads_per_rollout_min"] = (
                sum(1 for e in progressing if e["verb"] in ("get", "list")) / n / minutes
            )
            # In the steady window each status write is an analysis (a first verdict, or evidence),
            # and so is each analysis kept unwritten (--evidence-checkpoint).
            status_writes = sum(1 for e in progressing if e["sub"] == "status" and e["verb"] not in ("get", "list"))
            result["status_writes_per_rollout_min"] = status_writes / n / minutes
            result["analyses_per_rollout_min"] = (status_writes + u1 - u0) / n / minutes
            # Not about one rollout: the lease, and the watches' re-opens.
            result["api_other_per_min"] = (
                sum(1 for e in ctrl if e["verb"] == "watch" or not e["ns"].startswith(("scale-", "settled-"))) / minutes
            )
            if settled:
                result["settled_api_per_rollout_min_beside"] = per_rollout_min(ctrl, "settled", settled, t1 - t0)
            result["prom_per_rollout_interval"] = (q1 - q0) / n / ((t1 - t0) / INTERVAL_S)
            result["prom_per_rollout_min"] = (q1 - q0) / n / minutes
            record_rss(result, "steady", procs)
            result["owned"] = [owned(proc) for proc in procs]
            shares = ", ".join(f"{name} {share:.2f}" for name, share in result["cpu_share"].items())
            print(
                f"  steady: {result['api_per_rollout_min']:.2f} API req/rollout/min, "
                f"{result['prom_per_rollout_interval']:.3f} queries/rollout/interval, "
                f"{result['analyses_per_rollout_min']:.2f} analyses/rollout/min of which "
                f"{result['status_writes_per_rollout_min']:.2f} written; cores used: {shares}"
                + (
                    ""
                    if SHARDS == 1
                    else f"; rollouts owned per shard {result['owned']}, RSS {rss_text(result, 'steady')} MiB"
                ),
                flush=True,
            )

            # Reconcile lag under a paced stream of spec changes.
            print(f"  queue depth before the patches: {queue_depth(procs)}", flush=True)
            t_lag = time.time()
            bench.patch_paced(keys, {"spec": {"paused": True}}, rate=50)
            print(f"  queue depth after the patches: {queue_depth(procs)}", flush=True)
            bench.wait_all(keys, lambda o: (o.get("status") or {}).get("phase") == "Paused", timeout=120 + n / 10)
            print(f"  queue depth once all were paused: {queue_depth(procs)}", flush=True)
            time.sleep(2)
            written = reconcile_lags(bench.audit, t_lag)
            lags = [lag for lag, _ in written]
            if not lags:
                # Seen once at 1,000 progressing beside 9,000 settled (resync 30 s): every rollout
                # reached Paused, yet no patch/status-write pair was found. Say what the log held.
                recent = bench.audit.between(t_lag - 1, time.time(), "")
                kinds: dict[str, int] = defaultdict(int)
                for e in recent:
                    if e["resource"] == "modelrollouts":
                        kinds[f"{e['ua'].split('/')[0]} {e['verb']} {e['sub']} {e['code']}"] += 1
                print(f"  no lag measured; modelrollouts requests since the patches: {dict(kinds)}", flush=True)
            result["lag_p50"], result["lag_p99"] = pct(lags, 0.5), pct(lags, 0.99)
            result["lag_max"] = max(lags, default=float("nan"))
            result["lag_n"] = len(lags)
            # By the shard that wrote the status: [p50, p99, max, count].
            by_shard: dict[str, list[float]] = defaultdict(list)
            for lag, who in written:
                by_shard[who].append(lag)
            result["lag_shards"] = {
                who: [pct(v, 0.5), pct(v, 0.99), max(v), len(v)] for who, v in sorted(by_shard.items())
            }
            record_rss(result, "lag", procs)
            print(
                f"  lag p50 {result['lag_p50']:.3f}s p99 {result['lag_p99']:.3f}s"
                + (
                    ""
                    if SHARDS == 1
                    else "; by shard "
                    + ", ".join(f"{who} p99 {v[1]:.3f}s of {v[3]}" for who, v in result["lag_shards"].items())
                ),
                flush=True,
            )

            # Nothing changes: every rollout paused. The controller must not write.
            time.sleep(3)
            t2 = time.time()
            time.sleep(30)
            idle = bench.audit.between(t2, time.time(), "modelrollout-controller/")
            result["idle_writes"] = sum(
                1 for e in idle if e["verb"] not in ("get", "list") and e["resource"] != "leases"
            )
            record_rss(result, "end", procs)
            result["alive"] = all(proc.proc.poll() is None for proc in procs)
            crashed = [line for proc in procs for line in proc.logs() if line.get("event") == "reconcile crashed"]
            result["crashes"] = len(crashed)
            # Over the whole run (settled ones included): rollouts written by more than one shard.
            # Of how many written at all: a 0 out of none would prove nothing.
            wrote = writers(bench.audit, ("scale", "settled"))
            result["written_rollouts"] = len(wrote)
            result["multi_shard_rollouts"] = sum(1 for who in wrote.values() if len(who) > 1)
            if SHARDS > 1:
                print(
                    f"  rollouts written by more than one shard: {result['multi_shard_rollouts']} "
                    f"of {result['written_rollouts']} written",
                    flush=True,
                )
        finally:
            factory.stop_all()
            bench.pool.shutdown(wait=False, cancel_futures=True)
            traffic.stop()
            exporter.close()
    return result


# -- the soak -------------------------------------------------------------------------------------


class Census:
    """The soak's view of bench/census_controller.py: after each cycle the Python heap's blocks and
    objects and the C allocator's bytes; after warm-up and at the end the commonest types, and
    which of them grew between the two."""

    TOP = 12

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "memory-census"
        self.program = [sys.executable, "-m", "bench.census_controller", str(self.dir)]

    def ask(self, name: str, types: bool, timeout: float = 120) -> dict[str, Any]:
        # Written whole, then renamed: the controller never reads an empty request.
        (self.dir / f"{name}.tmp-request").write_text("census" if types else "")
        (self.dir / f"{name}.tmp-request").rename(self.dir / f"{name}.request")
        answer = self.dir / f"{name}.json"
        deadline = time.monotonic() + timeout
        while not answer.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the controller did not answer census {name} in {timeout:.0f}s")
            time.sleep(0.5)
        result: dict[str, Any] = json.loads(answer.read_text())
        return result

    @classmethod
    def grew(cls, before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
        """The types whose count changed the most from `before` to `after` (each census' top types)."""
        old, new = before.get("types", {}), after.get("types", {})
        diff = {t: new.get(t, 0) - old.get(t, 0) for t in set(old) | set(new)}
        return dict(sorted(((t, d) for t, d in diff.items() if d), key=lambda x: -abs(x[1]))[: cls.TOP])


def run_soak(n: int, cycles: int, census: bool = False) -> dict[str, Any]:
    """`census`: the controller answers a memory census after each cycle (bench/census_controller.py,
    one shard only)."""
    exporter = Exporter()
    traffic = ModelTraffic(exporter)
    for model in (INCUMBENT, CANDIDATE, THIRD):
        traffic.set(model, ok=20)
    result: dict[str, Any] = {"n": n, "cycles": cycles, "shards": SHARDS, "rss": [], "rss_shards": []}
    with (
        running_control_plane(audit=True, apiserver_args=AUDIT_NO_ROTATION) as plane,
        PrometheusServer([exporter.port]) as prom,
    ):
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        install_crds(api, REPO / "crds")
        install_gateway_api_crds(api)
        bench = Bench(plane, prom)
        counter = Census(plane.workdir) if census else None
        factory, procs = controllers(plane, prom, counter.program if counter else None)
        try:
            spec = {
                "incumbent": {"name": INCUMBENT},
                "candidate": {"name": CANDIDATE},
                "canary": {"steps": [{"weight": 50, "hold": "2s"}]},
                "analysis": {"interval": "2s", "window": "10s", "progressDeadline": "10m", "inconclusiveLimit": 50},
                "guardrails": [
                    {
                        "name": "error-rate",
                        "metric": {"builtin": "ErrorRate"},
                        "absolute": {"max": 0.05},
                        "minSamples": 5,
                    }
                ],
            }
            keys = bench.create(n, spec, "soak")
            began = time.monotonic()
            # spec.incumbent stays model-a (it only bootstraps): the candidates alternate b, c, b...
            candidates = [CANDIDATE, THIRD]
            for cycle in range(cycles):
                target = candidates[cycle % 2]
                bench.wait_all(
                    keys,
                    lambda o, t=target: (
                        (o.get("status") or {}).get("phase") == "Promoted"
                        and ((o.get("status") or {}).get("incumbent") or {}).get("name") == t
                    ),
                    timeout=600,
                )
                result["rss_shards"].append(rss_each(procs))
                result["rss"].append(max(result["rss_shards"][-1]))
                seen = ""
                if counter is not None:
                    # Types counted after warm-up (cycle 3, as the growth is counted) and at the end.
                    types = cycle in (min(2, cycles - 1), cycles - 1)
                    result.setdefault("census", []).append(counter.ask(f"cycle-{cycle + 1}", types))
                    now = result["census"][-1]
                    seen = (
                        f", Python blocks {now['blocks']:,}, objects {now['objects']:,}, "
                        f"malloc in use {now.get('malloc_in_use', 0) / 2**20:.1f} MiB, "
                        f"free in the heap {now.get('malloc_free', 0) / 2**20:.1f} MiB"
                    )
                print(f"  cycle {cycle + 1}/{cycles}: RSS {result['rss'][-1]:.1f} MiB{seen}", flush=True)
                nxt = candidates[(cycle + 1) % 2]
                if cycle + 1 < cycles:
                    list(
                        bench.pool.map(
                            lambda k, c=nxt: bench.custom.patch_namespaced_custom_object(
                                GROUP, VERSION, k[0], PLURAL, k[1], {"spec": {"candidate": {"name": c}}}
                            ),
                            keys,
                        )
                    )
            result["soak_s"] = time.monotonic() - began
            objs = bench.statuses(keys)
            result["max_history"] = max(len((o.get("status") or {}).get("history") or []) for o in objs.values())
            result["per_rollout_series"] = sum(
                1
                for proc in procs
                for line in proc.metrics().splitlines()
                if re.match(r"^modelrollout_\w+\{.*namespace=", line)
            )
            result["alive"] = all(proc.proc.poll() is None for proc in procs)
            if counter is not None and cycles > 3:
                result["grew"] = Census.grew(result["census"][2], result["census"][-1])
                print(f"  types that grew from cycle 3 to the end: {result['grew']}", flush=True)
        finally:
            factory.stop_all()
            bench.pool.shutdown(wait=False, cancel_futures=True)
            traffic.stop()
            exporter.close()
    warm = result["rss"][min(2, len(result["rss"]) - 1)]
    result["growth_pct"] = 100 * (result["rss"][-1] - warm) / warm
    return result


# -- report ---------------------------------------------------------------------------------------


def table(scale: list[dict[str, Any]], soak: dict[str, Any] | None) -> str:
    lines = [
        "| progressing | shards | evidence checkpoint | settled | all at step 1 (s) | lag p50 (s) | lag p99 (s) "
        "| lag max (s) | analyses / rollout / min (of which written) | API req / progressing rollout / min | of which writes | of which reads "
        "| Prometheus queries / progressing rollout / min (/ interval) "
        "| API req / settled rollout / min (alone; beside) | Prometheus queries / settled rollout / min "
        "| other API req / min (lease, watches) | cores used, steady (controllers (per shard) / kube-apiserver "
        "/ etcd / Prometheus) | rollouts owned per shard | RSS steady (MiB, largest shard) | RSS max (MiB) "
        "| RSS max per shard (MiB) | writes while nothing changed | rollouts written by two shards |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in scale:
        # Per shard, its largest RSS over the phases; with one shard, the controller's.
        per_shard = [max(each) for each in zip(*r["rss_shards"].values(), strict=True)]
        share = r.get("cpu_share") or {}
        names = shard_names(r["shards"])
        ctrl = f"{sum(share.get(k, 0.0) for k in names):.2f}"
        if len(names) > 1:
            ctrl += " (" + ", ".join(f"{share.get(k, 0.0):.2f}" for k in names) + ")"
        cores = " / ".join([ctrl, *(f"{share.get(k, 0.0):.2f}" for k in ("kube-apiserver", "etcd", "prometheus"))])
        settled = "-"
        settled_queries = "-"
        if r.get("settled"):
            settled = f"{r['settled_api_per_rollout_min']:.3f}; {r['settled_api_per_rollout_min_beside']:.3f}"
            settled_queries = f"{r['settled_prom_per_rollout_min']:.3f}"
        lines.append(
            f"| {r['n']} | {r['shards']} | {r.get('evidence_checkpoint', '0s')} | {r.get('settled', 0)} "
            f"| {r['start_s']:.1f} | {r['lag_p50']:.3f} | {r['lag_p99']:.3f} | {r['lag_max']:.3f} "
            f"| {r.get('analyses_per_rollout_min', float('nan')):.2f} "
            f"({r.get('status_writes_per_rollout_min', float('nan')):.2f}) | {r['api_per_rollout_min']:.2f} | {r['api_writes_per_rollout_min']:.2f} "
            f"| {r['api_reads_per_rollout_min']:.2f} | {r['prom_per_rollout_min']:.2f} ({r['prom_per_rollout_interval']:.2f}) "
            f"| {settled} "
            f"| {settled_queries} | {r['api_other_per_min']:.1f} "
            f"| {cores} | {', '.join(str(o) for o in r['owned'])} "
            f"| {r['rss_steady']:.0f} | {max(per_shard):.0f} | {', '.join(f'{v:.0f}' for v in per_shard)} "
            f"| {r['idle_writes']} | {r['multi_shard_rollouts']} |"
        )
    if soak is not None:
        lines += [
            "",
            "| soak | shards | cycles | wall (s) | RSS after cycle 3 (MiB, largest shard) | RSS at the end (MiB) "
            "| growth after warm-up | longest status.history | per-rollout metric series (all shards) |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {soak['n']} rollouts | {soak['shards']} | {soak['cycles']} | {soak['soak_s']:.0f} "
            f"| {soak['rss'][min(2, len(soak['rss']) - 1)]:.0f} | {soak['rss'][-1]:.0f} "
            f"| {soak['growth_pct']:+.1f}% | {soak['max_history']} | {soak['per_rollout_series']} |",
        ]
        if "census" in soak:
            first, last = soak["census"][min(2, len(soak["census"]) - 1)], soak["census"][-1]
            lines += [
                "",
                "| census (bench/census_controller.py) | after cycle 3 | at the end |",
                "|---|---|---|",
                *(
                    f"| {label} | {first.get(key, 0) / scale:,.{digits}f} | {last.get(key, 0) / scale:,.{digits}f} |"
                    for label, key, scale, digits in (
                        ("Python allocator blocks in use", "blocks", 1, 0),
                        ("objects the GC tracks", "objects", 1, 0),
                        ("malloc in use (MiB)", "malloc_in_use", 2**20, 1),
                        ("free inside the heap (MiB)", "malloc_free", 2**20, 1),
                    )
                ),
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.scale")
    parser.add_argument(
        "sizes",
        nargs="*",
        type=int,
        help="progressing rollouts, one run each (default 100 1000; none with --argo; 0: none)",
    )
    parser.add_argument("--soak", default="500x20", help="MxC: M rollouts through C cycles ('' to skip)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--workers", type=int, default=4, help="the controller's --workers (default 4, its default)")
    parser.add_argument("--settled", type=int, default=0, help="settled rollouts created first, beside each size")
    parser.add_argument("--resync", type=int, default=30, help="the controller's --resync-period here (default 30)")
    parser.add_argument(
        "--shards", type=int, default=1, help="controller shards, one leader process each (default 1: one controller)"
    )
    parser.add_argument(
        "--evidence-checkpoint",
        default="0s",
        help="the controller's --evidence-checkpoint (default 0s: every analysis written, its default)",
    )
    parser.add_argument(
        "--argo",
        default="",
        help="N[,N...]: side by side with Argo Rollouts, N settled objects on each controller (bench/argo.py)",
    )
    parser.add_argument(
        "--memory-census",
        action="store_true",
        help="the soak's controller answers a memory census each cycle (bench/census_controller.py)",
    )
    parser.add_argument(
        "--argo-canary",
        default="",
        help="N[,N...]: side by side with Argo Rollouts, N canaries in flight on each controller (bench/argo_canary.py)",
    )
    args = parser.parse_args(argv)
    if args.memory_census and args.shards != 1:
        parser.error("--memory-census counts one controller: use it with --shards 1")
    argo_sizes = [int(x) for x in args.argo.replace(",", " ").split()]
    canary_sizes = [int(x) for x in args.argo_canary.replace(",", " ").split()]
    if not args.sizes and not argo_sizes and not canary_sizes:
        args.sizes = [100, 1000]
    args.sizes = [n for n in args.sizes if n > 0]  # "0": no size run (e.g. the soak alone)
    if args.shards < 1:
        parser.error("--shards must be at least 1")
    global WORKERS, RESYNC_S, SHARDS, CHECKPOINT
    WORKERS, RESYNC_S, SHARDS, CHECKPOINT = args.workers, args.resync, args.shards, args.evidence_checkpoint
    print(
        f"bench-scale on {os.cpu_count()} cores, "
        + ("" if SHARDS == 1 else f"{SHARDS} shards of ")
        + f"{WORKERS} workers, resync {RESYNC_S}s, evidence checkpoint {CHECKPOINT}: sizes {args.sizes}, "
        f"{args.settled} settled beside each, soak {args.soak or 'skipped'}",
        flush=True,
    )
    scale = []
    for n in args.sizes:
        print(f"N={n}", flush=True)
        scale.append(run_scale(n, args.settled))
    side = []
    if argo_sizes:
        from bench.argo import ARGO_VERSION, run_side_by_side
        from bench.argo import table as argo_table

        print(f"side by side with Argo Rollouts {ARGO_VERSION}: {argo_sizes} settled objects each", flush=True)
        for n in argo_sizes:
            print(f"N={n} side by side", flush=True)
            side.append(run_side_by_side(n, RESYNC_S))
    canaries = []
    if canary_sizes:
        from bench.argo_canary import run_canaries_side_by_side
        from bench.argo_canary import table as canary_table

        print(f"side by side with Argo Rollouts: {canary_sizes} canaries in flight each", flush=True)
        for n in canary_sizes:
            print(f"N={n} canaries side by side", flush=True)
            canaries.append(run_canaries_side_by_side(n, RESYNC_S, CHECKPOINT))
    soak = None
    if args.soak:
        m, c = (int(x) for x in args.soak.split("x"))
        print(f"soak {m}x{c}", flush=True)
        soak = run_soak(m, c, census=args.memory_census)
    report = table(scale, soak) if scale or soak else ""
    if side:
        report += ("\n\n" if report else "") + argo_table(side)
    if canaries:
        report += ("\n\n" if report else "") + canary_table(canaries)
    print(report)
    if args.json:
        results = {"scale": scale, "soak": soak, "argo": side, "argo_canary": canaries}
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
