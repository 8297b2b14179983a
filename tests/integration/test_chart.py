"""The Helm chart against the real API server: it lints, renders, is accepted, and is enough.

`helm` is built from the Go module proxy (hack/build-helm.sh, `make helm`). The rendered
manifests are applied with a server-side dry run (the API server's own validation and admission,
Pod Security included); then, in cluster mode, the chart's RBAC is applied for real and the
controller runs as the chart's ServiceAccount (a real token from the TokenRequest API) through a
whole healthy rollout, with zero 403s for that user in the audit log.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.sharding import shard_of
from tests.support.audit import writes
from tests.support.chart import (
    ALLOWLIST,
    CHART,
    apply_chart_rbac,
    can_i_list,
    create_namespace,
    docs,
    forbidden,
    helm_binary,
    helm_env_in,
    run,
    template,
)
from tests.support.controller import ControllerFactory
from tests.support.controlplane import ControlPlane
from tests.support.gatewayapi import make_httproute
from tests.support.prometheus import PrometheusServer
from tests.support.world import World, phase, rollout_body, unique

VALUES = {
    "default": [],
    "namespaced": ["--set", "namespaced=true", "--set", "watchNamespaces={WATCH}"],
    # Three shards: three Deployments of two replicas (docs/operations.md "Sharding").
    "sharded": ["--set", "shards=3"],
    # A shadow comparator for rollout "fraud" in the watched namespace (docs/shadow.md).
    "comparator": [
        "--set", "comparator.rollouts[0].name=fraud", "--set", "comparator.rollouts[0].namespace=WATCH",
        "--set-json", 'comparator.networkPolicy.mirrorFrom=[{"namespaceSelector": {"matchLabels": {"gw": "yes"}}}]',
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def helm() -> str:
    return helm_binary()


@pytest.fixture
def helm_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    yield helm_env_in(tmp_path)


def values_args(mode: str, watch: str) -> list[str]:
    return [arg.replace("WATCH", watch) for arg in VALUES[mode]]


@pytest.mark.parametrize("mode", sorted(VALUES))
def test_helm_lint(helm: str, helm_env: dict[str, str], mode: str) -> None:
    out = run([helm, "lint", str(CHART), "--strict", *values_args(mode, "models")], env=helm_env)
    assert "0 chart(s) failed" in out


def test_namespaced_without_namespaces_is_refused(helm: str, helm_env: dict[str, str]) -> None:
    result = subprocess.run(
        [helm, "template", "mr", str(CHART), "--set", "namespaced=true"], capture_output=True, text=True, env=helm_env
    )
    assert result.returncode != 0 and "namespaced=true needs watchNamespaces" in result.stderr


@pytest.mark.parametrize("mode", sorted(VALUES))
def test_rendered_manifests_pass_server_side_dry_run(
    helm: str, helm_env: dict[str, str], api_client: client.ApiClient, kubectl: list[str], mode: str
) -> None:
    release_ns = create_namespace(api_client, unique("mr-system"))
    watch_ns = create_namespace(api_client, unique("models"))
    rendered = template(helm, helm_env, unique("mr"), release_ns, "--include-crds", *values_args(mode, watch_ns))
    kinds = sorted({doc["kind"] for doc in docs(rendered)})
    if mode == "namespaced":
        assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
        roles = [d for d in docs(rendered) if d["kind"] == "Role" and d["metadata"]["namespace"] == watch_ns]
        assert len(roles) == 1
        assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]} in roles[0]["rules"]
    else:
        cluster_role = next(d for d in docs(rendered) if d["kind"] == "ClusterRole")
        assert all("secrets" not in rule["resources"] for rule in cluster_role["rules"])
    assert {"CustomResourceDefinition", "Deployment", "Service", "ServiceAccount", "Role", "RoleBinding"} <= set(kinds)

    out = run([*kubectl, "apply", "--server-side", "--dry-run=server", "-f", "-"], stdin=rendered)
    assert out.count("serverside-applied (server dry run)") == len(docs(rendered)), out


def pod_from_template(rendered: str, name: str) -> dict[str, Any]:
    deployment = next(doc for doc in docs(rendered) if doc["kind"] == "Deployment")
    template_ = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": template_["metadata"]["labels"]},
        "spec": template_["spec"],
    }


def test_pod_template_is_admitted_under_restricted_pod_security(
    helm: str, helm_env: dict[str, str], api_client: client.ApiClient
) -> None:
    ns = create_namespace(api_client, unique("mr-restricted"), {"pod-security.kubernetes.io/enforce": "restricted"})
    pod = pod_from_template(template(helm, helm_env, "mr", ns), "controller-dry-run")
    core = client.CoreV1Api(api_client)

    created = core.create_namespaced_pod(ns, pod, dry_run="All")
    assert created.spec.security_context.run_as_user == 65532

    # The label is enforced: the same pod, allowed to escalate privileges, is refused.
    bad = copy.deepcopy(pod)
    bad["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(ns, bad, dry_run="All")
    assert refused.value.status == 403 and "violates PodSecurity" in refused.value.body
    assert "allowPrivilegeEscalation" in refused.value.body


def test_comparator_pod_is_admitted_under_restricted_pod_security_and_reads_one_rollout_only(
    helm: str, helm_env: dict[str, str], api_client: client.ApiClient
) -> None:
    ns = create_namespace(api_client, unique("mr-shadow"), {"pod-security.kubernetes.io/enforce": "restricted"})
    rendered = template(helm, helm_env, "mr", ns, *values_args("comparator", ns))
    mine = [d for d in docs(rendered) if d["metadata"].get("name") == "fraud-comparator"]
    assert sorted(d["kind"] for d in mine) == [
        "Deployment", "NetworkPolicy", "Role", "RoleBinding", "Service", "ServiceAccount"
    ]  # fmt: skip
    # Mirrored requests only from the gateway's pods: anyone else could forge the counts.
    policy = next(d for d in mine if d["kind"] == "NetworkPolicy")
    mirror, metrics = policy["spec"]["ingress"]
    assert mirror == {
        "ports": [{"port": "mirror", "protocol": "TCP"}],
        "from": [{"namespaceSelector": {"matchLabels": {"gw": "yes"}}}],
    }
    assert metrics == {"ports": [{"port": "metrics", "protocol": "TCP"}]}
    role = next(d for d in mine if d["kind"] == "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["modelrollout.dev"],
            "resources": ["modelrollouts"],
            "resourceNames": ["fraud"],
            "verbs": ["get"],
        }
    ]
    deployment = next(d for d in mine if d["kind"] == "Deployment")
    template_ = deployment["spec"]["template"]
    assert "--rollout=fraud" in template_["spec"]["containers"][0]["args"]
    # Its counters are what ShadowDisagreement reads: scraped by annotation, or by a ServiceMonitor
    # that keeps their own namespace/rollout/model labels (review finding 13).
    assert template_["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/metrics"
    }  # fmt: skip
    monitored = template(
        helm, helm_env, "mr", ns, *values_args("comparator", ns), "--set", "serviceMonitor.enabled=true"
    )
    (monitor,) = [
        d for d in docs(monitored) if d["kind"] == "ServiceMonitor" and d["metadata"]["name"] == "fraud-comparator"
    ]
    assert monitor["metadata"]["namespace"] == ns and monitor["spec"]["namespaceSelector"] == {"matchNames": [ns]}
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "honorLabels": True}
    ]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "comparator-dry-run", "labels": template_["metadata"]["labels"]},
        "spec": template_["spec"],
    }
    created = client.CoreV1Api(api_client).create_namespaced_pod(ns, pod, dry_run="All")
    assert created.spec.security_context.run_as_user == 65532


def test_a_comparator_without_mirror_peers_is_refused(helm: str, helm_env: dict[str, str]) -> None:
    args = ["--set", "comparator.rollouts[0].name=fraud", "--set", "comparator.rollouts[0].namespace=models"]
    failed = subprocess.run(
        [helm, "template", "mr", str(CHART), *args], env=helm_env, capture_output=True, text=True, check=False
    )
    assert failed.returncode != 0 and "set mirrorFrom" in failed.stderr


@pytest.mark.usefixtures("gateway_api")
def test_controller_as_the_charts_service_account_promotes_a_rollout(
    helm: str,
    helm_env: dict[str, str],
    world: World,
    controller_process: ControllerFactory,
    control_plane: ControlPlane,
    kubectl: list[str],
    tmp_path: Path,
) -> None:
    release_ns = create_namespace(world.api, unique("mr-system"))
    release = unique("mr")
    values = ("--set", f"watchNamespaces={{{world.namespace}}}")
    user, kubeconfig = apply_chart_rbac(control_plane, world.api, release_ns, tmp_path, *values, release=release)
    rendered = template(helm, helm_env, release, release_ns, *values)

    # The Deployment's own arguments, with what the kubelet would substitute.
    deployment = next(doc for doc in docs(rendered) if doc["kind"] == "Deployment")
    args = [
        arg.replace("$(POD_NAMESPACE)", release_ns)
        for arg in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        if not arg.startswith(("--identity=", "--health-port=", "--log-level=", "--lease-name="))
    ]
    assert f"--lease-namespace={release_ns}" in args and f"--namespace={world.namespace}" in args
    controller_process.start("chart-sa", *args, kubeconfig=kubeconfig)
    world.apply(rollout_body("demo", world.incumbent, world.candidate))

    obj = world.wait(phase("Promoted"))

    assert world.candidate_writes() == [20, 50, 100]
    assert obj["status"]["incumbent"]["name"] == world.candidate
    assert control_plane.audit_log is not None
    seen, refused = forbidden(control_plane.audit_log, user)
    assert seen > 0, f"no request of {user} in the audit log"
    assert refused == []
    assert can_i_list(kubectl, user, release_ns) == ALLOWLIST


def test_shards_render_one_deployment_per_shard_under_one_service(helm: str, helm_env: dict[str, str]) -> None:
    single = [d for d in docs(template(helm, helm_env, "mr", "mr-system")) if d["kind"] == "Deployment"]
    # One shard: the Deployment of before (name, selector, arguments), so an upgrade changes nothing.
    assert [d["metadata"]["name"] for d in single] == ["mr-modelrollout"]
    assert single[0]["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "modelrollout", "app.kubernetes.io/instance": "mr"
    }  # fmt: skip
    assert not any(a.startswith("--shard") for a in single[0]["spec"]["template"]["spec"]["containers"][0]["args"])

    rendered = docs(template(helm, helm_env, "mr", "mr-system", "--set", "shards=3"))
    deployments = [d for d in rendered if d["kind"] == "Deployment"]
    assert [d["metadata"]["name"] for d in deployments] == [f"mr-modelrollout-{k}" for k in range(3)]
    service = next(d for d in rendered if d["kind"] == "Service")
    for k, deployment in enumerate(deployments):
        spec = deployment["spec"]
        assert spec["replicas"] == 2  # leader + standby
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        assert spec["selector"]["matchLabels"]["modelrollout.dev/shard"] == str(k)  # selectors disjoint
        assert service["spec"]["selector"].items() <= labels.items()  # one Service scrapes every shard
        args = spec["template"]["spec"]["containers"][0]["args"]
        assert {"--shards=3", f"--shard={k}", "--lease-name=modelrollout-controller"} <= set(args)
    failed = subprocess.run(
        [helm, "template", "mr", str(CHART), "--set", "shards=0"], env=helm_env, capture_output=True, text=True
    )
    assert failed.returncode != 0 and "shards must be a whole number, at least 1" in failed.stderr


@pytest.mark.usefixtures("gateway_api")
def test_two_shards_as_the_charts_service_account_each_promote_their_own_rollouts(
    helm: str,
    helm_env: dict[str, str],
    world: World,
    prometheus: PrometheusServer,
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    release_ns = create_namespace(world.api, unique("mr-system"))
    release = unique("mr")
    values = ("--set", f"watchNamespaces={{{world.namespace}}}", "--set", "shards=2")
    user, kubeconfig = apply_chart_rbac(control_plane, world.api, release_ns, tmp_path, *values, release=release)
    deployments = [d for d in docs(template(helm, helm_env, release, release_ns, *values)) if d["kind"] == "Deployment"]
    # Rollouts until each shard owns one (each with its own route).
    owners: dict[str, int] = {}
    while len(set(owners.values())) < 2:
        assert len(owners) < 20, f"20 rollouts, all on one shard: {owners}"
        name = f"r-{len(owners)}"
        world.custom.create_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", world.namespace, "httproutes",
            make_httproute(f"models-{name}", [(world.incumbent, 100), (world.candidate, 0)]),
        )  # fmt: skip
        body = rollout_body(name, world.incumbent, world.candidate)
        body["spec"]["traffic"] = {"gatewayAPI": {"httpRoute": f"models-{name}"}}
        world.apply(body)
        owners[name] = shard_of(world.get(name)["metadata"]["uid"], 2)
    factory = ControllerFactory(
        control_plane, prometheus_url=prometheus.url, kubeconfig=kubeconfig, lease_namespace=release_ns
    )
    prefix = unique("lease")
    try:
        for k, deployment in enumerate(deployments):
            args = [
                arg.replace("$(POD_NAMESPACE)", release_ns)
                for arg in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
                if not arg.startswith(("--identity=", "--health-port=", "--log-level=", "--lease-name="))
            ]
            factory.start(f"chart-shard-{k}", *args, lease_name=prefix)
        for name in owners:
            world.wait(phase("Promoted"), name=name)
    finally:
        factory.stop_all()

    assert control_plane.audit_log is not None
    for name, k in owners.items():
        agents = {
            w.user_agent.rsplit("/", 1)[1]
            for w in writes(control_plane.audit_log, namespace=world.namespace, resource="modelrollouts")
            if w.name == name and w.user_agent.startswith("modelrollout-controller/")
        }
        assert agents == {f"chart-shard-{k}"}, f"{name} (shard {k}) written by {agents}"
    seen, refused = forbidden(control_plane.audit_log, user)
    assert seen > 0 and refused == [], f"{user}: {len(refused)} of {seen} requests refused: {refused[:5]}"


# What `routers.istio`, `routers.kserve`, `routers.replicas` and `routers.llmInferenceService` add: get and patch on each kind of
# target object, and list and watch for the controller's cache of them (kube/objects.py); nothing else
# (no create or delete; no Deployment scale subresource). `routers.replicas` also reads HPAs, to
# report one that would fight it (HorizontalPodAutoscalerConflict), and writes none.
ROUTER_ROWS = {
    ("virtualservices.networking.istio.io", "", "[get list watch patch]"),
    ("inferenceservices.serving.kserve.io", "", "[get list watch patch]"),
    ("llminferenceservices.serving.kserve.io", "", "[get list watch patch]"),
    ("deployments.apps", "", "[get list watch patch]"),
    ("horizontalpodautoscalers.autoscaling", "", "[get list watch]"),
}


def test_each_router_value_grants_get_and_patch_on_its_target_kind_only(
    chart_identity: tuple[str, str, Path], kubectl: list[str]
) -> None:
    release_ns, user, _ = chart_identity
    assert can_i_list(kubectl, user, release_ns) == ALLOWLIST | ROUTER_ROWS


def test_a_router_turned_off_grants_nothing_on_its_kind(helm: str, helm_env: dict[str, str]) -> None:
    rendered = template(helm, helm_env, "mr", "mr-system", "--set", "routers.gatewayAPI=false")
    role = next(doc for doc in docs(rendered) if doc["kind"] == "ClusterRole")
    groups = {group for rule in role["rules"] for group in rule["apiGroups"]}
    assert groups == {"modelrollout.dev", ""}
