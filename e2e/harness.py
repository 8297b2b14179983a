"""The world of `make demo` and the end-to-end suite, and its scenarios.

`Stack` starts, in order: a Kubernetes API (the local etcd + kube-apiserver of
tests/support/controlplane.py by default, or a kind cluster with `E2E_CLUSTER=kind`), the CRDs
(ours, the official Gateway API ones and the InferencePool), one model server per model of every
scenario (a stand-in LLM server, e2e/llm.py, for the LLM scenarios), a
real Prometheus scraping them every second, and the real controller process. A scenario whose
ModelRollout has `spec.shadow` also gets its comparator (`python -m controller.comparator`, its
own process, scraped by the same Prometheus) behind a Service named in `shadow.comparator`, and
the API server keeps an audit log (the mirror filter's writes). Each `Scenario`
then gets its HTTPRoute, a gateway routing by it, a steady load through that gateway, and
finally its ModelRollout (applied with the real kubectl). `Stack.close()` stops all of it;
the processes it started (etcd, kube-apiserver, prometheus, the controller) are stopped by pid.

The data plane (`data_plane`, or `E2E_DATA_PLANE`):
- `traefik` (the default on the local plane): Traefik v3, a real Gateway API implementation
  (tests/support/traefik.py), with kube-controller-manager, kube-scheduler and kwok
  (tests/support/workload.py). Each model is a Deployment of one pod and a Service selecting it;
  kwok gives the pod an IP inside the test's network namespace (tests/support/netns.py), the
  model server listens there, and the real endpointslice controller writes the EndpointSlices
  Traefik resolves. One Gateway with one listener (and Traefik entry point) per scenario; each
  route names its listener by `sectionName`. The split check reads the weights Traefik applied
  from its API (`WeightTimeline`). The host reaches the servers and the entry points only through
  relays on 127.0.0.1 (Prometheus, the load, the labeller).
- `standin`: e2e/gateway.py, a stand-in that is NOT a Gateway API implementation (the fallback,
  and with `E2E_CLUSTER=kind`); model servers on 127.0.0.1.
The LLM scenarios always use the stand-in: their backendRefs are InferencePools, which Traefik
v3.6 does not implement (docs/development.md). So do the shadow scenarios: Traefik v3.6's
Gateway API provider has no RequestMirror filter (its HTTPRoute filters are RequestRedirect,
RequestHeaderModifier, ResponseHeaderModifier, URLRewrite and ExtensionRef).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client, config

from controller.api import GROUP, PLURAL, VERSION
from e2e.gateway import Gateway
from e2e.labeller import Labeller
from e2e.llm import LLM_VARIANTS, LlmServer
from e2e.load import Load
from e2e.models import POD_PORT, VARIANTS, ModelServer, accuracy
from tests.support.backends import inference_pool, install_inference_pool_crds
from tests.support.controller import ControllerFactory, ControllerProcess
from tests.support.controlplane import REPO, ControlPlane, bin_dir, free_port, running_control_plane, stop_process
from tests.support.gatewayapi import install_gateway_api_crds
from tests.support.kube import install_crds
from tests.support.netns import NetNS, network_namespace
from tests.support.prometheus import PrometheusServer
from tests.support.traefik import Traefik, WeightTimeline, ensure_gateway_class
from tests.support.traefik import gateway as gateway_object
from tests.support.workload import Workload, live_pods, rolled_out, until

DATA_PLANES = ("traefik", "standin")
# The Gateway the demo's routes name (examples/demo/*.yaml parentRefs); Traefik programs it.
# With Traefik as the data plane the stand-in's routes name another, which nothing programs (the
# stand-in gateway reads its route by name, whatever its parentRefs).
GATEWAY = "demo-gateway"
STANDIN_GATEWAY = "standin-gateway"
# Entry point / listener ports inside the namespace: one per scenario, from here.
FIRST_ENTRY_PORT = 8000

DEMO = REPO / "examples" / "demo"
LLM = REPO / "examples" / "llm"


# -- scenarios -----------------------------------------------------------------------------------


@dataclass
class Scenario:
    """One ModelRollout over one HTTPRoute: `<key>-v1` (the incumbent) and its candidates."""

    key: str
    title: str
    models: dict[str, str]  # model name -> variant (models.VARIANTS)
    docs: list[dict[str, Any]]  # the HTTPRoute and the ModelRollout
    expected: str  # "Promoted" or "RolledBack"
    guardrail: str | None = None  # the guardrail expected to fail
    source: str = ""
    segments: dict[str, float] = field(default_factory=dict)  # region -> share of the load (X-Region)
    rate: float | None = None  # requests/s through its gateway (default: the stack's)
    labelled: bool = False  # its model servers get labels from the labelling process (e2e/labeller.py)
    llm: bool = False  # stand-in LLM servers behind InferencePools, streamed chat completions
    comparator_down: bool = False  # spec.shadow's comparator Service exists, no comparator answers it
    comparator: ComparatorProcess | None = None
    gateway: Gateway | TraefikRoute | None = None
    load: Load | None = None
    applied_at: float = 0.0
    verdict_at: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.key

    @property
    def incumbent(self) -> str:
        return f"{self.key}-v1"

    @property
    def candidate(self) -> str:
        return f"{self.key}-v2"

    def doc(self, kind: str) -> dict[str, Any]:
        return next(d for d in self.docs if d["kind"] == kind)

    @property
    def shadow(self) -> dict[str, Any] | None:
        shadow: dict[str, Any] | None = self.doc("ModelRollout")["spec"].get("shadow")
        return shadow


class ComparatorProcess:
    """One rollout's comparator, `python -m controller.comparator`, as its own process on loopback.

    Its models are the scenario's servers (`--model name=url`: the Services' loopback ports); it
    reads the rollout from the API server like the chart's comparator does, writes its request log
    to `log`, and exports its counters on `metrics_port` for Prometheus."""

    def __init__(self, scenario: Scenario, plane: ControlPlane, namespace: str, servers: dict[str, Any]) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.log = plane.workdir / f"comparator-{scenario.key}.jsonl"
        self.output = plane.workdir / f"comparator-{scenario.key}.log"
        argv = [sys.executable, "-m", "controller.comparator", "--kubeconfig", str(plane.kubeconfig)]
        argv += ["--namespace", namespace, "--rollout", scenario.key, "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--metrics-port", str(self.metrics_port), "--refresh", "1"]
        # The models are on loopback here: the local setup's exception, as for the controller.
        argv += ["--request-log", str(self.log), "--allow-loopback-addresses"]
        for model in scenario.models:
            argv += ["--model", f"{model}=http://127.0.0.1:{servers[model].port}"]
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"comparator exited: {self.output.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError("comparator not ready")

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text

    def entries(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        stop_process(self.proc)


def _load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def stable_seed(name: str) -> int:
    """The random seed of a model server, gateway or load generator, from its name alone: a
    scenario draws the same requests and answers whichever other scenarios run beside it (all of
    e2e, `E2E_ONLY`, `make demo`). Seeds from positions in the list changed when a scenario was
    added: the cheaper LLM then drew 7 truncations in its first 50 answers (5% in the long run)
    and was rolled back by its 12% guardrail, in a full run only."""
    return zlib.crc32(name.encode())


def demo_scenarios() -> list[Scenario]:
    """The three scenarios of examples/demo/, as `make demo` runs them."""
    return [
        Scenario(
            "better",
            "a better candidate is promoted step by step",
            {"better-v1": "incumbent", "better-v2": "better"},
            _load_docs(DEMO / "01-better-candidate.yaml"),
            "Promoted",
            source="examples/demo/01-better-candidate.yaml",
        ),
        Scenario(
            "errors",
            "a candidate with a higher error rate is rolled back",
            {"errors-v1": "incumbent", "errors-v2": "error-prone"},
            _load_docs(DEMO / "02-error-prone-candidate.yaml"),
            "RolledBack",
            "error-rate",
            source="examples/demo/02-error-prone-candidate.yaml",
        ),
        Scenario(
            "drift",
            "a candidate with a silently broken feature pipeline is rolled back by prediction drift",
            {"drift-v1": "incumbent", "drift-v2": "broken-pipeline"},
            _load_docs(DEMO / "03-broken-feature-pipeline.yaml"),
            "RolledBack",
            "prediction-drift",
            source="examples/demo/03-broken-feature-pipeline.yaml",
        ),
        Scenario(
            "shadow",
            "a candidate that answers 200, as fast, with the same score distribution but disagrees with the "
            "incumbent on 15% of requests is rolled back in shadow, having answered no user",
            {"shadow-v1": "incumbent", "shadow-v2": "mislabelled"},
            _load_docs(DEMO / "04-shadow-disagrees.yaml"),
            "RolledBack",
            "agreement",
            source="examples/demo/04-shadow-disagrees.yaml",
        ),
    ]


def derived(
    key: str, mutate: Callable[[dict[str, Any]], None] | None = None, *, extra: int = 0
) -> list[dict[str, Any]]:
    """The demo's first manifest renamed to `key` (models `<key>-v1`, `<key>-v2`, ...), changed by `mutate`.

    `extra` adds backendRefs `<key>-v3`... at weight 0 (more candidates for the CI flow)."""
    docs = copy.deepcopy(_load_docs(DEMO / "01-better-candidate.yaml"))
    route, rollout = docs
    route["metadata"]["name"] = key
    refs = route["spec"]["rules"][0]["backendRefs"]
    for i, ref in enumerate(refs):
        ref["name"] = f"{key}-v{i + 1}"
    for i in range(extra):
        refs.append({"name": f"{key}-v{i + 3}", "port": 8080, "weight": 0})
    rollout["metadata"]["name"] = key
    rollout["spec"]["incumbent"] = {"name": f"{key}-v1"}
    rollout["spec"]["candidate"] = {"name": f"{key}-v2"}
    rollout["spec"]["traffic"]["gatewayAPI"]["httpRoute"] = key
    # Scenario 1's shadow phase is its own (and needs its comparator): a derived rollout starts at step 1.
    rollout["spec"].pop("shadow", None)
    if mutate is not None:
        mutate(rollout)
    return docs


def renamed(key: str, path: Path = DEMO / "04-shadow-disagrees.yaml") -> list[dict[str, Any]]:
    """A demo manifest with a shadow phase, renamed to `key`: its route, rollout, models and comparator."""
    route, rollout = copy.deepcopy(_load_docs(path))
    route["metadata"]["name"] = rollout["metadata"]["name"] = key
    for i, ref in enumerate(route["spec"]["rules"][0]["backendRefs"]):
        ref["name"] = f"{key}-v{i + 1}"
    spec = rollout["spec"]
    spec["incumbent"], spec["candidate"] = {"name": f"{key}-v1"}, {"name": f"{key}-v2"}
    spec["traffic"]["gatewayAPI"]["httpRoute"] = key
    spec["shadow"]["comparator"]["service"] = f"{key}-comparator"
    return [route, rollout]


# Seconds from a prediction to its label in the label scenarios (e2e timing: minutes to weeks in production).
LABEL_DELAY = 5


def with_labels(*, drift: bool) -> Callable[[dict[str, Any]], None]:
    """The demo's error-rate (and, with `drift`, prediction-drift) guardrails plus accuracy on
    delayed labels (docs/labels.md), at 50% then 80%.

    No p99-latency guardrail: a label scenario runs two to three times as long as the others
    (it waits for labels), and on a loaded 2-core machine the latency ratio of two equal models
    on 1 s windows crosses 2 now and then: a rollback that says nothing about labels (seen in
    CI). The promoting scenario leaves out drift for the same reason (about 80 looks at the
    per-look drift test, on small windows); the rolling-back one keeps it, to show that the
    less accurate candidate's score distribution does not move (PSI 0.04 over the dataset)."""

    def mutate(rollout: dict[str, Any]) -> None:
        spec = rollout["spec"]
        spec["canary"]["steps"] = [{"weight": 50, "hold": "5s"}, {"weight": 80, "hold": "5s"}]
        # A step waits for its labels (LABEL_DELAY after its predictions): about 50 s on an idle
        # machine, over 90 s (the demo's deadline) on an overloaded one (seen in CI), so 180 s.
        spec["analysis"]["progressDeadline"] = "180s"
        kept = ("error-rate", "prediction-drift") if drift else ("error-rate",)
        spec["guardrails"] = [g for g in spec["guardrails"] if g["name"] in kept]
        spec["guardrails"].append(
            {
                "name": "accuracy",
                "metric": {"builtin": "LabelledErrorRate"},
                "sequential": {"significance": 0.05, "minEffect": 1.0},
                "minSamples": 100,
                "labelDelay": f"{LABEL_DELAY}s",
            }
        )

    return mutate


