"""Accounting many runtimes' intervals in one transaction (``QuotaStore.account_intervals``).

The daemon writes every due runtime each cycle. One transaction per runtime meant
one ``BEGIN IMMEDIATE``/commit (a WAL append and an fsync on SQLite, a round trip
on PostgreSQL) and three statements per runtime; here a batch costs one
transaction, one cursor insert, one cursor select and one usage upsert, each
executed for all rows at once. The result is what the same intervals accounted
one call at a time, in order, would give: each runtime's cursor makes a repeat
add nothing, and a runtime named twice in a batch sees its own earlier interval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import orm

from kernelhub.quotas.policy import midnight, utc

USAGE_FIELDS = ("gpu_seconds", "gpu_seconds_weighted", "cpu_seconds")


class Interval(NamedTuple):
    """``QuotaStore.account_interval``'s arguments, in its order."""

    runtime_key: str
    user: str
    runtime_type: str
    start: datetime
    end: datetime
    gpus: int
    util_fraction: float
    cpu_seconds: float


def account(
    session: orm.Session,
    insert: Callable[[sa.Table], Any],
    cursors: sa.Table,
    usage: sa.Table,
    intervals: Sequence[Interval],
) -> list[float]:
    """Seconds newly accounted per interval; ``session`` is in a write transaction.

    ``insert`` builds the dialect's INSERT (both speak ON CONFLICT); ``cursors`` and
    ``usage`` are the store's ``quota_cursors`` and ``quota_usage`` tables.
    """
    if not intervals:
        return []
    firsts: dict[str, datetime] = {}
    for i in intervals:  # a first interval creates its runtime's cursor at its own start
        firsts.setdefault(i.runtime_key, utc(i.start))
    new = [{"runtime_key": k, "last_accounted_time": t} for k, t in firsts.items()]
    session.execute(insert(cursors).on_conflict_do_nothing(index_elements=["runtime_key"]), new)
    # locked in key order, so two writers of overlapping batches cannot deadlock
    rows = session.execute(
        sa.select(cursors.c.runtime_key, cursors.c.last_accounted_time)
        .where(cursors.c.runtime_key.in_(firsts))
        .order_by(cursors.c.runtime_key)
        .with_for_update()
    )
    read: dict[str, datetime] = {key: when for key, when in rows}
    reached = dict(read)
    added: list[float] = []
    adds: list[dict[str, Any]] = []
    for i in intervals:
        start, end = utc(i.start), utc(i.end)
        begin = max(start, reached[i.runtime_key])
        if begin >= end:
            added.append(0.0)
            continue
        util = min(max(i.util_fraction, 0.0), 1.0)
        for day, seconds in split_by_day(begin, end):
            gpu_seconds = i.gpus * seconds
            adds.append(
                {
                    "username": i.user,
                    "runtime_type": i.runtime_type,
                    "day": day,
                    "gpu_seconds": gpu_seconds,
                    "gpu_seconds_weighted": gpu_seconds * util,
                    # cpu_seconds covers all of [start, end): prorated to what is new
                    "cpu_seconds": i.cpu_seconds * seconds / (end - start).total_seconds(),
                }
            )
        reached[i.runtime_key] = end
        added.append((end - begin).total_seconds())
    if adds:
        # executemany runs the rows in order: the sums are those of one call per interval
        row = insert(usage)
        summed = {name: usage.c[name] + row.excluded[name] for name in USAGE_FIELDS}
        upsert = row.on_conflict_do_update(
            index_elements=["username", "runtime_type", "day"], set_=summed
        )
        session.execute(upsert, adds)
        moved = [{"key": k, "t": t} for k, t in reached.items() if t != read[k]]
        if moved:
            update = (
                sa.update(cursors)
                .where(cursors.c.runtime_key == sa.bindparam("key"))
                .values(last_accounted_time=sa.bindparam("t"))
            )
            session.execute(update, moved)
    return added


def split_by_day(start: datetime, end: datetime) -> Iterator[tuple[date, float]]:
    """(UTC day, seconds) pieces of [start, end)."""
    while start < end:
        piece_end = min(end, midnight(start.date() + timedelta(days=1)))
        yield start.date(), (piece_end - start).total_seconds()
        start = piece_end
