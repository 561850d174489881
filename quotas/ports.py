"""What the quota daemon needs of its collaborators: only the calls it makes.

The real ones are ``HubApi``, ``ProcessScanner`` and ``MiningDetector``; tests and
``benchmarks/quotad.py`` pass small fakes that satisfy these Protocols structurally.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from kernelhub.quotas.hub_api import KernelReport, ServerInfo

if TYPE_CHECKING:  # the detector's module loads only where a detector is made
    from kernelhub.quotas.detector import RuntimeObservation
    from kernelhub.quotas.runtimes import LocalRoot, RuntimeUsage


class HubClient(Protocol):
    """The hub's REST API as the daemon uses it (never a user's server)."""

    async def servers(self) -> list[ServerInfo]: ...

    async def kernel_reports(self) -> Mapping[str, KernelReport]:
        """The runtimes' own kernel reports by ``user/server``, in one call; empty where
        the hub cannot tell."""
        ...

    async def stop_server(self, user: str, server: str) -> bool: ...


class Scanner(Protocol):
    """Reads the host's processes (blocking: the daemon runs it in a thread).

    ``local_roots`` are the local runtimes' outermost processes by PID, from the
    servers the hub reported this cycle (``runtime_view.local_roots``): a local
    process is a runtime's by descent from its root, never by what it says of itself.
    """

    def scan(self, local_roots: Mapping[int, LocalRoot], /) -> Mapping[str, RuntimeUsage]: ...


class Decision(Protocol):
    """A detector's verdict on one runtime."""

    @property
    def flagged(self) -> bool: ...

    def explain(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class Detector(Protocol):
    """Judges each runtime's behaviour over a window of observations."""

    def observe(self, obs: RuntimeObservation, /) -> Decision: ...

    def forget(self, runtime: str) -> None: ...
