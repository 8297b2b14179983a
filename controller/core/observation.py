"""What a metric provider observed: the core's input, so the core owns it.

OK (a finite value, a vector of finite values, or such vectors by group), NO_DATA (empty result, NaN, Inf, several
series where one is expected, stale samples) or ERROR (the provider failed or timed out). Only
the judge decides what an observation means, and neither of the last two is ever a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class ObservationStatus(StrEnum):
    OK = "ok"
    NO_DATA = "no-data"
    ERROR = "error"


@dataclass(frozen=True)
class Observation:
    status: ObservationStatus
    value: float | None = None
    vector: Mapping[str, float] = field(default_factory=dict)
    # Vectors by a second label (a segment's value), for distributions per segment.
    groups: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
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
