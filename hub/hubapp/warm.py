"""The hub's side of warm runtimes (kernelhub.spawner.warm_runtime): when to make the
user's next runtime ahead, and when to throw it away. Both are no-ops for spawners
without warm runtimes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _spawner_hook(user: Any, server_name: str, name: str) -> Callable[..., Any] | None:
    """The spawner's warm-runtime method ``name``; None for a server JupyterHub has not
    created yet, or a spawner without warm runtimes."""
    if server_name not in user.orm_spawners:
        return None  # JupyterHub creates it on the first spawn
    hook = getattr(user.spawners[server_name], name, None)
    return hook if callable(hook) else None


def prepare_warm_runtime(user: Any) -> None:
    """The home page is where a Start comes from: a spawner that can prepare the user's
    next runtime ahead starts on it now (in the background)."""
    if (prepare := _spawner_hook(user, "", "prepare_warm_runtime")) is not None:
        prepare()


async def discard_warm_runtime(user: Any, server_name: str, why: str) -> None:
    """A refused start leaves nothing: not even the runtime made ahead for it."""
    if (discard := _spawner_hook(user, server_name, "discard_warm_runtime")) is not None:
        await discard(why)


async def settle_warm_runtime(user: Any, server_name: str) -> None:
    """A Start through the REST API: JupyterHub resets the spawner as the spawn begins,
    so a warm runtime still being made for it is finished first (else it cannot match
    the spawn, and the start is cold)."""
    if (settle := _spawner_hook(user, server_name, "settle_warm_runtime")) is not None:
        await settle()
