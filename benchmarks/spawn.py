"""Docker runtime spawn latency: kernelhub's DockerRuntimeSpawner next to stock DockerSpawner.

    .venv/bin/python benchmarks/spawn.py --runs 10 [--cold] [--profile]

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

Kernelhub runs with warm runtimes (`c.DockerRuntimeSpawner.warm_runtimes`), as a
deployment would: before each of its spawns above (single, warm-up, and each user
of a burst, all users at once) the user does what a browser does before pressing
Start: signs in through the login form the first time (it lands on the spawn form),
opens /hub/home later, and the run waits until the hub's warm runtime for them
waits for its activation (benchmarks/warm_prep.py). That preparation is outside the
clock, so kernelhub's figures are "from a Start after the user opened the page";
the report says so, prints how long the preparation took (p50) and how many warm
runtimes the Starts claimed. Stock DockerSpawner has no such thing: its clock runs
from the Start, with no page visited. `--cold` measures kernelhub without warm
runtimes (no page visits), labelled cold.

It prints p50/p95 of the single spawns and the concurrent wall time for both, the
ratio kernelhub/stock, the targets (single p50 and concurrent <= 0.35x stock,
issue 16) and the machine's load average before and after. `--profile` adds one
more kernelhub single spawn (a warm one, unless --cold) and prints where its time
goes: the progress events (`GET /hub/api/users/U/server/progress`), the
container's created/started times and log timestamps, and the hub's log lines.

Every container and volume named with the run's unique prefix is removed at the
end, every hub is stopped with SIGINT (killed if it lingers), and the temporary
directory is removed, also when a step fails or the script is interrupted.
Tokens and passwords are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import httpx
from hubs import (
    CPU_LIMIT,
    IMAGE,
    MEM_LIMIT,
    Failed,
    Side,
    kernelhub_side,
    log,
    run_docker_benchmark,
    running,
    spawn_until_ready,
    stock_side,
    stop_until_gone,
)
from measure import load_average, percentile
from spawn_profile import profile
from warm_prep import Warmer

from kernelhub.runtimes.engine import check_engine

BURST_TIMEOUT = 300.0  # all spawns of one concurrent burst
BURST_POLL_INTERVAL = 0.1  # per user, while N users poll at once
TARGETS = {"single": 0.35, "concurrent": 0.35}  # kernelhub/stock, at most (issue 16)


def warmer_of(side: Side, warmers: dict[str, Warmer]) -> Warmer | None:
    """The side's warm runtimes, when it prepares them (kernelhub, unless --cold)."""
    return warmers.get(side.name)


def check_claimed(warmer: Warmer, user: str) -> None:
    if not warmer.claimed(user):
        why = warmer.not_used(user)
        log(f"kernelhub: {user}'s warm runtime was NOT claimed: " + " | ".join(why[-2:]))


async def single_spawn(
    client: httpx.AsyncClient,
    side: Side,
    user: str,
    engine: docker.DockerClient,
    warmer: Warmer | None = None,
) -> tuple[float, float, float]:
    """Seconds to ready, seconds to stop, and seconds the page visit took before (with
    ``warmer``: until the warm runtime waited; not part of the spawn's time)."""
    prepared = await warmer.prepare(user) if warmer is not None else 0.0
    t0 = time.monotonic()
    answered = await spawn_until_ready(client, side, user, t0)
    if warmer is not None:
        check_claimed(warmer, user)
    stopped = await stop_until_gone(client, side, user, engine)
    return answered - t0, stopped, prepared


async def burst(
    client: httpx.AsyncClient,
    side: Side,
    users: list[str],
    engine: docker.DockerClient,
    warmer: Warmer | None = None,
) -> tuple[float, float]:
    """Seconds from starting len(users) spawns at once until every runtime answers, and
    (with ``warmer``) the seconds until every user's warm runtime waited, before that:
    all users open the page at once, as when a class starts, outside the clock."""
    for user in users:
        side.headers(user)  # tokens first, outside the clock
    prepared = 0.0
    if warmer is not None:
        p0 = time.monotonic()
        await asyncio.gather(*(warmer.prepare(u) for u in users))
        prepared = time.monotonic() - p0
        await warmer.close_sessions(users)
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
    if warmer is not None:
        for user in users:
            check_claimed(warmer, user)
    answered = sorted(float(r) - t0 for r in results)  # type: ignore[arg-type]
    log(f"{side.name}: each runtime answered after " + " ".join(f"{a:.1f}" for a in answered))
    return answered[-1], prepared


@dataclass
class Results:
    single: list[float] = field(default_factory=list)
    stop: list[float] = field(default_factory=list)
    warmup: list[float] = field(default_factory=list)
    concurrent: list[float] = field(default_factory=list)
    prepared: list[float] = field(default_factory=list)  # page visit -> warm, single spawns
    burst_prepared: list[float] = field(default_factory=list)  # the same, per burst


