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
import contextlib
import os
import re
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import docker
import httpx
from playwright.async_api import Browser, Page, Request, async_playwright
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from spawn import (
    CPU_LIMIT,
    IMAGE,
    MEM_LIMIT,
    STARTED_HUBS,
    DockerStockHub,
    Failed,
    Side,
    kernelhub_side,
    log,
    remove_docker_objects,
    running,
    stop_until_gone,
    terminate_on_sigterm,
)
from startup import stop_hub

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DIALOG,
    DIALOG_ACCEPT,
    KERNEL_INDICATOR,
    NOT_LOOPBACK,
    VIEWPORT,
)
from harness import free_port

from kernelhub.runtimes.engine import check_engine

KERNEL = "Python 3 (ipykernel)"
CODE = "print(6*7)"
ACTION_TIMEOUT_MS = 30_000
UI_TIMEOUT_MS = 90_000  # a page of Notebook 7 loading on a busy 2-core machine
RERUN_AFTER_S = 5.0  # a cell still unrun after Shift+Enter is run again, as a user would
SPAWN_TIMEOUT_MS = 120_000
PHASES = {  # mark the phase ends at -> label; each phase starts where the previous ended
    "pending": "click -> spawn-pending page",
    "ready": "-> server ready (sent to /user/U/)",
    "tree": "-> tree UI loaded (doc + JS)",
    "notebook": "-> new notebook UI loaded (doc + JS)",
    "kernel": "-> kernel started and connected",
    "output": "-> output 42 shown",
}


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


@dataclass
class Run:
    """One user's run: monotonic marks, and what the browser fetched (time, request)."""

    marks: dict[str, float] = field(default_factory=dict)
    step: str = "start"  # what the run was doing, for a failure's message
    dialogs: int = 0  # "Select Kernel" dialogs that had to be accepted
    reruns: int = 0  # Shift+Enter again: the first one did not run the cell
    troubles: list[str] = field(default_factory=list)  # failed requests, page errors
    fetched: list[tuple[float, Request]] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    # requests and body bytes per phase, the largest responses (when inspected)
    summary: tuple[dict[str, tuple[int, int]], list[str]] = ({}, [])

    def __str__(self) -> str:
        text = " ".join(f"{name} {value:.2f}" for name, value in self.phases().items())
        if self.dialogs:
            text += f" ({self.dialogs} 'Select Kernel' dialog(s) accepted)"
        if self.reruns:
            text += f" (cell run {self.reruns} more time(s))"
        return text

    def phases(self) -> dict[str, float]:
        out = {"sign-in": self.marks["signed_in"] - self.marks["login"]}
        start = self.marks["click"]
        for mark in PHASES:
            end = self.marks.get(mark, start)  # a skipped page takes no time
            out[mark] = end - start
            start = end
        out["total"] = self.marks["output"] - self.marks["click"]
        return out


# ---------------------------------------------------------------- accounts


def kernelhub_password(side: Side, user: str) -> str:
    return side.hub.password(user)  # a local account, made with the operator token


def stock_password(side: Side, user: str) -> str:
    """The stock hub's one password: its DummyAuthenticator makes the user at sign-in."""
    assert isinstance(side.hub, PasswordStockHub)
    return side.hub.password


# ---------------------------------------------------------------- the browser run


async def sign_in(page: Page, run: Run, hub_url: str, user: str, password: str, nxt: str) -> None:
    run.marks["login"] = time.monotonic()
    await page.goto(f"{hub_url}/hub/login?next={quote(nxt)}")
    await page.locator('input[name="username"]').fill(user)
    await page.locator('input[name="password"]').fill(password)
    async with page.expect_response(
        lambda r: r.request.method == "POST" and urlsplit(r.url).path == "/hub/login"
    ) as posted:
        await page.locator('form [type="submit"]').first.click()
    if (await posted.value).status != 302:
        raise Failed(f"sign-in of {user} refused: HTTP {(await posted.value).status}")
    await page.wait_for_url(lambda url: urlsplit(url).path == nxt)
    await page.wait_for_load_state("load")
    run.marks["signed_in"] = time.monotonic()


