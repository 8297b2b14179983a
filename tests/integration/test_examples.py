"""Every example in examples/ is accepted by the real API server and parses with the models."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from controller.api import ModelRollout

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_is_an_example_per_router() -> None:
    routers = set()
    for path in EXAMPLES:
        doc = yaml.safe_load(path.read_text())
        routers |= set(doc["spec"]["traffic"])
    assert routers == {"gatewayAPI", "istio", "kserve", "replicas"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_applies_with_kubectl(
    path: Path, kubectl: list[str], namespace: str, api_client: client.ApiClient
) -> None:
    applied = subprocess.run(
        [*kubectl, "-n", namespace, "apply", "--validate=strict", "-f", str(path)], capture_output=True, text=True
    )
    assert applied.returncode == 0, applied.stderr
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    got = subprocess.run([*kubectl, "-n", namespace, "get", "mro", name, "-o", "yaml"], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    rollout = ModelRollout.model_validate(yaml.safe_load(got.stdout))
    assert rollout.spec.guardrails, "examples carry realistic guardrails"
