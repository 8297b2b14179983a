"""Workload controllers for the local plane: kube-controller-manager, kube-scheduler and kwok.

With them, the plane behaves like a cluster for workloads: a Deployment rolls out ReplicaSets,
the scheduler binds their pods to a node, kwok (playing the kubelet, `sigs.k8s.io/kwok`) makes
the node and the pods Ready without running containers, and the endpointslice controller writes
EndpointSlices for Services that select those pods; namespaces are finalized, garbage is
collected. Without them (the plain `ControlPlane`), nothing ever acts on a Deployment.

The binaries are built by `hack/build-cluster.sh workload kwok` (kube-controller-manager and
kube-scheduler from the same k8s.io/kubernetes release as kube-apiserver; kwok v0.8.0), cached
per version under ~/.cache/modelrollout/{workload,kwok}/<version>/bin.

kwok's behaviour is its Stages (the "fast" node and pod stages that kwokctl installs by
default): read from the kwok module's own `kustomize/stage/` files in the Go module cache, not
copied into this repository. kwok gives pods IPs from `--cidr`: pass the test's network namespace
subnet (tests/support/netns.py) and a model server can listen inside the namespace on the IP its
pod was given, so the EndpointSlices the real controller writes point at real listeners.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from kubernetes import client

from tests.support.controlplane import (
    CACHE,
    K8S_VERSION,
    REPO,
    ControlPlane,
    free_port,
    running_control_plane,
    stop_process,
)
from tests.support.gomodules import module_dir

T = TypeVar("T")
KWOK_VERSION = os.environ.get("KWOK_VERSION", "v0.8.0")
KWOK_MODULE = "sigs.k8s.io/kwok"
# kwokctl's default stages (pkg/kwokctl/runtime/cluster.go: getDefaultNodeStages/PodStages).
KWOK_STAGES = [
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
]
NODE_ANNOTATION = "kwok.x-k8s.io/node"
# kwok gives pod IPs from here and reports the node's InternalIP as NODE_IP: addresses a test puts on
# its network namespace's lo (tests/support/netns.py), so model servers listen on their pods' IPs.
POD_CIDR = "10.77.1.1/24"
NODE_IP = "10.77.2.1"


def workload_bin_dir() -> Path:
    return CACHE / "workload" / K8S_VERSION / "bin"


def kwok_bin_dir() -> Path:
    return CACHE / "kwok" / KWOK_VERSION / "bin"


def ensure_binaries() -> tuple[Path, Path]:
    """Build what is missing (a one-time cost; hack/build-cluster.sh prints the expected time)."""
    parts = []
    if not all((workload_bin_dir() / b).is_file() for b in ("kube-controller-manager", "kube-scheduler")):
        parts.append("workload")
    if not (kwok_bin_dir() / "kwok").is_file():
        parts.append("kwok")
    if parts:
        subprocess.run(
            ["bash", str(REPO / "hack" / "build-cluster.sh"), *parts],
            check=True,
            env={**os.environ, "K8S_VERSION": K8S_VERSION, "KWOK_VERSION": KWOK_VERSION},
            stdout=subprocess.DEVNULL,
        )
    return workload_bin_dir(), kwok_bin_dir()


def kwok_stages() -> list[dict[str, Any]]:
    root = module_dir(KWOK_MODULE, KWOK_VERSION)
    return [doc for path in KWOK_STAGES for doc in yaml.safe_load_all((root / path).read_text()) if doc]


def kwok_node(name: str, pods: int = 250) -> dict[str, Any]:
    """A Node that kwok manages (by annotation): Ready once kwok has seen it, `pods` pods bind to it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"},
        },
        "spec": {},
        "status": {
            # By default as many pods as kwok's default pod range (--cidr, a /24) has addresses.
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": str(pods)},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": str(pods)},
        },
    }