def without_drift(rollout: dict[str, Any]) -> None:
    """The demo's guardrails but prediction drift: the drift rule's significance is per look (about
    0.2% false failures per look between the incumbent and the better model, PSI 0.01 over the
    dataset, at 90 candidate samples), and a scenario that is about something else looks ten
    times and more: with seeds from names (stable_seed), the latency scenario's draws failed on
    drift at PSI 0.31 on 88 samples. The drift scenario and the demo keep the rule."""
    rollout["spec"]["guardrails"] = [g for g in rollout["spec"]["guardrails"] if g["name"] != "prediction-drift"]


def only_error_rate(rollout: dict[str, Any]) -> None:
    """The demo's error-rate guardrail alone, for the CI flow: what it shows is `set-candidate`
    and `wait`'s exit codes, and its error-prone candidate fails error-rate. Its good candidates
    are judged three minutes and more against an equal incumbent, and on a loaded 2-core machine
    the p99 ratio of two equal models on 1 s windows crosses 2 now and then (seen in CI beside a
    benchmark: 0.1165 s vs 0.0546 s), as does the per-look drift test (without_drift)."""
    rollout["spec"]["guardrails"] = [g for g in rollout["spec"]["guardrails"] if g["name"] == "error-rate"]


def e2e_only_scenarios() -> dict[str, Scenario]:
    """What the suite adds to the demo: per-region guardrails, latency, a manual gate, the CI flow, and labels."""

    def gate(rollout: dict[str, Any]) -> None:
        rollout["spec"]["canary"]["steps"][1]["manualGate"] = True

    def errors_by(segment_by: str | None) -> Callable[[dict[str, Any]], None]:
        """One sequential error-rate guardrail, per region or on the aggregate; nothing else."""

        def mutate(rollout: dict[str, Any]) -> None:
            guardrail: dict[str, Any] = {
                "name": "error-rate",
                "metric": {"builtin": "ErrorRate"},
                "minSamples": 40,
                "sequential": {"significance": 0.01, "minEffect": 1.0},
            }
            if segment_by is not None:
                guardrail |= {"segmentBy": segment_by, "maxSegments": 2}
            rollout["spec"]["guardrails"] = [guardrail]
            rollout["spec"]["analysis"]["progressDeadline"] = "180s"

        return mutate

    # A quarter of the requests from eu, where the candidate fails 3x as often as the incumbent;
    # 0.75 * 2% + 0.25 * 30% = 9% in all, against the incumbent's 10%.
    regions = {"us": 0.75, "eu": 0.25}
    return {
        "segments": Scenario(
            "segments",
            "better overall but 3x worse in region eu: rolled back by the per-region guardrail, naming eu",
            {"segments-v1": "flaky", "segments-v2": "worse-in-eu"},
            derived("segments", errors_by("region")),
            "RolledBack",
            "error-rate",
            segments=regions,
            rate=30.0,
        ),
        "aggregate": Scenario(
            "aggregate",
            "the same models and traffic, judged on the aggregate only: promoted",
            {"aggregate-v1": "flaky", "aggregate-v2": "worse-in-eu"},
            derived("aggregate", errors_by(None)),
            "Promoted",
            segments=regions,
            rate=30.0,
        ),
        "labels-worse": Scenario(
            "labels-worse",
            "a less accurate candidate (equal errors, latency, scores) is held for its labels, then rolled back",
            {"labels-worse-v1": "incumbent", "labels-worse-v2": "mislabelled"},
            derived("labels-worse", with_labels(drift=True)),
            "RolledBack",
            "accuracy",
            labelled=True,
        ),
        "labels-better": Scenario(
            "labels-better",
            "a more accurate candidate is promoted once its labels confirm it",
            {"labels-better-v1": "incumbent", "labels-better-v2": "better"},
            derived("labels-better", with_labels(drift=False)),
            "Promoted",
            labelled=True,
        ),
        "latency": Scenario(
            "latency",
            "a slower candidate is rolled back by the p99 comparison with the incumbent",
            {"latency-v1": "incumbent", "latency-v2": "slow"},
            derived("latency", without_drift),
            "RolledBack",
            "p99-latency",
        ),
        "gate": Scenario(
            "gate",
            "a manual gate holds the rollout at 50% until `kubectl modelrollout promote`",
            {"gate-v1": "incumbent", "gate-v2": "better"},
            derived("gate", gate),
            "Promoted",
        ),
        "shadow-down": Scenario(
            "shadow-down",
            "the comparator is down: shadow has no comparisons, inconclusive, never a pass",
            {"shadow-down-v1": "incumbent", "shadow-down-v2": "better"},
            renamed("shadow-down"),
            "RolledBack",
            comparator_down=True,
        ),
        "ci": Scenario(
            "ci",
            "CI: set-candidate, then wait exits 0 (promoted) or 1 (rolled back)",
            {"ci-v1": "incumbent", "ci-v2": "better", "ci-v3": "error-prone", "ci-v4": "better"},
            derived("ci", only_error_rate, extra=2),
            "Promoted",
        ),
    }


