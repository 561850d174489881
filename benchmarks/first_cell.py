"""Time to a running cell in a real browser: kernelhub next to stock JupyterHub + DockerSpawner.

    .venv/bin/python benchmarks/first_cell.py --runs 5

One run starts a real `kernelhub up --runtimes docker` and measures it, stops it,
then does the same with stock JupyterHub (the `jupyterhub` command of the same
virtualenv) running `dockerspawner.DockerSpawner`, configured as benchmarks/spawn.py
configures both: the same image (kernelhub/runtime-test:latest), the same limits
(1G, 1 CPU), Notebook 7 at /tree. Kernelhub signs users in with its local sign-in
(each account made through its REST API before its run, outside the clock); stock
with JupyterHub's DummyAuthenticator and a password (nativeauthenticator, which
spawn.py's stock hub names, cannot sign anyone in through its login form on
JupyterHub 6: HTTP 500).

Debian's Chromium (/usr/bin/chromium, headless, driven by Playwright, which never
downloads a browser) does, per run, for a NEW user in a NEW browser context (no
cookies, empty HTTP cache), every request but those to 127.0.0.1 refused (sent to a
closed local port as the browser's proxy; no request interception, which would turn
the HTTP cache off and make the notebook's tab fetch every bundle again):

  sign-in          /hub/login?next=<start page> -> fill the form -> submit -> the
                   start page loaded (kernelhub: the "Change runtime type" form at
                   /hub/spawn; stock: /hub/home with its "Start My Server" button)
  warm runtime     kernelhub (unless --cold, which runs it without warm runtimes):
                   its start page prepared the user's warm runtime; the run waits
                   until it waits for the hub's activation (benchmarks/warm_prep.py),
                   as a user who reads the page a moment would. Not counted: the
                   figure is a warm Start's. Stock has no such thing.
  -- the clock starts: click Start (kernelhub: "None (CPU)" chosen, the form's
     submit button; stock: the home page's Start button) --
  spawn-pending    click -> the browser is on /hub/spawn-pending/<user> (0 when a
                   hub skips that page)
  server ready     -> the browser is sent to /user/<user>/ (the hub saw the server up)
  tree UI          -> Notebook 7's file browser at /user/<user>/tree is usable
                   (document, JS bundles, contents listing)
  notebook UI      New -> "Python 3 (ipykernel)" (the UI's menu: a new Untitled.ipynb,
                   opened in a new tab) -> its first cell's editor is shown
  kernel           -> the page's kernel indicator and the server's api/sessions both
                   say idle (kernel started and connected)
  output           `print(6*7)` put into the first cell (one input event), Shift+Enter
                   -> an output "42" is visible
  -- the clock stops --

Under load Notebook 7 (both hubs alike) now and then brings up "Select Kernel" after
the kernel went idle, or loses the first Shift+Enter; the run accepts the dialog and
runs a cell still unrun after 5 s again, as a user would, and counts both.

It prints, for each hub, the p50 of click -> "42" over --runs runs (plus --warmup
uncounted runs first), the ratio kernelhub/stock, the p50 of every phase, and what
the browser fetched in each phase (requests, bytes) in the last run. After each run
the user's server is stopped through the REST API and its container awaited gone.

Every container and volume named with the run's unique prefix is removed at the
end, every hub is stopped with SIGINT (killed if it lingers), the browser is
closed and the temporary directory is removed, also when a step fails or the
script is interrupted. Tokens and passwords are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import secrets
import socket
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import docker
import httpx
from cell_browser import PHASES, Run, browser_run
from hubs import (
    CPU_LIMIT,
    IMAGE,
    MEM_LIMIT,
    DockerStockHub,
    Failed,
    Side,
    kernelhub_side,
    log,
    run_docker_benchmark,
    running,
    stock_side,
    stop_until_gone,
)
from playwright.async_api import Browser, async_playwright
from warm_prep import Warmer, until_warm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser import CHROMIUM, CHROMIUM_ARGS

from kernelhub.runtimes.engine import check_engine


@dataclass
class PasswordStockHub(DockerStockHub):
    """spawn.py's stock hub, signing users in with JupyterHub's DummyAuthenticator and a
    password (nativeauthenticator 1.3.0's login form fails with HTTP 500 on JupyterHub
    6: its handler uses the removed ``self.statsd``)."""

    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)

    def settings(self) -> dict[str, object]:
        return {
            **super().settings(),
            "JupyterHub.authenticator_class": "dummy",
            "DummyAuthenticator.password": self.password,
        }


# ---------------------------------------------------------------- accounts


def kernelhub_password(side: Side, user: str) -> str:
    return side.hub.password(user)  # a local account, made with the operator token


def stock_password(side: Side, user: str) -> str:
    """The stock hub's one password: its DummyAuthenticator makes the user at sign-in."""
    assert isinstance(side.hub, PasswordStockHub)
    return side.hub.password


