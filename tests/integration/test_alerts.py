"""The chart's alerts and Grafana dashboard, as the chart renders them.

The PrometheusRule is checked with `promtool check rules` and each alert is unit-tested with
`promtool test rules` (tests/integration/alerts_test.yaml: when it fires, when it must not, and
what it says). promtool ships in Debian's prometheus package (hack/install-prometheus.sh). That
the dashboard's queries return data from a real Prometheus is tested in test_dashboard.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import CHART, docs, helm_binary, helm_env_in, run, template

HERE = Path(__file__).parent


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:  # never a skip: make prometheus installs it
        raise RuntimeError("promtool is not installed: run `make prometheus` (Debian's prometheus package ships it)")
    return binary


def rendered(tmp_path: Path, *values: str) -> list[dict[str, Any]]:
    return docs(template(helm_binary(), helm_env_in(tmp_path), "mr", "monitoring", *values))


def test_alerts_and_dashboard_are_opt_in(tmp_path: Path) -> None:
    kinds = {doc["kind"] for doc in rendered(tmp_path)}
    assert "PrometheusRule" not in kinds and "ConfigMap" not in kinds


def test_every_alert_passes_its_promtool_unit_test(tmp_path: Path) -> None:
    rule = next(d for d in rendered(tmp_path, "--set", "prometheusRule.enabled=true") if d["kind"] == "PrometheusRule")
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(HERE / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    tested = {
        t["alertname"]
        for case in yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    assert tested == alerts, "each alert has a unit test"

    checked = subprocess.run([promtool(), "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0 and f"SUCCESS: {len(alerts)} rules found" in checked.stdout, (
        checked.stdout + checked.stderr
    )
    tests = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr


@pytest.mark.parametrize("threshold", ["prometheusRule.pausedForSeconds=600", "prometheusRule.stalledFor=30m"])
def test_thresholds_come_from_the_values(tmp_path: Path, threshold: str) -> None:
    rule = next(
        d
        for d in rendered(tmp_path, "--set", "prometheusRule.enabled=true", "--set", threshold)
        if d["kind"] == "PrometheusRule"
    )
    text = yaml.safe_dump(rule)
    assert ("> 600" in text) if "pausedFor" in threshold else ("for: 30m" in text)


def test_grafana_dashboard_configmap_carries_the_sidecar_label_and_the_json(tmp_path: Path) -> None:
    cm = next(d for d in rendered(tmp_path, "--set", "grafanaDashboard.enabled=true") if d["kind"] == "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(cm["data"]["modelrollout.json"])
    assert board == json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    assert all(t["expr"] for p in board["panels"] for t in p["targets"])


def test_helm_lint_with_alerts_and_dashboard(tmp_path: Path) -> None:
    out = run(
        [
            helm_binary(),
            "lint",
            str(CHART),
            "--strict",
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "grafanaDashboard.enabled=true",
        ],
        env=helm_env_in(tmp_path),
    )
    assert "0 chart(s) failed" in out
