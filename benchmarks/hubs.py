"""Drives the hubs under test: kernelhub's Docker hub and stock JupyterHub + DockerSpawner.

Shared by spawn.py, hub_load.py, first_cell.py and swarm_spawn.py: the hubs'
configuration (same image and limits on both), starting and stopping a hub, a
server spawned and stopped through the REST API with each user's own token, and
the clean-up of every hub, container and volume a run started.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import httpx
from startup import StockHub, stop_hub

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import HubProcess, free_port, write_test_credentials

IMAGE = "kernelhub/runtime-test:latest"
MEM_LIMIT = "1G"
CPU_LIMIT = 1.0
SPAWN_TIMEOUT = 120.0  # one spawn (also c.Spawner.start_timeout / http_timeout)
STOP_TIMEOUT = 90.0  # DELETE until the container is gone
HUB_START_TIMEOUT = 90.0
POLL_INTERVAL = 0.05  # api/status polling, per user
STATUS_TIMEOUT = 10.0  # one api/status request
SPAWN_CHECK_INTERVAL = 2.0  # while polling: does the hub still list the spawning server?


def kernelhub_config(prefix: str, image: str, warm_max: int = 0) -> str:
    """The Docker hub's configuration; ``warm_max`` > 0: warm runtimes on, for that many
    users at once (benchmarks/warm_prep.py); 0: off (they are on by default)."""
    warm = (
        "c.DockerRuntimeSpawner.warm_runtimes = True\n"
        f"c.DockerRuntimeSpawner.warm_runtimes_max = {warm_max}\n"
        "c.DockerRuntimeSpawner.warm_runtime_idle_timeout = 600\n"
        if warm_max
        else "c.DockerRuntimeSpawner.warm_runtimes = False\n"
    )
    return (
        warm
        + f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "cpu", "display_name": "None (CPU)", "image": "{image}",
      "mem_limit": "{MEM_LIMIT}", "cpu_limit": {CPU_LIMIT}}},
]
c.RuntimeCatalog.max_running_runtimes_per_user = 2
c.GpuInventory.use_nvml = False
c.DockerRuntimeSpawner.prefix = "{prefix}"
c.DockerRuntimeSpawner.drive_name_template = "{prefix}-drive-{{username}}"
c.Spawner.start_timeout = {int(SPAWN_TIMEOUT)}
c.Spawner.http_timeout = {int(SPAWN_TIMEOUT)}
"""
    )


@dataclass
class DockerStockHub(StockHub):
    """Stock JupyterHub with stock DockerSpawner, configured like kernelhub's Docker hub."""

    prefix: str = ""
    gateway: str = ""
    image: str = IMAGE

    def settings(self) -> dict[str, object]:
        settings = {
            key: value
            for key, value in super().settings().items()
            if not key.startswith("SimpleLocalProcessSpawner.")
            and key not in ("Spawner.cmd", "Spawner.args")
        }
        settings.update(
            {
                "JupyterHub.spawner_class": "docker",
                # containers reach the hub's API on the engine's bridge, as in kernelhub
                "JupyterHub.hub_ip": self.gateway,
                "JupyterHub.hub_connect_ip": self.gateway,
                "DockerSpawner.image": self.image,
                "DockerSpawner.pull_policy": "never",
                "DockerSpawner.remove": True,
                "DockerSpawner.prefix": self.prefix,
                "DockerSpawner.notebook_dir": "/home/jovyan",
                # the limits of kernelhub's runtime type, so both run the same container
                "DockerSpawner.mem_limit": MEM_LIMIT,
                "DockerSpawner.cpu_limit": CPU_LIMIT,
                "Spawner.start_timeout": int(SPAWN_TIMEOUT),
                "Spawner.http_timeout": int(SPAWN_TIMEOUT),
            }
        )
        return settings


@dataclass
class Side:
    """One hub under test, with its users' tokens (kept out of every message)."""

    name: str
    hub: HubProcess
    prefix: str
    options: dict[str, str] | None
    tokens: dict[str, str] = field(default_factory=dict, repr=False)

    def headers(self, user: str) -> dict[str, str]:
        if user not in self.tokens:
            self.tokens[user] = self.hub.token(user)
        return {"Authorization": f"token {self.tokens[user]}"}

    def container_name(self, user: str) -> str:
        return f"{self.prefix}-{user}"  # DockerSpawner's name_template for default servers

    def check_alive(self) -> None:
        proc = self.hub.proc
        if proc is None or proc.poll() is not None:
            code = proc.returncode if proc else None
            raise RuntimeError(f"the {self.name} hub exited ({code}); its log: {self.hub.log_path}")


