"""Evaluate the mining detector on labelled runtimes: precision, recall, detection delay.

    .venv/bin/python -m kernelhub.quotas.evaluate [--window S] [--threshold X]
        [--max-delay S] [--signatures FILE] [LABELS]

LABELS (default ``tests/data/labels.json`` in the current directory, i.e. a kernelhub
checkout: an installed package ships no labelled traces) lists runtimes, each a GPU trace
(``trace``, relative to the labels file), a recording of a real CPU-only runtime
(``recording``: what the daemon's process scanner read of it each second, see
``kernelhub.quotas.recorded``) or a described CPU-only runtime (``duration_s``),
its ``label`` (``mining`` / ``not-mining``), when mining starts
(``mining_starts_s``), and what a trace cannot carry: ``kernel`` activity
(``"always"``, ``"never"``, ``{"every_s": E, "busy_s": B}`` or
``{"intervals": [[from, until], ...]}``; ``kernel_last_active_s`` for activity
before the trace), ``processes`` ({pid, name, cmdline}), ``connections``
({ip, port}), ``cpu`` (cores used: a number or a list of {fraction}) and
``cpu_cores``, and ``interval_s`` (seconds between observations; default: the file's).
A process, connection or cpu item may carry ``from_s`` / ``until_s``. Times are seconds
from the trace's start. A recording brings its own processes, CPU, memory and I/O; the
entry adds what it cannot hold (kernel activity, a pool connection as data).

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
from kernelhub.quotas.labels import Case, LabelsError, load_cases
from kernelhub.quotas.recorded import RecordedSample
from kernelhub.quotas.replay import ReplayTelemetry
from kernelhub.quotas.signatures import SignatureError, Signatures, load_signatures

DEFAULT_LABELS = Path("tests/data/labels.json")
DEFAULT_MAX_DELAY_S = 60.0  # issue 16: a miner is stopped within a minute
EPOCH = 1767225600.0  # replays start at 2026-01-01T00:00:00Z, so explanations read as dates
Outcome = Literal["detected", "late", "missed", "false-positive", "clean"]


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
    def p95_delay(self) -> float | None:
        """Nearest-rank 95th percentile of the delays of all mining runtimes (a late flag
        counts its delay, a miss infinity); None without mining runtimes."""
        delays = sorted(
            math.inf if r.delay_s is None else r.delay_s
            for r in self.results
            if r.case.label == "mining"
        )
        return delays[math.ceil(0.95 * len(delays)) - 1] if delays else None

    @property
    def ok(self) -> bool:
        return all(r.outcome in ("detected", "clean") for r in self.results)


async def replay(
    case: Case, detector: MiningDetector, interval_s: float, max_delay_s: float
) -> CaseResult:
    """Replay one runtime tick by tick until it ends or is flagged (and so stopped)."""
    clock = VirtualClock(EPOCH)
    telemetry = None if case.trace is None else ReplayTelemetry(case.trace, clock)
    rec = case.recording
    duration = case.duration_s if telemetry is None else telemetry.duration
    duration = duration if rec is None else rec.duration
    interval_s = case.interval_s or interval_s
    last_active = None if case.kernel_last_active_s is None else EPOCH + case.kernel_last_active_s
    best: Decision | None = None
    ticks = int(duration // interval_s) + 1
    scanned: RecordedSample | None = None  # the recording's scan at the previous tick
    for tick in range(ticks):
        t = tick * interval_s
        sample = None if telemetry is None else await telemetry.sample()
        clock.advance(interval_s)
        counters: dict[str, Any] = {}
        if rec is not None:
            now = rec.at(t)
            if scanned is not None and now.t <= scanned.t:
                continue  # the recorder was late: no new scan by then (the daemon's neither)
            t, counters, scanned = now.t, _counters(now, scanned), now  # its real time
        busy = case.kernel_busy(t)
        last_active = EPOCH + t if busy else last_active
        cpu = [c.value for c in case.cpu if c.active(t)]
        decision = detector.observe(
            RuntimeObservation(
                time=EPOCH + t,
                runtime=case.name,
                gpus=() if sample is None else sample.gpus,
                processes=[p.value for p in case.processes if p.active(t)]
                + list(counters.pop("processes", ())),
                connections=[c.value for c in case.connections if c.active(t)]
                + list(counters.pop("connections", ())),
                cpu_fraction=counters.pop("cpu_fraction", cpu[-1] if cpu else None),
                cpu_cores=case.cpu_cores,
                kernel_busy=busy,
                last_kernel_activity=last_active,
                **counters,
            )
        )
        if decision.flagged:
            detector.forget(case.name)  # stopped: the runtime is gone
            return _flagged(case, decision, t, tick + 1, max_delay_s)
        if best is None or decision.score > best.score:
            best = decision
    outcome: Outcome = "missed" if case.label == "mining" else "clean"
    return CaseResult(case, outcome, ticks, None, None, best)


def _counters(now: RecordedSample, before: RecordedSample | None) -> dict[str, Any]:
    """A recorded scan as the daemon passes it: the cores used since the previous scan
    (as its note_scan), the cumulative counters, the processes and connections."""
    counters: dict[str, Any] = {
        "rss_bytes": now.rss_bytes, "minor_faults": now.minor_faults,
        "cpu_wait_seconds": now.cpu_wait_seconds, "io_chars": now.io_chars,
        "storage_bytes": now.storage_bytes, "processes": now.processes,
        "connections": [Endpoint(*c) for c in now.connections],
    }  # fmt: skip
    if before is not None:
        counters["cpu_fraction"] = (now.cpu_seconds - before.cpu_seconds) / (now.t - before.t)
    return counters


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
        + (f"mean {sum(delays) / len(delays):.1f} s, max {max(delays):.1f} s" if delays else "n/a")
        + ("" if report.p95_delay is None else f", p95 {report.p95_delay:.1f} s"),
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
    parser.add_argument("--window", type=float, help="detector window, seconds (default 45)")
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
