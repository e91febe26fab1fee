"""Which examples each global batch and each process take: index arithmetic, shared by the loaders (and the
trainer's distributed code), so that every rank agrees without communicating."""
from __future__ import annotations


def shard_bounds(n: int, batch_size: int, world_size: int, drop_last: bool) -> list[tuple[int, int]]:
    """Global batch boundaries [start, end) over an epoch of ``n`` examples.

    Each global batch holds ``batch_size * world_size`` examples; with ``drop_last`` a short last one is
    dropped, else a last batch smaller than ``world_size`` is merged into the one before, so that every
    rank always gets at least one example and no example is lost or repeated.
    """
    g = batch_size * world_size
    bounds = [(s, min(s + g, n)) for s in range(0, n, g)]
    if drop_last and bounds and bounds[-1][1] - bounds[-1][0] < g:
        bounds.pop()
    elif len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < world_size:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


def rank_slice(start: int, end: int, rank: int, world_size: int) -> slice:
    """This rank's contiguous part of the global batch [start, end), as even as possible."""
    n = end - start
    return slice(start + rank * n // world_size, start + (rank + 1) * n // world_size)


__all__ = ["shard_bounds", "rank_slice"]
