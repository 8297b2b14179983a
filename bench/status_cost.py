"""`python -m bench.status_cost`: what one ModelRollout status write costs kube-apiserver.

At 5,000 progressing rollouts analysed every 30 s the controller writes 161 statuses a second,
and the API server, not the controller, runs out of CPU (docs/benchmarks.md, "Five thousand
progressing"). This measures the API server's side of one write, alone, on a fresh local plane
(the same etcd + kube-apiserver as the tests): one progressing rollout (bench/scale.py's spec), a
4 KB progressing status written N times in a row by one client, and kube-apiserver's CPU seconds
(from /proc) divided by N. Each variant is a plane of its own:

- `shipped`: the CRD as generated (crds/), a full PUT of the object to /status, as the
  controller writes it (controller/kube/rollouts.py `replace_status`);
- `no-cel`: the same CRD with every `x-kubernetes-validations` rule removed: how much of the cost
  is the CEL rules, which the API server evaluates over the whole object (spec included) on
  every status write;
- `merge-patch`: the shipped CRD, a merge patch of /status carrying only what an analysis
  changes (the guardrail's evidence, `lastAnalysis`);
- `guarded`: every rule `r` that does not already use `oldSelf`, where `oldSelf` is allowed (not
  under the items of a list that is not a map list), rewritten as
  `(oldSelf.hasValue() && oldSelf.value() == self) || (r)` with `optionalOldSelf: true`: the same
  verdicts (on create there is no old value, so `r` runs; an unchanged value's errors are
  forgiven by ratcheting anyway), but an unchanged value costs one comparison instead of `r`.

Usage: python -m bench.status_cost [--writes N] [variant ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from bench.scale import rollout_spec
from tests.support.controlplane import running_control_plane
from tests.support.kube import install_crds

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "modelrollout.dev_modelrollouts.yaml"
GROUP, VERSION, PLURAL, NAMESPACE = "modelrollout.dev", "v1alpha1", "modelrollouts", "default"
VARIANTS = ("shipped", "no-cel", "merge-patch", "guarded")

# A rollout holding at step 1 of 2 with one guardrail analysed: what bench/scale.py's rollouts hold.
STATUS: dict[str, Any] = {
    "observedGeneration": 1,
    "phase": "Progressing",
    "reason": "StepAdvanced",
    "message": "step 1/2: candidate at 10%, analysing",
    "incumbent": {"name": "model-v1"},
    "candidate": {"name": "model-v2"},
    "candidateHash": "3f2a9c1b7e5d4a60",
    "currentStep": 0,
    "totalSteps": 2,
    "stepDisplay": "1/2",
    "rolloutStarted": "2026-11-27T10:00:00Z",
    "stepStarted": "2026-11-27T10:00:05Z",
    "lastAnalysis": "2026-11-27T10:14:00Z",
    "weights": {"incumbent": 90, "candidate": 10},
    "guardrails": [
        {
            "name": "error-rate",
            "verdict": "Pass",
            "message": "candidate 0.01 within max 0.05",
            "evidence": {
                "candidateValue": 0.01,
                "incumbentValue": 0.01,
                "candidateSamples": 2400,
                "incumbentSamples": 7200,
                "bound": "<= 0.05",
                "statistic": "p 0.91",
            },
            "failures": 0,
            "lastEvaluated": "2026-11-27T10:14:00Z",
        }
    ],
    "history": [
        {"time": "2026-11-27T10:00:05Z", "step": 0, "action": "SetWeights", "reason": "StepAdvanced", "message": "1/2"}
    ],
    "conditions": [
        {"type": "Ready", "status": "False", "reason": "StepAdvanced", "lastTransitionTime": "2026-11-27T09:58:00Z"},
        {
            "type": "Reconciling",
            "status": "True",
            "reason": "StepAdvanced",
            "lastTransitionTime": "2026-11-27T10:14:01Z",
        },
        {"type": "Stalled", "status": "False", "reason": "StepAdvanced", "lastTransitionTime": "2026-11-27T10:14:01Z"},
    ],
}


def without_cel(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_cel(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [without_cel(v) for v in node]
    return node


def guarded(node: Any, correlatable: bool = True) -> Any:
    """The schema with its rules guarded (see `guarded` above), where the API server allows
    `oldSelf`: not under the items of a list that is not a map list (no old item to compare)."""
    if isinstance(node, list):
        return [guarded(v, correlatable) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        below = correlatable and not (key == "items" and node.get("x-kubernetes-list-type") != "map")
        out[key] = guarded(value, below)
    rules = node.get("x-kubernetes-validations")
    if rules and correlatable:
        out["x-kubernetes-validations"] = [
            rule
            if "oldSelf" in rule["rule"]
            else {
                **rule,
                "rule": f"(oldSelf.hasValue() && oldSelf.value() == self) || ({rule['rule']})",
                "optionalOldSelf": True,
            }
            for rule in rules
        ]
    return out


CRD_OF = {"no-cel": without_cel, "guarded": guarded}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def analysed(i: int) -> dict[str, Any]:
    """The status after analysis number i: new evidence and a new lastAnalysis."""
    status = copy.deepcopy(STATUS)
    minute, second = divmod(i, 60)
    status["lastAnalysis"] = f"2026-11-27T{10 + minute // 60:02d}:{minute % 60:02d}:{second:02d}Z"
    status["guardrails"][0]["evidence"]["candidateSamples"] = 2400 + i
    status["guardrails"][0]["lastEvaluated"] = status["lastAnalysis"]
    return status


def measure(variant: str, writes: int) -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    with tempfile.TemporaryDirectory() as crds, running_control_plane() as plane:
        Path(crds, CRD.name).write_text(yaml.safe_dump(CRD_OF.get(variant, lambda c: c)(crd)))
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        install_crds(api, Path(crds))
        custom = client.CustomObjectsApi(api)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelRollout",
            "metadata": {"name": "r"},
            "spec": {**rollout_spec(), "traffic": {"gatewayAPI": {"httpRoute": "route"}}},
        }
        obj = custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
        apiserver = next(p for p in plane.pids() if "apiserver" in Path(f"/proc/{p}/comm").read_text())

        def write(i: int) -> dict[str, Any]:
            status = analysed(i)
            if variant == "merge-patch":
                changed = {"lastAnalysis": status["lastAnalysis"], "guardrails": status["guardrails"]}
                return dict(
                    custom.patch_namespaced_custom_object_status(
                        GROUP, VERSION, NAMESPACE, PLURAL, "r", {"status": changed}
                    )
                )
            return dict(
                custom.replace_namespaced_custom_object_status(
                    GROUP, VERSION, NAMESPACE, PLURAL, "r", {**obj, "status": status}
                )
            )

        # Every variant starts from the same full status (a merge patch then changes part of it).
        obj = dict(
            custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, NAMESPACE, PLURAL, "r", {**obj, "status": analysed(0)}
            )
        )
        for i in range(50):  # warm-up: caches, connections, the CEL programs
            obj = write(i)
        cpu0, wall0 = cpu_seconds(apiserver), time.monotonic()
        for i in range(50, 50 + writes):
            obj = write(i)
        cpu1, wall1 = cpu_seconds(apiserver), time.monotonic()
        return {
            "variant": variant,
            "writes": writes,
            "apiserver_ms_per_write": 1000 * (cpu1 - cpu0) / writes,
            "wall_ms_per_write": 1000 * (wall1 - wall0) / writes,
            "object_bytes": len(json.dumps(obj)),
            "managed_fields_bytes": len(json.dumps(obj["metadata"].get("managedFields"))),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", metavar="variant", help=f"any of {', '.join(VARIANTS)} (default all)")
    parser.add_argument("--writes", type=int, default=2000)
    args = parser.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant {', '.join(sorted(unknown))}: one of {', '.join(VARIANTS)}")
    rows = [measure(v, args.writes) for v in args.variants or VARIANTS]
    print(
        "| variant | writes | kube-apiserver CPU / write (ms) | wall / write (ms) | object (bytes) | managedFields (bytes) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['writes']} | {r['apiserver_ms_per_write']:.2f} | {r['wall_ms_per_write']:.2f} "
            f"| {r['object_bytes']} | {r['managed_fields_bytes']} |"
        )


if __name__ == "__main__":
    main()
