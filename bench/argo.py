"""Side by side with Argo Rollouts (issue 23): N settled objects on each controller, one plane, one run.

`python -m bench.scale --argo 1000` (or `make bench-scale ARGO=1000 SIZES= SOAK=`). One local
etcd + kube-apiserver (bench/scale.py's `running_control_plane(audit=True, ...)`), whose audit log
here records every request but watches, reads included, at Metadata level: the tests' policy keeps
only the reads of our own kinds, which would leave Argo's uncounted. Two phases, one after the
other, on that plane:

1. ours: `modelrollout-controller` (4 workers, `--resync-period R`, no leader election, warning
   logs), then N ModelRollouts in namespaces `mr-*` (250 a namespace), each with its HTTPRoute and
   adopting its model (no incumbent: Promoted at once, nothing in flight, no analysis ever due:
   bench/scale.py's settled rollouts). Settled: status.phase Promoted.
2. Argo's: `rollouts-controller` (built from the Go module proxy by hack/build-argo-rollouts.sh;
   `--rollout-resync R`, `--leader-elect=false`, `--loglevel warn`, cluster-wide like ours), its
   CRDs from the module cache, then N Rollouts in namespaces `argo-*`: canary strategy with ours'
   steps (setWeight 10, pause 20m, setWeight 50, pause 20m) and `replicas: 0`. Argo takes a new
   Rollout's first ReplicaSet as stable at once (no step runs), and with 0 replicas that ReplicaSet
   needs no pod (there is no kube-controller-manager here, so no pod would ever start). Settled:
   status.phase Healthy with status.observedGeneration equal to metadata.generation (what Argo
   wrote is printed: the count per phase).

Our controller is stopped before Argo's starts, so neither's CPU blurs the other's on the same
cores; each one's requests are also counted by its user agent only (ours
`modelrollout-controller/<identity>`, Argo's `rollouts-controller/...`: the agents seen in Argo's
phase are printed, to check). Both use the same resync period R (`--resync`, 30 s by default;
Argo's own default is 900 s, ours 600 s): short, so the window holds resyncs.

Per controller, with the ratio Argo / ours:
- settled after: seconds from the first create until every object is settled;
- to settle: API requests per object by the controller (audit log) and its CPU seconds, from the
  first create until one resync period (+5 s) after all are settled: Argo's first resync after
  that still writes an Event RolloutCompleted per Rollout (no status write; none at later
  resyncs: seen over 10 resyncs at 200), so that tail is counted as settling, not as the steady cost;
- settled window: from there, a window of at least 2 R and until the controller has
  reconciled every object at least twice more (its own counter: ours
  `modelrollout_reconciles_total`, Argo's `rollout_reconcile_count`; read at the window's start and
  every 10 s after 2 R, at most 10 R): API requests per object per minute (audit log, watches not
  counted), of which writes; requests outside the objects' namespaces per minute; CPU seconds per
  minute (/proc/<pid>/stat);
- RSS: VmRSS with no object yet (idle), its median in the settled window (steady) and the largest
  of one sample a second from the controller's start to the window's end (max).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config

from bench.scale import AUDIT_NO_ROTATION, PER_NAMESPACE, REPO, Bench, adopting_spec, cpu_seconds, rss_mib, stamp
from controller.api import GROUP, PLURAL, VERSION
from tests.support.controller import ControllerFactory, metric_value
from tests.support.controlplane import ControlPlane, free_port, running_control_plane, stop_process
from tests.support.gatewayapi import install_gateway_api_crds
from tests.support.kube import install_crds

ARGO_VERSION = os.environ.get("ARGO_ROLLOUTS_VERSION", "v1.10.2")
ARGO_GROUP, ARGO_API, ARGO_PLURAL = "argoproj.io", "v1alpha1", "rollouts"
OURS_UA: tuple[str, ...] = ("modelrollout-controller/",)
ARGO_UA: tuple[str, ...] = ("rollouts-controller", "argo-rollouts")
# Every request but watches, reads included (the tests' policy drops reads of other groups).
AUDIT_ALL = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    verbs: ["watch"]
  # Events with their body: what each controller reported (reasons), not only how often.
  - level: Request
    resources:
      - group: ""
        resources: ["events"]
  - level: Metadata
"""
POLL_S = 10  # how often the window reads the controller's reconcile counter after 2 R