async def click_start(page: Page, run: Run, side: Side) -> None:
    if side.options:  # kernelhub: the runtime-type form
        form = page.locator("form").filter(has=page.locator('input[name="runtime"]'))
        await form.locator(f'input[name="runtime"][value="{side.options["runtime"]}"]').check()
        button = form.locator('[type="submit"]')
    else:  # stock: the home page's "Start My Server"
        button = page.locator("#start")
    await button.wait_for()
    run.marks["click"] = time.monotonic()
    await button.click()


async def accept_kernel_dialog(page: Page, run: Run, doing: str) -> bool:
    """Accept a "Select Kernel" dialog (its default choice), as a user would; False when
    none is shown. Any other dialog fails the run."""
    dialog = page.locator(DIALOG)
    if not (await dialog.count() and await dialog.first.is_visible()):
        return False
    text = re.sub(r"\s+", " ", await dialog.first.inner_text()).strip()
    if "Select Kernel" not in text:
        raise Failed(f"a dialog came up while {doing}: {text[:200]!r}")
    await dialog.first.locator(DIALOG_ACCEPT).click()
    await dialog.first.wait_for(state="detached")
    run.dialogs += 1
    return True


async def wait_for_kernel(page: Page, run: Run, server: str) -> None:
    """Until the kernel is idle both in the page and for the server (``server``: the
    user's server URL); a "Select Kernel" dialog is accepted as is.

    The page's indicator alone can say idle before the session has a kernel, hence
    the server's api/sessions too, as tests/browser.py checks it.
    """
    idle = page.locator(f'{KERNEL_INDICATOR}[data-status="idle"]')
    deadline = time.monotonic() + ACTION_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        if await accept_kernel_dialog(page, run, "waiting for the kernel"):
            continue
        if await idle.count() and await server_kernel_state(page, server) == "idle":
            return
        await asyncio.sleep(0.05)
    raise Failed(f"the kernel of {page.url} was not idle within {ACTION_TIMEOUT_MS / 1000:g}s")


async def run_first_cell(page: Page, run: Run) -> None:
    """Put CODE into the first cell, Shift+Enter; return once its output "42" shows.

    Under load Notebook 7 sometimes loses the first run, both hubs alike: a "Select
    Kernel" dialog comes up after the kernel went idle (the key press goes to the
    dialog), or the page's kernel connection is replaced ("Disposed" page errors)
    and the cell stays unrun. As a user would, the dialog is accepted and a cell
    whose prompt still shows no run after RERUN_AFTER_S is run again (counted).
    """
    cell = page.locator(".jp-Notebook .jp-Cell").first
    editor = cell.locator(".cm-content")
    await editor.click()
    await page.keyboard.insert_text(CODE)  # one input event: no auto-closed brackets
    await page.keyboard.press("Shift+Enter")
    output = cell.locator(".jp-OutputArea-output").filter(has_text=re.compile(r"^\s*42\s*$"))
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        with contextlib.suppress(PlaywrightTimeoutError):
            await output.or_(page.locator(DIALOG)).first.wait_for(timeout=RERUN_AFTER_S * 1000)
        if await output.count():
            return
        await accept_kernel_dialog(page, run, "running the cell")
        prompt = (await cell.locator(".jp-InputPrompt").inner_text()).strip()
        if prompt in ("", "[ ]:"):  # not run, nor waiting to run: run it again
            run.reruns += 1
            await editor.click()
            await page.keyboard.press("Shift+Enter")
    raise Failed(f"no output 42 within {UI_TIMEOUT_MS / 1000:g}s")


async def server_kernel_state(page: Page, server: str) -> str | None:
    """The server's execution state of the page's notebook's kernel (None: no session)."""
    path = unquote(urlsplit(page.url).path.split("/notebooks/", 1)[-1])
    response = await page.request.get(f"{server}api/sessions")
    if not response.ok:
        return None
    for session in await response.json():
        if session.get("path") == path and session.get("kernel"):
            return str(session["kernel"].get("execution_state"))
    return None


