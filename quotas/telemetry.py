"""GPU telemetry: what one sample holds, its JSON-lines form, and the interface.

The quota daemon reads GPUs through ``GpuTelemetry`` only. Two implementations
exist: real NVML (``kernelhub.quotas.nvml``) and a replay of recorded traces
(``kernelhub.quotas.replay``) on a virtual clock, so policy and detection are
tested on what real GPUs did without a GPU in the test machine.

Trace format: one ``TelemetrySample`` per line, as written by ``to_json_line``::

    {"time":1767225600.0,"gpus":[{"index":0,"uuid":"GPU-...","name":"NVIDIA H100 ...",
      "sm_util":97.0,"mem_util":41.0,"mem_used_bytes":...,"mem_total_bytes":...,
      "power_watts":655.2,"sm_clock_mhz":1980,"pcie_rx_kbps":312000,"pcie_tx_kbps":9000,
      "processes":[{"pid":4121,"used_memory_bytes":...,"sm_util":95.0}]}]}

A measurement the device does not support is ``null``. Keys a reader does not
know are ignored, so traces can gain fields without breaking older readers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol


class TelemetryError(RuntimeError):
    """A sample could not be taken at all (not: one field is unsupported)."""


@dataclass(frozen=True)
class GpuProcessSample:
    """One compute process on a GPU. ``sm_util`` is None where NVML cannot tell."""

    pid: int
    used_memory_bytes: int
    sm_util: float | None


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one instant; None marks a measurement the device does not support.

    Utilizations are percent (0-100); PCIe throughput is KB/s as NVML reports it.
    """

    index: int
    uuid: str
    name: str
    sm_util: float | None
    mem_util: float | None
    mem_used_bytes: int
    mem_total_bytes: int
    power_watts: float | None
    sm_clock_mhz: int | None
    pcie_rx_kbps: int | None
    pcie_tx_kbps: int | None
    processes: tuple[GpuProcessSample, ...] = ()


@dataclass(frozen=True)
class TelemetrySample:
    """Every GPU of the host at ``time`` (seconds since the epoch, or a virtual clock)."""

    time: float
    gpus: tuple[GpuSample, ...] = ()

    def to_json_line(self) -> str:
        """This sample as one line of JSON (no trailing newline)."""
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json_line(cls, line: str, line_number: int = 1) -> TelemetrySample:
        """Parse one trace line; ValueError names the line number and the bad field."""
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"line {line_number}: not valid JSON ({e})") from None
        try:
            return _sample(data)
        except _FieldError as e:
            raise ValueError(f"line {line_number}: {e}") from None


def read_trace(lines: Iterable[str]) -> list[TelemetrySample]:
    """Parse a JSON-lines trace; blank lines are skipped but still counted.

    Times must not go back: replay finds samples by time.
    """
    samples: list[TelemetrySample] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        sample = TelemetrySample.from_json_line(line, number)
        if samples and sample.time < samples[-1].time:
            raise ValueError(
                f"line {number}: field 'time': {sample.time} is earlier than the "
                f"sample before it ({samples[-1].time})"
            )
        samples.append(sample)
    return samples


class GpuTelemetry(Protocol):
    """What the quota daemon samples GPUs through.

    ``available`` is False where GPUs cannot be read (no NVML, say); ``reason``
    then says why, and ``sample()`` returns samples with no GPUs, so the rest
    of the daemon keeps working.
    """

    @property
    def available(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    async def sample(self) -> TelemetrySample: ...


# --- parsing: strict, because policy decisions are taken on these numbers ---


class _FieldError(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r}: {problem}")


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _FieldError(field, f"expected a JSON object, got {_show(value)}")
    return value


def _get(data: dict[str, Any], key: str, prefix: str) -> tuple[Any, str]:
    field = f"{prefix}.{key}" if prefix else key
    if key not in data:
        raise _FieldError(field, "missing")
    return data[key], field


def _str(data: dict[str, Any], key: str, prefix: str) -> str:
    value, field = _get(data, key, prefix)
    if not isinstance(value, str):
        raise _FieldError(field, f"expected a string, got {_show(value)}")
    return value


def _int(data: dict[str, Any], key: str, prefix: str, minimum: int = 0) -> int:
    value, field = _get(data, key, prefix)
    # bool is an int in Python but never a count or an id
    if not isinstance(value, int) or isinstance(value, bool):
        raise _FieldError(field, f"expected an integer, got {_show(value)}")
    if value < minimum:
        raise _FieldError(field, f"must be >= {minimum}, got {value}")
    return value


def _opt_int(data: dict[str, Any], key: str, prefix: str) -> int | None:
    value, _ = _get(data, key, prefix)
    return None if value is None else _int(data, key, prefix)


def _opt_float(
    data: dict[str, Any], key: str, prefix: str, maximum: float | None = None
) -> float | None:
    value, field = _get(data, key, prefix)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _FieldError(field, f"expected a number or null, got {_show(value)}")
    if not math.isfinite(value) or value < 0 or (maximum is not None and value > maximum):
        limit = f"0..{maximum:g}" if maximum is not None else ">= 0"
        raise _FieldError(field, f"must be a finite number {limit}, got {value}")
    return float(value)


def _list(data: dict[str, Any], key: str, prefix: str) -> list[Any]:
    value, field = _get(data, key, prefix)
    if not isinstance(value, list):
        raise _FieldError(field, f"expected a list, got {_show(value)}")
    return value


def _process(value: Any, prefix: str) -> GpuProcessSample:
    data = _object(value, prefix)
    return GpuProcessSample(
        pid=_int(data, "pid", prefix, minimum=1),
        used_memory_bytes=_int(data, "used_memory_bytes", prefix),
        sm_util=_opt_float(data, "sm_util", prefix, maximum=100),
    )


def _gpu(value: Any, prefix: str) -> GpuSample:
    data = _object(value, prefix)
    processes = _list(data, "processes", prefix)
    return GpuSample(
        index=_int(data, "index", prefix),
        uuid=_str(data, "uuid", prefix),
        name=_str(data, "name", prefix),
        sm_util=_opt_float(data, "sm_util", prefix, maximum=100),
        mem_util=_opt_float(data, "mem_util", prefix, maximum=100),
        mem_used_bytes=_int(data, "mem_used_bytes", prefix),
        mem_total_bytes=_int(data, "mem_total_bytes", prefix),
        power_watts=_opt_float(data, "power_watts", prefix),
        sm_clock_mhz=_opt_int(data, "sm_clock_mhz", prefix),
        pcie_rx_kbps=_opt_int(data, "pcie_rx_kbps", prefix),
        pcie_tx_kbps=_opt_int(data, "pcie_tx_kbps", prefix),
        processes=tuple(_process(p, f"{prefix}.processes[{i}]") for i, p in enumerate(processes)),
    )


def _sample(value: Any) -> TelemetrySample:
    if not isinstance(value, dict):
        raise _FieldError("(line)", f"expected a JSON object, got {_show(value)}")
    time_value, _ = _get(value, "time", "")
    if time_value is None:
        raise _FieldError("time", "must not be null")
    time = _opt_float(value, "time", "")
    assert time is not None  # checked just above; narrows the type
    gpus = _list(value, "gpus", "")
    return TelemetrySample(time, tuple(_gpu(g, f"gpus[{i}]") for i, g in enumerate(gpus)))


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
