"""A benchmark figure (samples against a baseline, medians, ratio) and its target."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Target:
    """``ratio >= x`` ("ratio_min"), ``ratio <= x`` ("ratio_max") or ``value <= x``
    ("value_max")."""

    kind: Literal["ratio_min", "ratio_max", "value_max"]
    limit: float
    text: str

    def met(self, value: float, ratio: float) -> bool:
        if self.kind == "ratio_min":
            return ratio >= self.limit
        if self.kind == "ratio_max":
            return ratio <= self.limit
        return value <= self.limit


def _sig(x: float, digits: int = 6) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


@dataclass
class Figure:
    name: str
    unit: str
    samples: list[float]
    baseline_samples: list[float]
    baseline_name: str
    better: Better
    scenario: str
    target: Target | None = None
    note: str = ""

    @property
    def value(self) -> float:
        return _sig(statistics.median(self.samples))

    @property
    def baseline(self) -> float:
        return _sig(statistics.median(self.baseline_samples))

    @property
    def ratio(self) -> float:
        return _sig(self.value / self.baseline) if self.baseline else math.inf

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.value, self.ratio)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "runs": len(self.samples),
            "median": self.value,
            "min": _sig(min(self.samples)),
            "max": _sig(max(self.samples)),
            "samples": [_sig(s) for s in self.samples],
            "baseline_name": self.baseline_name,
            "baseline_samples": [_sig(s) for s in self.baseline_samples],
            "better": self.better,
            "scenario": self.scenario,
            "target": self.target.text if self.target else None,
            "met": self.met,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
