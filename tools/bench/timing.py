"""Timing helpers shared by the benchmark scripts (imported from the scripts' own directory)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def instrument(targets: Sequence[tuple[Any, str, str]]) -> dict[str, list[float]]:
    """Wrap each async method ``owner.name`` so every call's duration is appended under ``label``.

    For a breakdown of where a call's time goes; the patch lasts for the rest of the process."""
    timings: dict[str, list[float]] = {}
    for owner, name, label in targets:
        original = getattr(owner, name)

        async def timed(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await _original(*args, **kwargs)
            finally:
                timings.setdefault(_label, []).append(time.perf_counter() - start)

        setattr(owner, name, timed)
    return timings
