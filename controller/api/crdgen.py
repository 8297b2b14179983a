"""Generate the ModelRollout CRD from the pydantic models (`make crds`).

Pydantic's JSON Schema is close to, but not, a Kubernetes structural schema: it uses $ref,
anyOf-with-null for optionals, titles and null defaults. We inline refs, turn optionals into
"not required", and keep constraints, enums, defaults and the CEL rules the models declare.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from controller.api.models import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION, ModelRollout

_DROP = {"title", "discriminator"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            return _structural({**options[0], **rest}, defs)
        # Several non-null alternatives of strings (e.g. two patterns): a string, checked by the models.
        if all(o.get("type") == "string" for o in options):
            return _structural(
                {"type": "string", "maxLength": max(o.get("maxLength", 0) for o in options), **rest}, defs
            )
        raise ValueError(f"cannot express anyOf in a structural schema: {node}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "default" and value is None:
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020 spells these as numbers; OpenAPI v3.0 as a flag beside min/max.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if out.get("additionalProperties") is False:
        # Structural schemas prune unknown fields; strict field validation rejects them instead.
        del out["additionalProperties"]
    if out.get("format") == "date-time":
        out["type"] = "string"
    return out


def openapi_schema(model: type[ModelRollout]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    props = schema["properties"]
    # metadata is the API server's business; apiVersion/kind are fixed by the CRD.
    props["metadata"] = {"type": "object"}
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    schema["required"] = ["spec"]
    # A status default would make the API server write an empty status we never set.
    props["status"].pop("default", None)
    return schema


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "modelrollout"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Step", "type": "string", "jsonPath": ".status.stepDisplay"},
                        {
                            "name": "Weight",
                            "type": "integer",
                            "jsonPath": ".status.weights.candidate",
                            "description": "Candidate's share of traffic, read back from the data plane",
                        },
                        {"name": "Incumbent", "type": "string", "jsonPath": ".status.incumbent.name"},
                        {"name": "Candidate", "type": "string", "jsonPath": ".spec.candidate.name"},
                        {"name": "Reason", "type": "string", "jsonPath": ".status.reason"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": openapi_schema(ModelRollout)},
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `make crds` from controller/api/models.py. Do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
