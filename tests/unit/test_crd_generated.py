"""The committed CRD is exactly what the models generate (one source of truth)."""

from __future__ import annotations

from pathlib import Path

from controller.api.crdgen import render

CRD = Path(__file__).resolve().parents[2] / "crds" / "modelrollout.dev_modelrollouts.yaml"


def test_committed_crd_matches_the_models() -> None:
    assert CRD.read_text() == render(), "crds/ is stale: run `make crds` and commit the result"
