"""Where one kernelhub spawn's time goes: spawn.py --profile's timeline of a single spawn.

The client's requests, the hub's progress events, the container's created and
started times and log timestamps, and the hub's log lines about the user, on one
clock, with the spans between them. A warm spawn (its container made before the
POST, benchmarks/warm_prep.py) shows its preparation at negative times, and its
spans after the POST from the hub's claim of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import httpx
from hubs import SPAWN_TIMEOUT, Failed, Side, poll_status, stop_until_gone

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import HubProcess


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
    warm = created < wall0  # made ahead of the POST: a warm runtime, claimed
    noticed = claimed = None  # the hub's HTTP check of the new server first succeeded
    since = min(wall0, created) if warm else wall0
    for stamp, text in hub_log_events(side.hub, user, since, clock_at(answered, wall0, t0)):
        timeline.append((stamp, "hub log", text[:110]))
        if noticed is None and re.search(rf"User {re.escape(user)} took [\d.]+ seconds", text):
            noticed = stamp
        if claimed is None and "Claimed the warm runtime" in text:
            claimed = stamp
    timeline.append(
        (clock_at(answered, wall0, t0), "client", f"GET /user/{user}/api/status -> 200")
    )
    timeline.sort(key=lambda item: item[0])

    kind = "WARM (its runtime made before the POST)" if warm else "cold"
    out = [
        f"Profile: one kernelhub single spawn of {user}, {kind} (its drive exists already); "
        "t = seconds since the POST",
        "(progress events are stamped when they reach this client: events the spawner "
        "recorded before the stream opened arrive together)",
    ]
    out += [f"  {t - wall0:7.3f}  {source:<9}  {text}" for t, source, text in timeline]
    done = clock_at(answered, wall0, t0)
    ready = next((t for t, e in events if e.get("ready")), None)
    out.append("Where the time goes (seconds):")
    if warm:
        spans = [("before the POST: created -> started (Docker)", created, started)]
        if first_log is not None:  # the launcher's "warm, waiting for the hub's activation"
            spans.append(("before the POST: started -> waiting (imports)", started, first_log))
        if claimed is not None:
            spans.append(("POST -> claimed (admission, checks; then activation)", wall0, claimed))
            if running is not None:
                spans.append(("claimed -> 'Jupyter Server is running'", claimed, running))
    else:
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
