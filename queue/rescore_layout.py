"""How a re-score run cuts the pool sets into score ranges, and the ranges into chunks: the
top of every set first, then the tail (``queue/rescore.py`` runs them)."""

from __future__ import annotations

import redis

from taskrank.queue import keys as K

Layout = list[list[tuple[int, str, str]]]


def chunk_layout(r: redis.Redis, pid: str, tags: list[str], top: int, top_chunk: int,
                 chunk: int) -> tuple[Layout, Layout, int]:
    """The segments (part, highest score, lowest score) of each chunk of the top (the first
    ``top`` items of each set, ``top_chunk`` or fewer a chunk) and of the tail (``chunk`` a
    chunk), as ZRANGE BYSCORE bounds, and about how many items they hold in all.

    A segment is a score range of one set holding about ``chunk`` items or fewer, so its
    snapshot is one short call (one ``ZRANGESTORE`` of a whole 1M-item set holds Redis
    ~1.7 s).  Ranges partition the scores, so every item that keeps its score is in exactly
    one segment (ties all go to one).  The tail takes the sets' ranges in turn, highest
    scores first; consecutive small ranges (small tag sets, the ends of sets) share a
    chunk, since every chunk job forks a work horse.
    """
    per_part = [[(part, *bounds) for bounds in
                 _score_ranges(r, K.pool_set_key(pid, tag), top, top_chunk, chunk)]
                for part, tag in enumerate(tags)]
    in_turn = [ranges[index] for index in range(max(map(len, per_part)))
               for ranges in per_part if index < len(ranges)]
    top_ranges = [entry for entry in in_turn if entry[4]]
    tail_ranges = [entry for entry in in_turn if not entry[4]]
    items = sum(entry[3] for entry in in_turn)
    return _grouped(top_ranges, top_chunk) or [[]], _grouped(tail_ranges, chunk), items


def _grouped(ranges: list[tuple], chunk: int) -> Layout:
    """Consecutive ranges grouped into chunks of about ``chunk`` items or fewer."""
    layout: Layout = []
    size = chunk
    for part, high, low, count, _ in ranges:
        if not layout or size + count > chunk:
            layout.append([])
            size = 0
        layout[-1].append((part, high, low))
        size += count
    return layout  # an empty run has one top chunk without segments


def _score_ranges(r: redis.Redis, pool: str, top: int, top_chunk: int,
                  chunk: int) -> list[tuple[str, str, int, bool]]:
    """(high, low, about how many items, whether in the top) of a set's ranges, highest
    first: its first ``top`` items in ranges of ``top_chunk`` or fewer, then the rest in
    ranges of ``chunk``; high inclusive."""
    size = r.zcard(pool)
    if not size:
        return []
    ranks = [rank for rank in [*range(top_chunk, top, top_chunk), top,
                               *range(top + chunk, size, chunk)] if rank < size]
    pipe = r.pipeline(transaction=False)
    for rank in ranks:
        pipe.zrevrange(pool, rank, rank, withscores=True)
    cuts: list[tuple[int, float]] = []  # (rank, score); ties collapse into one cut
    for rank, rows in zip(ranks, pipe.execute(), strict=True):
        if rows and (not cuts or rows[0][1] < cuts[-1][1]):
            cuts.append((rank, rows[0][1]))
    starts = [0] + [rank for rank, _ in cuts]
    ends = [rank for rank, _ in cuts] + [size]
    highs = ["+inf"] + [repr(score) for _, score in cuts]
    lows = [f"({score!r}" for _, score in cuts] + ["-inf"]
    return [(high, low, end - start, start < top)
            for high, low, start, end in zip(highs, lows, starts, ends, strict=True)]
