"""The official Gateway API CRDs, fetched at test time from the Go module proxy (not committed)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.support.kube import apply_crd, wait_established

GATEWAY_API_VERSION = os.environ.get("GATEWAY_API_VERSION", "v1.4.1")


def crd_dir() -> Path:
    """Download sigs.k8s.io/gateway-api through the module proxy (cached by Go) and return its CRDs."""
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
        subprocess.run(["go", "mod", "init", "fetch"], cwd=work, env=env, check=True, capture_output=True)
        out = subprocess.run(
            ["go", "mod", "download", "-json", f"sigs.k8s.io/gateway-api@{GATEWAY_API_VERSION}"],
            cwd=work,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    return Path(json.loads(out.stdout)["Dir"]) / "config" / "crd" / "standard"


def install_gateway_api_crds(api: client.ApiClient) -> list[str]:
    names = []
    for path in sorted(crd_dir().glob("gateway.networking.k8s.io_*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                apply_crd(api, doc)
                names.append(doc["metadata"]["name"])
    wait_established(client.ApiextensionsV1Api(api), names, timeout=60)
    return names


def make_httproute(
    name: str,
    backends: list[tuple[str, int]],
    *,
    extra_rules: list[dict[str, Any]] | None = None,
    rule_name: str | None = None,
    port: int = 8080,
) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/predict"}}],
        "backendRefs": [{"name": svc, "port": port, "weight": weight} for svc, weight in backends],
    }
    if rule_name:
        rule["name"] = rule_name
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "models-gateway"}], "rules": [rule, *(extra_rules or [])]},
    }
