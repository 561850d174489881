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

from kernelhub.runtimes.engine import check_engine

BURST_TIMEOUT = 300.0  # all spawns of one concurrent burst
BURST_POLL_INTERVAL = 0.1  # per user, while N users poll at once
TARGETS = {"single": 0.35, "concurrent": 0.35}  # kernelhub/stock, at most (issue 16)


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


# ---------------------------------------------------------------- report


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
    run_docker_benchmark(
        "spawn", "khspawn", lambda engine, workdir, prefix: run(args, engine, workdir, prefix)
    )


if __name__ == "__main__":
    main()
