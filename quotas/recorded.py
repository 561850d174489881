"""What the quota daemon's process scanner saw of one runtime, recorded once per second.

``tests/data/record_cpu_runtimes.py`` runs real programs and writes, per second, the
``RuntimeUsage`` the daemon's own ``ProcessScanner`` read of the runtime (one JSON line
each; ``processes`` and ``connections`` only where they changed):

    {"t": 1.0, "cpu_s": 0.98, "wait_s": 0.02, "rss": 10854400, "minflt": 1301,
     "io_chars": 8512, "storage": 0, "pids": 3, "processes": [[pid, name, cmdline], ...]}

``processes`` and ``connections`` hold until a line names them again. ``python -m
kernelhub.quotas.evaluate`` replays such a recording at the daemon's
process interval: the latest sample at or before each tick, as a scan at that tick
would have read it.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelhub.quotas.signatures import ProcessInfo


@dataclass(frozen=True)
class RecordedSample:
    """One scan of the runtime: cumulative counters, and its processes then."""

    t: float
    cpu_seconds: float
    cpu_wait_seconds: float | None
    rss_bytes: int
    minor_faults: int
    io_chars: int | None
    storage_bytes: int | None
    processes: tuple[ProcessInfo, ...]
    connections: tuple[tuple[str, int], ...]


class Recording:
    """A recorded runtime; ``at(t)``: the sample a scan at ``t`` seconds would have read."""

    def __init__(self, path: Path) -> None:
        samples: list[RecordedSample] = []
        processes: tuple[ProcessInfo, ...] = ()
        connections: tuple[tuple[str, int], ...] = ()
        number = 0
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            for number, line in enumerate(lines, 1):  # noqa: B007  (the error names it)
                row: dict[str, Any] = json.loads(line)
                if "processes" in row:
                    listed = row["processes"]
                    processes = tuple(ProcessInfo(int(p), str(n), str(c)) for p, n, c in listed)
                if "connections" in row:
                    listed = row["connections"]
                    connections = tuple((str(ip), int(port)) for ip, port in listed)
                samples.append(
                    RecordedSample(
                        float(row["t"]), float(row["cpu_s"]), row.get("wait_s"), int(row["rss"]),
                        int(row["minflt"]),
                        row.get("io_chars"), row.get("storage"), processes, connections,
                    )
                )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as e:
            where = f" line {number}" if number else ""
            raise ValueError(f"{path}{where}: not a runtime recording ({e})") from None
        if not samples:
            raise ValueError(f"{path}: the recording has no samples")
        self.path = path
        self.samples = tuple(samples)
        self._times = [s.t for s in samples]

    @property
    def duration(self) -> float:
        return self._times[-1]

    def at(self, t: float) -> RecordedSample:
        return self.samples[max(0, bisect.bisect_right(self._times, t) - 1)]
