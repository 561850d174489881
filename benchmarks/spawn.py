"""Docker runtime spawn latency: kernelhub's DockerRuntimeSpawner next to stock DockerSpawner.

    .venv/bin/python benchmarks/spawn.py --runs 10 [--profile]

One run starts a real `kernelhub up --runtimes docker` and, next to it, stock
JupyterHub (the `jupyterhub` command of the same virtualenv) running
`dockerspawner.DockerSpawner`, and takes every measurement on each in turn (the
first alternating), so that load from elsewhere on a shared machine falls on both
alike. Both start containers from the same image (kernelhub/runtime-test:latest,
or --image: an older build of it compares launchers) with the same limits (1G,
1 CPU), and both are driven the same way, through the REST API with each user's
own token:

  single spawn      `POST /hub/api/users/U/server` -> `GET /user/U/api/status`
                    answers 200 through the proxy (polled while the POST is in
                    flight: stock JupyterHub may hold it up to slow_spawn_timeout,
                    10 s). Then `DELETE` it and wait until the hub lists no server
                    and the container is gone. Repeated --runs times for one user,
                    after --warmup spawns of another user that are not counted.
  N concurrent      --concurrent new users POST at once; wall time from the first
                    POST until every runtime answers api/status (--bursts times,
                    each with new users; the median is reported).

It prints p50/p95 of the single spawns and the concurrent wall time for both, the
ratio kernelhub/stock, the targets (single p50 and concurrent <= 0.35x stock,
issue 16) and the machine's load average before and after. `--profile` adds one
more kernelhub single spawn and prints where its time goes: the progress events
(`GET /hub/api/users/U/server/progress`), the container's created/started times
and log timestamps, and the hub's log lines.

Every container and volume named with the run's unique prefix is removed at the
end, every hub is stopped with SIGINT (killed if it lingers), and the temporary
directory is removed, also when a step fails or the script is interrupted.
Tokens and passwords are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
from startup import StockHub, stop_hub

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import HubProcess, free_port, write_test_credentials

from kernelhub.runtimes.engine import check_engine

IMAGE = "kernelhub/runtime-test:latest"
MEM_LIMIT = "1G"
CPU_LIMIT = 1.0
SPAWN_TIMEOUT = 120.0  # one spawn (also c.Spawner.start_timeout / http_timeout)
BURST_TIMEOUT = 300.0  # all spawns of one concurrent burst
STOP_TIMEOUT = 90.0  # DELETE until the container is gone
HUB_START_TIMEOUT = 90.0
POLL_INTERVAL = 0.05  # api/status polling, per user
BURST_POLL_INTERVAL = 0.1  # per user, while N users poll at once
STATUS_TIMEOUT = 10.0  # one api/status request
SPAWN_CHECK_INTERVAL = 2.0  # while polling: does the hub still list the spawning server?
TARGETS = {"single": 0.35, "concurrent": 0.35}  # kernelhub/stock, at most (issue 16)


def kernelhub_config(prefix: str, image: str) -> str:
    return f"""
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


async def single_spawn(
    client: httpx.AsyncClient, side: Side, user: str, engine: docker.DockerClient
) -> tuple[float, float]:
    t0 = time.monotonic()
    answered = await spawn_until_ready(client, side, user, t0)
    stopped = await stop_until_gone(client, side, user, engine)
    return answered - t0, stopped


async def burst(
    client: httpx.AsyncClient, side: Side, users: list[str], engine: docker.DockerClient
) -> float:
    """Seconds from starting len(users) spawns at once until every runtime answers."""
    for user in users:
        side.headers(user)  # tokens first, outside the clock
    t0 = time.monotonic()
    spawns = [
        spawn_until_ready(client, side, u, t0, BURST_POLL_INTERVAL, BURST_TIMEOUT) for u in users
    ]
    results = await asyncio.gather(*spawns, return_exceptions=True)
    stops = await asyncio.gather(
        *(stop_until_gone(client, side, u, engine) for u in users), return_exceptions=True
    )
    for result in [*results, *stops]:
        if isinstance(result, BaseException):
            raise result
    answered = sorted(float(r) - t0 for r in results)  # type: ignore[arg-type]
    log(f"{side.name}: each runtime answered after " + " ".join(f"{a:.1f}" for a in answered))
    return answered[-1]


@dataclass
class Results:
    single: list[float] = field(default_factory=list)
    stop: list[float] = field(default_factory=list)
    warmup: list[float] = field(default_factory=list)
    concurrent: list[float] = field(default_factory=list)


