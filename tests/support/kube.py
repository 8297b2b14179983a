"""Small Kubernetes helpers for tests: install CRDs and wait until the API server serves them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, dynamic


def install_crds(api: client.ApiClient, directory: Path, *, timeout: float = 60.0) -> list[str]:
    """Server-side apply every CRD in `directory`; return their names once all are Established."""
    ext = client.ApiextensionsV1Api(api)
    names: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                apply_crd(api, doc)
                names.append(doc["metadata"]["name"])
    wait_established(ext, names, timeout=timeout)
    return names


def apply_crd(api: client.ApiClient, doc: dict[str, Any]) -> None:
    dyn = dynamic.DynamicClient(api)
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    crds.server_side_apply(
        body=doc, name=doc["metadata"]["name"], field_manager="modelrollout-tests", force_conflicts=True
    )


def wait_established(ext: client.ApiextensionsV1Api, names: list[str], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            crd = ext.read_custom_resource_definition(name)
            conditions = {c.type: c.status for c in (crd.status.conditions or [])}
            if conditions.get("Established") == "True":
                pending.discard(name)
        if pending:
            time.sleep(0.1)
    if pending:
        raise TimeoutError(f"CRDs not Established after {timeout}s: {sorted(pending)}")


def wait_allowed(
    api: client.ApiClient, user: str, verb: str, group: str, resource: str, namespace: str | None, timeout: float = 60
) -> None:
    """Until the authorizer allows a ServiceAccount `user` (system:serviceaccount:<ns>:<name>) the
    verb: it follows new RBAC objects through informers, a moment later (longer on a busy machine).
    Asked as the admin through a SubjectAccessReview, so the user itself makes no request."""
    sa_namespace = user.split(":")[2]
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, group=group, resource=resource, namespace=namespace
            ),
        )
    )
    deadline = time.monotonic() + timeout
    while not client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed:
        assert time.monotonic() < deadline, f"{user} still may not {verb} {resource}.{group} in {namespace}"
        time.sleep(0.2)
