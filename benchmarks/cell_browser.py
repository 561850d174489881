"""One user's way to a running cell in headless Chromium, timed phase by phase (first_cell.py).

Sign in, (kernelhub with warm runtimes: wait, off the clock, until the runtime the
sign-in's landing page prepared is ready), click Start, wait for the tree UI, open a
new notebook from the New menu, wait for its kernel, run the first cell until "42"
shows; the monotonic mark of each phase's end, and what the browser fetched in each
phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from hubs import Failed, Side
from playwright.async_api import Browser, Page, Request
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser import (
    DIALOG,
    DIALOG_ACCEPT,
    KERNEL_INDICATOR,
    NOT_LOOPBACK,
    VIEWPORT,
)

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
        if "prepared" in self.marks:  # the wait for a warm runtime, before the click
            out["prepare"] = self.marks["prepared"] - self.marks["signed_in"]
        start = self.marks["click"]
        for mark in PHASES:
            end = self.marks.get(mark, start)  # a skipped page takes no time
            out[mark] = end - start
            start = end
        out["total"] = self.marks["output"] - self.marks["click"]
        return out


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
    browser: Browser,
    side: Side,
    user: str,
    password: str,
    shots: Path | None,
    inspect: bool,
    before_start: Callable[[], Awaitable[object]] | None = None,
) -> Run:
    """Sign in, Start, New notebook, run the cell; the marks of one run in a fresh context.

    On failure, screenshots of its tabs go to ``shots`` (when given). ``inspect``: also
    sum up what the browser fetched (after the clock stopped). ``before_start``: awaited
    on the start page, before the clock starts (the wait for a warm runtime)."""
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
        if before_start is not None:
            run.step = "waiting for the warm runtime"
            await before_start()
            run.marks["prepared"] = time.monotonic()
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