async def browser_run(
    browser: Browser, side: Side, user: str, password: str, shots: Path | None, inspect: bool
) -> Run:
    """Sign in, Start, New notebook, run the cell; the marks of one run in a fresh context.

    On failure, screenshots of its tabs go to ``shots`` (when given). ``inspect``: also
    sum up what the browser fetched (after the clock stopped)."""
    run = Run()
    user_path = f"/user/{user}/"
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        context.set_default_timeout(ACTION_TIMEOUT_MS)

        context.on("requestfinished", lambda r: run.fetched.append((time.monotonic(), r)))

        def failed(request: Request) -> None:
            if NOT_LOOPBACK.match(request.url):  # sent to the dead-end proxy: refused
                run.blocked.append(request.url)
            else:
                run.troubles.append(f"{request.url} {request.failure}")

        context.on("requestfailed", failed)
        context.on("weberror", lambda e: run.troubles.append(f"page error {e.error}"))
        page = await context.new_page()

        def navigated(request: Request) -> None:
            if not request.is_navigation_request() or "click" not in run.marks:
                return
            path = urlsplit(request.url).path
            if "/hub/spawn-pending/" in path:
                run.marks.setdefault("pending", time.monotonic())
            elif path.startswith(user_path):
                run.marks.setdefault("ready", time.monotonic())

        page.on("request", navigated)
        start_page = "/hub/spawn" if side.options else "/hub/home"
        run.step = "sign-in"
        await sign_in(page, run, side.hub.url, user, password, start_page)
        run.step = "click Start"
        await click_start(page, run, side)
        run.step = "waiting for the tree page"
        await page.wait_for_url(
            re.compile(rf"{re.escape(user_path)}tree"), timeout=SPAWN_TIMEOUT_MS
        )
        await page.locator(".jp-DirListing-content").wait_for(timeout=UI_TIMEOUT_MS)
        new_menu = page.locator('[data-jp-item-name="new-dropdown"] .lm-MenuBar-item')
        await new_menu.wait_for()
        run.marks["tree"] = time.monotonic()

        run.step = "New notebook"
        await new_menu.click()
        item = page.locator('.lm-Menu li[data-command="notebook:create-new"]')
        async with context.expect_page() as new_tab:
            await item.filter(has_text=KERNEL).first.click()
        notebook = await new_tab.value
        editor = notebook.locator(".jp-Notebook .jp-Cell").first.locator(".cm-content")
        await editor.wait_for(timeout=UI_TIMEOUT_MS)
        run.marks["notebook"] = time.monotonic()
        run.step = "waiting for the kernel"
        await wait_for_kernel(notebook, run, f"{side.hub.url}{user_path}")
        run.marks["kernel"] = time.monotonic()

        run.step = "running the cell"
        await run_first_cell(notebook, run)
        run.marks["output"] = time.monotonic()
        if inspect:  # the clock has stopped; the context must still be open
            run.summary = await fetched_by_phase(run)
    except PlaywrightError as e:
        if shots is not None:
            for number, tab in enumerate(context.pages):
                path = shots / f"{side.name}-{user}-{number}.png"
                with contextlib.suppress(PlaywrightError):
                    await tab.screenshot(path=str(path), full_page=True)
        first_line = str(e).splitlines()[0][:300]
        if run.troubles:  # failed requests, uncaught page errors: the likelier cause
            first_line += "; " + "; ".join(t[:200] for t in run.troubles[:3])
        for tab in context.pages:  # an error dialog says more than a timeout
            with contextlib.suppress(PlaywrightError):
                if await tab.locator(DIALOG).count():
                    text = await tab.locator(DIALOG).first.inner_text(timeout=2000)
                    text = re.sub(r"\s+", " ", text)[:200]
                    first_line += f"; a dialog says {text!r}"
        raise Failed(f"{side.name} run of {user}, {run.step}: {first_line}") from None
    finally:
        await context.close()
    return run


# ---------------------------------------------------------------- what was fetched


