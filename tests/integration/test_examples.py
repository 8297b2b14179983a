"""Every example in examples/ is accepted by the real API server and parses with the models.

Only the files directly in examples/ are rollouts a user copies; subfolders (e.g. a demo's
supporting manifests) are not applied here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from controller.api import ModelRollout, ModelRolloutStatus
from controller.api.models import BuiltinMetric, Canary, MetricBackend
from controller.api.rules import ApiModel

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.y*ml") if p.is_file())
IDS = [p.name for p in EXAMPLES]
# service.namespace[.svc[.cluster.local]][:port]
IN_CLUSTER = re.compile(r"^https?://[a-z0-9-]+\.[a-z0-9-]+(\.svc(\.cluster\.local)?)?(:[0-9]+)?/?$")


def _load(path: Path) -> dict[str, Any]:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 1, f"{path.name}: one ModelRollout per file"
    doc: dict[str, Any] = docs[0]
    return doc


def test_there_is_an_example_per_router() -> None:
    routers = [router for path in EXAMPLES for router in _load(path)["spec"]["traffic"]]
    assert sorted(routers) == ["gatewayAPI", "istio", "kserve", "replicas"]


@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_example_carries_realistic_guardrails(path: Path) -> None:
    """Errors, p99 latency against the incumbent, prediction drift and a business metric."""
    rollout = ModelRollout.model_validate(_load(path))
    guardrails = rollout.spec.guardrails

    assert any(
        g.metric.builtin is BuiltinMetric.ERROR_RATE and (g.sequential is not None or g.absolute is not None)
        for g in guardrails
    ), "an error-rate guardrail"
    assert any(
        g.metric.builtin is BuiltinMetric.LATENCY_P99 and g.relative is not None and g.relative.max_ratio is not None
        for g in guardrails
    ), "p99 latency relative to the incumbent"
    assert any(g.drift is not None for g in guardrails), "prediction drift against the incumbent"
    assert any(
        g.metric.query is not None and "{{model}}" in g.metric.query and "{{window}}" in g.metric.query
        for g in guardrails
    ), "a business metric from a query template"
    prometheus = rollout.spec.provider.prometheus if rollout.spec.provider else None
    assert prometheus is not None, "names its metric provider"
    assert IN_CLUSTER.match(prometheus.address), f"an in-cluster Service address: {prometheus.address}"
    assert "secretRef" in path.read_text(), "shows the optional secretRef (set or commented out)"
    assert path.read_text().count("#") >= 10, "explains its choices in comments"


@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_example_applies_with_kubectl(
    path: Path, kubectl: list[str], namespace: str, api_client: client.ApiClient
) -> None:
    applied = subprocess.run(
        [*kubectl, "-n", namespace, "apply", "--validate=strict", "-f", str(path)], capture_output=True, text=True
    )
    assert applied.returncode == 0, applied.stderr
    assert "created" in applied.stdout, applied.stdout

    doc = _load(path)
    got = subprocess.run(
        [*kubectl, "-n", namespace, "get", "mro", doc["metadata"]["name"], "-o", "yaml"],
        capture_output=True,
        text=True,
    )
    assert got.returncode == 0, got.stderr
    stored = ModelRollout.model_validate(yaml.safe_load(got.stdout))
    # The server's defaults are the models' defaults: what is stored is what the file means.
    assert stored.spec.wire() == ModelRollout.model_validate(doc).spec.wire()


def test_api_reference_shows_the_gateway_api_example_in_full() -> None:
    example = (REPO / "examples" / "gateway-api.yaml").read_text()
    assert f"```yaml\n{example}```" in (REPO / "docs" / "api.md").read_text(), (
        "docs/api.md must include examples/gateway-api.yaml verbatim (copy it into the last section)"
    )


def test_api_reference_snippets_are_valid() -> None:
    """Every YAML block in docs/api.md is something the models accept (docs do not drift)."""
    doc = (REPO / "docs" / "api.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)
    kinds: dict[str, type[ApiModel]] = {"status": ModelRolloutStatus, "canary": Canary, "provider": MetricBackend}
    checked = 0
    for block in blocks:
        data = yaml.safe_load(block)
        if data.get("kind") == "ModelRollout":
            ModelRollout.model_validate(data)
        else:
            (key,) = data
            kinds[key].model_validate(data[key])
        checked += 1
    assert checked == len(blocks) >= 4