def llm_scenarios() -> dict[str, Scenario]:
    """LLMs behind InferencePools, judged on TTFT, finish reasons and cost (examples/llm/)."""
    return {
        "ttft": Scenario(
            "ttft",
            "an LLM with 2x the time to first token is rolled back by the relative TTFT guardrail",
            {"ttft-v1": "llm-incumbent", "ttft-v2": "llm-slow-first-token"},
            _load_docs(LLM / "01-slow-first-token.yaml"),
            "RolledBack",
            "ttft-p99",
            source="examples/llm/01-slow-first-token.yaml",
            llm=True,
        ),
        "truncation": Scenario(
            "truncation",
            "an LLM cut off at max_tokens 3x as often is rolled back by the sequential rule on finish reasons",
            {"truncation-v1": "llm-incumbent", "truncation-v2": "llm-truncating"},
            _load_docs(LLM / "02-truncating.yaml"),
            "RolledBack",
            "finish-reasons",
            source="examples/llm/02-truncating.yaml",
            llm=True,
        ),
        "cheaper": Scenario(
            "cheaper",
            "a cheaper LLM of the same quality is promoted on cost per 1,000 output tokens",
            {"cheaper-v1": "llm-incumbent", "cheaper-v2": "llm-same"},
            _load_docs(LLM / "03-cheaper.yaml"),
            "Promoted",
            source="examples/llm/03-cheaper.yaml",
            llm=True,
        ),
    }


