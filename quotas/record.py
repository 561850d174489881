"""Record GPU telemetry as a JSON-lines trace (``kernelhub quota record``).

Traces recorded on real GPUs are what replay-based tests of quota policy and
detection run on (see tests/data/README.md), so the recorder writes exactly
the format ``ReplayTelemetry`` reads, one complete line per sample.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import TextIO

import click

from kernelhub.quotas.clock import Clock, SystemClock
from kernelhub.quotas.nvml import NvmlTelemetry
from kernelhub.quotas.telemetry import GpuTelemetry, TelemetryError

# NVML's utilization counters refresh every 1/6 s to 1 s and each PCIe reading
# takes ~20 ms per GPU, so sampling faster than this records noise, not data.
MIN_INTERVAL = 0.1


async def record(
    telemetry: GpuTelemetry,
    clock: Clock,
    interval: float,
    duration: float | None,
    out: TextIO,
) -> int:
    """Write one sample every ``interval`` seconds for ``duration`` seconds; return the count.

    ``duration`` None records until cancelled. A duration of D seconds gives
    ceil(D / interval) samples, the first at once. Each line is flushed as it
    is written, so a recording that is stopped keeps every sample it took.
    """
    if not interval > 0:
        raise ValueError(f"interval must be > 0 seconds, got {interval}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration}")
    # the small tolerance keeps 600 / 0.1 from becoming 6001 samples
    count = None if duration is None else max(1, math.ceil(duration / interval - 1e-9))
    written = 0
    next_at = clock.now()
    while True:
        sample = await telemetry.sample()
        out.write(sample.to_json_line() + "\n")
        out.flush()
        written += 1
        if count is not None and written >= count:
            return written
        # Ticks are scheduled from the start so the recording does not drift;
        # but after a stall (a slow driver, a suspended host) or a wall-clock
        # jump, start afresh from now rather than burst or sleep for long.
        next_at += interval
        now = clock.now()
        if not now - interval <= next_at <= now + interval:
            next_at = now + interval
        await clock.sleep(next_at - now)


@click.command("record")
@click.option(
    "--interval",
    type=click.FloatRange(min=MIN_INTERVAL),
    default=1.0,
    show_default=True,
    help=f"Seconds between samples (at least {MIN_INTERVAL}).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds to record (default: until Ctrl-C).",
)
@click.option(
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trace file to write (JSON lines, one sample per line); replaced if it exists.",
)
def record_command(interval: float, duration: float | None, output: Path) -> None:
    """Record this host's GPUs through NVML into a trace that tests can replay.

    Example: kernelhub quota record --interval 1 --duration 600 --output training.jsonl
    """
    if duration is not None and duration < interval:
        raise click.BadParameter(
            f"{duration:g} is shorter than --interval ({interval:g}); nothing to record",
            param_hint="'--duration'",
        )
    try:
        written = asyncio.run(_record_to(output, interval, duration))
    except KeyboardInterrupt:
        click.echo(f"stopped; the samples taken so far are in {output}", err=True)
        return
    click.echo(f"wrote {written} samples to {output}", err=True)


async def _record_to(output: Path, interval: float, duration: float | None) -> int:
    telemetry = NvmlTelemetry()
    # The error below is the one line the user sees; no log line besides it.
    await telemetry.open(log_unavailable=False)
    try:
        if not telemetry.available:
            raise click.ClickException(telemetry.reason)
        try:
            out = output.open("w", encoding="utf-8")
        except OSError as e:
            raise click.ClickException(f"cannot write {output}: {e.strerror}") from None
        with out:
            click.echo(f"recording every {interval:g} s to {output}", err=True)
            try:
                return await record(telemetry, SystemClock(), interval, duration, out)
            except TelemetryError as e:
                raise click.ClickException(f"sampling failed: {e}") from None
    finally:
        await telemetry.close()