async def warm_for(warmer: Warmer, user: str) -> None:
    """Wait until the warm runtime the user's landing page prepared is ready."""
    warmer.prepared[user] = await until_warm(warmer.engine, warmer.side, user)


# ---------------------------------------------------------------- hubs and sides


@dataclass
class SideResults:
    runs: list[Run] = field(default_factory=list)
    fetched: dict[str, tuple[int, int]] = field(default_factory=dict)
    largest: list[str] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before, after
    failures: list[str] = field(default_factory=list)  # failed runs, replaced


async def measure(
    side: Side,
    browser: Browser,
    engine: docker.DockerClient,
    args: argparse.Namespace,
    warmer: Warmer | None = None,
) -> SideResults:
    """--warmup uncounted runs, then --runs counted ones, each for a new user.

    With ``warmer`` (kernelhub's warm runtimes) each run waits, once signed in and
    before the click, until the runtime its landing page prepared is ready, and says
    whether its Start claimed it.

    A failed run (a spawn that failed, a page that never loaded) is logged, counted
    and replaced by another user's run, up to --runs failures per hub.
    """
    results = SideResults()
    make_password = kernelhub_password if side.options else stock_password
    load_before = os.getloadavg()[0]
    number = 0
    async with httpx.AsyncClient(base_url=side.hub.url, timeout=30) as client:
        while len(results.runs) < args.runs:
            counted = number >= args.warmup
            user = f"cell{number}" if counted else f"warmup{number}"
            number += 1
            password = await asyncio.to_thread(make_password, side, user)
            last = counted and len(results.runs) == args.runs - 1
            prepare = None
            if warmer is not None:
                prepare = functools.partial(warm_for, warmer, user)
            try:
                run = await browser_run(
                    browser, side, user, password, args.screenshots, last, prepare
                )
                if warmer is not None:
                    claimed = warmer.claimed(user)
                    if not claimed:
                        why = " | ".join(warmer.not_used(user)[-2:])
                        log(f"{side.name} {user}: warm runtime NOT claimed: {why}")
            except Failed as e:
                results.failures.append(str(e))
                log(f"{side.name} {user}: FAILED, replaced by another user's run: {e}")
                if len(results.failures) > args.runs:
                    raise Failed(f"{side.name}: too many failed runs") from None
                run = None
            if run is not None:
                log(f"{side.name} {user}{'' if counted else ' (warm-up, not counted)'}: {run}")
                if counted:
                    results.runs.append(run)
            await asyncio.to_thread(side.headers, user)  # a token first, outside any clock
            try:
                await stop_until_gone(client, side, user, engine)
            except Failed as e:  # a failed spawn may have left no server to stop
                log(f"{side.name} {user}: stopping: {e}")
    results.load = (load_before, os.getloadavg()[0])
    results.fetched, results.largest = results.runs[-1].summary
    return results


# ---------------------------------------------------------------- report