# -- the stack -----------------------------------------------------------------------------------


def _kind_plane() -> ControlPlane:
    """A kind cluster (E2E_CLUSTER=kind): created if missing; the controller runs outside it."""
    for tool in ("docker", "kind"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"E2E_CLUSTER=kind needs {tool} on PATH")
    name = os.environ.get("E2E_KIND_CLUSTER", "modelrollout-e2e")
    clusters = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True, check=True).stdout.split()
    if name not in clusters:
        subprocess.run(["kind", "create", "cluster", "--name", name, "--wait", "120s"], check=True)
    plane = ControlPlane(workdir=Path(tempfile.mkdtemp(prefix="modelrollout-e2e-kind-")))
    kubeconfig = subprocess.run(
        ["kind", "get", "kubeconfig", "--name", name], capture_output=True, text=True, check=True
    ).stdout
    plane.kubeconfig.write_text(kubeconfig)
    return plane


class TraefikRoute:
    """A scenario's route as Traefik serves it: the URL of the scenario's entry point (a relay on
    the host's 127.0.0.1) and `timeline`, the weights Traefik applied, polled from its API (one
    `WeightTimeline` for all routes): what the stand-in `Gateway` offers the split check and the
    tests. Ready once a request through the entry point reaches a model server."""

    def __init__(self, traefik: Traefik, weights: WeightTimeline, key: str, *, timeout: float = 60) -> None:
        self.key = key
        self.url = traefik.url_of(key)
        self.timeline = weights.timelines[key]  # appended to by the poller
        until(f"Traefik's router for {key}", lambda: bool(self.timeline), timeout=timeout)
        # The router is in Traefik's API; until a request through the entry point reaches a model
        # server (a GET of its health under the route's prefix, not counted as a request).
        until(f"a request through {key}'s entry point", self._routed, timeout=timeout)

    def _routed(self) -> bool:
        try:
            answer = httpx.get(f"{self.url}/predict/healthz", timeout=5)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200 and answer.text.startswith("ok ")

    def close(self) -> None:
        return  # the poller is the stack's