def go_env(name: str) -> str:
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": ""}
    return subprocess.run(["go", "env", name], env=env, check=True, capture_output=True, text=True).stdout.strip()


def argo_binary(version: str = ARGO_VERSION) -> Path:
    """rollouts-controller of `version`, built once per machine (hack/build-argo-rollouts.sh)."""
    done = subprocess.run(
        ["bash", str(REPO / "hack" / "build-argo-rollouts.sh")],
        env={**os.environ, "ARGO_ROLLOUTS_VERSION": version},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"hack/build-argo-rollouts.sh exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1]) / "rollouts-controller"


def argo_crds(version: str = ARGO_VERSION) -> Path:
    path = Path(go_env("GOMODCACHE")) / f"github.com/argoproj/argo-rollouts@{version}" / "manifests" / "crds"
    if not path.is_dir():
        raise RuntimeError(f"{path} is missing: hack/build-argo-rollouts.sh downloads the module")
    return path


class Sampler:
    """VmRSS of one process, one sample a second, in a thread, each with its time."""

    def __init__(self, pid: int, period: float = 1.0) -> None:
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = rss_mib(self.pid)
            except OSError:
                return
            if rss > 0:
                self.samples.append((time.time(), rss))
            self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def max(self) -> float:
        return max((rss for _, rss in self.samples), default=float("nan"))

    def median(self, start: float, end: float) -> float:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return statistics.median(inside) if inside else float("nan")


def event_reasons(path: Path, start: float, end: float, agents: tuple[str, ...]) -> dict[str, int]:
    """The reasons of the Events these agents created in [start, end), from the audit log's bodies,
    and how many objects they were about ("(objects)")."""
    reasons: Counter[str] = Counter()
    objects: set[str] = set()
    with open(path, "rb") as handle:
        for line in handle:
            if b'"events"' not in line or b'"create"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (
                event.get("stage") == "ResponseComplete"
                and event.get("verb") == "create"
                and (event.get("objectRef") or {}).get("resource") == "events"
                and event.get("userAgent", "").startswith(agents)
                and start <= stamp(event["requestReceivedTimestamp"]) < end
            ):
                body = event.get("requestObject") or {}
                reasons[f"{body.get('type', '')} {body.get('reason', '')}"] += 1
                objects.add(str((body.get("involvedObject") or {}).get("name")))
    out = dict(reasons.most_common(8))
    if out:
        out["(objects)"] = len(objects)
    return out


def by_agent(bench: Bench, start: float, end: float, agents: tuple[str, ...]) -> list[dict[str, Any]]:
    """Requests (not watches: the policy drops them) received in [start, end) from these agents."""
    return [e for e in bench.audit.read() if start <= e["received"] < end and e["ua"].startswith(agents)]


# -- the two controllers --------------------------------------------------------------------------


class Side:
    """One controller and its kind of object: started, fed N objects, read, stopped."""

    label = ""
    agents: tuple[str, ...] = ()
    prefix = ""  # its objects' namespaces: <prefix>-<i>
    group, version, plural = "", "", ""

    def start(self) -> int:
        """Start the controller; return its pid once it is up."""
        raise NotImplementedError

    def create(self, bench: Bench, n: int) -> list[tuple[str, str]]:
        raise NotImplementedError

    def settled(self, obj: dict[str, Any]) -> bool:
        raise NotImplementedError

    def reconciles(self) -> int:
        raise NotImplementedError

    def describe(self, obj: dict[str, Any]) -> str:
        """What the controller wrote, in a word or two (counted over all objects)."""
        return str((obj.get("status") or {}).get("phase"))

    def stop(self) -> None:
        raise NotImplementedError

    def log_summary(self) -> dict[str, int]:
        """Its log lines so far by level and message, the most common first."""
        counts: Counter[str] = Counter()
        for line in self.log_lines():
            try:
                entry = json.loads(line)
            except ValueError:
                counts[line[:80]] += 1
                continue
            message = str(entry.get("msg") or entry.get("event") or "")[:80]
            counts[f"{entry.get('level', '')}: {message}"] += 1
        return dict(counts.most_common(5))

    def log_lines(self) -> list[str]:
        raise NotImplementedError


