"""The hub under load: 200 signed-in users, 50 runtimes, 20 polling clients, vs stock JupyterHub.

    .venv/bin/python benchmarks/hub_load.py                     # 200 users, 50 runtimes, 60 s
    .venv/bin/python benchmarks/hub_load.py --users 20 --runtimes 5 --seconds 10   # quick check
    .venv/bin/python benchmarks/hub_load.py --runtimes-kind docker   # Docker runtimes instead

One run starts a real `kernelhub up` (hub, configurable-http-proxy, and the quota
daemon kernelhub-quotad as the default managed service), measures it, stops it, then
does the same with stock JupyterHub (the `jupyterhub` command of the same virtualenv,
set up as in benchmarks/startup.py). Both get the same load:

  users       --users accounts, each signed in through the login form (a browser's
              session cookie) and given an API token. kernelhub: the account and its
              password from `POST /hub/api/kernelhub/local-users` (the operator
              token, as `kernelhub user add`); stock: its shared-password
              authenticator (nativeauthenticator 1.3's login form fails on JupyterHub
              6), the first sign-in creating the user. Each signs in with the form;
              the API token is issued through the REST API (operator/service token).
  runtimes    the first --runtimes users each start one runtime through the REST API
              (`POST /hub/api/users/U/server`), ready when `GET /user/U/api/status`
              answers 200 through the proxy. `--runtimes-kind local` (the default):
              kernelhub's LocalRuntimeSpawner (bubblewrap sandbox, own Unix account:
              the lightest runtime that still goes through kernelhub's spawner, proxy
              and quota daemon) against stock SimpleLocalProcessSpawner; `docker`:
              kernelhub's DockerRuntimeSpawner against stock DockerSpawner, the test
              image, 512M / 0.5 CPU each (benchmarks/spawn.py's set-up).
  clients     --clients tasks poll for --seconds (after --warmup seconds not
              counted), each every --interval seconds, taking the users in turn:
              `GET /hub/api/users/<self>` and `GET /hub/api/user` with the user's
              own token, and `GET /hub/home` with the user's session cookie. The
              latency is the client's, through the proxy; the hub's own time per
              request is read from its access log for the same window.

It prints p50/p95/p99 per endpoint for both hubs, the ratio kernelhub/stock, the
targets (API p99 < 100 ms, home p99 < 200 ms); the quota daemon's CPU per cycle
over the window (its process's CPU time / cycles counted by its /metrics) and as a
share of one core; the hub's and proxy's RSS; and the memory of an idle runtime
(median over the runtimes: a local runtime's server process RSS and its whole
sandbox's; a container's memory as `docker stats` counts it). Stock JupyterHub has
no quota daemon. The clients run in this process on the same machine: their own
CPU is part of what the latency includes, for both hubs alike.

Every hub is stopped with SIGINT (killed if it lingers), which stops its runtimes;
any runtime process or container left is killed, the Unix accounts the local
runtimes got (a prefix unique to the run) are deleted, and the temporary directory
is removed, also when a step fails or the script is interrupted. Tokens, passwords
and cookies are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import httpx
import hubs
from hub_profile import PROFILE_DUMP, PROFILE_START, profile_lines
from hubs import Failed, log, remove_docker_objects, running
from load_sides import (
    REQUEST_TIMEOUT,
    LoadSide,
    kernelhub_side,
    set_up_users,
    start_runtimes,
    stock_side,
)
from measure import percentile
from proc_usage import child_pid, proc_stat, quotad_cycles, rss_mib, runtime_memory
from startup import stop_hub

from kernelhub.launcher.state import read_hub_state

TARGETS_MS = {"api/users/<self>": 100.0, "api/user": 100.0, "home": 200.0}
ACCESS = re.compile(r"\] (\d{3}) GET (/hub/[^ ?]*)\S* \([^)]*\) ([\d.]+)ms$")


def endpoint_of(path: str) -> str | None:
    if path == "/hub/api/user":
        return "api/user"
    if path.startswith("/hub/api/users/") and path.count("/") == 4:
        return "api/users/<self>"
    return "home" if path == "/hub/home" else None


# ---------------------------------------------------------------- load


@dataclass
class Load:
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    hub_ms: dict[str, list[float]] = field(default_factory=dict)  # from the hub's access log
    seconds: float = 0.0


async def client_loop(
    side: LoadSide,
    users: list[str],
    index: int,
    args: argparse.Namespace,
    load: Load,
    counting: asyncio.Event,
    stop_at: float,
) -> None:
    await asyncio.sleep(args.interval * index / args.clients)  # spread the clients out
    mine = users[index :: args.clients] or users
    async with httpx.AsyncClient(base_url=side.hub.url, timeout=REQUEST_TIMEOUT) as client:
        turn = 0
        while time.monotonic() < stop_at:
            started = time.monotonic()
            user = mine[turn % len(mine)]
            turn += 1
            token = {"Authorization": f"token {side.tokens[user]}"}
            requests = [
                ("api/users/<self>", f"/hub/api/users/{user}", token),
                ("api/user", "/hub/api/user", token),
                ("home", "/hub/home", {"Cookie": side.cookies[user]}),
            ]
            for endpoint, path, headers in requests:
                t0 = time.monotonic()
                try:
                    answer = await client.get(path, headers=headers)
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if counting.is_set():
                    load.latency_ms.setdefault(endpoint, []).append(1000 * (time.monotonic() - t0))
                    if not ok:
                        load.errors[endpoint] = load.errors.get(endpoint, 0) + 1
            await asyncio.sleep(max(0.0, args.interval - (time.monotonic() - started)))


@dataclass
class Usage:
    hub_rss: list[float] = field(default_factory=list)
    proxy_rss: list[float] = field(default_factory=list)
    quotad_cpu: float | None = None  # seconds over the window
    quotad_cycles: float | None = None
    runtime_mib: dict[str, float] = field(default_factory=dict)


async def measure(side: LoadSide, users: list[str], args: argparse.Namespace) -> tuple[Load, Usage]:
    assert side.hub.proc is not None
    hub_pid = side.hub.proc.pid
    proxy = child_pid(hub_pid, "configurable-http-proxy")
    quotad = child_pid(hub_pid, "kernelhub.quotas.service") if side.name == "kernelhub" else None
    if side.name == "kernelhub" and quotad is None:
        raise Failed("kernelhub's quota daemon is not running")
    admin_token = ""
    if quotad is not None:  # the admin's token carries read:metrics
        admin_token = await asyncio.to_thread(side.hub.token, "admin")
        quotad_port = int(read_hub_state(side.hub.data_dir)["ports"]["quotas"])
    load, usage = Load(), Usage()
    counting = asyncio.Event()
    start = time.monotonic()
    stop_at = start + args.warmup + args.seconds
    clients = [
        asyncio.create_task(client_loop(side, users, i, args, load, counting, stop_at))
        for i in range(args.clients)
    ]
    try:
        await asyncio.sleep(args.warmup)
        counting.set()
        log_from = side.hub.log_path.stat().st_size
        t0 = time.monotonic()
        if quotad is not None:
            cpu0, cycles0 = (
                proc_stat(quotad)[1],
                await quotad_cycles(side, quotad_port, admin_token),
            )
        while time.monotonic() < stop_at:
            side.check_alive()
            usage.hub_rss.append(rss_mib(hub_pid))
            if proxy:
                usage.proxy_rss.append(rss_mib(proxy))
            await asyncio.sleep(1.0)
        await asyncio.gather(*clients)
        load.seconds = time.monotonic() - t0
        if quotad is not None:
            usage.quotad_cpu = proc_stat(quotad)[1] - cpu0
            usage.quotad_cycles = await quotad_cycles(side, quotad_port, admin_token) - cycles0
    finally:
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    with side.hub.log_path.open("rb") as hub_log:
        hub_log.seek(log_from)
        for line in hub_log.read().decode(errors="replace").splitlines():
            match = ACCESS.search(line)
            endpoint = endpoint_of(match.group(2)) if match else None
            if match and endpoint:
                load.hub_ms.setdefault(endpoint, []).append(float(match.group(3)))
    usage.runtime_mib = await asyncio.to_thread(runtime_memory, side, users[: args.runtimes])
    return load, usage


# ---------------------------------------------------------------- report


def ms_row(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), percentile(values, 95), percentile(values, 99)


def report(results: dict[str, tuple[Load, Usage]], args: argparse.Namespace) -> list[str]:
    (kh, kh_use), (st, st_use) = results["kernelhub"], results["stock"]
    cpus = len(os.sched_getaffinity(0))
    out = [
        f"The hub under load: {args.users} users signed in, {args.runtimes} {args.runtimes_kind} "
        f"runtimes, {args.clients} clients each polling every {args.interval:g}s for "
        f"{args.seconds}s (after {args.warmup}s not counted), on {socket.gethostname()} "
        f"({cpus} CPUs)",
        "client latency through the proxy, ms: kernelhub p50/p95/p99 | stock p50/p95/p99 | "
        "p99 kh/stock | kernelhub p99 target",
    ]
    for endpoint, target in TARGETS_MS.items():
        ours, theirs = ms_row(kh.latency_ms[endpoint]), ms_row(st.latency_ms[endpoint])
        met = "yes" if ours[2] < target else "NO"
        out.append(
            f"  GET {endpoint:<18}"
            + "".join(f"{v:7.1f}" for v in ours)
            + "  |"
            + "".join(f"{v:7.1f}" for v in theirs)
            + f"  | {ours[2] / theirs[2]:5.2f}  | < {target:.0f} {met}"
        )
    out.append("the hub's own time per request (its access log), ms: p50/p99 kernelhub | stock")
    for endpoint in TARGETS_MS:
        hub_ours, hub_theirs = kh.hub_ms.get(endpoint, [0.0]), st.hub_ms.get(endpoint, [0.0])
        out.append(
            f"  GET {endpoint:<18}{statistics.median(hub_ours):7.1f}"
            f"{percentile(hub_ours, 99):7.1f}  |"
            f"{statistics.median(hub_theirs):7.1f}{percentile(hub_theirs, 99):7.1f}"
        )
    for name, load in (("kernelhub", kh), ("stock", st)):
        count = sum(len(v) for v in load.latency_ms.values())
        errors = ", ".join(f"{k} {v}" for k, v in load.errors.items()) or "none"
        out.append(f"  {name}: {count / load.seconds:.1f} requests/s, non-200 answers: {errors}")
    if kh_use.quotad_cpu is not None and kh_use.quotad_cycles:
        per_cycle = kh_use.quotad_cpu / kh_use.quotad_cycles
        share = kh_use.quotad_cpu / kh.seconds
        out.append(
            f"quota daemon with {args.runtimes} runtimes: {1000 * per_cycle:.1f} ms CPU per cycle "
            f"({kh_use.quotad_cycles:.0f} cycles, {kh_use.quotad_cpu:.2f}s CPU in "
            f"{kh.seconds:.0f}s), {100 * share:.2f} % of one core"
        )
    for label, rss_ours, rss_theirs in (
        ("hub RSS", kh_use.hub_rss, st_use.hub_rss),
        ("proxy RSS", kh_use.proxy_rss, st_use.proxy_rss),
    ):
        if rss_ours and rss_theirs:
            out.append(
                f"{label} during the window, MiB (median/max): "
                f"kernelhub {statistics.median(rss_ours):.0f}/{max(rss_ours):.0f}, "
                f"stock {statistics.median(rss_theirs):.0f}/{max(rss_theirs):.0f}, "
                f"ratio {statistics.median(rss_ours) / statistics.median(rss_theirs):.2f}"
            )
    out.append("one idle runtime's memory, MiB (median over the runtimes):")
    for label, mib in kh_use.runtime_mib.items():
        stock_mib = st_use.runtime_mib.get(label)
        vs = f", stock {stock_mib:.0f}, ratio {mib / stock_mib:.2f}" if stock_mib else ""
        out.append(f"  {label:<32} kernelhub {mib:.0f}{vs}")
    return out


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200, help="users signed in")
    parser.add_argument("--runtimes", type=int, default=50, help="runtimes running")
    parser.add_argument("--clients", type=int, default=20, help="clients polling at once")
    parser.add_argument("--seconds", type=int, default=60, help="measured window")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of load not counted")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between a client's rounds"
    )
    parser.add_argument("--runtimes-kind", choices=("local", "docker"), default="local")
    parser.add_argument("--profile", action="store_true", help="cProfile each hub over the window")
    parser.add_argument(
        "--profile-save",
        type=Path,
        help="a folder to keep each hub's cProfile stats in (NAME.prof)",
    )
    args = parser.parse_args()
    if not 1 <= args.runtimes <= args.users or args.clients < 1 or args.seconds < 1:
        parser.error("need 1 <= --runtimes <= --users, --clients >= 1, --seconds >= 1")
    return args


async def run_side(side: LoadSide, args: argparse.Namespace) -> tuple[Load, Usage]:
    users = [f"u{i:03d}" for i in range(args.users)]
    with running(side):
        await set_up_users(side, users)
        await start_runtimes(side, users[: args.runtimes])
        assert side.hub.proc is not None
        if args.profile:
            os.kill(side.hub.proc.pid, PROFILE_START)
        try:
            return await measure(side, users, args)
        finally:
            if args.profile:
                os.kill(side.hub.proc.pid, PROFILE_DUMP)
                for _ in range(60):  # the dump, renamed into place when written
                    if (side.hub.data_dir.parent.parent / f"{side.name}.prof").exists():
                        break
                    await asyncio.sleep(0.5)


async def run(args: argparse.Namespace, workdir: Path, run_prefix: str) -> None:
    gateway = ""
    if args.runtimes_kind == "docker":
        from kernelhub.runtimes.engine import check_engine

        check = await asyncio.to_thread(check_engine, [hubs.IMAGE])
        if not check.usable:
            raise Failed(f"Docker runtimes cannot run here: {check.reason}")
        gateway = check.bridge_gateway or ""
    log(f"run prefix {run_prefix}")
    results = {}
    results["kernelhub"] = await run_side(
        kernelhub_side(workdir, args.runtimes_kind, run_prefix, args.profile), args
    )
    results["stock"] = await run_side(
        stock_side(workdir, args.runtimes_kind, run_prefix, gateway, args.profile), args
    )
    print("\n".join(report(results, args)))
    for name in results if args.profile else ():
        if (workdir / f"{name}.prof").exists():
            print("\n".join(profile_lines(workdir / f"{name}.prof", name)))
            if args.profile_save:  # a folder
                args.profile_save.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(workdir / f"{name}.prof", args.profile_save / f"{name}.prof")


def delete_accounts(prefix: str) -> None:
    """The Unix accounts (and their groups) the local runtimes of this run got."""
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix) and entry.pw_gecos.startswith("kernelhub "):
            subprocess.run(["userdel", entry.pw_name], capture_output=True, check=False)


def main() -> None:
    args = parse_args()
    hubs.terminate_on_sigterm()
    run_prefix = f"kl{secrets.token_hex(3)}"
    workdir = Path(tempfile.mkdtemp(prefix="kernelhub-load-bench-"))
    try:
        asyncio.run(run(args, workdir, run_prefix))
    except Failed as e:
        log(f"hub load benchmark failed: {e}")
        sys.exit(1)
    finally:
        for hub in hubs.STARTED_HUBS:
            stop_hub(hub)
        if args.runtimes_kind == "docker":
            engine = docker.from_env(timeout=60)
            try:
                remove_docker_objects(engine, run_prefix)
            finally:
                engine.close()
        delete_accounts(f"{run_prefix}-")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