class Stack:
    def __init__(
        self,
        scenarios: list[Scenario],
        *,
        rate: float = 25.0,
        namespace: str = "modelrollout-demo",
        log: Callable[[str], None] = print,
        data_plane: str | None = None,
    ) -> None:
        self.scenarios = {s.key: s for s in scenarios}
        self.rate = rate
        self.log = log
        self.namespace = namespace
        self.data_plane = data_plane or os.environ.get("E2E_DATA_PLANE", "traefik")
        if self.data_plane not in DATA_PLANES:
            raise ValueError(f"data plane {self.data_plane!r}: one of {DATA_PLANES}")
        if os.environ.get("E2E_CLUSTER", "local") == "kind" or not self._traefik_scenarios():
            # A kind cluster brings no gateway of ours; InferencePools and mirrors are the stand-in's only.
            self.data_plane = "standin"
        self.workload: Workload | None = None
        self.netns: NetNS | None = None
        self.traefik: Traefik | None = None
        self.weights: WeightTimeline | None = None  # what Traefik applied, per route
        self.pod_ips: dict[str, str] = {}  # model -> its pod's IP (traefik data plane)
        self.servers: dict[str, ModelServer] = {}
        self._exit = contextlib.ExitStack()
        self._stop = threading.Event()
        self.notes: list[str] = []  # what tests want printed at the end of the run
        self.plane: ControlPlane
        self.api: client.ApiClient
        self.prometheus: PrometheusServer
        self.controller: ControllerProcess
        self.labeller: Labeller

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        began = time.monotonic()
        if os.environ.get("E2E_CLUSTER", "local") == "kind":
            self.plane = _kind_plane()
            self._exit.callback(shutil.rmtree, self.plane.workdir, ignore_errors=True)
            self.log("Kubernetes: the kind cluster (E2E_CLUSTER=kind)")
        else:
            shadows = any(s.shadow is not None for s in self.scenarios.values())
            self.plane = self._exit.enter_context(running_control_plane(audit=shadows))
            self.log(f"Kubernetes: local etcd + kube-apiserver at {self.plane.url} ({self.plane.start_seconds:.1f}s)")
        self.api = config.new_client_from_config(config_file=str(self.plane.kubeconfig))
        install_crds(self.api, REPO / "crds")
        install_gateway_api_crds(self.api)
        install_inference_pool_crds(self.api)
        core = client.CoreV1Api(self.api)
        with contextlib.suppress(client.ApiException):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace)))
        self.log("CRDs: modelrollout.dev and the Gateway API (standard channel)")
        if self.data_plane == "traefik":
            self._start_pods()
        for name, variant in (item for scenario in self.scenarios.values() for item in scenario.models.items()):
            seed = stable_seed(name)
            if variant in LLM_VARIANTS:
                server: ModelServer = LlmServer(name, variant, seed=seed, log_dir=self.plane.workdir)
            elif name in self.pod_ips:
                server = ModelServer(
                    name, variant, seed=seed, log_dir=self.plane.workdir, netns=self.netns, address=self.pod_ips[name]
                )
            else:
                server = ModelServer(name, variant, seed=seed, log_dir=self.plane.workdir)
            self.servers[name] = server
            self._exit.callback(server.close)
        for server in self.servers.values():
            server.wait_ready()
        if self.pod_ips:
            self.log(
                f"model servers: {len(self.servers)}, one process each; {len(self.pod_ips)} on their pods' IPs "
                f"in network namespace {self.netns.name if self.netns else ''}, the rest on 127.0.0.1"
            )
        else:
            self.log(f"model servers: {len(self.servers)} scikit-learn classifiers, one process each, on 127.0.0.1")
        if self.data_plane == "traefik":
            self._start_traefik()
        labelled = [self.servers[m].url for s in self.scenarios.values() if s.labelled for m in s.models]
        if labelled:
            labeller = Labeller(labelled, delay=LABEL_DELAY, log_dir=self.plane.workdir)
            self._exit.callback(labeller.close)
            self.labeller = labeller
            self.log(f"labelling process: the ground truth of each prediction, {LABEL_DELAY}s later")
        for scenario in self.scenarios.values():
            if scenario.shadow is not None and not scenario.comparator_down:
                comparator = scenario.comparator = ComparatorProcess(scenario, self.plane, self.namespace, self.servers)
                self._exit.callback(comparator.close)
        for scenario in self.scenarios.values():
            if scenario.comparator is not None:
                scenario.comparator.wait_ready()
        comparators = [s.comparator.metrics_port for s in self.scenarios.values() if s.comparator is not None]
        if comparators:
            self.log(f"comparators: {len(comparators)}, one process per shadow rollout, on 127.0.0.1")
        self.prometheus = PrometheusServer([*(s.port for s in self.servers.values()), *comparators])
        self._exit.callback(self.prometheus.close)
        self.prometheus.start()
        self.log(f"Prometheus: {self.prometheus.url}, scraping every model server each second")
        factory = ControllerFactory(self.plane, prometheus_url=self.prometheus.url)
        self._exit.callback(factory.stop_all)
        self.controller = factory.start("e2e", "--namespace", self.namespace, "--workers", "6", "--log-level", "info")
        tracker = threading.Thread(target=self._track, name="verdicts", daemon=True)
        tracker.start()
        self._exit.callback(tracker.join, 10)
        self._exit.callback(self._stop.set)
        self.log(f"controller: modelrollout-controller pid {self.controller.proc.pid}, log {self.controller.log_path}")
        self.log(f"ready in {time.monotonic() - began:.1f}s")

    def close(self) -> None:
        self._exit.close()

    # -- the traefik data plane ---------------------------------------------------------------

    def _traefik_scenarios(self) -> list[Scenario]:
        """The scenarios Traefik routes: not the LLMs' (InferencePool backends, which Traefik v3.6
        has no support for) nor the shadows' (Traefik v3.6's Gateway provider has no RequestMirror
        filter): those keep the stand-in gateway."""
        return [s for s in self.scenarios.values() if not s.llm and s.shadow is None]

    def _start_pods(self) -> None:
        """The workload controllers, the network namespace, and per model (but the LLMs) a
        Deployment of one pod and a Service selecting it; waits for each pod's IP and adds it to
        the namespace."""
        began = time.monotonic()
        self.workload = Workload(self.plane).start()
        self._exit.callback(self.workload.stop)
        self.netns = self._exit.enter_context(network_namespace())
        apps, core = client.AppsV1Api(self.api), client.CoreV1Api(self.api)
        models = [m for s in self._traefik_scenarios() for m in s.models]
        for model in models:
            apps.create_namespaced_deployment(self.namespace, model_deployment(model))
            core.create_namespaced_service(self.namespace, service(model, POD_PORT))
        for model in models:
            until(f"{model} rolled out", lambda model=model: rolled_out(apps, self.namespace, model))  # type: ignore[misc]
            (pod,) = live_pods(core, self.namespace, f"model={model}")
            self.pod_ips[model] = pod.status.pod_ip
            self.netns.add_address(pod.status.pod_ip)
        self.log(
            f"workload controllers and kwok up, {len(models)} Deployments rolled out, pods at "
            f"{min(self.pod_ips.values(), default='-')}..{max(self.pod_ips.values(), default='-')} "
            f"({time.monotonic() - began:.1f}s)"
        )

    def _start_traefik(self) -> None:
        """Traefik inside the namespace, one entry point per scenario, and the Gateway with one
        listener on each entry point's port."""
        assert self.netns is not None
        began = time.monotonic()
        entry_points = {s.key: FIRST_ENTRY_PORT + i for i, s in enumerate(self._traefik_scenarios())}
        ensure_gateway_class(self.api)
        self.apply(gateway_object(GATEWAY, listeners=entry_points))
        self.traefik = Traefik(
            ns=self.netns,
            plane=self.plane,
            workdir=self.plane.workdir / "traefik",
            entry_points=entry_points,
            namespaces=[self.namespace],
        )
        self._exit.callback(self.traefik.stop)
        self.traefik.start()
        self.weights = WeightTimeline(self.traefik, self.namespace, list(entry_points)).start()
        self._exit.callback(self.weights.stop)
        self.log(
            f"gateway: Traefik inside the namespace, {len(entry_points)} entry points, log "
            f"{self.traefik.log_file} ({time.monotonic() - began:.1f}s)"
        )

    def pids(self) -> list[int]:
        """Every process the stack started (to check that none outlives it)."""
        pids = [server.proc.pid for server in self.servers.values()]
        if hasattr(self, "plane"):
            pids += self.plane.pids()
        if self.workload is not None:
            pids += self.workload.pids()
        if self.traefik is not None:
            pids += self.traefik.pids()
        if hasattr(self, "prometheus"):
            pids += self.prometheus.pids
        if hasattr(self, "controller"):
            pids.append(self.controller.proc.pid)
        if hasattr(self, "labeller"):
            pids.append(self.labeller.proc.pid)
        pids += [s.comparator.proc.pid for s in self.scenarios.values() if s.comparator is not None]
        return pids

    @property
    def kubectl(self) -> list[str]:
        binary = bin_dir() / "kubectl"
        return [str(binary if binary.exists() else "kubectl"), "--kubeconfig", str(self.plane.kubeconfig)]

    def cli(self) -> list[str]:
        """argv prefix of `kubectl modelrollout` (the installed kubectl-modelrollout plugin)."""
        plugin = Path(sys.executable).parent / "kubectl-modelrollout"
        return [str(plugin), "--kubeconfig", str(self.plane.kubeconfig), "-n", self.namespace]

    # -- scenarios ----------------------------------------------------------------------------

    def apply(self, doc: dict[str, Any]) -> None:
        """`kubectl apply` one document into the stack's namespace."""
        done = subprocess.run(
            [*self.kubectl, "apply", "-n", self.namespace, "-f", "-"],
            input=yaml.safe_dump(doc).encode(),
            capture_output=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl apply {doc['kind']}/{doc['metadata']['name']}: {done.stderr.decode()}")

    def serve(self, scenario: Scenario, *, wait: bool = True) -> None:
        """The scenario's Services and HTTPRoute, its gateway and a steady load; waits until Prometheus sees the incumbent."""
        if self.traefik is not None and scenario.key in {s.key for s in self._traefik_scenarios()}:
            # The Services exist (with the Deployments); the route names its own listener.
            route = copy.deepcopy(scenario.doc("HTTPRoute"))
            route["spec"]["parentRefs"] = [{"name": GATEWAY, "sectionName": scenario.key}]
            self.apply(route)
            assert self.weights is not None
            scenario.gateway = TraefikRoute(self.traefik, self.weights, scenario.key)
        else:
            for name in scenario.models:
                # An LLM's backend is an InferencePool whose target port is its server's loopback port.
                port = self.servers[name].port
                self.apply(inference_pool(name, port) if scenario.llm else service(name, port))
            if scenario.shadow is not None:
                # The comparator's Service; with the comparator down, its port has no listener.
                port = scenario.comparator.port if scenario.comparator is not None else free_port()
                self.apply(service(scenario.shadow["comparator"]["service"], port))
            route = copy.deepcopy(scenario.doc("HTTPRoute"))
            if self.traefik is not None:
                # Not Traefik's Gateway: a parentRef without a sectionName would attach the route to
                # every one of its listeners, beside the Traefik scenarios' own routes.
                route["spec"]["parentRefs"] = [{"name": STANDIN_GATEWAY}]
            self.apply(route)
            scenario.gateway = Gateway(self.api, self.namespace, scenario.key, seed=stable_seed(scenario.key))
        seed = stable_seed(scenario.key)
        self._exit.callback(scenario.gateway.close)
        # Streamed answers take 100-300 ms: more threads keep the same rate.
        threads = 8 if scenario.llm else 4
        scenario.load = Load(
            scenario.gateway.url,
            rate=scenario.rate or self.rate,
            seed=seed,
            threads=threads,
            chat=scenario.llm,
            segments=scenario.segments,
        )
        self._exit.callback(scenario.load.stop)
        if wait:
            self.wait_scraped(scenario)

    def wait_scraped(self, scenario: Scenario) -> None:
        """Until Prometheus has scraped requests served by the scenario's incumbent."""
        query = f'sum(model_requests_total{{model="{scenario.incumbent}"}})'
        if scenario.llm:
            query = f'sum(vllm:request_success_total{{model_name="{scenario.incumbent}"}})'
        self.prometheus.wait_for(query, lambda r: bool(r) and float(r[0]["value"][1]) > 0, timeout=60)

    def start_rollout(self, scenario: Scenario) -> None:
        self.apply(scenario.doc("ModelRollout"))
        scenario.applied_at = time.monotonic()

    def get(self, name: str) -> dict[str, Any]:
        custom = client.CustomObjectsApi(self.api)
        obj: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        return obj

    def wait(self, name: str, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        obj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            obj = self.get(name)
            if predicate(obj):
                return obj
            if self.controller.proc.poll() is not None:
                raise RuntimeError(f"the controller exited: {self.controller.log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        raise TimeoutError(f"{name}: timed out; status {obj.get('status')}")

    def _track(self) -> None:
        """Note the moment each scenario's first verdict settles, and what the servers saw by then."""
        custom = client.CustomObjectsApi(self.api)
        while not self._stop.wait(0.25):
            try:
                items = custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)["items"]
                for obj in items:
                    scenario = self.scenarios.get(obj["metadata"]["name"])
                    if scenario and scenario.applied_at and not scenario.verdict_at and settled(obj):
                        scenario.verdict_at = time.monotonic()
                        scenario.result = self.summarise(scenario, obj)
            except Exception as exc:  # the world is shutting down, or a blip: try again
                self.log(f"verdict tracker: {exc!r}")

    def wait_verdict(self, scenario: Scenario, *, timeout: float = 180) -> dict[str, Any]:
        """The scenario's first verdict (Promoted or RolledBack, settled on the route)."""
        deadline = time.monotonic() + timeout
        while not scenario.result and time.monotonic() < deadline:
            if self.controller.proc.poll() is not None:
                raise RuntimeError(f"the controller exited: {self.controller.log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        if not scenario.result:
            raise TimeoutError(
                f"{scenario.name}: no verdict after {timeout}s; status {self.get(scenario.name).get('status')}"
            )
        return self.get(scenario.name)

    def summarise(self, scenario: Scenario, obj: dict[str, Any]) -> dict[str, Any]:
        status = obj.get("status", {})
        failed = (status.get("failedCandidates") or [{}])[-1] if status.get("phase") == "RolledBack" else {}
        return {
            "scenario": scenario.key,
            "title": scenario.title,
            "verdict": status.get("phase"),
            "reason": status.get("reason"),
            "guardrail": failed.get("guardrail"),
            "observed": failed.get("observed"),
            "threshold": failed.get("threshold"),
            "seconds": scenario.verdict_at - scenario.applied_at,
            "candidate_requests": self.servers[scenario.candidate].served(),
            "candidate_shadow_requests": self.servers[scenario.candidate].shadow_served()
            if isinstance(self.servers[scenario.candidate], ModelServer) and not scenario.llm
            else 0,
            "candidate_errors": self.servers[scenario.candidate].codes.get(500, 0),
            "incumbent_requests": self.servers[scenario.incumbent].served(),
            "candidate_variant": scenario.models[scenario.candidate],
            # A stand-in LLM server runs no model: it has no accuracy to speak of.
            "candidate_accuracy": None if scenario.llm else accuracy(VARIANTS[scenario.models[scenario.candidate]]),
            "incumbent_accuracy": None if scenario.llm else accuracy(VARIANTS[scenario.models[scenario.incumbent]]),
        }

    def controller_up(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.controller.port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def service(model: str, port: int) -> dict[str, Any]:
    """The model's Service: port 8080 (what the HTTPRoute's backendRefs name) to its server's port,
    selecting its pod (label `model`).

    The stand-in gateway sends a backendRef's requests to 127.0.0.1:<targetPort>; with the traefik
    data plane the targetPort is POD_PORT, on the pod's IP from the EndpointSlices."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": model, "labels": {"app.kubernetes.io/name": "model-server", "model": model}},
        "spec": {"selector": {"model": model}, "ports": [{"name": "http", "port": 8080, "targetPort": port}]},
    }


def model_deployment(model: str) -> dict[str, Any]:
    """One pod labelled `model: <model>`. kwok plays its kubelet (no container runs, the image is
    never pulled); the model server process listens on the pod's IP inside the network namespace."""
    labels = {"app.kubernetes.io/name": "model-server", "model": model}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": model, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"model": model}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "model-server",
                            "image": "modelrollout-e2e-model:local",
                            "ports": [{"name": "http", "containerPort": POD_PORT}],
                        }
                    ]
                },
            },
        },
    }


