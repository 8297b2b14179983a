"""The contract of a metric provider: a backend failure is data (a core.observation.Observation),
never an exception. Only the judge decides what an observation means.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from controller.core.observation import Observation


class MetricProvider(Protocol):
    def scalar(self, query: str, *, at: datetime) -> Observation:
        """One value. More than one series, none, NaN/Inf or stale: NO_DATA. Never raises."""
        ...

    def vector(self, query: str, *, label: str, at: datetime) -> Observation:
        """Values keyed by `label` (bucket or class). Empty or any non-finite value: NO_DATA. Never raises."""
        ...