class Failed(Exception):
    """A step of the benchmark failed; the message says which and why."""


# ---------------------------------------------------------------- spawning


def check_post(post: asyncio.Task[httpx.Response], what: str) -> None:
    """Raise if the (finished) spawn request failed or was refused."""
    error = post.exception()
    if error is not None:
        raise Failed(f"{what}: spawn request failed: {error!r}") from error
    response = post.result()
    if response.status_code not in (201, 202):
        raise Failed(f"{what}: spawn refused: HTTP {response.status_code} {response.text[:300]}")


async def poll_status(
    client: httpx.AsyncClient,
    side: Side,
    user: str,
    deadline: float,
    interval: float = POLL_INTERVAL,
    post: asyncio.Task[httpx.Response] | None = None,
) -> float:
    """Poll api/status through the proxy until 200; the monotonic time it answered.

    Fails at ``deadline``, if the hub exits, or if ``post`` (the spawn request)
    comes back refused.
    """
    headers = side.headers(user)
    what = f"{side.name} spawn of {user}"
    next_check = time.monotonic() + SPAWN_CHECK_INTERVAL
    while True:
        side.check_alive()
        if post is not None and post.done():
            check_post(post, what)
            if time.monotonic() >= next_check:
                # a spawn that failed after its 202 would otherwise be polled until the deadline
                next_check = time.monotonic() + SPAWN_CHECK_INTERVAL
                await check_still_spawning(client, side, user, headers)
        with contextlib.suppress(httpx.HTTPError):
            status = await client.get(
                f"/user/{user}/api/status", headers=headers, timeout=STATUS_TIMEOUT
            )
            if status.status_code == 200:
                return time.monotonic()
        if time.monotonic() > deadline:
            raise Failed(f"{what}: api/status did not answer in time")
        await asyncio.sleep(interval)


async def check_still_spawning(
    client: httpx.AsyncClient, side: Side, user: str, headers: dict[str, str]
) -> None:
    """Raise, with the hub's error lines about ``user``, if the hub lists no server for them."""
    with contextlib.suppress(httpx.HTTPError):
        model = await client.get(f"/hub/api/users/{user}", headers=headers)
        if model.status_code == 200 and "" not in (model.json().get("servers") or {}):
            errors = [
                line[:300]
                for line in side.hub.log().splitlines()
                if user in line and line.startswith(("[E", "[W"))
            ]
            raise Failed(
                f"{side.name} spawn of {user} failed; the hub's errors about it:\n"
                + "\n".join(errors[-8:] or ["(none logged)"])
            )


async def spawn_until_ready(
    client: httpx.AsyncClient,
    side: Side,
    user: str,
    t0: float,
    interval: float = POLL_INTERVAL,
    timeout: float = SPAWN_TIMEOUT,
) -> float:
    """POST the spawn and poll api/status meanwhile; the monotonic time it answered.

    ``t0`` is when the caller started the clock (just before calling this). The
    POST runs as a task while api/status is polled, so a hub that holds the POST
    until the spawn is done (stock: up to slow_spawn_timeout) is timed the same
    way as one that answers 202 at once.
    """
    body = {"user_options": side.options} if side.options else None
    what = f"{side.name} spawn of {user}"
    post = asyncio.create_task(
        client.post(
            f"/hub/api/users/{user}/server",
            json=body,
            headers=side.headers(user),
            timeout=timeout,
        )
    )
    deadline = t0 + timeout
    try:
        answered = await poll_status(client, side, user, deadline, interval, post)
        # the POST's own answer (stock JupyterHub may still hold it), then check it
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(post), max(1.0, deadline - time.monotonic()))
        if not post.done():
            raise Failed(f"{what}: the spawn request was not answered within {timeout:.0f}s")
        check_post(post, what)
        return answered
    finally:
        if not post.done():
            post.cancel()
            with contextlib.suppress(BaseException):
                await post


