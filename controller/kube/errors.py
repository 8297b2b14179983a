"""Our own error hierarchy for API server answers; ApiException never escapes controller.kube."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error


class KubeError(Exception):
    """An API server request failed."""

    status: int = 0
    retryable: bool = True


class NotFound(KubeError):
    """The object does not exist (404)."""

    status = 404
    retryable = False


class Conflict(KubeError):
    """The object changed since we read it (409): re-read and recompute."""

    status = 409


class Gone(KubeError):
    """The watch's resourceVersion is too old (410): re-list."""

    status = 410


class Forbidden(KubeError):
    """RBAC refused the request (403)."""

    status = 403
    retryable = False


class NamespaceTerminating(Forbidden):
    """A create in a namespace being deleted (403, cause NamespaceTerminating): nothing new can
    be written there, and whatever would have been will go with the namespace."""


class Invalid(KubeError):
    """The API server rejected the object (422 or 400)."""

    status = 422
    retryable = False


class Unavailable(KubeError):
    """The API server could not be reached, timed out or answered 5xx/429: retry with back-off."""


def _body(exc: ApiException) -> dict[str, Any]:
    """The Status the API server answered with ({} if the body is not one)."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _message(exc: ApiException) -> str:
    return str(_body(exc).get("message") or exc.reason)


def _causes(exc: ApiException) -> set[str]:
    details = _body(exc).get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    return {str(c.get("reason")) for c in causes if isinstance(c, dict)} if isinstance(causes, list) else set()


def translate(exc: Exception) -> KubeError:
    """Map a client exception to the most specific KubeError."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        kinds: dict[int, type[KubeError]] = {
            404: NotFound,
            409: Conflict,
            410: Gone,
            403: Forbidden,
            422: Invalid,
            400: Invalid,
        }
        kind = kinds.get(exc.status or 0, Unavailable)
        if kind is Forbidden and "NamespaceTerminating" in _causes(exc):
            kind = NamespaceTerminating
        error = kind(f"{exc.status}: {_message(exc)}")
        error.status = exc.status or 0
        return error
    return Unavailable(f"{type(exc).__name__}: {exc}")


@contextmanager
def translated() -> Iterator[None]:
    """Run client calls with their exceptions translated at this boundary."""
    try:
        yield
    except (ApiException, Urllib3Error, OSError) as exc:
        raise translate(exc) from exc