def report(
    kh: SideResults, stock: SideResults, args: argparse.Namespace, warmer: Warmer | None
) -> list[str]:
    med = statistics.median
    cpus = len(os.sched_getaffinity(0))
    if warmer is None:
        mode = "kernelhub COLD (--cold: warm runtimes off): the click starts a new container"
    else:
        claims = f"{warmer.claims[True]} of {sum(warmer.claims.values())}"
        mode = (
            "kernelhub WARM (warm runtimes on): the clock starts at the click once the "
            "runtime the sign-in's landing page prepared is ready (that wait is not counted); "
            f"warm runtimes claimed by the click: {claims} (warm-ups included). Stock has no "
            "such thing."
        )
    out = [
        "Time to a running cell in headless Chromium: kernelhub DockerRuntimeSpawner vs stock "
        "JupyterHub + DockerSpawner",
        mode,
        f"image {IMAGE}, {MEM_LIMIT}/{CPU_LIMIT:g} CPU each, Notebook 7, new notebook from the "
        f"New menu; on {socket.gethostname()} ({cpus} CPUs); seconds, p50 of {args.runs} runs "
        f"(new user and browser context each), {args.warmup} warm-up run(s) not counted",
        f"  {'':<42}{'kernelhub':>10}{'stock':>8}{'kh/stock':>10}",
    ]
    rows = [("sign-in (not in the total)", "sign-in")]
    if warmer is not None:
        rows += [("-> warm runtime ready (not in the total)", "prepare")]
    rows += [(label, mark) for mark, label in PHASES.items()]
    rows += [("TOTAL click Start -> output 42", "total")]
    for label, key in rows:
        ours = med(r.phases()[key] for r in kh.runs)
        if key not in stock.runs[0].phases():  # the warm runtime's wait: kernelhub only
            out.append(f"  {label:<42}{ours:>10.2f}{'-':>8}{'-':>10}")
            continue
        theirs = med(r.phases()[key] for r in stock.runs)
        ratio = f"{ours / theirs:>10.2f}" if theirs > 0 else f"{'-':>10}"
        out.append(f"  {label:<42}{ours:>10.2f}{theirs:>8.2f}{ratio}")
    for name, results in (("kernelhub", kh), ("stock", stock)):
        totals = " ".join(f"{r.phases()['total']:.2f}" for r in results.runs)
        dialogs = sum(r.dialogs for r in results.runs)
        reruns = sum(r.reruns for r in results.runs)
        out.append(
            f"  {name} totals: {totals}; 'Select Kernel' dialogs accepted: {dialogs}, "
            f"cells run again: {reruns}; failed runs replaced: {len(results.failures)}"
        )
    out.append("Fetched by the browser in the last run, per phase (requests / KiB of bodies):")
    for name, results in (("kernelhub", kh), ("stock", stock)):
        parts = [f"{p} {n}/{b / 1024:.0f}" for p, (n, b) in results.fetched.items()]
        out.append(f"  {name}: " + ", ".join(parts))
        out.append(f"  {name} largest: " + "; ".join(results.largest))
    for name, results in (("kernelhub", kh), ("stock", stock)):
        before, after = results.load
        out.append(f"  1-min load average while {name} ran: {before:.2f} before, {after:.2f} after")
    return out


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted runs per hub (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted runs per hub first")
    parser.add_argument(
        "--cold", action="store_true", help="kernelhub without warm runtimes (cold Starts)"
    )
    parser.add_argument(
        "--screenshots", type=Path, help="folder for screenshots of a failed run's tabs"
    )
    args = parser.parse_args()
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    return args


async def run(
    args: argparse.Namespace, engine: docker.DockerClient, workdir: Path, run_prefix: str
) -> None:
    check = await asyncio.to_thread(check_engine, [IMAGE])
    if not check.usable:
        raise Failed(f"Docker runtimes cannot run here: {check.reason}")
    log(f"run prefix {run_prefix}; hub API on the bridge gateway {check.bridge_gateway}")
    results: dict[str, SideResults] = {}
    kernelhub = kernelhub_side(workdir, f"{run_prefix}k", IMAGE, 0 if args.cold else 4)
    warmer = None if args.cold else Warmer(kernelhub, engine)
    # Requests to anything but 127.0.0.1 go to a "proxy" on a loopback port bound but
    # never listening, so they fail without leaving the machine. Not Playwright's
    # request routing (tests/browser.py): routing turns Chromium's HTTP cache off, and
    # a real browser's new notebook tab takes Notebook 7's bundles from that cache.
    dead_end = socket.socket()
    dead_end.bind(("127.0.0.1", 0))
    refuse_others = [
        f"--proxy-server=http://127.0.0.1:{dead_end.getsockname()[1]}",
        "--proxy-bypass-list=127.0.0.1",
    ]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS + refuse_others
        )
        try:
            with running(kernelhub) as side:
                results["kernelhub"] = await measure(side, browser, engine, args, warmer)
            gateway = check.bridge_gateway
            stock = stock_side(workdir, f"{run_prefix}s", gateway, IMAGE, PasswordStockHub)
            with running(stock) as side:
                results["stock"] = await measure(side, browser, engine, args)
        finally:
            await browser.close()
            dead_end.close()
    print("\n".join(report(results["kernelhub"], results["stock"], args, warmer)))


def main() -> None:
    args = parse_args()
    run_docker_benchmark(
        "first-cell", "khcell", lambda engine, workdir, prefix: run(args, engine, workdir, prefix)
    )


if __name__ == "__main__":
    main()
