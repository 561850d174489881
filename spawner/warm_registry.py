"""The hub's warm runtimes (warm_runtime.py), and what makes one claimable: its fingerprint."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from kernelhub.contract import WARM_LABEL, WARM_PORT_ENV, WARM_SECRET_ENV, WARM_TTL_ENV

# what the hub fills in per spawn: the activation sends them, the fingerprint leaves them
# out. Only variables the server reads when it starts may be here, never at import: the
# launcher imports the server before it has them (and refuses an activation that
# changes anything else). JupyterHub reads e.g. JUPYTERHUB_SERVICE_PREFIX at import, so
# a warm runtime is made with the server's URLs as its spawn will set them.
PER_SPAWN_ENV = frozenset({"JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", "JUPYTERHUB_PUBLIC_URL"})
WARM_ENV = frozenset({WARM_SECRET_ENV, WARM_PORT_ENV, WARM_TTL_ENV})


def fingerprint_parts(create_kwargs: dict[str, Any], image_id: str) -> dict[str, str]:
    """A hash of each part of a container create request (each environment variable and
    label on its own): which parts differ says why a claim failed, without their values."""
    environment = create_kwargs.get("environment") or {}
    labels = create_kwargs.get("labels") or {}
    parts: dict[str, Any] = {
        **{k: v for k, v in create_kwargs.items() if k not in ("environment", "labels")},
        **{f"environment.{k}": v for k, v in environment.items() if k not in PER_SPAWN_ENV},
        **{f"labels.{k}": v for k, v in labels.items() if k != WARM_LABEL},
        "image_id": image_id,
    }
    parts = {k: v for k, v in parts.items() if k.removeprefix("environment.") not in WARM_ENV}
    # repr() of anything JSON cannot write: an object's address differs each time, so an
    # unexpected value can only make a claim fail (a cold start), never match wrongly
    return {
        k: hashlib.sha256(json.dumps(v, sort_keys=True, default=repr).encode()).hexdigest()
        for k, v in parts.items()
    }


def fingerprint_of(create_kwargs: dict[str, Any], image_id: str) -> str:
    """What a container create request would make, as one hash: the same for a warm
    runtime and the spawn that may claim it, different for any other."""
    parts = fingerprint_parts(create_kwargs, image_id)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def parts_differing(made: dict[str, str], wanted: dict[str, str]) -> list[str]:
    return sorted(k for k in made.keys() | wanted.keys() if made.get(k) != wanted.get(k))


@dataclass
class WarmRecord:
    container_id: str
    fingerprint: str
    parts: dict[str, str]  # fingerprint_parts: names what a failed claim differed in
    secret: str
    created: float  # time.monotonic()
    spawner: Any  # the WarmRuntimeMixin that made it (and removes it)


class WarmRuntimes:
    """The hub's warm runtimes, by runtime key; in memory only (a restarted hub makes new
    ones, and the launchers of the old exit by themselves)."""

    def __init__(self) -> None:
        self.ready: dict[str, WarmRecord] = {}
        self.making: dict[str, asyncio.Task[None]] = {}

    def count(self) -> int:
        return len(self.ready) + len(self.making)

    def take(self, key: str) -> WarmRecord | None:
        return self.ready.pop(key, None)

    async def reap(self) -> None:
        """Remove those unclaimed for their spawner's ``warm_runtime_idle_timeout``."""
        now = time.monotonic()
        for key, record in list(self.ready.items()):
            idle_timeout = record.spawner.warm_runtime_idle_timeout
            if now - record.created >= idle_timeout and self.ready.get(key) is record:
                del self.ready[key]
                await record.spawner.remove_warm(record.container_id, "unused")

    async def remove_all(self) -> None:
        for task in list(self.making.values()):
            task.cancel()
        await asyncio.gather(*self.making.values(), return_exceptions=True)
        records, self.ready = list(self.ready.values()), {}
        await asyncio.gather(
            *(r.spawner.remove_warm(r.container_id, "the hub stops") for r in records)
        )
