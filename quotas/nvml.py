"""GPU telemetry from NVML (the ``pynvml`` module of nvidia-ml-py).

Every NVML call blocks (PCIe throughput alone samples for about 20 ms per
counter), so each sample is taken in one trip through ``run_blocking`` and the
event loop never waits on the driver. A host without NVML is not an error:
telemetry reports itself unavailable, logs why once, and samples no GPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from kernelhub.executor import run_blocking
from kernelhub.quotas.clock import Clock, SystemClock
from kernelhub.quotas.telemetry import (
    GpuProcessSample,
    GpuSample,
    TelemetryError,
    TelemetrySample,
)

log = logging.getLogger(__name__)

# Errors that mean "this device or driver cannot give that measurement": the
# field becomes None and the rest of the sample stands.
_UNSUPPORTED_ERRORS = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND")


@dataclass(frozen=True)
class _Device:
    """What does not change while the daemon runs, read once at open()."""

    index: int
    handle: Any
    uuid: str
    name: str
    mem_total_bytes: int


class NvmlTelemetry:
    """``GpuTelemetry`` read from the host's GPUs through NVML.

    ``nvml`` replaces the ``pynvml`` module (tests pass a fake driver).
    Use ``async with NvmlTelemetry() as t`` or ``await t.open()`` ... ``await t.close()``;
    ``sample()`` opens on first use.
    """

    def __init__(self, clock: Clock | None = None, nvml: Any = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._nvml = nvml
        self._devices: tuple[_Device, ...] = ()
        self._available = False
        self._reason = "NVML not opened yet"
        self._opened = False
        self._initialized = False  # nvmlInit succeeded, so close() must shut down
        # per GPU: NVML's timestamp (µs) of the newest process-utilization sample seen
        self._util_since: dict[int, int] = {}
        # one sample at a time: _util_since is read and written by each
        self._lock = asyncio.Lock()

    @property
    def available(self) -> bool:
        return self._available

    @property
    def reason(self) -> str:
        """Why GPUs cannot be sampled; '' when they can."""
        return self._reason

    async def open(self, *, log_unavailable: bool = True) -> NvmlTelemetry:
        """Initialize NVML and find the GPUs; logs one line if sampling is off.

        ``log_unavailable=False`` is for callers that report ``reason`` themselves.
        """
        if not self._opened:
            self._opened = True
            await run_blocking(self._open_blocking)
            if self._available:
                log.info("GPU sampling through NVML: %d GPU(s)", len(self._devices))
            elif log_unavailable:
                log.warning("GPU sampling is off: %s", self._reason)
        return self

    async def close(self) -> None:
        if self._initialized:
            await run_blocking(self._shutdown_blocking)
        if self._available:  # an unavailable one keeps saying why
            self._available = False
            self._reason = "NVML closed"

    async def __aenter__(self) -> NvmlTelemetry:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def sample(self) -> TelemetrySample:
        """Every GPU now; no GPUs when unavailable. TelemetryError if NVML fails."""
        await self.open()
        async with self._lock:
            now = self._clock.now()
            if not self._available:
                return TelemetrySample(now, ())
            gpus = await run_blocking(self._sample_blocking)
            return TelemetrySample(now, gpus)

    # --- blocking: runs on the shared executor ---

    def _open_blocking(self) -> None:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as e:  # pragma: no cover - nvidia-ml-py is a dependency
                self._reason = f"NVML unavailable: nvidia-ml-py is not installed ({e})"
                return
            self._nvml = pynvml
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except (nvml.NVMLError, OSError) as e:
            self._reason = f"NVML unavailable: {e}"
            return
        self._initialized = True
        try:
            self._devices = tuple(self._device(index) for index in range(nvml.nvmlDeviceGetCount()))
        except (nvml.NVMLError, TelemetryError) as e:
            self._reason = f"NVML unavailable: listing GPUs failed ({e})"
            self._shutdown_blocking()
            return
        if not self._devices:
            self._reason = "NVML found no GPU on this host"
            self._shutdown_blocking()
            return
        self._available = True
        self._reason = ""

    def _device(self, index: int) -> _Device:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = self._maybe(index, nvml.nvmlDeviceGetMemoryInfo, handle)
        return _Device(
            index=index,
            handle=handle,
            uuid=str(nvml.nvmlDeviceGetUUID(handle)),
            name=str(nvml.nvmlDeviceGetName(handle)),
            mem_total_bytes=int(memory.total) if memory is not None else 0,
        )

    def _shutdown_blocking(self) -> None:
        self._initialized = False
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()

    def _sample_blocking(self) -> tuple[GpuSample, ...]:
        return tuple(self._sample_device(device) for device in self._devices)

    def _sample_device(self, device: _Device) -> GpuSample:
        nvml, handle, index = self._nvml, device.handle, device.index
        rates = self._maybe(index, nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = self._maybe(index, nvml.nvmlDeviceGetMemoryInfo, handle)
        power_mw = self._maybe(index, nvml.nvmlDeviceGetPowerUsage, handle)
        sm_clock = self._maybe(index, nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM)
        rx = self._maybe(
            index, nvml.nvmlDeviceGetPcieThroughput, handle, nvml.NVML_PCIE_UTIL_RX_BYTES
        )
        tx = self._maybe(
            index, nvml.nvmlDeviceGetPcieThroughput, handle, nvml.NVML_PCIE_UTIL_TX_BYTES
        )
        running = self._maybe(index, nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
        utils = self._process_utilization(device)
        processes = tuple(
            GpuProcessSample(
                pid=int(p.pid),
                # None where the driver cannot attribute memory (WDDM): 0, not unknown-fail
                used_memory_bytes=int(p.usedGpuMemory or 0),
                sm_util=None if utils is None else utils.get(int(p.pid), 0.0),
            )
            for p in running
        )
        return GpuSample(
            index=index,
            uuid=device.uuid,
            name=device.name,
            sm_util=None if rates is None else float(rates.gpu),
            mem_util=None if rates is None else float(rates.memory),
            mem_used_bytes=0 if memory is None else int(memory.used),
            mem_total_bytes=device.mem_total_bytes,
            power_watts=None if power_mw is None else power_mw / 1000.0,
            sm_clock_mhz=None if sm_clock is None else int(sm_clock),
            pcie_rx_kbps=None if rx is None else int(rx),
            pcie_tx_kbps=None if tx is None else int(tx),
            processes=processes,
        )

    def _process_utilization(self, device: _Device) -> dict[int, float] | None:
        """SM % per PID since the previous sample; None where the GPU cannot tell.

        NVML keeps a buffer of per-process samples taken while processes run;
        a process with no sample since last time did not use the SMs (0 %), and
        NOT_FOUND means no process did. Several samples of one PID are averaged
        so the figure covers the whole interval, not its last instant.
        """
        nvml = self._nvml
        since = self._util_since.get(device.index, 0)
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(device.handle, since)
        except nvml.NVMLError as e:
            if _error_is(nvml, e, "NVML_ERROR_NOT_FOUND"):
                return {}
            if _error_is(nvml, e, *_UNSUPPORTED_ERRORS):
                return None
            raise TelemetryError(f"GPU {device.index}: process utilization: {e}") from e
        per_pid: dict[int, list[float]] = {}
        for s in samples:
            if s.timeStamp > since:
                per_pid.setdefault(int(s.pid), []).append(float(s.smUtil))
                self._util_since[device.index] = max(
                    self._util_since.get(device.index, 0), int(s.timeStamp)
                )
        return {pid: min(100.0, sum(v) / len(v)) for pid, v in per_pid.items()}

    def _maybe(self, index: int, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, or None where the device does not support it."""
        nvml = self._nvml
        try:
            return fn(*args)
        except nvml.NVMLError as e:
            if _error_is(nvml, e, *_UNSUPPORTED_ERRORS):
                return None
            name = getattr(fn, "__name__", "NVML call")
            raise TelemetryError(f"GPU {index}: {name}: {e}") from e


def _error_is(nvml: Any, error: Any, *names: str) -> bool:
    codes = {getattr(nvml, name) for name in names if hasattr(nvml, name)}
    return getattr(error, "value", None) in codes