async def measure(
    sides: list[Side],
    engine: docker.DockerClient,
    args: argparse.Namespace,
    warmers: dict[str, Warmer],
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
                warmer = warmer_of(side, warmers)
                user = f"warmup{i}"
                spawn, *_ = await single_spawn(clients[side.name], side, user, engine, warmer)
                results[side.name].warmup.append(spawn)
                log(f"{side.name}: warm-up spawn {i + 1}: {spawn:.2f}s (not counted)")
        for i in range(args.runs):
            for side in in_turn(i):
                warmer = warmer_of(side, warmers)
                spawn, stop, prepared = await single_spawn(
                    clients[side.name], side, "bench", engine, warmer
                )
                results[side.name].single.append(spawn)
                results[side.name].stop.append(stop)
                before = f", page visit -> warm {prepared:.2f}s before" if warmer else ""
                log(
                    f"{side.name}: single spawn {i + 1}/{args.runs}: {spawn:.2f}s "
                    f"(stop {stop:.2f}s{before})"
                )
                if warmer is not None:
                    results[side.name].prepared.append(prepared)
        for b in range(args.bursts):
            for side in in_turn(b):
                users = [f"burst{b}u{i}" for i in range(args.concurrent)]
                warmer = warmer_of(side, warmers)
                wall, prepared = await burst(clients[side.name], side, users, engine, warmer)
                results[side.name].concurrent.append(wall)
                before = f" (all warm {prepared:.2f}s after the page visits)" if warmer else ""
                log(
                    f"{side.name}: {args.concurrent} concurrent spawns, burst {b + 1}: "
                    f"{wall:.2f}s{before}"
                )
                if warmer is not None:
                    results[side.name].burst_prepared.append(prepared)
    return results


# ---------------------------------------------------------------- report


def report(
    kh: Results,
    stock: Results,
    args: argparse.Namespace,
    loads: tuple[str, str],
    warmer: Warmer | None,
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
    if warmer is None:
        mode = [
            "kernelhub COLD (--cold: warm runtimes off): from the Start, as stock; "
            "no page visited before"
        ]
    else:
        claims = f"{warmer.claims[True]} of {sum(warmer.claims.values())}"
        mode = [
            "kernelhub WARM (warm runtimes on): its figures are from a Start after the user "
            "opened the page (sign-in, then /hub/home) and its warm runtime waited; that "
            "preparation is not counted. Stock has no such thing: from the Start.",
            f"  preparation, page visit -> warm runtime waiting: single p50 "
            f"{med(kh.prepared):.2f}s (n={len(kh.prepared)}); {c} users at once p50 "
            f"{med(kh.burst_prepared):.2f}s; warm runtimes claimed by the Start: {claims} "
            "(warm-ups included)",
        ]
    out = [
        "Docker runtime spawns through the REST API: kernelhub DockerRuntimeSpawner vs stock "
        "DockerSpawner",
        *mode,
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
        "--cold",
        action="store_true",
        help="kernelhub without warm runtimes (no page visit before each Start)",
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
    # warm runtimes for every user of a burst at once, and a few to spare
    warm_max = 0 if args.cold else max(16, args.concurrent + 2)
    kernelhub = kernelhub_side(workdir, f"{run_prefix}k", args.image, warm_max)
    warmer = None if args.cold else Warmer(kernelhub, engine)
    warmers = {kernelhub.name: warmer} if warmer is not None else {}
    try:
        if args.profile_only:
            with running(kernelhub) as side:
                async with httpx.AsyncClient(base_url=side.hub.url, timeout=30) as client:
                    # creates the drive (and signs the user in)
                    await single_spawn(client, side, "profiled", engine, warmer)
                profile_lines = await warm_profile(side, engine, "profiled", warmer)
        else:
            load_before = load_average()
            with (
                running(kernelhub) as ours,
                running(
                    stock_side(workdir, f"{run_prefix}s", check.bridge_gateway, args.image)
                ) as theirs,
            ):
                results = await measure([ours, theirs], engine, args, warmers)
                if args.profile:  # "bench": its drive exists, as in the measured spawns
                    profile_lines = await warm_profile(ours, engine, "bench", warmer)
            loads = (load_before, load_average())
            kh, stock = results["kernelhub"], results["stock"]
            print("\n".join(report(kh, stock, args, loads, warmer)))
    finally:
        if warmer is not None:
            await warmer.close_sessions()
    if profile_lines:
        if not args.profile_only:
            print()
        print("\n".join(profile_lines))


async def warm_profile(
    side: Side, engine: docker.DockerClient, user: str, warmer: Warmer | None
) -> list[str]:
    """The profile of one spawn: with ``warmer``, a warm one (the page visited first)."""
    if warmer is None:
        return await profile(side, engine, user)
    prepared = await warmer.prepare(user)
    lines = await profile(side, engine, user)
    check_claimed(warmer, user)
    return [*lines, f"  (preparation before the POST, page visit -> warm: {prepared:.2f}s)"]


def main() -> None:
    args = parse_args()
    run_docker_benchmark(
        "spawn", "khspawn", lambda engine, workdir, prefix: run(args, engine, workdir, prefix)
    )


if __name__ == "__main__":
    main()
