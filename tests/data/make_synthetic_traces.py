"""Write the four synthetic GPU traces of tests/data (see README.md there).

Deterministic: each trace has its own seeded random.Random and the script uses
only its uniform draws and arithmetic (no libm functions whose last bit may
differ between platforms), so every run writes the same bytes; a test checks it.

    .venv/bin/python tests/data/make_synthetic_traces.py [OUTPUT_DIR]
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from kernelhub.quotas.telemetry import GpuProcessSample, GpuSample, TelemetrySample

MIB = 1024**2
GIB = 1024**3
SECONDS = 600  # ten minutes at one sample per second
START = 1767225600.0  # 2026-01-01T00:00:00Z: an absolute time, as the recorder writes
NAME = "NVIDIA H100 80GB HBM3"
UUID = "GPU-5e17e71c-0000-4000-8000-000000000000"  # "synthetic"; not a real board
MEM_TOTAL = 80 * GIB
# memory the driver keeps on an H100 with any context open (NVML v1 "used" counts it)
RESERVED = 544 * MIB
MAX_POWER = 700.0


def _gpu(
    *,
    sm: float,
    mem_util: float,
    process_mem: int,
    power: float,
    clock: int,
    rx: int,
    tx: int,
    pid: int,
    process_sm: float,
) -> GpuSample:
    return GpuSample(
        index=0,
        uuid=UUID,
        name=NAME,
        sm_util=float(round(min(100.0, max(0.0, sm)))),
        mem_util=float(round(min(100.0, max(0.0, mem_util)))),
        mem_used_bytes=process_mem + RESERVED,
        mem_total_bytes=MEM_TOTAL,
        power_watts=round(min(MAX_POWER, max(60.0, power)), 1),
        sm_clock_mhz=clock,
        pcie_rx_kbps=max(0, rx),
        pcie_tx_kbps=max(0, tx),
        processes=(
            GpuProcessSample(pid, process_mem, float(round(min(100.0, max(0.0, process_sm))))),
        ),
    )


def training(rng: random.Random) -> Iterator[GpuSample]:
    """A data-parallel training job: SM busy, dips at step boundaries, a checkpoint."""
    for t in range(SECONDS):
        boundary = t % 15 in (0, 1)  # optimizer step + next batch loading, every 15 s
        checkpoint = 300 <= t < 310  # writes the model to host memory for 10 s
        if checkpoint:
            sm, rx, tx = rng.uniform(3, 15), rng.randint(2_000, 20_000), rng.randint(3, 5) * 10**6
        elif boundary:
            sm, rx = rng.uniform(25, 60), rng.randint(900_000, 1_600_000)
            tx = rng.randint(5_000, 25_000)
        else:
            sm, rx, tx = (
                rng.uniform(85, 100.49),
                rng.randint(250_000, 450_000),
                rng.randint(5_000, 25_000),
            )
        # activations grow over each 45 s chunk of sequence lengths, then the cache trims
        process_mem = (66 * 1024 + (t % 45) * 6 * 1024 // 45 + rng.randint(0, 128) * 2) * MIB
        power = 80 + sm * 6.2 + rng.uniform(-15, 15)
        clock = 1980 if power < 650 else rng.choice((1755, 1845, 1905, 1980))
        yield _gpu(
            sm=sm,
            mem_util=sm * 0.45 + rng.uniform(-5, 5),
            process_mem=process_mem,
            power=power,
            clock=clock,
            rx=rx,
            tx=tx,
            pid=4121,
            process_sm=sm - rng.uniform(0, 3),
        )


def inference(rng: random.Random) -> Iterator[GpuSample]:
    """A model server: weights and KV cache preallocated, busy only while requests run."""
    busy_until, next_request = -1, 2
    for t in range(SECONDS):
        starting = t == next_request
        if starting:
            busy_until = t + rng.randint(1, 4)
            next_request = t + rng.randint(2, 9)
        busy = t < busy_until
        sm = rng.uniform(40, 70) if busy else rng.uniform(10, 18)
        if starting:  # the prompt (and any image) arrives
            rx, tx = rng.randint(40_000, 250_000), rng.randint(1_000, 5_000)
        elif busy and t + 1 == busy_until:  # the answer leaves
            rx, tx = rng.randint(1_000, 5_000), rng.randint(20_000, 120_000)
        else:
            rx, tx = rng.randint(100, 2_000), rng.randint(100, 2_000)
        yield _gpu(
            sm=sm,
            mem_util=sm * 0.6,
            process_mem=38 * GIB,
            power=90 + sm * 5 + rng.uniform(-8, 8),
            clock=1980,
            rx=rx,
            tx=tx,
            pid=5310,
            process_sm=sm - rng.uniform(0, 2),
        )


def idle_with_memory(rng: random.Random) -> Iterator[GpuSample]:
    """A notebook that loaded a model and walked away: 20 GiB held, nothing computed."""
    for _ in range(SECONDS):
        yield _gpu(
            sm=0,
            mem_util=0,
            process_mem=20 * GIB,
            power=rng.uniform(68, 74),
            clock=345,
            rx=rng.choice((0, 0, 0, 1, 2)),
            tx=rng.choice((0, 0, 0, 1)),
            pid=2877,
            process_sm=0,
        )


def hash_search(rng: random.Random) -> Iterator[GpuSample]:
    """A mining-like kernel: all SMs, a tiny fixed buffer, no data in or out, at the power cap."""
    for t in range(SECONDS):
        sm = 100 if rng.random() < 0.8 else 99
        report = t % 30 == 0  # a found-share report now and then: a few KB
        yield _gpu(
            sm=sm,
            mem_util=rng.uniform(1, 3),
            process_mem=1536 * MIB,
            power=rng.uniform(680, 700),
            clock=rng.choice((1665, 1695, 1725, 1755, 1785)),
            rx=rng.randint(0, 4),
            tx=rng.randint(2, 8) if report else rng.randint(0, 2),
            pid=6606,
            process_sm=sm,
        )


TRACES: dict[str, tuple[int, Callable[[random.Random], Iterator[GpuSample]]]] = {
    "training": (1, training),
    "inference": (2, inference),
    "idle_with_memory": (3, idle_with_memory),
    "hash_search": (4, hash_search),
}


Generator = Callable[[random.Random], Iterator[GpuSample]]


def write_traces(
    directory: Path, traces: dict[str, tuple[int, Generator]] | None = None, start: float = START
) -> list[Path]:
    """Write every trace (default: TRACES) as DIRECTORY/NAME.jsonl; return the paths."""
    written = []
    for name, (seed, generate) in (TRACES if traces is None else traces).items():
        path = directory / f"{name}.jsonl"
        with path.open("w", encoding="utf-8", newline="\n") as f:
            for t, gpu in enumerate(generate(random.Random(seed))):
                f.write(TelemetrySample(start + t, (gpu,)).to_json_line() + "\n")
        written.append(path)
    return written


def main(write: Callable[[Path], list[Path]]) -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    for p in write(out):
        print(f"wrote {p} ({p.stat().st_size} bytes)")


if __name__ == "__main__":
    main(write_traces)