async def measure(
    sides: list[Side], engine: docker.DockerClient, args: argparse.Namespace
) -> dict[str, Results]:
    """Every measurement taken on each side in turn, the first side alternating.

    Both hubs run all along, so a load that comes and goes on a shared machine
    falls on both alike: neither side's figures come from a quieter minute.
    """
    results = {side.name: Results() for side in sides}
    limits = httpx.Limits(max_connections=4 * args.concurrent + 8)
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            side.name: await stack.enter_async_context(
                httpx.AsyncClient(base_url=side.hub.url, timeout=30, limits=limits)
            )
            for side in sides
        }

        def in_turn(i: int) -> list[Side]:
            return sides if i % 2 == 0 else sides[::-1]

        for i in range(args.warmup):
            for side in in_turn(i):
                spawn, _ = await single_spawn(clients[side.name], side, f"warm{i}", engine)
                results[side.name].warmup.append(spawn)
                log(f"{side.name}: warm-up spawn {i + 1}: {spawn:.2f}s (not counted)")
        for i in range(args.runs):
            for side in in_turn(i):
                spawn, stop = await single_spawn(clients[side.name], side, "bench", engine)
                results[side.name].single.append(spawn)
                results[side.name].stop.append(stop)
                log(
                    f"{side.name}: single spawn {i + 1}/{args.runs}: {spawn:.2f}s "
                    f"(stop {stop:.2f}s)"
                )
        for b in range(args.bursts):
            for side in in_turn(b):
                users = [f"burst{b}u{i}" for i in range(args.concurrent)]
                wall = await burst(clients[side.name], side, users, engine)
                results[side.name].concurrent.append(wall)
                log(f"{side.name}: {args.concurrent} concurrent spawns, burst {b + 1}: {wall:.2f}s")
    return results


# ---------------------------------------------------------------- profile


def docker_time(stamp: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp from the engine (nanoseconds cut to micro)."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", stamp)
    if not match:
        raise ValueError(f"unexpected Docker timestamp {stamp!r}")
    whole, fraction, zone = match.groups()
    fraction = (fraction or ".0")[:7]
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{whole}{fraction}{zone}").timestamp()


HUB_LOG_LINE = re.compile(r"^\[(\w) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ([^\]]*)\] (.*)$")
ACCESS_LOG = re.compile(r"^\d{3} (GET|POST|PUT|PATCH|DELETE|HEAD) ")