class Ours(Side):
    label = "modelrollout (ours)"
    agents = OURS_UA
    prefix = "mr"
    group, version, plural = GROUP, VERSION, PLURAL

    def __init__(
        self, plane: ControlPlane, resync: int, prometheus_url: str | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        self.factory = ControllerFactory(plane, prometheus_url=prometheus_url)
        self.resync, self.extra = resync, extra

    def start(self) -> int:
        self.proc = self.factory.start(
            "argo-side-ours",
            *("--workers", "4", "--log-level", "warning", "--resync-period", str(self.resync), "--no-leader-elect"),
            *self.extra,
        )
        return self.proc.proc.pid

    def create(self, bench: Bench, n: int) -> list[tuple[str, str]]:
        return bench.create(n, adopting_spec(), self.prefix)

    def settled(self, obj: dict[str, Any]) -> bool:
        return (obj.get("status") or {}).get("phase") == "Promoted"

    def reconciles(self) -> int:
        return self.proc.reconciles()

    def stop(self) -> None:
        self.factory.stop_all()

    def log_lines(self) -> list[str]:
        return self.proc.log_path.read_text(errors="replace").splitlines()


def argo_rollout(name: str) -> dict[str, Any]:
    """A Rollout that Argo settles without a pod: canary (ours' steps), 0 replicas."""
    labels = {"app": name}
    return {
        "apiVersion": f"{ARGO_GROUP}/{ARGO_API}",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "model", "image": "model-a"}]},
            },
            "strategy": {
                "canary": {
                    "steps": [
                        {"setWeight": 10},
                        {"pause": {"duration": "20m"}},
                        {"setWeight": 50},
                        {"pause": {"duration": "20m"}},
                    ]
                }
            },
        },
    }


