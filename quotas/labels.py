"""The labels file of the mining detector's evaluation: labelled runtimes and their context.

``load_cases`` reads ``tests/data/labels.json`` (``kernelhub.quotas.evaluate`` documents
its fields) into ``Case``s, naming the file and the field of any mistake.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kernelhub.quotas.detector import Endpoint
from kernelhub.quotas.recorded import Recording
from kernelhub.quotas.signatures import ProcessInfo

Label = Literal["mining", "not-mining"]


class LabelsError(ValueError):
    """The labels file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Timed:
    """A process, connection or CPU level present from ``start`` until ``end`` (seconds)."""

    value: Any
    start: float = -math.inf
    end: float = math.inf

    def active(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True)
class Case:
    """One labelled runtime and the context its trace cannot carry."""

    name: str
    label: Label
    why: str
    trace: Path | None
    duration_s: float  # CPU-only runtimes; a trace's own duration otherwise
    mining_starts_s: float | None
    kernel: Any  # "always" | "never" | {"every_s", "busy_s"} | {"intervals"}
    kernel_last_active_s: float | None
    processes: tuple[Timed, ...] = ()
    connections: tuple[Timed, ...] = ()
    cpu: tuple[Timed, ...] = ()
    cpu_cores: float = 1.0
    recording: Recording | None = None
    interval_s: float | None = None

    def kernel_busy(self, t: float) -> bool:
        if isinstance(self.kernel, str):
            return self.kernel == "always"
        if "every_s" in self.kernel:
            return t % self.kernel["every_s"] < self.kernel["busy_s"]
        return any(start <= t < end for start, end in self.kernel["intervals"])


def load_cases(path: Path) -> tuple[list[Case], dict[str, Any]]:
    """The runtimes of a labels file, and its top-level settings; LabelsError if malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LabelsError(f"{path}: cannot read labels ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("runtimes"), list):
        raise LabelsError(f"{path}: expected an object with a 'runtimes' list")
    cases = [_case(entry, path, i) for i, entry in enumerate(data["runtimes"])]
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise LabelsError(f"{path}: runtime names must be unique: {names}")
    return cases, data


def _case(entry: Any, path: Path, index: int) -> Case:
    def fail(key: str, problem: str) -> LabelsError:
        return LabelsError(f"{path}: runtimes[{index}].{key}: {problem}")

    def number(key: str, default: float | None = None) -> float | None:
        value = entry.get(key, default)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise fail(key, f"expected a number, got {value!r}")
        return None if value is None else float(value)

    def timed(key: str, make: Any) -> tuple[Timed, ...]:
        items = entry.get(key, [])
        items = [{"fraction": items}] if key == "cpu" and not isinstance(items, list) else items
        if not isinstance(items, list):
            raise fail(key, "expected a list")
        try:
            return tuple(
                Timed(make(item), item.get("from_s", -math.inf), item.get("until_s", math.inf))
                for item in items
            )
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise fail(key, f"malformed item ({e!r})") from None

    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise fail("name", "every runtime needs a name")
    if entry.get("label") not in ("mining", "not-mining"):
        raise fail("label", f"expected 'mining' or 'not-mining', got {entry.get('label')!r}")
    kernel = entry.get("kernel", "never")
    if not _kernel_pattern(kernel):
        raise fail(
            "kernel",
            f'expected "always", "never", {{"every_s": E, "busy_s": B}} or '
            f'{{"intervals": [[from, until], ...]}}, got {kernel!r}',
        )
    trace, recording = entry.get("trace"), entry.get("recording")
    if sum(entry.get(k) is not None for k in ("trace", "recording", "duration_s")) != 1:
        raise fail("trace", "give one of a trace file, a recording, or duration_s")
    try:
        recorded = None if recording is None else Recording(path.parent / recording)
    except ValueError as e:
        raise fail("recording", str(e)) from None
    interval = number("interval_s")
    if interval is not None and interval <= 0:
        raise fail("interval_s", f"expected a number of seconds > 0, got {interval:g}")
    mining_starts = number("mining_starts_s")
    if (entry["label"] == "mining") != (mining_starts is not None):
        raise fail("mining_starts_s", "required for mining runtimes, and only for them")
    return Case(
        name=entry["name"],
        label=entry["label"],
        why=str(entry.get("why", "")),
        trace=None if trace is None else path.parent / trace,
        duration_s=number("duration_s", 0.0) or 0.0,
        mining_starts_s=mining_starts,
        kernel=kernel,
        kernel_last_active_s=number("kernel_last_active_s"),
        processes=timed("processes", lambda p: ProcessInfo(int(p["pid"]), p["name"], p["cmdline"])),
        connections=timed("connections", lambda c: Endpoint(str(c["ip"]), int(c["port"]))),
        cpu=timed("cpu", lambda c: float(c["fraction"])),
        cpu_cores=number("cpu_cores", 1.0) or 1.0,
        recording=recorded,
        interval_s=interval,
    )


def _kernel_pattern(kernel: Any) -> bool:
    def numbers(values: Any) -> bool:
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)

    if kernel in ("always", "never"):
        return True
    if isinstance(kernel, dict) and kernel.keys() == {"every_s", "busy_s"}:
        return numbers(kernel.values()) and kernel["every_s"] > 0
    intervals = kernel.get("intervals") if isinstance(kernel, dict) else None
    return isinstance(intervals, list) and all(
        isinstance(i, list) and len(i) == 2 and numbers(i) for i in intervals
    )
