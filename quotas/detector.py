"""Mining-like runtimes: a score per runtime from GPU, process, network and CPU signals.

Pure logic: the quota daemon passes one ``RuntimeObservation`` per runtime per
tick to ``MiningDetector.observe``, which keeps a sliding window per runtime and
answers a ``Decision`` naming every signal that fired, its values, thresholds and
window. Only ``load_signatures`` reads a file (``mining_signatures.toml``).

Weights add up to a score flagged at 1.0; a strong signature (a miner's name, a
Stratum URL) weighs 1.0 and flags at once. Behaviour needs two signals over a
full window: a hash kernel's GPU pattern (0.6) is also a steady benchmark's, so
it needs a silent notebook (0.4) or a pool port (0.5); a silent notebook and full
CPU (0.4 + 0.5) is also a training job started with nohup, so it stays under.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

from kernelhub.quotas.telemetry import GpuSample

Verdict = Literal["mining-like", "clean", "insufficient-data"]
Json = Any  # JSON values only, so a decision can be stored with an event
GPU_SATURATED_FLAT = "gpu_saturated_flat"
NO_KERNEL_ACTIVITY = "no_kernel_activity"
MINER_PROCESS = "miner_process"
POOL_PORT = "pool_port"
CPU_SATURATED_OUTSIDE_KERNEL = "cpu_saturated_outside_kernel"
SIGNATURES_FILE = "mining_signatures.toml"


class ProcessInfo(NamedTuple):
    """A process of the runtime's container or process tree; cmdline is argv joined by spaces."""

    pid: int
    name: str
    cmdline: str


class Endpoint(NamedTuple):
    """The remote end of one of the runtime's TCP connections."""

    ip: str
    port: int


@dataclass(frozen=True)
class RuntimeObservation:
    """What the daemon saw of one runtime at ``time``.

    ``gpus`` are the GPUs the runtime holds, each with only the runtime's own
    processes. ``cpu_fraction`` is cores used over the last interval (0.98: one
    full core), out of ``cpu_cores`` allowed; None where it was not measured.
    ``kernel_busy``: a notebook kernel was executing (a running cell counts;
    a program started with ``nohup`` from a terminal does not).
    """

    time: float
    runtime: str
    gpus: Sequence[GpuSample] = ()
    processes: Sequence[ProcessInfo] = ()
    connections: Sequence[Endpoint] = ()
    cpu_fraction: float | None = None
    cpu_cores: float = 1.0
    kernel_busy: bool = False
    last_kernel_activity: float | None = None


class SignatureError(ValueError):
    """The signature file is malformed; the message names the file and the key."""


class CmdlinePattern(NamedTuple):
    regex: re.Pattern[str]
    weight: float
    meaning: str


@dataclass(frozen=True)
class Signatures:
    """Process names (lower case) by category, command-line patterns, pool ports."""

    names: Mapping[str, str]
    name_weight: float
    cmdline: tuple[CmdlinePattern, ...]
    pool_ports: frozenset[int]
    port_weight: float
    source: str = SIGNATURES_FILE
    _name_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Longest names first so "xmrig-cuda" wins over "xmrig"; a version or build
        # suffix is tolerated ("lolMiner_v1.88", "hashcat.bin"), other text is not.
        alternatives = "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
        suffix = r"(?:[-_.]?v?\d[\w.-]*)?(?:\.(?:exe|bin))?"
        pattern = rf"(?P<name>{alternatives}){suffix}" if self.names else r"(?!)"
        object.__setattr__(self, "_name_re", re.compile(pattern, re.I))

    def match_process(self, process: ProcessInfo) -> list[tuple[str, float]]:
        """(why, weight) for each signature the process matches."""
        hits: list[tuple[str, float]] = []
        argv0 = os.path.basename((process.cmdline.split() or [""])[0])
        for candidate in dict.fromkeys(c for c in (process.name, argv0) if c):
            if found := self._name_re.fullmatch(candidate):
                category = self.names[found.group("name").lower()]
                hits.append((f"name {candidate!r} is a known {category}", self.name_weight))
        for p in self.cmdline:
            if found := p.regex.search(process.cmdline):
                hits.append((f"cmdline has {p.meaning} ({found.group(0).strip()!r})", p.weight))
        return hits