async def stop_until_gone(
    client: httpx.AsyncClient, side: Side, user: str, engine: docker.DockerClient
) -> float:
    """DELETE the user's server; seconds until the hub lists none and the container is gone."""
    headers = side.headers(user)
    what = f"{side.name} stop of {user}"
    t0 = time.monotonic()
    response = await client.delete(f"/hub/api/users/{user}/server", headers=headers)
    if response.status_code not in (202, 204):
        raise Failed(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    name = side.container_name(user)
    while time.monotonic() - t0 < STOP_TIMEOUT:
        side.check_alive()
        model = await client.get(f"/hub/api/users/{user}", headers=headers)
        if (
            model.status_code == 200
            and not model.json().get("servers")
            and not await asyncio.to_thread(container_exists, engine, name)
        ):
            return time.monotonic() - t0
        await asyncio.sleep(POLL_INTERVAL * 2)
    raise Failed(f"{what}: server or container {name} still there after {STOP_TIMEOUT:.0f}s")


def container_exists(engine: docker.DockerClient, name: str) -> bool:
    try:
        engine.containers.get(name)
    except docker.errors.NotFound:
        return False
    return True


# ---------------------------------------------------------------- hubs and clean-up


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_hub(side: Side) -> None:
    side.hub.start(wait=False)
    try:
        side.hub.wait_ready(timeout=HUB_START_TIMEOUT)
    except (RuntimeError, TimeoutError) as e:
        first_line = str(e).splitlines()[0][:300]
        raise Failed(f"the {side.name} hub did not start: {first_line}") from None


def kernelhub_side(workdir: Path, prefix: str, image: str, warm_max: int = 0) -> Side:
    data_dir = workdir / "kernelhub" / "data"
    write_test_credentials(data_dir, secrets.token_urlsafe(18))
    hub = HubProcess(
        data_dir=data_dir,
        port=free_port(),
        config_text=kernelhub_config(prefix, image, warm_max),
        runtimes="docker",
    )
    return Side("kernelhub", hub, prefix, {"runtime": "cpu"})


def stock_side(
    workdir: Path,
    prefix: str,
    gateway: str,
    image: str,
    hub_class: type[DockerStockHub] = DockerStockHub,
) -> Side:
    hub = hub_class(
        data_dir=workdir / "stock" / "data",
        port=free_port(),
        prefix=prefix,
        gateway=gateway,
        image=image,
    )
    return Side("stock", hub, prefix, None)  # stock DockerSpawner takes no options


def remove_docker_objects(engine: docker.DockerClient, run_prefix: str) -> None:
    """Remove every container, then every volume, whose name carries this run's prefix."""
    for container in engine.containers.list(all=True, filters={"name": run_prefix}):
        if run_prefix in container.name:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
    for volume in engine.volumes.list(filters={"name": run_prefix}):
        if run_prefix in volume.name:
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)


STARTED_HUBS: list[HubProcess] = []  # main() stops any still running, whatever happened


@contextlib.contextmanager
def running(side: Side) -> Iterator[Side]:
    """The side's hub, started; stopped with SIGINT (then killed) however the block ends."""
    STARTED_HUBS.append(side.hub)
    try:
        start_hub(side)
        yield side
    except Exception:
        log(f"----- the {side.name} hub's log (tail) -----\n{side.hub.log()[-6000:]}")
        raise
    finally:
        stop_hub(side.hub)


def terminate_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through every finally: hubs, containers

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def run_docker_benchmark(
    what: str,
    tag: str,
    run: Callable[[docker.DockerClient, Path, str], Coroutine[object, object, None]],
) -> None:
    """Run ``run(engine, workdir, run_prefix)``; whatever happens, stop every hub it
    started, remove every container and volume named with the run's prefix, and the
    temporary directory. A ``Failed`` run says why in one line and exits 1."""
    terminate_on_sigterm()
    run_prefix = f"{tag}{secrets.token_hex(3)}"
    workdir = Path(tempfile.mkdtemp(prefix=f"kernelhub-{what.replace(' ', '-')}-bench-"))
    engine = docker.from_env(timeout=60)
    try:
        asyncio.run(run(engine, workdir, run_prefix))
    except Failed as e:
        log(f"{what} benchmark failed: {e}")
        sys.exit(1)
    finally:
        for hub in STARTED_HUBS:
            stop_hub(hub)
        try:
            remove_docker_objects(engine, run_prefix)
        finally:
            engine.close()
            shutil.rmtree(workdir, ignore_errors=True)
