"""The hub's side of warm runtimes (kernelhub.spawner.warm_runtime): when to make the
user's next runtime ahead, and when to throw it away. Both are no-ops for spawners
without warm runtimes."""

from __future__ import annotations

from typing import Any


def prepare_warm_runtime(user: Any) -> None:
    """The home page is where a Start comes from: a spawner that can prepare the user's
    next runtime ahead starts on it now (in the background)."""
    if "" not in user.orm_spawners:
        return  # JupyterHub creates it on the first spawn
    prepare = getattr(user.spawners[""], "prepare_warm_runtime", None)
    if callable(prepare):
        prepare()


async def discard_warm_runtime(user: Any, server_name: str, why: str) -> None:
    """A refused start leaves nothing: not even the runtime made ahead for it."""
    if server_name not in user.orm_spawners:
        return
    discard = getattr(user.spawners[server_name], "discard_warm_runtime", None)
    if callable(discard):
        await discard(why)


async def settle_warm_runtime(user: Any, server_name: str) -> None:
    """A Start through the REST API: JupyterHub resets the spawner as the spawn begins,
    so a warm runtime still being made for it is finished first (else it cannot match
    the spawn, and the start is cold)."""
    if server_name not in user.orm_spawners:
        return
    settle = getattr(user.spawners[server_name], "settle_warm_runtime", None)
    if callable(settle):
        await settle()
