"""Write the synthetic traces that only the mining detector's evaluation uses.

Like make_synthetic_traces.py (whose four traces labels.json also uses): one
seeded random.Random per trace, only its uniform draws and arithmetic, so every
run writes the same bytes; tests/test_quota_detector.py regenerates and compares.

    .venv/bin/python tests/data/make_labelled_traces.py [OUTPUT_DIR]
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable, Iterator
from pathlib import Path

from kernelhub.quotas.telemetry import GpuProcessSample, GpuSample

# the sibling script's writer (loaded by path: tests/data is not a package)
_spec = importlib.util.spec_from_file_location(
    "make_synthetic_traces", Path(__file__).resolve().parent / "make_synthetic_traces.py"
)
assert _spec is not None and _spec.loader is not None
make_synthetic_traces = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_synthetic_traces)

MIB = 1024**2
GIB = 1024**3
SECONDS = 600  # ten minutes at one sample per second
START = 1767312000.0  # 2026-01-02T00:00:00Z
NAME = "NVIDIA H100 80GB HBM3"
UUID = "GPU-5e17e71c-0000-4000-8000-000000000001"  # "synthetic"; not a real board
MEM_TOTAL = 80 * GIB
RESERVED = 544 * MIB  # the driver's share of "used" with any context open
MINING_STARTS = 300  # training_then_mining: the training cell ends, the miner starts


def _gpu(
    sm: float, process_mem: int, power: float, clock: int, rx: int, tx: int, pid: int
) -> GpuSample:
    sm = float(round(min(100.0, max(0.0, sm))))
    return GpuSample(
        index=0,
        uuid=UUID,
        name=NAME,
        sm_util=sm,
        mem_util=float(round(sm * 0.4)),
        mem_used_bytes=process_mem + RESERVED,
        mem_total_bytes=MEM_TOTAL,
        power_watts=round(min(700.0, max(60.0, power)), 1),
        sm_clock_mhz=clock,
        pcie_rx_kbps=max(0, rx),
        pcie_tx_kbps=max(0, tx),
        processes=(GpuProcessSample(pid, process_mem, sm),),
    )


def training_then_mining(rng: random.Random) -> Iterator[GpuSample]:
    """Five minutes of a training job, then (another process) a hash kernel."""
    for t in range(SECONDS):
        if t < MINING_STARTS:
            # as in training.jsonl: dips and a data burst at each 15 s step boundary
            boundary = t % 15 in (0, 1)
            sm = rng.uniform(25, 60) if boundary else rng.uniform(85, 100.49)
            rx = rng.randint(900_000, 1_600_000) if boundary else rng.randint(250_000, 450_000)
            memory = (66 * 1024 + (t % 45) * 6 * 1024 // 45 + rng.randint(0, 128) * 2) * MIB
            power = 80 + sm * 6.2 + rng.uniform(-15, 15)
            yield _gpu(sm, memory, power, 1980, rx, rng.randint(5_000, 25_000), 4121)
        else:
            sm = 100 if rng.random() < 0.8 else 99
            tx = rng.randint(2, 8) if t % 30 == 0 else rng.randint(0, 2)
            clock = rng.choice((1665, 1695, 1725, 1755, 1785))
            yield _gpu(sm, 1536 * MIB, rng.uniform(680, 700), clock, rng.randint(0, 4), tx, 7313)


def matmul_benchmark(rng: random.Random) -> Iterator[GpuSample]:
    """A notebook cell timing large matmuls, as busy as a miner and as steady at the end.

    For five minutes the next matrix size (4096..32768) is allocated and filled on
    the GPU every 40 s: SM 97-100 %, PCIe near zero, memory stepping by GiBs. Then
    five minutes at one size: the GPU pattern of a hash kernel, in a running cell.
    """
    sizes = (4096, 8192, 12288, 16384, 24576, 32768)
    for t in range(SECONDS):
        sweeping = t < SECONDS // 2
        n = sizes[(t // 40) % len(sizes)] if sweeping else 16384
        # three n x n bf16 matrices, plus the caching allocator's slack
        memory = 3 * n * n * 2 + 2 * GIB + rng.randint(0, 64) * MIB
        switching = sweeping and t % 40 == 0
        sm = rng.uniform(40, 70) if switching else rng.uniform(97, 100.49)
        rx = rng.randint(200, 2_000) if switching else rng.randint(0, 40)
        power = 90 + sm * 6.1 + rng.uniform(-10, 10)
        clock = 1980 if power < 650 else rng.choice((1845, 1905, 1980))
        yield _gpu(sm, memory, power, clock, rx, rng.randint(0, 40), 8090)


TRACES: dict[str, tuple[int, Callable[[random.Random], Iterator[GpuSample]]]] = {
    "training_then_mining": (11, training_then_mining),
    "matmul_benchmark": (12, matmul_benchmark),
}


def write_traces(directory: Path) -> list[Path]:
    """Write every trace as DIRECTORY/NAME.jsonl; return the paths."""
    return make_synthetic_traces.write_traces(directory, TRACES, START)


if __name__ == "__main__":
    make_synthetic_traces.main(write_traces)
