"""Percentiles and the ``{p50, p99, max}`` summaries the results use."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (p in (0, 100])."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary_ms(values_ms: Sequence[float]) -> dict[str, float | None]:
    """``{"p50", "p99", "max"}`` in milliseconds (one decimal), or nulls when there are none."""
    if not values_ms:
        return empty_summary()
    ordered = sorted(values_ms)
    return {
        "p50": round(percentile(ordered, 50), 1),
        "p99": round(percentile(ordered, 99), 1),
        "max": round(ordered[-1], 1),
    }


def empty_summary() -> dict[str, float | None]:
    return {"p50": None, "p99": None, "max": None}
