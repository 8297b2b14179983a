"""The committed CRD is exactly what the models generate (one source of truth)."""

from __future__ import annotations

import difflib
from pathlib import Path

from controller.api.crdgen import render

CRD = Path(__file__).resolve().parents[2] / "crds" / "modelrollout.dev_modelrollouts.yaml"


def test_committed_crd_matches_the_models() -> None:
    committed, generated = CRD.read_text(), render()
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            generated.splitlines(keepends=True),
            fromfile=f"{CRD.name} (committed)",
            tofile=f"{CRD.name} (from controller/api/models.py)",
            n=2,
        )
    )
    assert committed == generated, f"crds/{CRD.name} is stale: run `make crds` and commit the result.\n{diff[:4000]}"
