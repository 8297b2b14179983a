"""API server answers map to our own errors: what a reconcile does next depends on the class."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from controller.kube.errors import Forbidden, NamespaceTerminating, NotFound, Unavailable, translate


def answer(code: int, body: dict[str, object]) -> ApiException:
    exc = ApiException(status=code, reason="Forbidden")
    exc.body = json.dumps(body)
    return exc


def test_a_create_in_a_namespace_being_deleted_is_namespace_terminating() -> None:
    # What kube-apiserver's NamespaceLifecycle admission answers (its Status, verbatim in shape).
    body = {
        "kind": "Status",
        "status": "Failure",
        "message": 'events "r5.2d32943d3752" is forbidden: unable to create new content in namespace mrc-0 '
        "because it is being terminated",
        "reason": "Forbidden",
        "details": {
            "name": "r5.2d32943d3752",
            "kind": "events",
            "causes": [{"reason": "NamespaceTerminating", "message": "namespace mrc-0 is being terminated"}],
        },
        "code": 403,
    }
    error = translate(answer(403, body))
    assert isinstance(error, NamespaceTerminating) and isinstance(error, Forbidden)
    assert "being terminated" in str(error) and error.status == 403 and not error.retryable


def test_rbac_refusals_and_other_answers_keep_their_class() -> None:
    rbac = translate(answer(403, {"kind": "Status", "message": 'events is forbidden: User "x" cannot create'}))
    assert type(rbac) is Forbidden
    assert type(translate(answer(403, {"details": {"causes": "not a list"}}))) is Forbidden
    not_json = ApiException(status=403, reason="Forbidden")
    not_json.body = "<html>"
    assert type(translate(not_json)) is Forbidden and str(translate(not_json)) == "403: Forbidden"
    assert type(translate(answer(404, {"message": "gone"}))) is NotFound
    assert type(translate(answer(503, {}))) is Unavailable
