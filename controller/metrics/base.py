"""The contract of a metric provider: a backend failure is data, never an exception.

An Observation is OK (a finite value, or a vector of finite values), NO_DATA (empty result,
NaN, Inf, several series where one is expected, stale samples) or ERROR (the provider failed or
timed out). Only the judge decides what an observation means, and neither of the last two is
ever a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class ObservationStatus(StrEnum):
    OK = "ok"
    NO_DATA = "no-data"
    ERROR = "error"


@dataclass(frozen=True)
class Observation:
    status: ObservationStatus
    value: float | None = None
    vector: Mapping[str, float] = field(default_factory=dict)
    sample_time: datetime | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status is ObservationStatus.OK

    @classmethod
    def no_data(cls, message: str) -> Observation:
        return cls(ObservationStatus.NO_DATA, message=message)

    @classmethod
    def error(cls, message: str) -> Observation:
        return cls(ObservationStatus.ERROR, message=message)


class MetricProvider(Protocol):
    def scalar(self, query: str, *, at: datetime) -> Observation:
        """One value. More than one series, none, NaN/Inf or stale: NO_DATA. Never raises."""
        ...

    def vector(self, query: str, *, label: str, at: datetime) -> Observation:
        """Values keyed by `label` (bucket or class). Empty or any non-finite value: NO_DATA. Never raises."""
        ...
