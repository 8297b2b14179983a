"""Cross-field rules declared once, enforced twice: as CEL in the CRD and in the models.

Each rule states its CEL expression (run by the API server, so `kubectl apply` of a bad object
is refused with a message naming the field) next to its Python twin (run by pydantic, for
objects that reach the controller by other paths). A test applies the same malformed objects
to both, so the two cannot drift apart silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema


@dataclass(frozen=True)
class Rule:
    """One cross-field rule: CEL for the API server, `check` for Python; same meaning."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    # Relative path (CEL syntax, e.g. ".steps") the API server reports the error at.
    field_path: str | None = None

    def as_validation(self) -> dict[str, str]:
        rule = {"rule": self.cel, "message": self.message}
        if self.field_path:
            rule["fieldPath"] = self.field_path
        return rule


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields refused, rules enforced."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> ApiModel:
        for rule in type(self).rules:
            if not rule.check(self):
                where = rule.field_path.lstrip(".") if rule.field_path else type(self).__name__
                raise ValueError(f"{where}: {rule.message}")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if cls.rules:
            target["x-kubernetes-validations"] = [rule.as_validation() for rule in cls.rules]
        return schema

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
