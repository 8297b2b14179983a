"""Who is calling: the authenticated user name, so a human's request is recorded with it."""

from __future__ import annotations

from kubernetes import client

from controller.kube.errors import KubeError, translated


def whoami(api: client.ApiClient) -> str:
    """The user the API server authenticated us as (SelfSubjectReview), or 'unknown'."""
    try:
        with translated():
            review = client.AuthenticationV1Api(api).create_self_subject_review(
                client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
            )
    except KubeError:
        return "unknown"
    info = review.status.user_info if review.status else None
    return (info.username if info else None) or "unknown"
