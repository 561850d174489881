"""Evaluate the mining detector on labelled runtimes: precision, recall, detection delay.

    .venv/bin/python -m kernelhub.quotas.evaluate [--window S] [--threshold X]
        [--max-delay S] [--signatures FILE] [LABELS]

LABELS (default ``tests/data/labels.json`` in the current directory, i.e. a kernelhub
checkout: an installed package ships no labelled traces) lists runtimes, each a GPU trace
(``trace``, relative to the labels file) or a CPU-only runtime (``duration_s``),
its ``label`` (``mining`` / ``not-mining``), when mining starts
(``mining_starts_s``), and what a trace cannot carry: ``kernel`` activity
(``"always"``, ``"never"``, ``{"every_s": E, "busy_s": B}`` or
``{"intervals": [[from, until], ...]}``; ``kernel_last_active_s`` for activity
before the trace), ``processes`` ({pid, name, cmdline}), ``connections``
({ip, port}), ``cpu`` (cores used: a number or a list of {fraction}) and
``cpu_cores``. A process, connection or cpu item may carry ``from_s`` /
``until_s``. Times are seconds from the trace's start.

Each runtime is replayed tick by tick (``ReplayTelemetry`` on a ``VirtualClock``:
no sleeping) through one ``MiningDetector``. A flag stops the runtime, as the
quota daemon would. A mining runtime counts as detected only when flagged after
mining started and within the maximum delay; a flag before it, or on a
not-mining runtime, is a false positive. Exit status 0 when every runtime met
its label, 1 when not, 2 on bad input: a missing or malformed labels or signature file
(one ``error:`` line on stderr, no traceback; no LABELS and no default file is one) or a
bad option (argparse's usage message).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kernelhub.quotas.clock import VirtualClock
from kernelhub.quotas.detector import (
    Decision,
    DetectorConfig,
    Endpoint,
    MiningDetector,
    RuntimeObservation,
)
from kernelhub.quotas.replay import ReplayTelemetry
from kernelhub.quotas.signatures import ProcessInfo, SignatureError, Signatures, load_signatures

DEFAULT_LABELS = Path("tests/data/labels.json")
DEFAULT_MAX_DELAY_S = 300.0
EPOCH = 1767225600.0  # replays start at 2026-01-01T00:00:00Z, so explanations read as dates
Label = Literal["mining", "not-mining"]
Outcome = Literal["detected", "late", "missed", "false-positive", "clean"]


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

    def kernel_busy(self, t: float) -> bool:
        if isinstance(self.kernel, str):
            return self.kernel == "always"
        if "every_s" in self.kernel:
            return t % self.kernel["every_s"] < self.kernel["busy_s"]
        return any(start <= t < end for start, end in self.kernel["intervals"])


@dataclass(frozen=True)
class CaseResult:
    case: Case
    outcome: Outcome
    ticks: int
    flagged_at_s: float | None
    delay_s: float | None
    decision: Decision | None  # the flag; for a clean run, its highest-scoring decision


@dataclass(frozen=True)
class Report:
    results: tuple[CaseResult, ...]
    config: DetectorConfig
    max_delay_s: float
    labels: Path = field(default=DEFAULT_LABELS)

    def count(self, *outcomes: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome in outcomes)

    @property
    def precision(self) -> float | None:
        """Flags on mining runtimes (after mining started) over all flags; None if no flag."""
        flags = self.count("detected", "late", "false-positive")
        return self.count("detected", "late") / flags if flags else None

    @property
    def recall(self) -> float | None:
        """Mining runtimes stopped within the delay, over all mining runtimes."""
        mining = sum(1 for r in self.results if r.case.label == "mining")
        return self.count("detected") / mining if mining else None

    @property
    def delays(self) -> list[float]:
        return [
            r.delay_s for r in self.results if r.outcome == "detected" and r.delay_s is not None
        ]

    @property
    def ok(self) -> bool:
        return all(r.outcome in ("detected", "clean") for r in self.results)


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
    trace = entry.get("trace")
    if (trace is None) == (entry.get("duration_s") is None):
        raise fail("trace", "give either a trace file or, for a CPU-only runtime, duration_s")
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


async def replay(
    case: Case, detector: MiningDetector, interval_s: float, max_delay_s: float
) -> CaseResult:
    """Replay one runtime tick by tick until it ends or is flagged (and so stopped)."""
    clock = VirtualClock(EPOCH)
    telemetry = None if case.trace is None else ReplayTelemetry(case.trace, clock)
    duration = case.duration_s if telemetry is None else telemetry.duration
    last_active = None if case.kernel_last_active_s is None else EPOCH + case.kernel_last_active_s
    best: Decision | None = None
    ticks = int(duration // interval_s) + 1
    for tick in range(ticks):
        t = tick * interval_s
        busy = case.kernel_busy(t)
        last_active = clock.now() if busy else last_active
        sample = None if telemetry is None else await telemetry.sample()
        cpu = [c.value for c in case.cpu if c.active(t)]
        decision = detector.observe(
            RuntimeObservation(
                time=clock.now(),
                runtime=case.name,
                gpus=() if sample is None else sample.gpus,
                processes=[p.value for p in case.processes if p.active(t)],
                connections=[c.value for c in case.connections if c.active(t)],
                cpu_fraction=cpu[-1] if cpu else None,
                cpu_cores=case.cpu_cores,
                kernel_busy=busy,
                last_kernel_activity=last_active,
            )
        )
        if decision.flagged:
            detector.forget(case.name)  # stopped: the runtime is gone
            return _flagged(case, decision, t, tick + 1, max_delay_s)
        if best is None or decision.score > best.score:
            best = decision
        clock.advance(interval_s)
    outcome: Outcome = "missed" if case.label == "mining" else "clean"
    return CaseResult(case, outcome, ticks, None, None, best)


def _flagged(
    case: Case, decision: Decision, t: float, ticks: int, max_delay_s: float
) -> CaseResult:
    if case.mining_starts_s is None or t < case.mining_starts_s:
        return CaseResult(case, "false-positive", ticks, t, None, decision)
    delay = t - case.mining_starts_s
    outcome: Outcome = "detected" if delay <= max_delay_s else "late"
    return CaseResult(case, outcome, ticks, t, delay, decision)


def evaluate(
    labels: Path = DEFAULT_LABELS,
    config: DetectorConfig | None = None,
    signatures: Signatures | None = None,
    max_delay_s: float | None = None,
) -> Report:
    """Replay every labelled runtime through one new detector; LabelsError if malformed."""
    cases, settings = load_cases(labels)
    config = config or DetectorConfig()
    detector = MiningDetector(config, signatures or load_signatures())
    interval = float(settings.get("interval_s", 1.0))
    if max_delay_s is None:
        max_delay_s = float(settings.get("max_delay_s", DEFAULT_MAX_DELAY_S))

    async def run_all() -> list[CaseResult]:
        return [await replay(c, detector, interval, max_delay_s) for c in cases]

    return Report(tuple(asyncio.run(run_all())), config, max_delay_s, labels)


def format_report(report: Report) -> str:
    """The per-runtime table, each flag's explanation, then the figures."""
    cfg = report.config
    lines = [
        f"Mining detector on {len(report.results)} labelled runtimes ({report.labels}): window "
        f"{cfg.window_s:g} s, threshold {cfg.threshold:g}, max delay {report.max_delay_s:g} s",
        "",
    ]
    for r in report.results:
        label = f"  {r.case.name:<24} {r.case.label:<10} {r.outcome:<14}"
        if r.flagged_at_s is None:
            fired = ", ".join(s.name for s in r.decision.signals) if r.decision else ""
            score = r.decision.score if r.decision else 0.0
            lines.append(
                f"{label} ran all {r.ticks} ticks untouched; highest score {score:.2f}"
                + (f" ({fired})" if fired else "")
            )
            continue
        delay = "" if r.delay_s is None else f", {r.delay_s:g} s after mining started"
        lines.append(f"{label} stopped at +{r.flagged_at_s:g} s{delay}")
        if r.decision is not None:
            lines.append(f"      {r.decision.explain()}")
    precision, recall, delays = report.precision, report.recall, report.delays
    flags = report.count("detected", "late", "false-positive")
    mining = sum(1 for r in report.results if r.case.label == "mining")
    lines += [
        "",
        f"precision {_figure(precision)} ({report.count('detected', 'late')} of {flags} flags "
        f"on mining runtimes)",
        f"recall    {_figure(recall)} ({report.count('detected')} of {mining} mining runtimes "
        f"stopped within {report.max_delay_s:g} s)",
        "detection delay: "
        + (f"mean {sum(delays) / len(delays):.1f} s, max {max(delays):.1f} s" if delays else "n/a"),
        f"not-mining runtimes flagged: {report.count('false-positive')}",
    ]
    return "\n".join(lines)


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the evaluation; 0 when every runtime met its label, 1 if not, 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m kernelhub.quotas.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("labels", nargs="?", type=Path, default=None)
    parser.add_argument("--window", type=float, help="detector window, seconds (default 240)")
    parser.add_argument("--threshold", type=float, help="score that flags (default 1.0)")
    parser.add_argument("--max-delay", type=float, help="seconds a miner may run (default: file's)")
    parser.add_argument("--signatures", type=Path, help="signature file (default: the shipped one)")
    args = parser.parse_args(argv)
    if args.labels is None and not DEFAULT_LABELS.is_file():
        # the default is the checkout's; an installed package has no tests/ folder
        print(
            f"error: LABELS is needed: no labels file given and {DEFAULT_LABELS} is not in "
            f"{Path.cwd()} (pass one, e.g. a kernelhub checkout's tests/data/labels.json)",
            file=sys.stderr,
        )
        return 2
    overrides = {"window_s": args.window, "threshold": args.threshold}
    try:
        config = DetectorConfig(**{k: v for k, v in overrides.items() if v is not None})
        signatures = load_signatures(args.signatures)
        report = evaluate(args.labels or DEFAULT_LABELS, config, signatures, args.max_delay)
    except (LabelsError, SignatureError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