def settled(obj: dict[str, Any]) -> bool:
    """A verdict whose weights reached the route (Ready after Promoted, Stalled after RolledBack)."""
    status = obj.get("status", {})
    condition = {"Promoted": "Ready", "RolledBack": "Stalled"}.get(status.get("phase", ""))
    if condition is None:
        return False
    return {c["type"]: c["status"] for c in status.get("conditions", [])}.get(condition) == "True"


# -- traffic split check -------------------------------------------------------------------------


@dataclass
class Epoch:
    """A stretch of time with one set of weights at the gateway, and what the servers saw in it."""

    start: float
    end: float
    weights: dict[str, int]
    seen: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.seen.values())


# Requests already on their way when the weights changed are not counted against either epoch.
EDGE = 0.3


def epochs(
    gateway: Gateway | TraefikRoute, servers: dict[str, ModelServer], *, until: float | None = None
) -> Iterator[Epoch]:
    """The gateway's weight timeline, with the requests each model server received in each epoch."""
    end_of_time = until if until is not None else time.monotonic()
    timeline = list(gateway.timeline)
    names = {n for _, weights in timeline for n in weights if n in servers}
    arrivals = {n: servers[n].snapshot()["arrivals"] for n in names}
    for (start, weights), nxt in zip(timeline, [*timeline[1:], (end_of_time, {})], strict=True):
        end = nxt[0]
        if end - start <= 2 * EDGE:
            continue
        names = [n for n in weights if n in servers]
        seen = {n: servers[n].arrivals_between(start + EDGE, end - EDGE, arrivals[n]) for n in names}
        yield Epoch(start, end, dict(weights), seen)


def tolerance(share: float, n: int) -> float:
    """How far an observed share may be from the weight: 4 binomial standard deviations + 2 points."""
    return 4 * math.sqrt(share * (1 - share) / n) + 0.02 if n else 1.0


def split_problems(epoch: Epoch, *, min_requests: int = 40) -> list[str]:
    """Where the servers' counts in an epoch contradict its weights (empty: they match)."""
    problems = []
    total_weight = sum(epoch.weights.values())
    if epoch.total < min_requests or total_weight == 0:
        return problems
    for name, weight in epoch.weights.items():
        share = weight / total_weight
        observed = epoch.seen.get(name, 0) / epoch.total
        if share in (0.0, 1.0):
            if observed != share:
                problems.append(f"{name}: weight {weight} but {epoch.seen.get(name, 0)} of {epoch.total} requests")
        elif abs(observed - share) > tolerance(share, epoch.total):
            problems.append(
                f"{name}: weight {share:.0%}, observed {observed:.1%} of {epoch.total} "
                f"(tolerance {tolerance(share, epoch.total):.1%})"
            )
    return problems