def hub_log_events(
    hub: HubProcess, user: str, since: float, until: float
) -> list[tuple[float, str]]:
    """The hub's own log lines about ``user`` between two epoch times, without access logs.

    Its timestamps are local time to the millisecond, hence the 10 ms of slack.
    """
    events = []
    for line in hub.log().splitlines():
        match = HUB_LOG_LINE.match(line)
        if not match or user not in match.group(4) or ACCESS_LOG.match(match.group(4)):
            continue
        stamp = datetime.strptime(match.group(2), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if since - 0.01 <= stamp <= until + 0.01:
            events.append((stamp, f"[{match.group(1)} {match.group(3)}] {match.group(4)}"))
    return events


async def follow_progress(
    client: httpx.AsyncClient, user: str, headers: dict[str, str], clock: Callable[[], float]
) -> list[tuple[float, dict[str, Any]]]:
    """Progress events with the epoch time each one arrived."""
    events: list[tuple[float, dict[str, Any]]] = []
    timeout = httpx.Timeout(SPAWN_TIMEOUT)
    url = f"/hub/api/users/{user}/server/progress"
    async with client.stream("GET", url, headers=headers, timeout=timeout) as response:
        if response.status_code != 200:
            raise Failed(f"progress stream: HTTP {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[len("data:") :])
            events.append((clock(), event))
            if event.get("ready") or event.get("failed"):
                break
    return events


async def profile(side: Side, engine: docker.DockerClient, user: str) -> list[str]:
    """One kernelhub single spawn, with the time of every step it leaves a trace of."""
    headers = side.headers(user)
    body = {"user_options": side.options} if side.options else None
    async with httpx.AsyncClient(base_url=side.hub.url, timeout=30) as client:
        wall0, t0 = time.time(), time.monotonic()

        def clock() -> float:  # epoch seconds on the monotonic clock
            return wall0 + (time.monotonic() - t0)

        post = await client.post(f"/hub/api/users/{user}/server", json=body, headers=headers)
        posted = clock()
        if post.status_code not in (201, 202):
            raise Failed(f"profile spawn refused: HTTP {post.status_code} {post.text[:300]}")
        progress = asyncio.create_task(follow_progress(client, user, headers, clock))
        try:
            answered = await poll_status(client, side, user, t0 + SPAWN_TIMEOUT)
            events = await asyncio.wait_for(progress, SPAWN_TIMEOUT)
        finally:
            if not progress.done():
                progress.cancel()
                with contextlib.suppress(BaseException):
                    await progress
        container = await asyncio.to_thread(engine.containers.get, side.container_name(user))
        raw_logs = await asyncio.to_thread(container.logs, timestamps=True)
        state = container.attrs
        await stop_until_gone(client, side, user, engine)

    timeline: list[tuple[float, str, str]] = [
        (wall0, "client", f"POST /hub/api/users/{user}/server sent"),
        (posted, "client", f"POST answered {post.status_code}"),
    ]
    for arrived, event in events:
        timeline.append((arrived, "progress", f"{event.get('progress', '')}% {event['message']}"))
    created, started = docker_time(state["Created"]), docker_time(state["State"]["StartedAt"])
    timeline.append((created, "docker", f"container {container.name} created"))
    timeline.append((started, "docker", "container started"))
    lines = [line for line in raw_logs.decode(errors="replace").splitlines() if " " in line]
    first_log = running = None
    for line in lines:
        stamp_text, text = line.split(" ", 1)
        stamp = docker_time(stamp_text)
        if first_log is None:
            first_log = stamp
            timeline.append((stamp, "container", f"first log line: {text.strip()[:90]}"))
        if running is None and "Jupyter Server" in text and "is running at" in text:
            running = stamp
            timeline.append((stamp, "container", f"log: {text.strip()[:90]}"))
    noticed = None  # the hub's HTTP check of the new server first succeeded
    for stamp, text in hub_log_events(side.hub, user, wall0, clock_at(answered, wall0, t0)):
        timeline.append((stamp, "hub log", text[:110]))
        if noticed is None and re.search(rf"User {re.escape(user)} took [\d.]+ seconds", text):
            noticed = stamp
    timeline.append(
        (clock_at(answered, wall0, t0), "client", f"GET /user/{user}/api/status -> 200")
    )
    timeline.sort(key=lambda item: item[0])

    out = [
        f"Profile: one kernelhub single spawn of {user} (its drive exists already); "
        "t = seconds since the POST",
        "(progress events are stamped when they reach this client: events the spawner "
        "recorded before the stream opened arrive together)",
    ]
    out += [f"  {t - wall0:7.3f}  {source:<9}  {text}" for t, source, text in timeline]
    done = clock_at(answered, wall0, t0)
    ready = next((t for t, e in events if e.get("ready")), None)
    out.append("Where the time goes (seconds):")
    spans = [("POST -> container created (hub, Docker API calls)", wall0, created)]
    spans.append(("container created -> started (Docker)", created, started))
    if first_log is not None:
        spans.append(("started -> first log line (process start, imports)", started, first_log))
        if running is not None:
            spans.append(("first log line -> 'Jupyter Server is running'", first_log, running))
    if running is not None and noticed is not None:
        spans.append(("'is running' -> hub's HTTP check passes (its back-off)", running, noticed))
        if ready is not None:
            spans.append(("hub's check passes -> ready event (proxy route, db)", noticed, ready))
    elif running is not None:
        until = ready if ready is not None else done
        spans.append(("'is running' -> hub's ready event", running, until))
    if ready is not None:
        spans.append(("ready event -> api/status 200 through the proxy", ready, done))
    spans.append(("total: POST -> api/status 200", wall0, done))
    out += [f"  {label:<62}{end - start:7.3f}" for label, start, end in spans]
    return out


def clock_at(monotonic: float, wall0: float, t0: float) -> float:
    return wall0 + (monotonic - t0)


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


def kernelhub_side(workdir: Path, prefix: str, image: str) -> Side:
    data_dir = workdir / "kernelhub" / "data"
    write_test_credentials(data_dir, secrets.token_urlsafe(18))
    hub = HubProcess(
        data_dir=data_dir,
        port=free_port(),
        config_text=kernelhub_config(prefix, image),
        runtimes="docker",
    )
    return Side("kernelhub", hub, prefix, {"runtime": "cpu"})


def stock_side(workdir: Path, prefix: str, gateway: str, image: str) -> Side:
    hub = DockerStockHub(
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


# ---------------------------------------------------------------- report


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def percentile(values: list[float], p: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def report(
    kh: Results, stock: Results, args: argparse.Namespace, loads: tuple[str, str]
) -> list[str]:
    n, c = args.runs, args.concurrent
    bursts = f", median of {args.bursts}" if args.bursts > 1 else ""
    cpus = len(os.sched_getaffinity(0))
    med = statistics.median
    rows: list[tuple[str, float, float, float | None]] = [
        (f"single spawn p50 (n={n})", med(kh.single), med(stock.single), TARGETS["single"]),
        (
            f"single spawn p95 (n={n})",
            percentile(kh.single, 95),
            percentile(stock.single, 95),
            None,
        ),
        (
            f"{c} concurrent spawns, wall{bursts}",
            med(kh.concurrent),
            med(stock.concurrent),
            TARGETS["concurrent"],
        ),
        (f"stop until container gone, p50 (n={n})", med(kh.stop), med(stock.stop), None),
    ]
    out = [
        "Docker runtime spawns through the REST API: kernelhub DockerRuntimeSpawner vs stock "
        "DockerSpawner",
        f"image {args.image}, {MEM_LIMIT}/{CPU_LIMIT:g} CPU each, on {socket.gethostname()} "
        f"({cpus} CPUs); seconds; {args.warmup} warm-up spawn(s) per hub not counted",
        f"load average (1, 5, 15 min) before: {loads[0]}; after: {loads[1]}",
        f"  {'':<40}{'kernelhub':>10}{'stock':>8}{'kh/stock':>10}{'target':>10}{'met':>6}",
    ]
    for label, ours, theirs, target in rows:
        ratio = ours / theirs
        goal = f"<= {target:.2f}" if target is not None else "-"
        met = ("yes" if ratio <= target else "NO") if target is not None else "-"
        out.append(f"  {label:<40}{ours:>10.2f}{theirs:>8.2f}{ratio:>10.2f}{goal:>10}{met:>6}")
    for name, results in (("kernelhub", kh), ("stock", stock)):
        samples = " ".join(f"{s:.2f}" for s in results.single)
        bursts_text = " ".join(f"{s:.2f}" for s in results.concurrent)
        out.append(f"  {name} single spawns: {samples}; concurrent: {bursts_text}")
    return out


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="sequential single spawns per hub")
    parser.add_argument("--concurrent", type=int, default=10, help="users spawning at once")
    parser.add_argument("--bursts", type=int, default=1, help="concurrent bursts per hub")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted spawns per hub first")
    parser.add_argument(
        "--image",
        default=IMAGE,
        help="the runtime image both hubs start (an older build, to compare launchers)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile one kernelhub single spawn"
    )
    parser.add_argument(
        "--profile-only", action="store_true", help="only the profile (no comparison)"
    )
    args = parser.parse_args()
    for name in ("runs", "concurrent", "bursts"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    return args


async def run(
    args: argparse.Namespace, engine: docker.DockerClient, workdir: Path, run_prefix: str
) -> None:
    check = await asyncio.to_thread(check_engine, [args.image])
    if not check.usable:
        raise Failed(f"Docker runtimes cannot run here: {check.reason}")
    log(f"run prefix {run_prefix}; hub API on the bridge gateway {check.bridge_gateway}")
    profile_lines: list[str] = []
    if args.profile_only:
        with running(kernelhub_side(workdir, f"{run_prefix}k", args.image)) as side:
            async with httpx.AsyncClient(base_url=side.hub.url, timeout=30) as client:
                await single_spawn(client, side, "profiled", engine)  # creates the drive
            profile_lines = await profile(side, engine, "profiled")
    else:
        load_before = load_average()
        with (
            running(kernelhub_side(workdir, f"{run_prefix}k", args.image)) as ours,
            running(
                stock_side(workdir, f"{run_prefix}s", check.bridge_gateway, args.image)
            ) as theirs,
        ):
            results = await measure([ours, theirs], engine, args)
            if args.profile:  # "bench": its drive exists, as in the measured single spawns
                profile_lines = await profile(ours, engine, "bench")
        loads = (load_before, load_average())
        print("\n".join(report(results["kernelhub"], results["stock"], args, loads)))
    if profile_lines:
        if not args.profile_only:
            print()
        print("\n".join(profile_lines))


def main() -> None:
    args = parse_args()
    terminate_on_sigterm()
    run_prefix = f"khspawn{secrets.token_hex(3)}"
    workdir = Path(tempfile.mkdtemp(prefix="kernelhub-spawn-bench-"))
    engine = docker.from_env(timeout=60)
    try:
        asyncio.run(run(args, engine, workdir, run_prefix))
    except Failed as e:
        log(f"spawn benchmark failed: {e}")
        sys.exit(1)
    finally:
        for hub in STARTED_HUBS:
            stop_hub(hub)
        try:
            remove_docker_objects(engine, run_prefix)
        finally:
            engine.close()
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
