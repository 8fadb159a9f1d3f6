"""Summaries of timing samples, shared by every measurement."""

from __future__ import annotations

import statistics


def summarize(samples_ms: list[float], amortized_ms: float | None) -> dict:
    """Median and p90 (nearest rank) of ``samples_ms``; ``amortized_ms`` as given."""
    ordered = sorted(samples_ms)
    if not ordered:
        return {"median_ms": None, "p90_ms": None,
                "amortized_ms": None if amortized_ms is None else round(amortized_ms, 2), "n": 0}
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(p90, 2),
        "amortized_ms": None if amortized_ms is None else round(amortized_ms, 2),
        "n": len(ordered),
    }