async def fetched_by_phase(run: Run) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Requests and response body bytes per phase, and the three largest responses."""
    bounds = [("sign-in", run.marks["click"])]  # the start page included
    bounds += [(mark, run.marks[mark]) for mark in PHASES if mark in run.marks]
    per_phase: dict[str, tuple[int, int]] = {}
    largest: list[tuple[int, str]] = []
    for stamp, request in run.fetched:
        # the phase a request finished in: the first mark at or after it
        phase = next((name for name, end in bounds if stamp <= end), "after")
        try:
            size = (await request.sizes())["responseBodySize"]
            response = await request.response()
        except PlaywrightError:
            continue
        count, total = per_phase.get(phase, (0, 0))
        per_phase[phase] = (count + 1, total + size)
        headers = response.headers if response else {}
        encoding = headers.get("content-encoding", "none")
        cache = headers.get("cache-control", "-")
        tail = urlsplit(request.url).path.rsplit("/", 1)[-1][:40]
        largest.append((size, f"{tail} {size / 1024:.0f} KiB, encoding {encoding}, cache {cache}"))
    largest.sort(reverse=True)
    return per_phase, [text for _, text in largest[:3]]


# ---------------------------------------------------------------- hubs and sides


def stock_side(workdir: Path, prefix: str, gateway: str) -> Side:
    hub = PasswordStockHub(
        data_dir=workdir / "stock" / "data",
        port=free_port(),
        prefix=prefix,
        gateway=gateway,
        image=IMAGE,
    )
    return Side("stock", hub, prefix, None)


@dataclass
class SideResults:
    runs: list[Run] = field(default_factory=list)
    fetched: dict[str, tuple[int, int]] = field(default_factory=dict)
    largest: list[str] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before, after
    failures: list[str] = field(default_factory=list)  # failed runs, replaced


async def measure(
    side: Side, browser: Browser, engine: docker.DockerClient, args: argparse.Namespace
) -> SideResults:
    """--warmup uncounted runs, then --runs counted ones, each for a new user.

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
            user = f"cell{number}" if counted else f"warm{number}"
            number += 1
            password = await asyncio.to_thread(make_password, side, user)
            last = counted and len(results.runs) == args.runs - 1
            try:
                run = await browser_run(browser, side, user, password, args.screenshots, last)
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


def report(kh: SideResults, stock: SideResults, args: argparse.Namespace) -> list[str]:
    med = statistics.median
    cpus = len(os.sched_getaffinity(0))
    out = [
        "Time to a running cell in headless Chromium: kernelhub DockerRuntimeSpawner vs stock "
        "JupyterHub + DockerSpawner",
        f"image {IMAGE}, {MEM_LIMIT}/{CPU_LIMIT:g} CPU each, Notebook 7, new notebook from the "
        f"New menu; on {socket.gethostname()} ({cpus} CPUs); seconds, p50 of {args.runs} runs "
        f"(new user and browser context each), {args.warmup} warm-up run(s) not counted",
        f"  {'':<42}{'kernelhub':>10}{'stock':>8}{'kh/stock':>10}",
    ]
    rows = [("sign-in (not in the total)", "sign-in")]
    rows += [(label, mark) for mark, label in PHASES.items()]
    rows += [("TOTAL click Start -> output 42", "total")]
    for label, key in rows:
        ours = med(r.phases()[key] for r in kh.runs)
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
            with running(kernelhub_side(workdir, f"{run_prefix}k", IMAGE)) as side:
                results["kernelhub"] = await measure(side, browser, engine, args)
            gateway = check.bridge_gateway
            with running(stock_side(workdir, f"{run_prefix}s", gateway)) as side:
                results["stock"] = await measure(side, browser, engine, args)
        finally:
            await browser.close()
            dead_end.close()
    print("\n".join(report(results["kernelhub"], results["stock"], args)))


def main() -> None:
    args = parse_args()
    terminate_on_sigterm()
    run_prefix = f"khcell{secrets.token_hex(3)}"
    workdir = Path(tempfile.mkdtemp(prefix="kernelhub-first-cell-bench-"))
    engine = docker.from_env(timeout=60)
    try:
        asyncio.run(run(args, engine, workdir, run_prefix))
    except Failed as e:
        log(f"first-cell benchmark failed: {e}")
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
