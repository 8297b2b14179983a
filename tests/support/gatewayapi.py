"""The official Gateway API CRDs in the test API server, and HTTPRoute bodies for tests.

The router is tested against the real HTTPRoute schema (its defaults, CEL rules and list
semantics), not a copy of our own making. The CRDs are not committed: they are fetched from the
Go module proxy (the module sigs.k8s.io/gateway-api ships them under config/crd/), once per
version, and cached under ~/.cache/modelrollout/gateway-api/<version>/.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.support.controlplane import CACHE
from tests.support.gomodules import module_dir
from tests.support.kube import apply_crd, wait_established

# v1.4.1's module downloads with the installed Go and GOTOOLCHAIN=local (v1.7 needs a newer Go),
# and its standard channel already has HTTPRoute rule names (traffic.gatewayAPI.ruleName uses them).
GATEWAY_API_VERSION = os.environ.get("GATEWAY_API_VERSION", "v1.4.1")
GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"
# The standard channel: what a cluster installs unless it opts into experimental features.
CHANNEL = "standard"

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
PLURAL = "httproutes"


def crd_dir(version: str = GATEWAY_API_VERSION) -> Path:
    """The version's CRD YAML files, downloaded through the module proxy the first time."""
    target = CACHE / "gateway-api" / version / CHANNEL
    if any(target.glob("*.yaml")):
        return target
    source = _module_dir(version) / "config" / "crd" / CHANNEL
    files = sorted(source.glob(f"{GROUP}_*.yaml"))
    if not files:
        raise RuntimeError(f"{GATEWAY_API_MODULE}@{version} has no CRDs under {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Copy into a sibling and rename, so a concurrent test run never sees half a directory.
    staging = Path(tempfile.mkdtemp(prefix=f".{CHANNEL}-", dir=target.parent))
    for path in files:
        shutil.copy(path, staging / path.name)
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another run got there first
    return target


def _module_dir(version: str) -> Path:
    return module_dir(GATEWAY_API_MODULE, version)


def install_gateway_api_crds(api_client: client.ApiClient, *, timeout: float = 60.0) -> list[str]:
    """Server-side apply the standard-channel CRDs; return their names once all are Established."""
    names: list[str] = []
    for path in sorted(crd_dir().glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                apply_crd(api_client, doc)
                names.append(doc["metadata"]["name"])
    wait_established(client.ApiextensionsV1Api(api_client), names, timeout=timeout)
    return names


def make_httproute(
    name: str,
    backends: list[tuple[str, int | None]],
    *,
    extra_rules: list[dict[str, Any]] | None = None,
    rule_name: str | None = None,
    port: int = 8080,
    filters: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An HTTPRoute whose first rule sends /predict to `backends` as (Service, weight) pairs.

    A weight of None leaves the field out (the API server then defaults it to 1). `extra_rules`
    follow the first rule unchanged.
    """
    refs: list[dict[str, Any]] = []
    for service, weight in backends:
        ref: dict[str, Any] = {"name": service, "port": port}
        if weight is not None:
            ref["weight"] = weight
        refs.append(ref)
    rule: dict[str, Any] = {"matches": [{"path": {"type": "PathPrefix", "value": "/predict"}}], "backendRefs": refs}
    if rule_name:
        rule["name"] = rule_name
    if filters:
        rule["filters"] = filters
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HTTPRoute",
        "metadata": metadata,
        "spec": {"parentRefs": [{"name": "models-gateway"}], "rules": [rule, *(extra_rules or [])]},
    }
