"""The ModelRollout API (group modelrollout.dev, version v1alpha1) as pydantic models.

These models are the single source of truth: the CRD in crds/ is generated from them
(`make crds`), and the same cross-field rules run as CEL in the API server and as Python
validators here, for objects that reach the controller by other paths.
"""

from controller.api.models import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    ModelRollout,
    ModelRolloutSpec,
    ModelRolloutStatus,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "ModelRollout",
    "ModelRolloutSpec",
    "ModelRolloutStatus",
]
