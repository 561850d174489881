"""The CPU pattern of a hash loop, measured over the detector's window.

A proof-of-work loop (a miner, a hash cracker) hashes a few hundred bytes again and
again: it keeps its allowed cores busy at a flat rate, touches no new memory (no page
faults, resident memory flat), and reads and writes next to nothing (a share found
now and then). Work on data (training, preprocessing, feature extraction) reads its
data, allocates and frees buffers, logs and checkpoints: each of these shows in the
runtime's counters (``/proc/<pid>/stat`` minor faults, ``/proc/<pid>/io``), which the
daemon's process scan reads (``RuntimeUsage``). The recordings of real programs in
``tests/data`` (``record_cpu_runtimes.py``) are what the thresholds were set on; see
``tests/data/README.md`` for the figures.

Pure logic: ``measure`` gives the figures over a window's observations, ``flat_cpu``
the verdict against ``FlatCpuThresholds``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernelhub.quotas.detector import RuntimeObservation


@dataclass(frozen=True)
class FlatCpuThresholds:
    """What "flat" means for each counter, set on the recordings of tests/data: each
    40 s window of the 5 hash loops once past their start-up (the window holding the
    start-up is not flat), and every window of the 4 jobs working on data."""

    # CPU demand per allowed core, stdev across the window's scans: loops 0.002-0.033,
    # work 0.001-0.03 (flat either way: this only rules out bursty, interactive use)
    cpu_stdev: float = 0.05
    # minor page faults: loops 0-2/s (up to 60/s with the start-up), work 18,500-56,000/s
    # (numpy's temporaries, a reader's buffers): what tells in-memory training apart
    faults_per_s: float = 1000.0
    # resident memory, max - min: loops 0-0.4 MiB (a start-up: 5-18 MiB), work 0.25-62 MiB
    rss_range_bytes: int = 4 * 1024**2
    # rchar + wchar, every read and write call: loops 0-35 B/s (a share found now and
    # then), work 37 B/s (a log line per 200 steps) to 260 MB/s (reading shards)
    io_chars_per_s: float = 4096.0
    # read_bytes + write_bytes, what reached storage: loops 0-513 B/s, work 205 B/s (the
    # log) to 87 MB/s; checkpoints every 30 s: 13,400 B/s and more
    storage_per_s: float = 4096.0


def _growth(values: Sequence[int]) -> int:
    """What a cumulative counter added across the window: a process that exits takes its
    counts out of the runtime's sum, so only increases between scans are added."""
    return sum(max(0, b - a) for a, b in pairwise(values))


def measure(
    observations: Sequence[RuntimeObservation], per_core: Sequence[float]
) -> dict[str, Any] | None:
    """The window's figures (``per_core``: its scans' CPU demand per allowed core); None
    where a counter was not measured at some scan (unknown is no evidence of flatness)."""
    rss = [o.rss_bytes for o in observations]
    faults = [o.minor_faults for o in observations]
    chars = [o.io_chars for o in observations]
    storage = [o.storage_bytes for o in observations]
    span = observations[-1].time - observations[0].time
    if len(per_core) < 2 or span <= 0:
        return None
    known = [rss, faults, chars, storage]
    if any(v is None for values in known for v in values):
        return None
    ints: list[list[int]] = [[int(v or 0) for v in values] for values in known]
    return {
        "cpu_mean_per_core": round(statistics.fmean(per_core), 3),
        "cpu_stdev": round(statistics.pstdev(per_core), 4),
        "faults_per_s": round(_growth(ints[1]) / span, 1),
        "rss_range_bytes": max(ints[0]) - min(ints[0]),
        "io_chars_per_s": round(_growth(ints[2]) / span, 1),
        "storage_per_s": round(_growth(ints[3]) / span, 1),
    }


def flat_cpu(
    observations: Sequence[RuntimeObservation],
    per_core: Sequence[float],
    limits: FlatCpuThresholds,
) -> tuple[dict[str, Any], str] | None:
    """(measured, summary) where every counter is flat; None where one is not, or is not
    measured. The caller checked that the CPU was saturated through the window."""
    m = measure(observations, per_core)
    if m is None:
        return None
    checks = {
        "cpu_stdev": limits.cpu_stdev,
        "faults_per_s": limits.faults_per_s,
        "rss_range_bytes": limits.rss_range_bytes,
        "io_chars_per_s": limits.io_chars_per_s,
        "storage_per_s": limits.storage_per_s,
    }
    if any(m[key] > limit for key, limit in checks.items()):
        return None
    summary = (
        f"CPU flat at {m['cpu_mean_per_core']:.0%} per allowed core (stdev "
        f"{m['cpu_stdev']:.3f} <= {limits.cpu_stdev:g}), {m['faults_per_s']:g} minor page "
        f"faults/s (<= {limits.faults_per_s:g}), resident memory varied "
        f"{m['rss_range_bytes'] / 1024:.0f} KiB (<= {limits.rss_range_bytes / 1024:.0f} KiB), "
        f"read/write calls {m['io_chars_per_s']:g} B/s (<= {limits.io_chars_per_s:g}), "
        f"storage {m['storage_per_s']:g} B/s (<= {limits.storage_per_s:g}): the counters of a "
        f"hash loop, not of work on data"
    )
    return m, summary
