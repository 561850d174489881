"""GPU telemetry replayed from a recorded trace, following a (usually virtual) clock.

Tests of policy and detection run on what real GPUs did (traces written by
``kernelhub quota record``) without a GPU: time in the trace is re-based on
the clock's time at construction, so advancing a ``VirtualClock`` by ten
minutes walks through ten minutes of trace instantly.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from kernelhub.quotas.clock import Clock
from kernelhub.quotas.telemetry import GpuSample, TelemetrySample, read_trace


class ReplayTelemetry:
    """``GpuTelemetry`` that returns the recorded sample for the clock's current time.

    ``source`` is a trace file's path or the trace's lines. ``sample()`` gives
    the latest recorded sample whose time (relative to the trace's first) is
    <= the time since construction; after the end it keeps giving the last one,
    unless ``loop`` repeats the trace. ``pid_map`` renames recorded PIDs (those
    of the recording machine) to PIDs of the test's own processes; it may be
    changed at any time, and PIDs it does not name are kept.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Iterable[str],
        clock: Clock,
        *,
        loop: bool = False,
        pid_map: Mapping[int, int] | None = None,
    ) -> None:
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            try:
                with path.open(encoding="utf-8") as f:
                    samples = read_trace(f)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
            label = str(path)
        else:
            samples = read_trace(source)
            label = "trace"
        if not samples:
            raise ValueError(f"{label}: the trace has no samples")
        self._samples = tuple(samples)
        first = samples[0].time
        self._offsets = [s.time - first for s in samples]
        # Looping restarts one typical step after the last sample, as the
        # recorder would have taken the next sample then.
        step = self._offsets[-1] / (len(samples) - 1) if len(samples) > 1 else 0.0
        self._period = self._offsets[-1] + (step or 1.0)
        self._clock = clock
        self._start = clock.now()
        self.loop = loop
        self.pid_map: dict[int, int] = dict(pid_map or {})

    @property
    def available(self) -> bool:
        return True

    @property
    def reason(self) -> str:
        return ""

    @property
    def samples(self) -> tuple[TelemetrySample, ...]:
        """The trace as recorded (original times and PIDs)."""
        return self._samples

    @property
    def duration(self) -> float:
        """Seconds from the trace's first sample to its last."""
        return self._offsets[-1]

    @property
    def pids(self) -> frozenset[int]:
        """Every PID the trace records, for building ``pid_map``."""
        return frozenset(p.pid for s in self._samples for g in s.gpus for p in g.processes)

    @property
    def finished(self) -> bool:
        """True once a non-looping replay has reached its last sample."""
        return not self.loop and self._elapsed() >= self._offsets[-1]

    async def sample(self) -> TelemetrySample:
        """The recorded sample for now, stamped with the clock's time and mapped PIDs."""
        elapsed = self._elapsed()
        if self.loop:
            elapsed %= self._period
        index = max(0, bisect.bisect_right(self._offsets, elapsed) - 1)
        recorded = self._samples[index]
        return TelemetrySample(self._clock.now(), tuple(self._remap(g) for g in recorded.gpus))

    def _elapsed(self) -> float:
        return self._clock.now() - self._start

    def _remap(self, gpu: GpuSample) -> GpuSample:
        if not self.pid_map or not gpu.processes:
            return gpu
        processes = tuple(
            dataclasses.replace(p, pid=self.pid_map.get(p.pid, p.pid)) for p in gpu.processes
        )
        return dataclasses.replace(gpu, processes=processes)
