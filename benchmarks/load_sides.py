"""The two hubs hub_load.py loads, set up: their users signed in, their runtimes started.

kernelhub (local or Docker runtimes) and stock JupyterHub configured alike; each
user signed in through the login form (session cookie kept) and given an API
token; the first users' runtimes started through the REST API.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from hub_profile import profile_env
from hubs import IMAGE, DockerStockHub, Failed, Side, log, spawn_until_ready
from startup import StockHub

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import HubProcess, free_port, write_test_credentials

DOCKER_MEM, DOCKER_CPU = "512M", 0.5
SETUP_CONCURRENCY = 4  # sign-ins (bcrypt) and spawns at once, outside the clock
REQUEST_TIMEOUT = 30.0


@dataclass
class LoadSide(Side):
    """One hub under test: its users' tokens and session cookies (never printed)."""

    kind: str = "local"
    cookies: dict[str, str] = field(default_factory=dict, repr=False)
    passwords: dict[str, str] = field(default_factory=dict, repr=False)
    shared_password: str = field(default="", repr=False)  # stock: every user's


def kernelhub_side(workdir: Path, kind: str, run_prefix: str, profile: bool) -> LoadSide:
    data_dir = workdir / "kernelhub" / "data"
    write_test_credentials(data_dir, secrets.token_urlsafe(18))
    prefix = f"{run_prefix}k"
    if kind == "docker":  # benchmarks/spawn.py's set-up, with smaller limits
        config = f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "cpu", "display_name": "None (CPU)", "image": "{IMAGE}",
      "mem_limit": "{DOCKER_MEM}", "cpu_limit": {DOCKER_CPU}}},
]
c.GpuInventory.use_nvml = False
c.DockerRuntimeSpawner.prefix = "{prefix}"
c.DockerRuntimeSpawner.drive_name_template = "{prefix}-drive-{{username}}"
c.Spawner.start_timeout = 120
"""
    else:  # Unix accounts with a prefix of this run's, deleted at the end
        config = f'c.LocalRuntimeSpawner.account_prefix = "{run_prefix}-"\n'
    hub = HubProcess(data_dir=data_dir, port=free_port(), config_text=config, runtimes=kind)
    if profile:
        hub.env = profile_env(workdir, "kernelhub")
    return LoadSide("kernelhub", hub, prefix, {"runtime": "cpu"}, kind=kind)


@dataclass
class LoadDockerStockHub(DockerStockHub):
    def settings(self) -> dict[str, object]:
        return {
            **super().settings(),
            "DockerSpawner.mem_limit": DOCKER_MEM,
            "DockerSpawner.cpu_limit": DOCKER_CPU,
        }


def stock_side(workdir: Path, kind: str, run_prefix: str, gateway: str, profile: bool) -> LoadSide:
    data_dir, prefix = workdir / "stock" / "data", f"{run_prefix}s"
    hub: StockHub
    if kind == "docker":
        hub = LoadDockerStockHub(
            data_dir=data_dir, port=free_port(), prefix=prefix, gateway=gateway
        )
    else:
        hub = StockHub(data_dir=data_dir, port=free_port())
    # nativeauthenticator 1.3's login form fails on JupyterHub 6 (HTTP 500): stock's
    # own shared-password authenticator signs the users in through the same form
    password = secrets.token_urlsafe(18)
    with hub.config_path.open("a") as config:
        config.write(
            'c.JupyterHub.authenticator_class = "shared-password"\n'
            f"c.SharedPasswordAuthenticator.user_password = {password!r}\n"
            "c.Spawner.start_timeout = 120\n"
        )
    if profile:
        hub.env = profile_env(workdir, "stock")
    side = LoadSide("stock", hub, prefix, None, kind=kind)
    side.shared_password = password
    return side


# ---------------------------------------------------------------- users and runtimes


def xsrf(client: httpx.AsyncClient) -> str:
    return next((str(c.value) for c in client.cookies.jar if c.name == "_xsrf"), "")


async def sign_in(side: LoadSide, user: str) -> None:
    """Sign ``user`` in through the login form; keep the session cookie.

    The login's redirect is not followed: stock JupyterHub's next page (/hub/spawn)
    would start the user's server.
    """
    async with httpx.AsyncClient(base_url=side.hub.url, timeout=REQUEST_TIMEOUT) as browser:
        await browser.get("/hub/login")
        form = {"username": user, "password": side.passwords[user], "_xsrf": xsrf(browser)}
        answer = await browser.post("/hub/login", data=form)
        where = answer.headers.get("location", "")
        names = {c.name for c in browser.cookies.jar}
        if (
            answer.status_code != 302
            or "/hub/login" in where
            or "jupyterhub-hub-login" not in names
        ):
            raise Failed(f"{side.name} sign-in of {user} failed: HTTP {answer.status_code}")
        side.cookies[user] = "; ".join(f"{c.name}={c.value}" for c in browser.cookies.jar)


def make_user(side: LoadSide, user: str) -> None:
    """kernelhub: the account, its password and a token (the harness's helpers, sync)."""
    side.passwords[user] = side.hub.password(user)
    side.tokens[user] = side.hub.token(user)


async def set_up_users(side: LoadSide, users: list[str]) -> None:
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(user: str) -> None:
        async with gate:
            side.check_alive()
            if side.name == "kernelhub":
                await asyncio.to_thread(make_user, side, user)
                await sign_in(side, user)
            else:  # the shared password; the first sign-in creates the user
                side.passwords[user] = side.shared_password
                await sign_in(side, user)
                side.tokens[user] = await asyncio.to_thread(side.hub.token, user)

    t0 = time.monotonic()
    await asyncio.gather(*(one(u) for u in users))
    log(f"{side.name}: {len(users)} users signed in, with tokens, in {time.monotonic() - t0:.0f}s")


async def start_runtimes(side: LoadSide, users: list[str]) -> None:
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=side.hub.url, timeout=REQUEST_TIMEOUT) as client:

        async def one(user: str) -> None:
            async with gate:
                await spawn_until_ready(client, side, user, time.monotonic())

        await asyncio.gather(*(one(u) for u in users))
    log(f"{side.name}: {len(users)} runtimes ready in {time.monotonic() - t0:.0f}s")
