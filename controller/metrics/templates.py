"""Query templates: `{{ model }}`-style placeholders filled per variant.

An unknown placeholder is an error, not an empty string: a typo must never silently query
something else (and then be judged on the wrong series).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class TemplateError(ValueError):
    """A template names a variable that does not exist."""


def render(template: str, variables: Mapping[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise TemplateError(f"unknown placeholder {{{{{name}}}}}; known: {', '.join(sorted(variables))}")
        return variables[name]

    return _PLACEHOLDER.sub(fill, template)


def variables_for(model_name: str, version: str | None, variant: str, namespace: str, window: str) -> dict[str, str]:
    return {"model": model_name, "version": version or "", "variant": variant, "namespace": namespace, "window": window}