def parse_signatures(text: str, source: str = SIGNATURES_FILE) -> Signatures:
    """Signatures from TOML text; SignatureError names ``source`` and the bad key."""

    def check(ok: bool, where: str, problem: str) -> None:
        if not ok:
            raise SignatureError(f"{source}: {where}: {problem}")

    def weight(table: dict[str, Any], where: str) -> float:
        value: Any = table.get("weight")
        ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1
        check(ok, f"{where}.weight", f"expected a number in (0, 1], got {value!r}")
        return float(value)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SignatureError(f"{source}: not valid TOML ({e})") from None
    check(data.get("version") == 1, "version", f"expected 1, got {data.get('version')!r}")
    for key in ("process_names", "pool_ports"):
        check(isinstance(data.get(key), dict), f"[{key}]", "missing, or not a table")
    categories, where = data["process_names"].get("categories"), "[process_names.categories]"
    check(isinstance(categories, dict) and bool(categories), where, "expected category = [names]")
    names: dict[str, str] = {}
    for category, members in categories.items():
        ok = isinstance(members, list) and all(isinstance(m, str) and m for m in members)
        check(ok, f"{where}.{category}", f"expected a list of names, got {members!r}")
        names.update((m.lower(), category) for m in members)
    entries = data.get("cmdline", [])
    check(isinstance(entries, list), "[[cmdline]]", "expected an array of tables")
    cmdline = []
    for i, entry in enumerate(entries):
        where = f"[[cmdline]] #{i + 1}"
        ok = isinstance(entry, dict) and isinstance(entry.get("pattern"), str)
        check(ok, f"{where}.pattern", "missing, or not a string")
        try:
            regex = re.compile(entry["pattern"], re.I)
        except re.error as e:
            raise SignatureError(f"{source}: {where}.pattern: not a valid regex ({e})") from None
        meaning = entry.get("meaning")
        check(isinstance(meaning, str) and bool(meaning), f"{where}.meaning", "missing")
        cmdline.append(CmdlinePattern(regex, weight(entry, where), meaning))
    ports = data["pool_ports"].get("ports")
    ok = isinstance(ports, list) and all(type(p) is int and 0 < p < 65536 for p in ports)
    check(ok, "[pool_ports].ports", f"expected a list of TCP ports 1-65535, got {ports!r}")
    name_weight = weight(data["process_names"], "[process_names]")
    port_weight = weight(data["pool_ports"], "[pool_ports]")
    return Signatures(names, name_weight, tuple(cmdline), frozenset(ports), port_weight, source)


def load_signatures(path: str | os.PathLike[str] | None = None) -> Signatures:
    """Read and parse a signature file; by default the one shipped beside this module."""
    if path is None:
        resource = resources.files("kernelhub.quotas").joinpath(SIGNATURES_FILE)
        return parse_signatures(resource.read_text(encoding="utf-8"), SIGNATURES_FILE)
    return parse_signatures(Path(path).read_text(encoding="utf-8"), os.fspath(path))


@dataclass(frozen=True)
class Signal:
    """One signal that fired: its weight, what it measured and against what."""

    name: str
    weight: float
    summary: str
    measured: dict[str, Json]
    thresholds: dict[str, Json]


@dataclass(frozen=True)
class Decision:
    """The verdict on one runtime's window of ``samples`` observations, start to end."""

    runtime: str
    time: float
    score: float
    threshold: float
    verdict: Verdict
    signals: tuple[Signal, ...]
    window_start: float
    window_end: float
    samples: int
    window_s: float  # the configured window, which window_start..end may not fill yet

    @property
    def flagged(self) -> bool:
        return self.verdict == "mining-like"

    def to_dict(self) -> dict[str, Json]:
        """JSON values only, to store with an event."""
        return asdict(self)

    def explain(self) -> str:
        """One readable paragraph: verdict, score, window, and each signal with its values."""
        head = (
            f"Runtime {self.runtime!r} at {_when(self.time)}: {self.verdict}, score "
            f"{self.score:.2f} ({'>=' if self.flagged else '<'} {self.threshold:.2f} to flag) on "
            f"the window {_when(self.window_start)} to {_when(self.window_end)} "
            f"({self.window_end - self.window_start:.0f} s of {self.window_s:.0f} s, samples: "
            f"{self.samples})."
        )
        if self.verdict == "insufficient-data":
            head += " Sustained signals are judged once the whole window has been observed."
        parts = [f"{s.name} (+{s.weight:.2f}): {s.summary}" for s in self.signals]
        return f"{head} Signals: {'; '.join(parts)}." if parts else f"{head} No signal fired."


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class DetectorConfig:
    """Window, thresholds, behavioural weights: 240 s flags a sustained miner within 5 min."""

    window_s: float = 240.0
    # observed once the oldest sample is this share of window_s old (ticks jitter)
    coverage: float = 0.95
    min_samples: int = 8  # a daemon ticking every 30 s has 8 in 240 s
    threshold: float = 1.0
    sm_saturated_pct: float = 95.0
    saturated_share: float = 0.9  # of the window's samples at or above sm_saturated_pct
    memory_range_share: float = 0.01  # (max - min) memory used, over the GPU's total
    pcie_max_kbps: float = 10_000.0  # mean rx + tx; training streams hundreds of MB/s
    gpu_busy_pct: float = 50.0  # mean SM over the window for "the GPU is busy"
    cpu_saturated: float = 0.9  # cores used per allowed core
    cpu_outside_share: float = 0.8  # of the window's samples: saturated and no kernel busy
    gpu_saturated_flat_weight: float = 0.6
    no_kernel_activity_weight: float = 0.4
    cpu_saturated_outside_kernel_weight: float = 0.5

    def __post_init__(self) -> None:
        if min(self.window_s, self.threshold) <= 0 or not 0 < self.coverage <= 1:
            raise ValueError("window_s and threshold must be > 0, coverage in (0, 1]")


