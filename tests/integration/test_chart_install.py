"""`helm install`, `upgrade`, `rollback` and `uninstall` of charts/modelrollout for real.

Against a plane of its own with the workload controllers (tests/support/workload.py): the
chart's Deployment is rolled out by the real deployment controller, its pods are scheduled by
the real scheduler and made Ready by kwok (which runs no container: the controller process
itself is not in those pods; the scenarios run it on the host, as tests/integration/test_chart.py
does under the chart's ServiceAccount), the metrics Service gets the pods' IPs from the real
endpointslice controller, and uninstall is finished by the real garbage collector.

What it shows: the release installs and becomes Ready; a values change rolls out a new
ReplicaSet; a chart version whose CRD gains a field upgrades the Deployment but, as Helm does with
a chart's `crds/`, not the CRD, which `kubectl apply --server-side -f crds/` then upgrades (the
order docs/install.md gives); a rollback restores the first revision's Deployment and leaves the
CRD alone; uninstall leaves nothing of the release behind but the CRD and the ModelRollouts
(docs/install.md, "Uninstall").
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from controller.api import GROUP, PLURAL, VERSION
from tests.support.chart import (
    ALLOWLIST,
    CHART,
    RBAC_KINDS,
    can_i_list,
    create_namespace,
    docs,
    helm_binary,
    helm_env_in,
    run,
    wait_rbac_in_force,
)
from tests.support.controlplane import ControlPlane, bin_dir
from tests.support.workload import live_pods, pod_network, ready_endpoints, rolled_out, running_cluster, until
from tests.support.world import rollout_body

CRD = "modelrollouts.modelrollout.dev"
RELEASE, RELEASE_NS, WATCH_NS = "mr", "mr-system", "models"
FULLNAME = "mr-modelrollout"
WAIT = ("--wait", "--timeout", "180s")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[ControlPlane, client.ApiClient]]:
    with running_cluster() as (plane, _):
        yield plane, config.new_client_from_config(config_file=str(plane.kubeconfig))


def chart_with_a_new_crd_field(target: Path) -> Path:
    """charts/modelrollout as version 0.2.0 whose CRD has one more field, spec.owner."""
    chart = target / "modelrollout"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = "0.2.0"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    path = chart / "crds" / "modelrollout.dev_modelrollouts.yaml"
    crd = yaml.safe_load(path.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["owner"] = {"type": "string", "description": "Who to ask about this rollout."}
    path.write_text(yaml.safe_dump(crd))
    return chart


def crd_has_owner(api: client.ApiClient) -> bool:
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD)
    return "owner" in crd.spec.versions[0].schema.open_apiv3_schema.properties["spec"].properties


def release_status(helm: str, env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(run([helm, "status", RELEASE, "-n", RELEASE_NS, "-o", "json"], env=env))
    return out


def controller_args(apps: client.AppsV1Api) -> list[str]:
    d = apps.read_namespaced_deployment(FULLNAME, RELEASE_NS)
    args: list[str] = d.spec.template.spec.containers[0].args
    return args


def chart_label(apps: client.AppsV1Api) -> str:
    label: str = apps.read_namespaced_deployment(FULLNAME, RELEASE_NS).metadata.labels["helm.sh/chart"]
    return label


def ready_with_endpoints(api: client.ApiClient) -> set[str]:
    """Rolled out, every pod on a kwok node with a pod IP, and the metrics Service's endpoints
    exactly those IPs; returns the pods' names (kwok may give a new pod a freed pod's IP)."""
    apps, core, disc = client.AppsV1Api(api), client.CoreV1Api(api), client.DiscoveryV1Api(api)
    until(f"{FULLNAME} rolled out", lambda: rolled_out(apps, RELEASE_NS, FULLNAME), timeout=180)
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=modelrollout"

    def two_pods() -> list[client.V1Pod] | None:
        pods = live_pods(core, RELEASE_NS, selector)
        return pods if len(pods) == 2 else None

    pods = until("two live pods (the old ReplicaSet's gone)", two_pods)
    ips = {p.status.pod_ip for p in pods}
    assert all(ip and ip_in_pod_network(ip) for ip in ips), ips
    assert {p.spec.node_name for p in pods} == {"kwok-node-0"}
    until("the metrics Service's endpoints", lambda: ready_endpoints(disc, RELEASE_NS, f"{FULLNAME}-metrics") == ips)
    return {p.metadata.name for p in pods}


def ip_in_pod_network(ip: str) -> bool:
    return ipaddress.IPv4Address(ip) in pod_network()


def test_install_upgrade_rollback_uninstall(cluster: tuple[ControlPlane, client.ApiClient], tmp_path: Path) -> None:
    plane, api = cluster
    helm = helm_binary()
    env = {**helm_env_in(tmp_path), "KUBECONFIG": str(plane.kubeconfig)}
    kubectl = [str(bin_dir() / "kubectl"), "--kubeconfig", str(plane.kubeconfig)]
    apps, custom = client.AppsV1Api(api), client.CustomObjectsApi(api)
    create_namespace(api, WATCH_NS)
    values = ("--set", f"watchNamespaces={{{WATCH_NS}}}")

    # -- install: the CRD from the chart's crds/, the Deployment Ready, the Service's endpoints.
    run([helm, "install", RELEASE, str(CHART), "-n", RELEASE_NS, "--create-namespace", *values, *WAIT], env=env)
    assert release_status(helm, env)["info"]["status"] == "deployed"
    assert release_status(helm, env)["version"] == 1
    first_pods = ready_with_endpoints(api)
    assert not crd_has_owner(api)
    assert "--log-level=info" in controller_args(apps) and f"--namespace={WATCH_NS}" in controller_args(apps)
    # The ServiceAccount's RBAC is exactly what the controller ran under in test_chart.py.
    manifest = run([helm, "get", "manifest", RELEASE, "-n", RELEASE_NS], env=env)
    rbac = [doc for doc in docs(manifest) if doc["kind"] in RBAC_KINDS]
    wait_rbac_in_force(api, rbac, RELEASE_NS, FULLNAME)
    assert can_i_list(kubectl, f"system:serviceaccount:{RELEASE_NS}:{FULLNAME}", RELEASE_NS) == ALLOWLIST

    # A ModelRollout in the watched namespace (no controller runs: it just has to survive).
    # Its `owner` is not in this CRD's schema: the API server drops it.
    body = rollout_body("survivor", "model-a", "model-b")
    body["spec"]["owner"] = "team-a"
    custom.create_namespaced_custom_object(GROUP, VERSION, WATCH_NS, PLURAL, body)
    assert "owner" not in custom.get_namespaced_custom_object(GROUP, VERSION, WATCH_NS, PLURAL, "survivor")["spec"]

    # -- upgrade: a values change rolls out a new ReplicaSet.
    run(
        [helm, "upgrade", RELEASE, str(CHART), "-n", RELEASE_NS, "--reuse-values", "--set", "logLevel=debug", *WAIT],
        env=env,
    )
    assert release_status(helm, env)["version"] == 2
    assert "--log-level=debug" in controller_args(apps)
    second_pods = ready_with_endpoints(api)
    assert not second_pods & first_pods, (first_pods, second_pods)  # all replaced
    sets = apps.list_namespaced_replica_set(RELEASE_NS, label_selector=f"app.kubernetes.io/instance={RELEASE}").items
    assert sorted(rs.spec.replicas for rs in sets) == [0, 2]

    # -- upgrade: a new chart version whose CRD has a new field. Helm upgrades the release...
    new_chart = chart_with_a_new_crd_field(tmp_path)
    run([helm, "upgrade", RELEASE, str(new_chart), "-n", RELEASE_NS, "--reuse-values", *WAIT], env=env)
    assert release_status(helm, env)["version"] == 3
    assert chart_label(apps) == "modelrollout-0.2.0"
    ready_with_endpoints(api)
    # ...but never a chart's crds/: the field is not there until the documented step.
    assert not crd_has_owner(api)
    # Helm created the CRD (this install skipped docs/install.md's `kubectl apply` first), so
    # it is Helm's field manager that owns spec.versions: a plain server-side apply conflicts...
    plain = subprocess.run(
        [*kubectl, "apply", "--server-side", "-f", str(new_chart / "crds")], capture_output=True, text=True
    )
    assert plain.returncode != 0 and 'conflict with "helm"' in plain.stderr, plain.stderr
    assert not crd_has_owner(api)
    # ...and --force-conflicts, as docs/install.md says, takes the fields over.
    run([*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(new_chart / "crds")])
    until("the CRD with spec.owner", lambda: crd_has_owner(api))
    patch = {"spec": {"owner": "team-a"}}
    until(
        "spec.owner kept",
        lambda: (
            custom.patch_namespaced_custom_object(GROUP, VERSION, WATCH_NS, PLURAL, "survivor", patch)["spec"].get(
                "owner"
            )
            == "team-a"
        ),
    )

    # -- rollback to the first revision: its Deployment again; the CRD is not touched.
    run([helm, "rollback", RELEASE, "1", "-n", RELEASE_NS, "--wait", "--timeout", "180s"], env=env)
    assert release_status(helm, env)["version"] == 4
    assert chart_label(apps) == "modelrollout-0.1.0"
    assert "--log-level=info" in controller_args(apps)
    ready_with_endpoints(api)
    assert crd_has_owner(api)

    # -- uninstall: nothing of the release is left; the CRD and the ModelRollout are.
    run([helm, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait", "--timeout", "180s"], env=env)
    core, rbac_api = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    disc = client.DiscoveryV1Api(api)
    instance = f"app.kubernetes.io/instance={RELEASE}"

    def left() -> list[str]:
        found = [f"deployment/{d.metadata.name}" for d in apps.list_namespaced_deployment(RELEASE_NS).items]
        found += [f"replicaset/{r.metadata.name}" for r in apps.list_namespaced_replica_set(RELEASE_NS).items]
        found += [f"pod/{p.metadata.name}" for p in core.list_namespaced_pod(RELEASE_NS).items]
        found += [f"service/{s.metadata.name}" for s in core.list_namespaced_service(RELEASE_NS).items]
        found += [f"endpointslice/{s.metadata.name}" for s in disc.list_namespaced_endpoint_slice(RELEASE_NS).items]
        found += [
            f"serviceaccount/{s.metadata.name}"
            for s in core.list_namespaced_service_account(RELEASE_NS).items
            if s.metadata.name != "default"
        ]
        for ns in (RELEASE_NS, WATCH_NS):
            found += [
                f"role/{ns}/{r.metadata.name}" for r in rbac_api.list_namespaced_role(ns, label_selector=instance).items
            ]
            found += [
                f"rolebinding/{ns}/{r.metadata.name}"
                for r in rbac_api.list_namespaced_role_binding(ns, label_selector=instance).items
            ]
        found += [f"clusterrole/{r.metadata.name}" for r in rbac_api.list_cluster_role(label_selector=instance).items]
        found += [
            f"clusterrolebinding/{r.metadata.name}"
            for r in rbac_api.list_cluster_role_binding(label_selector=instance).items
        ]
        # Helm's own record of the release.
        found += [
            f"secret/{s.metadata.name}"
            for s in core.list_namespaced_secret(RELEASE_NS, label_selector="owner=helm").items
        ]
        return found

    assert until_empty(left) == []
    assert json.loads(run([helm, "list", "-A", "-o", "json"], env=env)) == []
    assert client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD).metadata.name == CRD
    survivor = custom.get_namespaced_custom_object(GROUP, VERSION, WATCH_NS, PLURAL, "survivor")
    assert survivor["spec"]["owner"] == "team-a"


def until_empty(left: Callable[[], list[str]], timeout: float = 120.0) -> list[str]:
    """What `left()` finds once it finds nothing, or at `timeout` (the garbage collector and kwok's
    pod-delete stage finish an uninstall a moment after helm returns)."""
    deadline = time.monotonic() + timeout
    while True:
        found = left()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
