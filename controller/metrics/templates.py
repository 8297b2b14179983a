"""Query templates: `{{ model }}`-style placeholders filled in for each variant.

A guardrail's query is written once and asked twice, once per variant, so the template must
be filled exactly: an unknown placeholder is an error, never an empty string, because a typo
such as `{{modle}}` would otherwise silently query something else (and the judge would then
weigh the wrong series). A malformed placeholder (`{{ model-name }}`, `{{ model`) is refused
for the same reason rather than sent to Prometheus as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# The variables every query gets; docs/metrics.md describes each.
VARIABLES = ("model", "version", "variant", "namespace", "window", "rollout", "incumbent")

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_OPENING = "{{"


class TemplateError(ValueError):
    """A query template names a variable that does not exist, or is malformed."""


def render(template: str, variables: Mapping[str, str]) -> str:
    """Fill every `{{ name }}` (spaces optional) from `variables`; anything unknown raises."""
    _check_syntax(template)

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise TemplateError(f"unknown placeholder {{{{{name}}}}} in query template (known: {known})")
        return variables[name]

    return _PLACEHOLDER.sub(fill, template)


def variables_for(
    model_name: str, version: str | None, variant: str, namespace: str, window: str, *, rollout: str, incumbent: str
) -> dict[str, str]:
    """The variables of one variant's queries; `variant` is "incumbent" or "candidate", `rollout`
    the ModelRollout's name and `incumbent` the incumbent's model name (for both variants: what a
    variant is judged against, as the shadow comparator's `reference` label)."""
    return {
        "model": model_name,
        "version": version or "",
        "variant": variant,
        "namespace": namespace,
        "window": window,
        "rollout": rollout,
        "incumbent": incumbent,
    }


def _check_syntax(template: str) -> None:
    # Checked on the template, not on the result: a free-form value such as a version may
    # legitimately contain braces once filled in.
    without_placeholders = _PLACEHOLDER.sub("", template)
    position = without_placeholders.find(_OPENING)
    if position >= 0:
        snippet = without_placeholders[position : position + 40]
        raise TemplateError(f"malformed placeholder near {snippet!r}: write {{{{ name }}}} with a plain name")
