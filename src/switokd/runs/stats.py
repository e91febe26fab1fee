"""Statistics over seeds, written once: mean ± std, its cell text, a tie/ahead/behind verdict, grouping."""
from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value).

    Example:
        >>> mean_std([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    vals = [float(v) for v in values]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt(values: Sequence[float], digits: int = 2, scale: float = 1.0, sign: bool = False, unit: str = "") -> str:
    """``"mean ± std"`` of the values times ``scale``, then ``unit``; ``sign`` writes the mean with its sign. A
    single value has no spread: it is written ``"value (n=1)"``, not with a std of 0.

    Example:
        >>> fmt([0.5, 0.7], 1, 100.0, sign=True)
        '+60.0 ± 14.1'
        >>> fmt([85.84])
        '85.84 (n=1)'
        >>> fmt([0.27], 1, 100.0, unit="%")
        '27.0% (n=1)'
    """
    m, s = mean_std([v * scale for v in values])
    mean = f"{m:+.{digits}f}" if sign else f"{m:.{digits}f}"
    return f"{mean}{unit} (n=1)" if len(values) == 1 else f"{mean} ± {s:.{digits}f}{unit}"


def verdict(ours: tuple[float, float], theirs: tuple[float, float]) -> str:
    """'tie', 'ahead' or 'behind' for two (mean, std): a difference within the larger std is a tie."""
    d = ours[0] - theirs[0]
    return "tie" if abs(d) <= max(ours[1], theirs[1]) else ("ahead" if d > 0 else "behind")


def group_by(items: Sequence[T], key: Callable[[T], Any]) -> dict[Any, list[T]]:
    """The items per key, in the order the keys first appear (runs per method, for example)."""
    out: dict[Any, list[T]] = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return out


def fmt_duration(seconds: float) -> str:
    """A duration for people: 42s, 3m07s, 2h05m."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


__all__ = ["mean_std", "fmt", "verdict", "group_by", "fmt_duration"]
