"""The comparator's comparison rules (controller/comparator/compare.py): pure, table-driven and Hypothesis."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.models import Comparison
from controller.comparator.compare import MISSING, compare, extract


def rule(**body: Any) -> Comparison:
    return Comparison.model_validate(body)


EQUAL = rule(predictionPath="$.predictions[0].label", equal={})


@pytest.mark.parametrize(
    ("path", "document", "expected"),
    [
        ("$", {"a": 1}, {"a": 1}),
        ("$.a", {"a": 1}, 1),
        ("$.a.b", {"a": {"b": [1, 2]}}, [1, 2]),
        ("$.a[1]", {"a": [1, 2]}, 2),
        ("$[0].x", [{"x": "y"}], "y"),
        ("$.a[2]", {"a": [1, 2]}, MISSING),
        ("$.b", {"a": 1}, MISSING),
        ("$.a.b", {"a": 1}, MISSING),
        ("$[0]", {"a": 1}, MISSING),
        ("$.a", "not an object", MISSING),
        ("$.a", {"a": None}, None),
    ],
)
def test_extract(path: str, document: Any, expected: Any) -> None:
    assert extract(document, path) == expected if expected is not MISSING else extract(document, path) is MISSING


def test_equal_labels_agree_and_differ() -> None:
    answer = {"predictions": [{"label": "fraud", "score": 0.9}]}
    assert compare(EQUAL, answer, {"predictions": [{"label": "fraud", "score": 0.2}]}).agree
    verdict = compare(EQUAL, answer, {"predictions": [{"label": "legit"}]})
    assert not verdict.agree and '"fraud" != "legit"' in verdict.why


def test_a_missing_prediction_is_a_disagreement_saying_whose() -> None:
    answer = {"predictions": [{"label": "fraud"}]}
    verdict = compare(EQUAL, answer, {"error": "oops"})
    assert not verdict.agree and "missing in the candidate's" in verdict.why
    assert "missing in the incumbent's" in compare(EQUAL, {}, answer).why
    assert "missing in both" in compare(EQUAL, [], "text").why


def test_true_is_not_one_and_case_is_ignored_only_when_asked() -> None:
    flag = rule(predictionPath="$.p", equal={})
    assert not compare(flag, {"p": True}, {"p": 1}).agree
    assert compare(flag, {"p": 1}, {"p": 1.0}).agree
    assert not compare(flag, {"p": "Fraud"}, {"p": "fraud"}).agree
    assert compare(rule(predictionPath="$.p", equal={"ignoreCase": True}), {"p": "Fraud"}, {"p": "fraud"}).agree


@pytest.mark.parametrize(
    ("tolerance", "incumbent", "candidate", "agree"),
    [
        ({"absolute": 0.05}, 0.50, 0.54, True),
        ({"absolute": 0.05}, 0.50, 0.56, False),
        ({"relative": 0.1}, 100.0, 109.0, True),
        ({"relative": 0.1}, 100.0, 111.0, False),
        ({"relative": 0.1}, 0.0, 0.0001, False),  # relative to 0 is exact
        ({"absolute": 0.01, "relative": 0.1}, 0.0, 0.005, True),  # either tolerance agrees
        ({"absolute": 0.05}, [0.1, 0.2], [0.12, 0.21], True),
        ({"absolute": 0.05}, [0.1, 0.2], [0.12, 0.3], False),
        ({"absolute": 0.05}, [0.1, 0.2], [0.1], False),
        ({"absolute": 0.05}, 0.5, "0.5", False),
        ({"absolute": 0.05}, 0.5, True, False),
    ],
)
def test_numeric_tolerance(tolerance: dict[str, float], incumbent: Any, candidate: Any, agree: bool) -> None:
    numeric = rule(predictionPath="$.score", numeric=tolerance)
    assert compare(numeric, {"score": incumbent}, {"score": candidate}).agree is agree


def test_top_k_overlap_with_an_item_path() -> None:
    top = rule(predictionPath="$.items", topK={"k": 4, "minOverlap": 0.75, "itemPath": "$.id"})

    def ranked(*ids: str) -> dict[str, Any]:
        return {"items": [{"id": i, "score": 1.0 / (n + 1)} for n, i in enumerate(ids)]}

    assert compare(top, ranked("a", "b", "c", "d", "e"), ranked("d", "c", "b", "a")).agree  # order within k is free
    assert compare(top, ranked("a", "b", "c", "d"), ranked("a", "b", "c", "x")).agree  # 3 of 4
    verdict = compare(top, ranked("a", "b", "c", "d"), ranked("a", "b", "x", "y", "c", "d"))  # c, d beyond k
    assert not verdict.agree and "overlap 0.50" in verdict.why
    assert not compare(top, ranked("a"), {"items": "a"}).agree
    # An item without the id is a disagreement, saying whose, rather than a crash.
    verdict = compare(top, ranked("a", "b"), {"items": [{"name": "a"}, {"name": "b"}]})
    assert not verdict.agree and "candidate's top 4 lacks $.id" in verdict.why


def test_top_k_with_an_item_path_neither_answer_has_disagrees() -> None:
    """A typo in itemPath must not leave two empty lists that agree: any candidate would pass."""
    top = rule(predictionPath="$.items", topK={"k": 3, "minOverlap": 0.5, "itemPath": "$.idd"})
    incumbent = {"items": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}
    candidate = {"items": [{"id": "x"}, {"id": "y"}, {"id": "z"}]}
    verdict = compare(top, incumbent, candidate)
    assert not verdict.agree and "incumbent's top 3 lacks $.idd" in verdict.why
    assert not compare(top, incumbent, incumbent).agree


def test_top_k_of_plain_values() -> None:
    top = rule(predictionPath="$", topK={"k": 2, "minOverlap": 1})
    assert compare(top, [3, 1, 2], [1, 3]).agree
    assert not compare(top, [3, 1, 2], [3, 2]).agree
    assert compare(top, [], []).agree
    assert not compare(top, [], [1]).agree


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4),
    max_leaves=12,
)
PATHS = st.sampled_from(["$", "$.p", "$.p[0]", "$[1].x", "$.a.b[2]"])


@given(json_values, json_values, PATHS)
def test_no_answer_crashes_any_rule(a: Any, b: Any, path: str) -> None:
    for body in ({"equal": {}}, {"numeric": {"absolute": 0.1}}, {"topK": {"k": 3, "minOverlap": 0.5}}):
        verdict = compare(rule(predictionPath=path, **body), a, b)
        assert verdict.agree or verdict.why


@given(json_values, PATHS)
def test_an_answer_agrees_with_itself_where_its_prediction_exists(a: Any, path: str) -> None:
    present = extract(a, path) is not MISSING
    assert compare(rule(predictionPath=path, equal={}), a, a).agree is present


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(0, 10))
def test_numeric_agreement_is_symmetric_in_absolute_tolerance(x: float, y: float, tol: float) -> None:
    numeric = rule(predictionPath="$", numeric={"absolute": tol})
    assert compare(numeric, x, y).agree == compare(numeric, y, x).agree
