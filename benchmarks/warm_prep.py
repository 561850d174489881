"""Kernelhub's warm runtimes in the benchmarks: a user's page visit, then the wait for it.

With `c.DockerRuntimeSpawner.warm_runtimes = True` the hub makes a signed-in user's
next runtime when they open the home page or the spawn form (where its sign-in lands),
and a Start claims it. The hub's pages take no API token (JupyterHub accepts tokens
on its API only), so a user here does what a browser does: signs in through the
login form with a local password (made with the operator token, as
tests/harness.py's `HubProcess.password` makes it), then opens /hub/home again
before each later Start. `until_warm` waits until the user's container carries the
warm label and its launcher has logged that it waits for the hub's activation: what
a Start will claim. Neither step is part of any timed spawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import docker
import docker.errors
import httpx
from hubs import Failed, Side

WARM_LABEL = "org.kernelhub.warm"
WARM_READY_LINE = b"kernelhub-runtime: warm, waiting for the hub's activation"
PREPARE_TIMEOUT = 120.0  # sign-in or page visit until the warm runtime waits
PREPARE_POLL_INTERVAL = 0.1  # per user, Docker API calls


async def sign_in(session: httpx.AsyncClient, user: str, password: str) -> None:
    """The hub's login form, as a browser fills it; the answer's redirects followed (to
    the spawn form, which prepares the warm runtime)."""
    await session.get("/hub/login")
    xsrf = session.cookies.get("_xsrf")
    if xsrf is None:
        raise Failed("the kernelhub hub's login page set no _xsrf cookie")
    answer = await session.post(
        "/hub/login",
        data={"username": user, "password": password, "_xsrf": xsrf},
        follow_redirects=True,
    )
    if answer.status_code != 200 or "/hub/login" in answer.url.path:
        raise Failed(f"sign-in of {user} failed: HTTP {answer.status_code} at {answer.url.path}")


def warm_container_id(engine: docker.DockerClient, name: str) -> str | None:
    """The id of the container ``name`` once it is a warm runtime waiting for its Start."""
    try:
        container = engine.containers.get(name)
    except docker.errors.NotFound:
        return None
    if WARM_LABEL not in container.labels or container.status != "running":
        return None
    try:
        logs = container.logs()
    except docker.errors.NotFound:
        return None
    return str(container.id) if WARM_READY_LINE in logs else None


async def until_warm(
    engine: docker.DockerClient, side: Side, user: str, timeout: float = PREPARE_TIMEOUT
) -> str:
    """The id of ``user``'s warm runtime, once it waits for the hub's activation."""
    name = side.container_name(user)
    deadline = time.monotonic() + timeout
    while True:
        side.check_alive()
        found = await asyncio.to_thread(warm_container_id, engine, name)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            about = [
                line[:300]
                for line in side.hub.log().splitlines()
                if f"{user}/" in line and "arm runtime" in line
            ]
            raise Failed(
                f"no warm runtime for {user} within {timeout:.0f}s; the hub's lines about it:\n"
                + "\n".join(about[-6:] or ["(none logged)"])
            )
        await asyncio.sleep(PREPARE_POLL_INTERVAL)


@dataclass
class Warmer:
    """Each user's signed-in session on the kernelhub side, and their warm runtimes.

    ``prepare`` is what the user does before pressing Start: sign in (the first time)
    or open the home page, then the wait for the warm runtime. ``claimed`` says, from
    the hub's log, whether a Start took the warm runtime prepared for it.
    """

    side: Side
    engine: docker.DockerClient
    sessions: dict[str, httpx.AsyncClient] = field(default_factory=dict, repr=False)
    prepared: dict[str, str] = field(default_factory=dict)  # user -> warm container id
    times: list[float] = field(default_factory=list)  # seconds each preparation took
    claims: dict[bool, int] = field(default_factory=lambda: {True: 0, False: 0})

    async def prepare(self, user: str) -> float:
        """Sign in or open /hub/home, wait until the warm runtime waits; seconds taken."""
        t0 = time.monotonic()
        session = self.sessions.get(user)
        if session is None:
            password = await asyncio.to_thread(self.side.hub.password, user)
            session = httpx.AsyncClient(base_url=self.side.hub.url, timeout=30)
            self.sessions[user] = session
            await sign_in(session, user, password)
        else:
            home = await session.get("/hub/home")
            if home.status_code != 200:
                raise Failed(f"{user}'s home page: HTTP {home.status_code}")
        self.prepared[user] = await until_warm(self.engine, self.side, user)
        took = time.monotonic() - t0
        self.times.append(took)
        return took

    def claimed(self, user: str) -> bool:
        """Whether the spawn just made claimed ``user``'s warm runtime (counted)."""
        container_id = self.prepared.pop(user, "")
        line = f"Claimed the warm runtime {container_id[:12]} for {user}/"
        claimed = bool(container_id) and line in self.side.hub.log()
        self.claims[claimed] += 1
        return claimed

    def not_used(self, user: str) -> list[str]:
        """The hub's lines saying why ``user``'s warm runtime was not claimed."""
        return [
            line[:300]
            for line in self.side.hub.log().splitlines()
            if f"Warm runtime for {user}/ not used" in line
        ]

    async def close_sessions(self, users: list[str] | None = None) -> None:
        for user in list(self.sessions) if users is None else users:
            session = self.sessions.pop(user, None)
            if session is not None:
                with contextlib.suppress(httpx.HTTPError):
                    await session.aclose()