class Argo(Side):
    agents = ARGO_UA
    prefix = "argo"
    group, version, plural = ARGO_GROUP, ARGO_API, ARGO_PLURAL

    def __init__(self, plane: ControlPlane, resync: int, binary: Path, version: str) -> None:
        self.plane, self.resync, self.binary = plane, resync, binary
        self.label = f"Argo Rollouts {version}"
        self.metrics_port, self.healthz_port = free_port(), free_port()
        self.log_path = plane.workdir / "rollouts-controller.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        # Its metrics and healthz ports take a number only: Argo listens on 0.0.0.0:<port>.
        argv = [
            str(self.binary),
            *("--kubeconfig", str(self.plane.kubeconfig)),
            "--leader-elect=false",
            *("--loglevel", "warn", "--logformat", "json"),
            *("--rollout-resync", str(self.resync)),
            *("--metricsPort", str(self.metrics_port), "--healthzPort", str(self.healthz_port)),
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"rollouts-controller exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{self.healthz_port}/healthz", timeout=1).status_code == 200:
                    return self.proc.pid
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"rollouts-controller not healthy in 60 s: {self.log_path.read_text()[-3000:]}")

    def create(self, bench: Bench, n: int) -> list[tuple[str, str]]:
        namespaces = [f"{self.prefix}-{i}" for i in range((n + PER_NAMESPACE - 1) // PER_NAMESPACE)]
        for ns in namespaces:
            bench.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        keys = [(namespaces[i // PER_NAMESPACE], f"r{i}") for i in range(n)]

        def one(key: tuple[str, str]) -> None:
            ns, name = key
            bench.custom.create_namespaced_custom_object(ARGO_GROUP, ARGO_API, ns, ARGO_PLURAL, argo_rollout(name))

        list(bench.pool.map(one, keys))
        return keys

    def settled(self, obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        return status.get("phase") == "Healthy" and status.get("observedGeneration") == str(
            obj["metadata"].get("generation")
        )

    def describe(self, obj: dict[str, Any]) -> str:
        status = obj.get("status") or {}
        completed = [c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Completed"]
        return f"{status.get('phase')}, Completed={completed[0] if completed else '-'}"

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30).text

    def reconciles(self) -> int:
        return int(metric_value(self.metrics(), "rollout_reconcile_count"))

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


# -- one phase --------------------------------------------------------------------------------


def list_objects(bench: Bench, side: Side, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for ns in sorted({ns for ns, _ in keys}):
        listed: Any = bench.custom.list_namespaced_custom_object(side.group, side.version, ns, side.plural)
        for obj in listed["items"]:
            out[(ns, obj["metadata"]["name"])] = obj
    return out


def wait_for(
    bench: Bench,
    side: Side,
    keys: list[tuple[str, str]],
    done: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float,
) -> dict[str, int]:
    """Until `done` holds for every object; what each is (side.describe), counted, at the end."""
    began = time.monotonic()
    while True:
        objs = list_objects(bench, side, keys)
        phases = Counter(side.describe(o) for o in objs.values())
        count = sum(1 for k in keys if k in objs and done(objs[k]))
        if count == len(keys):
            return dict(phases)
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{side.label}: {count}/{len(keys)} {what} after {timeout:.0f}s; {dict(phases)}")
        time.sleep(1)


def measure(bench: Bench, side: Side, n: int, resync: int) -> dict[str, Any]:
    r: dict[str, Any] = {"controller": side.label, "n": n, "resync_s": resync}
    t_start = time.time()
    pid = side.start()
    sampler = Sampler(pid)
    try:
        time.sleep(5)
        r["rss_idle"] = rss_mib(pid)
        t0, cpu0 = time.time(), cpu_seconds(pid)
        keys = side.create(bench, n)
        r["create_s"] = time.time() - t0
        r["phases"] = wait_for(bench, side, keys, side.settled, "settled", timeout=120 + n / 5)
        t1 = time.time()
        r["settle_s"] = t1 - t0
        # The first resync after the last object settled still does settling work for Argo (once
        # per Rollout: an Event RolloutCompleted, no status write; none at later resyncs): it is
        # counted with the settling, and the window starts after it.
        time.sleep(resync + 5)
        t2, cpu2, rec0 = time.time(), cpu_seconds(pid), side.reconciles()
        r["settle_cpu_s"] = cpu2 - cpu0
        settling = by_agent(bench, t0, t2, side.agents)
        r["settle_api_per_object"] = len(settling) / n
        r["settle_writes_per_object"] = sum(1 for e in settling if e["verb"] not in ("get", "list")) / n
        print(
            f"  {side.label}: {n} settled after {r['settle_s']:.1f}s (created in {r['create_s']:.1f}s; "
            f"phases {r['phases']}); until one resync later {r['settle_api_per_object']:.2f} API requests "
            f"per object, {r['settle_cpu_s']:.1f} CPU s",
            flush=True,
        )

        # The settled window: two resyncs of every object at least.
        time.sleep(2 * resync)
        while True:
            rec = side.reconciles()
            if rec >= rec0 + 2 * n:
                break
            if time.time() - t2 >= 10 * resync:
                r["window_capped"] = True
                break
            time.sleep(POLL_S)
        t3, cpu3 = time.time(), cpu_seconds(pid)
        minutes = (t3 - t2) / 60
        window = by_agent(bench, t2, t3, side.agents)
        r["window_s"] = t3 - t2
        r["window_reconciles"] = rec - rec0
        r["api_per_object_min"] = len(window) / n / minutes
        r["writes_per_object_min"] = sum(1 for e in window if e["verb"] not in ("get", "list")) / n / minutes
        r["api_elsewhere_per_min"] = sum(1 for e in window if not e["ns"].startswith(side.prefix + "-")) / minutes
        r["window_requests"] = dict(
            Counter(f"{e['verb']} {e['resource']}{'/' + e['sub'] if e['sub'] else ''}" for e in window)
        )
        assert bench.plane.audit_log is not None
        r["window_events"] = event_reasons(bench.plane.audit_log, t2, t3, side.agents)
        r["settle_events"] = event_reasons(bench.plane.audit_log, t0, t1, side.agents)
        r["first_resync_events"] = event_reasons(bench.plane.audit_log, t1, t2, side.agents)
        r["log"] = side.log_summary()
        r["phases_after"] = dict(Counter(side.describe(o) for o in list_objects(bench, side, keys).values()))
        r["cpu_s_per_min"] = (cpu3 - cpu2) / minutes
        r["rss_steady"] = sampler.median(t2, t3)
        r["rss_max"] = sampler.max()
        # Who sent what in this phase (the bench's own requests aside): checks the agents counted.
        r["agents"] = dict(
            Counter(
                e["ua"].split(" ")[0]
                for e in bench.audit.read()
                if t_start <= e["received"] < t3 and e["ua"] != "bench-scale"
            ).most_common(6)
        )
        print(
            f"  {side.label}: settled window {r['window_s']:.0f}s, {r['window_reconciles']} reconciles"
            f"{' (capped at 10 resyncs)' if r.get('window_capped') else ''}, "
            f"{r['api_per_object_min']:.4f} API req/object/min {r['window_requests']}, "
            f"{r['cpu_s_per_min']:.2f} CPU s/min, RSS {r['rss_steady']:.0f} steady / {r['rss_max']:.0f} max MiB; "
            f"agents in the phase {r['agents']}",
            flush=True,
        )
        print(
            f"    after the window {r['phases_after']}; "
            f"Events created while settling {r['settle_events']}, in the first resync after "
            f"{r['first_resync_events']}, in the window {r['window_events']}; "
            f"its log: {r['log']}",
            flush=True,
        )
    finally:
        sampler.stop()
        side.stop()
    return r


def run_side_by_side(n: int, resync: int, version: str = ARGO_VERSION) -> dict[str, Any]:
    """Ours, then Argo's, each with N settled objects, on one plane in one run."""
    out: dict[str, Any] = {"n": n, "resync_s": resync, "version": version}
    try:
        binary = argo_binary(version)
        crds = argo_crds(version)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        binary, crds = None, None
        out["argo_error"] = f"build: {exc}"
        print(f"  Argo Rollouts {version} could not be built: {exc}", flush=True)
    with running_control_plane(audit=True, apiserver_args=AUDIT_NO_ROTATION, audit_policy=AUDIT_ALL) as plane:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))  # type: ignore[no-untyped-call]
        install_crds(api, REPO / "crds")
        install_gateway_api_crds(api)
        bench = Bench(plane)
        try:
            out["ours"] = measure(bench, Ours(plane, resync), n, resync)
            if binary is not None and crds is not None:
                install_crds(api, crds)
                try:
                    out["argo"] = measure(bench, Argo(plane, resync, binary, version), n, resync)
                except (RuntimeError, TimeoutError, OSError) as exc:
                    out["argo_error"] = f"run: {exc}"
                    print(f"  Argo Rollouts {version} failed: {exc}", flush=True)
        finally:
            bench.pool.shutdown(wait=False, cancel_futures=True)
    return out


# -- report ---------------------------------------------------------------------------------------

COLUMNS: list[tuple[str, str, str]] = [
    # (result key, header, format)
    ("settle_s", "all settled after (s)", ".1f"),
    ("settle_api_per_object", "API req / object to settle (+1 resync)", ".2f"),
    ("settle_cpu_s", "CPU s to settle (+1 resync)", ".2f"),
    ("api_per_object_min", "API req / object / min, settled", ".4f"),
    ("writes_per_object_min", "of which writes", ".4f"),
    ("api_elsewhere_per_min", "API req / min outside the objects' namespaces", ".1f"),
    ("cpu_s_per_min", "CPU s / min, settled", ".2f"),
    ("rss_idle", "RSS, no object (MiB)", ".0f"),
    ("rss_steady", "RSS steady (MiB)", ".0f"),
    ("rss_max", "RSS max (MiB)", ".0f"),
]


def ratio(argo: float, ours: float) -> str:
    if ours == 0:
        return "- (both 0)" if argo == 0 else "- (ours 0)"
    return f"{argo / ours:.2f}"


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| objects | controller | "
        + " | ".join(h for _, h, _ in COLUMNS)
        + " | settled window (s) | reconciles in it / object |",
        "|---|---|" + "---|" * (len(COLUMNS) + 2),
    ]
    for res in results:
        rows = [res[k] for k in ("ours", "argo") if k in res]
        for r in rows:
            lines.append(
                f"| {res['n']:,} | {r['controller']} | "
                + " | ".join(format(r[k], f) for k, _, f in COLUMNS)
                + f" | {r['window_s']:.0f} | {r['window_reconciles'] / res['n']:.2f} |"
            )
        if len(rows) == 2:
            ours, argo = rows
            lines.append(
                f"| {res['n']:,} | ratio Argo / ours | "
                + " | ".join(ratio(argo[k], ours[k]) for k, _, _ in COLUMNS)
                + " | | |"
            )
        if "argo_error" in res:
            lines.append(f"| {res['n']:,} | Argo Rollouts {res['version']}: failed | {res['argo_error'][:300]} |")
    return "\n".join(lines)
