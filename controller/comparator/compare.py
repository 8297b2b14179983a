"""Whether two models' answers to the same request agree: pure, one rule per rollout.

The rule is the rollout's `spec.shadow.comparison`: a JSON path to the prediction in each answer,
then equal values (class labels), numbers within an absolute or relative tolerance (element by
element for lists), or the overlap of two ranked lists' first k items. A prediction that is not
where the path says, or not of the rule's kind (a string where a number is expected), is a
disagreement with its reason, never an error of the comparator: a candidate that answers 200 with
a body of another shape is exactly what shadow is for.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from controller.api.models import Comparison

_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[([0-9]+)\]")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def extract(document: Any, path: str) -> Any:
    """The value at `path` ($, then .field and [index] steps) in a parsed JSON document, or MISSING."""
    if not path.startswith("$"):
        return MISSING
    node, rest = document, path[1:]
    while rest:
        step = _STEP.match(rest)
        if step is None:
            return MISSING
        field, index = step.groups()
        if field is not None:
            if not isinstance(node, dict) or field not in node:
                return MISSING
            node = node[field]
        else:
            position = int(index)
            if not isinstance(node, list) or position >= len(node):
                return MISSING
            node = node[position]
        rest = rest[step.end() :]
    return node


@dataclass(frozen=True)
class Agreement:
    agree: bool
    why: str = ""


def compare(rule: Comparison, incumbent: Any, candidate: Any) -> Agreement:
    """Compare two parsed answers by `rule`; the reference is the incumbent's."""
    a, b = extract(incumbent, rule.prediction_path), extract(candidate, rule.prediction_path)
    if a is MISSING or b is MISSING:
        who = (
            "both answers"
            if a is MISSING and b is MISSING
            else "the incumbent's"
            if a is MISSING
            else "the candidate's"
        )
        return Agreement(False, f"{rule.prediction_path} missing in {who}")
    if rule.numeric is not None:
        return _numeric(a, b, rule.numeric.absolute, rule.numeric.relative)
    if rule.top_k is not None:
        return _top_k(a, b, rule.top_k.k, rule.top_k.min_overlap, rule.top_k.item_path)
    ignore_case = rule.equal.ignore_case if rule.equal is not None else False
    return Agreement(True) if _equal(a, b, ignore_case=ignore_case) else Agreement(False, f"{_short(a)} != {_short(b)}")


def _equal(a: Any, b: Any, *, ignore_case: bool) -> bool:
    # JSON true is not 1: Python's True == 1 must not make a label agree with a flag.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if ignore_case and isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    return bool(a == b)


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    value = float(x)
    return value if math.isfinite(value) else None


def _numeric(a: Any, b: Any, absolute: float | None, relative: float | None) -> Agreement:
    pairs: list[tuple[Any, Any]]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return Agreement(False, f"{len(a)} numbers != {len(b)}")
        pairs = list(zip(a, b, strict=True))
    else:
        pairs = [(a, b)]
    for x, y in pairs:
        fx, fy = _number(x), _number(y)
        if fx is None or fy is None:
            return Agreement(False, f"not a finite number: {_short(x if fx is None else y)}")
        diff = abs(fy - fx)
        within = (absolute is not None and diff <= absolute) or (relative is not None and diff <= relative * abs(fx))
        if not within:
            return Agreement(False, f"{fy:g} differs from {fx:g} by {diff:g}")
    return Agreement(True)


def _identity(item: Any, path: str | None) -> str | None:
    value = extract(item, path) if path is not None else item
    if value is MISSING:
        return None
    return json.dumps(value, sort_keys=True)


def _top_k(a: Any, b: Any, k: int, min_overlap: float, item_path: str | None) -> Agreement:
    if not isinstance(a, list) or not isinstance(b, list):
        return Agreement(False, "not a ranked list")
    # An item without its identity (a wrong itemPath, a candidate of another shape) is a
    # disagreement, never an item that counts for nothing: else a typo in itemPath would leave
    # both lists empty, and two empty lists agree, so any candidate would pass.
    for who, items in (("incumbent", a), ("candidate", b)):
        if any(_identity(x, item_path) is None for x in items[:k]):
            return Agreement(False, f"an item of the {who}'s top {k} lacks {item_path}")
    reference = {_identity(x, item_path) for x in a[:k]}
    other = {_identity(x, item_path) for x in b[:k]}
    if not reference:
        return Agreement(not other, "" if not other else "the incumbent ranked nothing")
    overlap = len(reference & other) / len(reference)
    if overlap >= min_overlap:
        return Agreement(True)
    return Agreement(False, f"top-{k} overlap {overlap:.2f} < {min_overlap:g}")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if value is not MISSING else "missing"
    return text if len(text) <= 40 else text[:37] + "..."