class _Tick(NamedTuple):
    obs: RuntimeObservation
    process_hits: tuple[tuple[ProcessInfo, tuple[tuple[str, float], ...]], ...]
    pool_hits: tuple[Endpoint, ...]


class MiningDetector:
    """Scores runtimes tick by tick over a sliding window per runtime."""

    def __init__(
        self, config: DetectorConfig | None = None, signatures: Signatures | None = None
    ) -> None:
        self.config = config or DetectorConfig()
        self.signatures = signatures or load_signatures()
        self._windows: dict[str, deque[_Tick]] = {}

    def forget(self, runtime: str) -> None:
        """Drop a runtime's window (it stopped, or was stopped)."""
        self._windows.pop(runtime, None)

    def observe(self, obs: RuntimeObservation) -> Decision:
        """Add one observation to its runtime's window and decide on the window."""
        cfg = self.config
        ticks = self._windows.setdefault(obs.runtime, deque())
        if ticks and obs.time < ticks[-1].obs.time:
            raise ValueError(f"runtime {obs.runtime!r}: time went back to {obs.time}")
        # Signatures are matched once per observation, not once per decision.
        match = self.signatures.match_process
        hits = tuple((p, tuple(h)) for p in obs.processes if (h := match(p)))
        pool = tuple(e for e in obs.connections if e.port in self.signatures.pool_ports)
        ticks.append(_Tick(obs, hits, pool))
        while ticks[0].obs.time < obs.time - cfg.window_s:
            ticks.popleft()
        start = ticks[0].obs.time
        full = obs.time - start >= cfg.window_s * cfg.coverage and len(ticks) >= cfg.min_samples
        found = [self._miner_process(ticks), self._pool_port(ticks)]
        if full:
            by_gpu: dict[str, list[GpuSample]] = {}
            for gpu in (g for t in ticks for g in t.obs.gpus):
                by_gpu.setdefault(gpu.uuid, []).append(gpu)
            found += [self._gpu_flat(by_gpu, len(ticks)), self._no_kernel(by_gpu, ticks)]
            found.append(self._cpu_outside(ticks))
        signals = tuple(s for s in found if s is not None)
        score = round(sum(s.weight for s in signals), 3)  # 0.6 + 0.4 must reach 1.0
        verdict: Verdict = "clean" if full else "insufficient-data"
        verdict = "mining-like" if score >= cfg.threshold else verdict
        return Decision(
            obs.runtime, obs.time, score, cfg.threshold, verdict, signals,
            start, obs.time, len(ticks), cfg.window_s,
        )  # fmt: skip

    def _miner_process(self, ticks: deque[_Tick]) -> Signal | None:
        found = dict(hit for tick in ticks for hit in tick.process_hits)
        if not found:
            return None
        summary = "; ".join(
            f"process {p.pid} {p.name!r} ({', '.join(why for why, _ in hits)})"
            for p, hits in found.items()
        )
        processes = [p._asdict() | {"matches": [why for why, _ in h]} for p, h in found.items()]
        weight = max(w for hits in found.values() for _, w in hits)
        source = {"signatures": self.signatures.source}
        return Signal(MINER_PROCESS, weight, summary, {"processes": processes}, source)

    def _pool_port(self, ticks: deque[_Tick]) -> Signal | None:
        seen = list(dict.fromkeys(f"{e.ip}:{e.port}" for t in ticks for e in t.pool_hits))
        if not seen:
            return None
        samples = sum(1 for t in ticks if t.pool_hits)
        summary = f"connected to {', '.join(seen)} (pool ports) in {samples}/{len(ticks)} samples"
        measured = {"endpoints": seen, "samples": samples}
        ports = {"ports": f"pool_ports of {self.signatures.source}"}
        return Signal(POOL_PORT, self.signatures.port_weight, summary, measured, ports)

    def _gpu_flat(self, by_gpu: dict[str, list[GpuSample]], samples: int) -> Signal | None:
        cfg = self.config
        best: dict[str, Json] | None = None
        for gpus in by_gpu.values():
            # Over all the window's samples: a GPU seen in part of it was not saturated throughout.
            share = sum(1 for g in gpus if (g.sm_util or 0) >= cfg.sm_saturated_pct) / samples
            used = [g.mem_used_bytes for g in gpus]
            memory = (max(used) - min(used)) / max(1, gpus[-1].mem_total_bytes)
            pcie = [(g.pcie_rx_kbps or 0) + (g.pcie_tx_kbps or 0) for g in gpus]
            known = sum(1 for g in gpus if g.pcie_rx_kbps is not None or g.pcie_tx_kbps is not None)
            pcie_mean = sum(pcie) / known if known else None
            if (
                share >= cfg.saturated_share
                and memory < cfg.memory_range_share
                and (pcie_mean is None or pcie_mean < cfg.pcie_max_kbps)
                and (best is None or share > best["sm_saturated_share"])
            ):
                best = {"gpu": gpus[-1].index, "sm_saturated_share": round(share, 3)}
                best |= {"memory_range_share": round(memory, 5), "pcie_mean_kbps": pcie_mean}
        if best is None:
            return None
        pcie_mean = best["pcie_mean_kbps"]
        summary = (
            f"GPU {best['gpu']} SM >= {cfg.sm_saturated_pct:g} % in "
            f"{best['sm_saturated_share']:.0%} of samples (needs >= {cfg.saturated_share:.0%}), "
            f"memory used varied {best['memory_range_share']:.2%} of total "
            f"(< {cfg.memory_range_share:.0%}), PCIe rx+tx mean "
            + ("not reported" if pcie_mean is None else f"{pcie_mean:.0f} KB/s")
            + f" (< {cfg.pcie_max_kbps:.0f} KB/s)"
        )
        keys = ("sm_saturated_pct", "saturated_share", "memory_range_share", "pcie_max_kbps")
        thresholds = {k: getattr(cfg, k) for k in keys}
        return Signal(GPU_SATURATED_FLAT, cfg.gpu_saturated_flat_weight, summary, best, thresholds)

    def _no_kernel(self, by_gpu: dict[str, list[GpuSample]], ticks: deque[_Tick]) -> Signal | None:
        cfg = self.config
        # the busiest GPU's mean over the whole window (a missing sample counts as idle)
        mean_sm = max((sum(g.sm_util or 0 for g in gpus) for gpus in by_gpu.values()), default=0)
        mean_sm /= len(ticks)
        last = ticks[-1].obs.last_kernel_activity
        recent = last is not None and last >= ticks[0].obs.time
        if mean_sm < cfg.gpu_busy_pct or recent or any(t.obs.kernel_busy for t in ticks):
            return None
        summary = (
            f"GPU busy (mean SM {mean_sm:.1f} % >= {cfg.gpu_busy_pct:g} %) while no notebook "
            f"kernel executed in the window (last kernel activity: "
            f"{'never' if last is None else _when(last)})"
        )
        measured = {"mean_sm_pct": round(mean_sm, 2), "last_kernel_activity": last}
        thresholds = {"gpu_busy_pct": cfg.gpu_busy_pct, "kernel_busy_samples": 0}
        weight = cfg.no_kernel_activity_weight
        return Signal(NO_KERNEL_ACTIVITY, weight, summary, measured, thresholds)

    def _cpu_outside(self, ticks: deque[_Tick]) -> Signal | None:
        cfg = self.config
        outside = [t.obs for t in ticks if t.obs.cpu_fraction is not None and not t.obs.kernel_busy]
        per_core = [(o.cpu_fraction or 0.0) / max(o.cpu_cores, 1e-9) for o in outside]
        share = sum(1 for u in per_core if u >= cfg.cpu_saturated) / len(ticks)
        if share < cfg.cpu_outside_share:
            return None
        mean = sum(per_core) / len(per_core)
        summary = (
            f"CPU >= {cfg.cpu_saturated:.0%} of the allowed {ticks[-1].obs.cpu_cores:g} cores "
            f"with no kernel executing in {share:.0%} of samples (needs >= "
            f"{cfg.cpu_outside_share:.0%}), mean {mean:.0%} per core"
        )
        measured = {"saturated_share": round(share, 3), "mean_per_core": round(mean, 3)}
        thresholds = {"cpu_saturated": cfg.cpu_saturated, "outside_share": cfg.cpu_outside_share}
        weight = cfg.cpu_saturated_outside_kernel_weight
        return Signal(CPU_SATURATED_OUTSIDE_KERNEL, weight, summary, measured, thresholds)