@dataclass
class Workload:
    """kube-controller-manager, kube-scheduler and kwok against `plane`, and `nodes` kwok nodes."""

    plane: ControlPlane
    nodes: int = 1
    # Pod IPs: a range of their own, beside NetNS.add_address()'s 10.77.0.0/24 (kwok's form: first IP/len),
    # inside the range the host blackholes while a test namespace exists (netns.GUARD_RANGE).
    pod_cidr: str = POD_CIDR
    node_ip: str = NODE_IP
    pods_per_node: int = 250
    # The client rate limit of kube-controller-manager and kube-scheduler (0: their defaults, 20
    # and 50 requests a second). A bench with thousands of pods raises it, or the workload
    # controllers, not the controller measured, set the pace of every rollout.
    api_qps: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    start_seconds: float = 0.0

    @property
    def workdir(self) -> Path:
        return self.plane.workdir

    def start(self, *, timeout: float = 120.0) -> Workload:
        """Start the three and wait for their health and the nodes' Ready; on failure stop them."""
        bins, kwok_bins = ensure_binaries()
        began = time.monotonic()
        try:
            self._start(bins, kwok_bins, timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _start(self, bins: Path, kwok_bins: Path, timeout: float) -> None:
        kubeconfig = str(self.plane.kubeconfig)
        certs = self.plane.workdir / "certs"
        for name in ("kube-controller-manager", "kube-scheduler"):
            self.ports[name] = free_port()
        self._spawn(
            "kube-controller-manager",
            [
                str(bins / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['kube-controller-manager']}",
                f"--cert-dir={certs / 'kcm'}",
                # Signs the legacy token Secrets and publishes kube-root-ca.crt in each namespace.
                f"--service-account-private-key-file={certs / 'sa.key'}",
                f"--root-ca-file={self.plane.ca_file}",
                "--use-service-account-credentials=false",
                "--controllers=*",
                "--v=1",
                *self._rate_limit(),
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(bins / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['kube-scheduler']}",
                f"--cert-dir={certs / 'scheduler'}",
                "--v=1",
                *self._rate_limit(),
            ],
        )
        stages = self.workdir / "kwok-stages.yaml"
        stages.write_text(yaml.safe_dump_all(kwok_stages()))
        self._spawn(
            "kwok",
            [
                str(kwok_bins / "kwok"),
                f"--kubeconfig={kubeconfig}",
                f"--config={stages}",
                f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
                f"--cidr={self.pod_cidr}",
                f"--node-ip={self.node_ip}",
                # kwok renews each node's Lease only with this set (kwokctl passes 40; kwok's own
                # default is 0: no Lease). Without it the node lifecycle controller finds no
                # heartbeat, marks the node NotReady after its grace period (~40 s) and every pod
                # on it not Ready: EndpointSlices empty, Traefik "no available server".
                "--node-lease-duration-seconds=40",
            ],
        )
        self._wait_healthy(timeout)
        api = client.ApiClient(self._client_config())
        core = client.CoreV1Api(api)
        for i in range(self.nodes):
            core.create_node(kwok_node(f"kwok-node-{i}", self.pods_per_node))
        self._wait_nodes_ready(core, timeout)

    def _rate_limit(self) -> list[str]:
        return [f"--kube-api-qps={self.api_qps}", f"--kube-api-burst={2 * self.api_qps}"] if self.api_qps else []

    def stop(self) -> None:
        for name in ("kwok", "kube-scheduler", "kube-controller-manager"):
            proc = self.procs.get(name)
            if proc is not None:
                stop_process(proc)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def _client_config(self) -> client.Configuration:
        configuration = client.Configuration()
        configuration.host = self.plane.url
        configuration.ssl_ca_cert = str(self.plane.ca_file)
        configuration.api_key = {"authorization": f"Bearer {self.plane.token}"}
        return configuration

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = os.open(self.workdir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            os.close(log)

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text()[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = dict(self.ports)
        while pending:
            self._check_alive()
            for name, port in list(pending.items()):
                try:
                    if httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=2.0).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            if pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not healthy after {timeout}s: {sorted(pending)}")
                time.sleep(0.2)

    def _wait_nodes_ready(self, core: client.CoreV1Api, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            nodes = core.list_node(label_selector="type=kwok").items
            ready = [
                n for n in nodes if any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
            ]
            if len(ready) >= self.nodes:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"kwok nodes not Ready after {timeout}s: {len(ready)}/{self.nodes}")
            time.sleep(0.2)


def pod_network() -> ipaddress.IPv4Network:
    """The network kwok's pod IPs come from (POD_CIDR is kwok's "first address/length" form)."""
    return ipaddress.IPv4Network(POD_CIDR, strict=False)


@contextlib.contextmanager
def running_cluster(*, nodes: int = 1, audit: bool = False) -> Iterator[tuple[ControlPlane, Workload]]:
    """A plane of its own with the workload controllers and `nodes` Ready kwok nodes; all stopped after.

    A plane of its own: the controllers act on everything in it (namespaces finalized, garbage
    collected, Services given endpoints), which the shared session plane's tests do not expect."""
    with running_control_plane(audit=audit) as plane:
        workload = Workload(plane, nodes=nodes).start()
        try:
            yield plane, workload
        finally:
            workload.stop()


# -- waiting for what the controllers do ---------------------------------------------------------


def until(what: str, check: Callable[[], T | None], timeout: float = 120.0) -> T:
    """Poll `check` until it returns something (not None/False); fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def rolled_out(apps: client.AppsV1Api, ns: str, name: str) -> client.V1Deployment | None:
    """The Deployment once its controller has rolled out the current template to every replica,
    all Ready and available (kubectl rollout status' rule)."""
    d = apps.read_namespaced_deployment(name, ns)
    s, want = d.status, d.spec.replicas
    done = (
        (s.observed_generation or 0) >= d.metadata.generation
        and (s.updated_replicas or 0) == want
        and (s.replicas or 0) == want
        and (s.ready_replicas or 0) == want
        and (s.available_replicas or 0) == want
    )
    return d if done else None


def live_pods(core: client.CoreV1Api, ns: str, selector: str) -> list[client.V1Pod]:
    return [
        p for p in core.list_namespaced_pod(ns, label_selector=selector).items if p.metadata.deletion_timestamp is None
    ]


def ready_endpoints(disc: client.DiscoveryV1Api, ns: str, svc: str) -> set[str]:
    slices = disc.list_namespaced_endpoint_slice(ns, label_selector=f"kubernetes.io/service-name={svc}").items
    return {
        address
        for s in slices
        if (s.metadata.labels or {}).get("endpointslice.kubernetes.io/managed-by") == "endpointslice-controller.k8s.io"
        for e in s.endpoints or []
        if e.conditions and e.conditions.ready
        for address in e.addresses
    }
