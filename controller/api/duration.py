"""Go-style duration strings ("30s", "1m30s", "1.5h"), the format Kubernetes users know.

CEL's `duration()` in the API server accepts the same syntax, so a rule such as
"the progress deadline is longer than every hold" can be checked server-side and here alike.
"""

from __future__ import annotations

import re
from datetime import timedelta

# Kept in sync with CEL's duration(): units h, m, s, ms; at least one component.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_COMPONENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration; raise ValueError naming the bad text."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit (ms, s, m, h), e.g. 30s or 1m30s")
    seconds = sum(float(value) * _UNIT_SECONDS[unit] for value, unit in _COMPONENT.findall(text))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Render a timedelta the way a user would write it ("1m30s"); whole seconds only."""
    total = int(delta.total_seconds())
    if total <= 0:
        return "0s"
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{seconds}s" if seconds else ""]
    return "".join(parts)
