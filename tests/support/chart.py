"""The Helm chart for tests: build helm, render the chart, act as the chart's ServiceAccount."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.support.controlplane import CACHE, REPO, ControlPlane, bin_dir
from tests.support.kube import wait_allowed

HELM_VERSION = os.environ.get("HELM_VERSION", "v3.22.0")
CHART = REPO / "charts" / "modelrollout"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}

# What the chart's ServiceAccount may do in its release namespace, cluster mode, default values
# (`kubectl auth can-i --list`): the chart's rules plus what every authenticated user has
# (self reviews, discovery, health and version endpoints). Reviewed: no secrets, no create or
# delete of rollouts or routes, no pods, no cluster-wide writes beyond the CRs' status and events.
ALLOWLIST = {
    # The chart: its ClusterRole (every namespace) and the leader-election Role (release namespace).
    ("modelrollouts.modelrollout.dev", "", "[get list watch patch]"),
    ("modelrollouts.modelrollout.dev/status", "", "[update]"),
    ("events", "", "[create get patch]"),
    ("httproutes.gateway.networking.k8s.io", "", "[get list watch patch]"),
    ("leases.coordination.k8s.io", "", "[get list create update]"),
    # Built in for every authenticated user (system:basic-user, system:discovery, system:public-info-viewer).
    ("selfsubjectreviews.authentication.k8s.io", "", "[create]"),
    ("selfsubjectaccessreviews.authorization.k8s.io", "", "[create]"),
    ("selfsubjectrulesreviews.authorization.k8s.io", "", "[create]"),
    *(
        ("", f"[{url}]", "[get]")
        for url in (
            "/.well-known/openid-configuration/",
            "/.well-known/openid-configuration",
            "/api/*",
            "/api",
            "/apis/*",
            "/apis",
            "/healthz",
            "/livez",
            "/openapi/*",
            "/openapi",
            "/openid/v1/jwks/",
            "/openid/v1/jwks",
            "/readyz",
            "/version/",
            "/version",
        )
    ),
}


def helm_binary() -> str:
    """The helm binary of the pinned version, built the first time (nothing here skips)."""
    binary = CACHE / "helm" / HELM_VERSION / "bin" / "helm"
    if not binary.exists():
        env = {**os.environ, "HELM_VERSION": HELM_VERSION}
        subprocess.run(["bash", str(REPO / "hack" / "build-helm.sh")], check=True, env=env, capture_output=True)
    return str(binary)


def helm_env_in(directory: Path) -> dict[str, str]:
    """helm's own config, cache and data out of the user's home."""
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(directory / "helm-cache"),
        "HELM_CONFIG_HOME": str(directory / "helm-config"),
        "HELM_DATA_HOME": str(directory / "helm-data"),
    }


def run(argv: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, input=stdin, timeout=120)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def template(helm: str, env: dict[str, str], release: str, namespace: str, *args: str) -> str:
    return run([helm, "template", release, str(CHART), "--namespace", namespace, *args], env=env)


def docs(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def create_namespace(api: client.ApiClient, name: str, labels: dict[str, str] | None = None) -> str:
    body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    client.CoreV1Api(api).create_namespace(body)
    return name


def service_account_kubeconfig(plane: ControlPlane, api: client.ApiClient, ns: str, sa: str, path: Path) -> Path:
    """The plane's kubeconfig with the admin token replaced by a real token of the ServiceAccount."""
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = client.CoreV1Api(api).create_namespaced_service_account_token(sa, ns, request).status.token
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def namespace_terminating(status: dict[str, object]) -> bool:
    """A 403 that is not RBAC's: a create in a namespace being deleted (NamespaceLifecycle)."""
    details = status.get("details")
    causes = details.get("causes") or [] if isinstance(details, dict) else []
    return any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating" for c in causes) or (
        "because it is being terminated" in str(status.get("message", ""))
    )


