"""The Helm chart ships the same CRD as crds/ (`make crds` writes both)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAME = "modelrollout.dev_modelrollouts.yaml"


def test_chart_crd_equals_generated_crd() -> None:
    chart_copy = REPO / "charts" / "modelrollout" / "crds" / NAME
    generated = REPO / "crds" / NAME
    assert chart_copy.read_bytes() == generated.read_bytes(), "run `make crds` to refresh the chart's copy"


def test_chart_has_no_other_crds() -> None:
    assert sorted(p.name for p in (REPO / "charts" / "modelrollout" / "crds").iterdir()) == [NAME]
