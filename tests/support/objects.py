"""ModelRollout bodies for tests: one minimal valid object, mutated per case."""

from __future__ import annotations

import copy
from typing import Any

from controller.api import API_VERSION, KIND


def minimal_rollout(name: str = "fraud-scorer", **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "incumbent": {"name": "fraud-v1"},
        "candidate": {"name": "fraud-v2"},
        "traffic": {"gatewayAPI": {"httpRoute": "fraud-scorer"}},
        "canary": {"steps": [{"weight": 10, "hold": "1m"}, {"weight": 50, "hold": "1m"}]},
        "guardrails": [
            {
                "name": "error-rate",
                "metric": {"builtin": "ErrorRate"},
                "absolute": {"max": 0.01},
            }
        ],
    }
    spec.update(copy.deepcopy(spec_overrides))
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}