def forbidden(audit_log: Path, username: str) -> tuple[int, list[str]]:
    """(requests audited for this user, those RBAC answered 403: not creates refused in a
    namespace being deleted, which no Role can allow)."""
    seen, refused = 0, []
    for line in audit_log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("stage") != "ResponseComplete" or event.get("user", {}).get("username") != username:
            continue
        seen += 1
        status = event.get("responseStatus") or {}
        if status.get("code") == 403 and not namespace_terminating(status):
            refused.append(f"{event['verb']} {event['requestURI']}")
    return seen, refused


ALL_ROUTERS = (
    "--set",
    "routers.istio=true",
    "--set",
    "routers.kserve=true",
    "--set",
    "routers.replicas=true",
    "--set",
    "routers.llmInferenceService=true",
)


def chart_service_account(
    plane: ControlPlane,
    api: client.ApiClient,
    workdir: Path,
    values: tuple[str, ...] = ALL_ROUTERS,
    release: str = "mr",
) -> tuple[str, str, Path]:
    """Apply the chart's ServiceAccount and RBAC (cluster mode) for real, in a release namespace of
    its own; return (release namespace, user name, a kubeconfig with a real token of that account).
    The ClusterRole and its binding are named after the release: one release name per identity."""
    release_ns = create_namespace(api, f"mr-system-{os.urandom(4).hex()}")
    # By default every router on: the engine and router scenarios drive all four backends under this identity.
    user, kubeconfig = apply_chart_rbac(plane, api, release_ns, workdir, *values, release=release)
    return release_ns, user, kubeconfig


def apply_chart_rbac(
    plane: ControlPlane, api: client.ApiClient, release_ns: str, workdir: Path, *values: str, release: str = "mr"
) -> tuple[str, Path]:
    """Render the chart with `values`, apply its ServiceAccount and RBAC for real, and wait until
    the authorizer grants them; return (user name, a kubeconfig with a real token of that account)."""
    rendered = template(helm_binary(), helm_env_in(workdir), release, release_ns, *values)
    rbac = [doc for doc in docs(rendered) if doc["kind"] in RBAC_KINDS]
    kubectl = [str(bin_dir() / "kubectl"), "--kubeconfig", str(plane.kubeconfig)]
    run([*kubectl, "apply", "--server-side", "-f", "-"], stdin=yaml.safe_dump_all(rbac))
    sa = next(doc["metadata"]["name"] for doc in rbac if doc["kind"] == "ServiceAccount")
    wait_rbac_in_force(api, rbac, release_ns, sa)
    kubeconfig = service_account_kubeconfig(plane, api, release_ns, sa, workdir / f"{release}-{sa}-kubeconfig")
    return f"system:serviceaccount:{release_ns}:{sa}", kubeconfig


def wait_rbac_in_force(api: client.ApiClient, rbac: list[dict[str, Any]], ns: str, sa: str) -> None:
    """Until the authorizer grants the ServiceAccount every rule of the applied Roles and
    ClusterRoles: a controller started before that would be refused through no fault of the chart."""
    for doc in rbac:
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        namespace = (doc["metadata"].get("namespace") or ns) if doc["kind"] == "Role" else None
        for rule in doc.get("rules") or []:
            for group in rule.get("apiGroups") or [""]:
                for resource in rule.get("resources") or []:
                    for verb in rule.get("verbs") or []:
                        wait_allowed(api, f"system:serviceaccount:{ns}:{sa}", verb, group, resource, namespace)


def can_i_list(kubectl: list[str], user: str, ns: str) -> set[tuple[str, str, str]]:
    """(resource, non-resource URLs, verbs) of each row; the columns are cut where the header's start."""
    out = run([*kubectl, "auth", "can-i", "--list", "--as", user, "-n", ns])
    header, *rows = out.splitlines()
    cuts = [header.index(title) for title in ("Non-Resource URLs", "Resource Names", "Verbs")]
    result = set()
    for row in filter(str.strip, rows):
        resource, urls, names, verbs = (row[a:b].strip() for a, b in zip([0, *cuts], [*cuts, None], strict=True))
        assert names == "[]", f"unexpected resourceNames in {row!r}"
        result.add((resource, "" if urls == "[]" else urls, verbs))
    return result
