"""Drive the hub and Notebook 7 in headless Chromium (Playwright's sync API).

Debian's Chromium is launched directly (Playwright never downloads a browser), and
every browser context made by `loopback_context` refuses requests to anything but
127.0.0.1, so a test cannot reach out by accident.

Selectors follow Notebook 7.x (JupyterLab 4): `.jp-Cell`, `.jp-OutputArea-output`,
toolbar buttons by their `data-command`, the kernel indicator's `data-status`.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Response,
    Route,
    ViewportSize,
    sync_playwright,
)

# each browser test's screenshots land in test-artifacts/<test>/ (CI keeps the folder)
ARTIFACTS = Path(
    os.environ.get(
        "KERNELHUB_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"
    )
)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking"]
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}

# milliseconds, as Playwright counts; generous: the test machine has 2 cores
ACTION_TIMEOUT = 30_000
SERVER_START_TIMEOUT = 60_000
KERNEL_TIMEOUT = 30_000
CELL_TIMEOUT = 30_000
SAVE_RETRY_S = 3.0

DEFAULT_KERNEL = "Python 3 (ipykernel)"
NOT_LOOPBACK = re.compile(r"^(?!(?:https?|wss?)://127\.0\.0\.1(?::\d+)?(?:/|$))")

CELLS = ".jp-Notebook .jp-Cell"
KERNEL_INDICATOR = ".jp-Notebook-ExecutionIndicator"
DIALOG = ".jp-Dialog"
DIALOG_ACCEPT = ".jp-Dialog-button.jp-mod-accept"


@contextmanager
def chromium(headless: bool = True) -> Iterator[Browser]:
    """Debian's Chromium, headless; closed (with Playwright's driver) on exit."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=headless, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def loopback_context(browser: Browser, blocked: list[str] | None = None) -> BrowserContext:
    """A fresh browser profile that aborts every request not addressed to 127.0.0.1.

    Aborted URLs are appended to ``blocked`` (when given) so a test can assert
    that the pages never tried to reach anything else.
    """
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(ACTION_TIMEOUT)

    def refuse(route: Route) -> None:
        if blocked is not None:
            blocked.append(route.request.url)
        route.abort("blockedbyclient")

    context.route(NOT_LOOPBACK, refuse)
    return context


@contextmanager
def browser_session(
    artifacts: Path, blocked: list[str] | None = None
) -> Iterator[tuple[BrowserContext, Page, Steps]]:
    """Chromium, a loopback-only context (see `loopback_context`) and its first page;
    screenshots go to ``artifacts``, emptied first."""
    shutil.rmtree(artifacts, ignore_errors=True)
    with chromium() as browser:
        context = loopback_context(browser, blocked)
        page = context.new_page()
        yield context, page, Steps(page, artifacts)


class Steps:
    """Numbered full-page screenshots of a test's steps: 01-name.png, 02-name.png, ..."""

    def __init__(self, page: Page, artifacts: Path) -> None:
        self.page = page  # reassign when the test moves to another tab
        self.artifacts = artifacts
        self.count = 0
        artifacts.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str, page: Page | None = None) -> Path:
        self.count += 1
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "step"
        path = self.artifacts / f"{self.count:02d}-{slug}.png"
        (page or self.page).screenshot(path=str(path), full_page=True)
        return path


# --- hub pages -------------------------------------------------------------------------


def sign_in(page: Page, hub_url: str, username: str, password: str) -> None:
    """Fill and submit the hub's login form; waits until the browser left /hub/login."""
    page.goto(f"{hub_url}/hub/login")
    page.locator('input[name="username"]').fill(username)
    page.locator('input[name="password"]').fill(password)
    with page.expect_response(
        lambda r: r.request.method == "POST" and urlsplit(r.url).path == "/hub/login"
    ) as posted:
        page.locator('form [type="submit"]').first.click()
    if posted.value.status != 302:
        raise AssertionError(f"sign-in as {username} failed: HTTP {posted.value.status}")
    page.wait_for_url(lambda url: urlsplit(url).path != "/hub/login")
    page.wait_for_load_state()


def start_runtime_from_form(
    page: Page, runtime_value: str = "cpu", timeout_ms: float = SERVER_START_TIMEOUT
) -> None:
    """On the "Change runtime type" form: choose ``runtime_value``, Start, await the tree.

    Returns once the browser shows Notebook 7's file browser at /user/<name>/tree.
    """
    form = page.locator("form").filter(has=page.locator('input[name="runtime"]'))
    form.wait_for()
    choice = form.locator(f'input[name="runtime"][value="{runtime_value}"]')
    if choice.is_disabled():
        reason = form.locator(f'[data-runtime="{runtime_value}"] .kh-unavailable')
        detail = reason.inner_text() if reason.count() else "disabled"
        raise AssertionError(f"runtime {runtime_value!r} cannot be chosen: {detail}")
    choice.check()
    form.locator('[type="submit"]').click()
    wait_for_tree(page, timeout_ms)


def open_cpu_notebook(page: Page, hub_url: str, username: str, password: str) -> Page:
    """Local sign-in, "None (CPU)" on the runtime form, then New notebook; its tab."""
    sign_in(page, hub_url, username, password)
    page.goto(f"{hub_url}/hub/spawn")
    start_runtime_from_form(page, "cpu")
    return create_notebook(page)


def wait_for_tree(page: Page, timeout_ms: float = SERVER_START_TIMEOUT) -> None:
    """Wait for Notebook 7's tree page (/user/<name>[/<server>]/tree) and its file list."""
    page.wait_for_url(re.compile(r"/user/[^/?#]+/(?:[^/?#]+/)?tree(?:[/?#]|$)"), timeout=timeout_ms)
    page.locator(".jp-DirListing-content").wait_for(timeout=timeout_ms)
    page.locator('[data-jp-item-name="new-dropdown"]').wait_for(timeout=timeout_ms)


def sign_out(page: Page, hub_url: str) -> None:
    """The hub's /hub/logout; returns on the login page it redirects to."""
    page.goto(f"{hub_url}/hub/logout")
    page.wait_for_url(re.compile(r"/hub/login"))


# --- Notebook 7 ------------------------------------------------------------------------


def create_notebook(page: Page, kernel: str = DEFAULT_KERNEL) -> Page:
    """From the tree page: New -> ``kernel``; returns the notebook's tab once its kernel is idle.

    Notebook 7 opens the notebook in a new tab. Its "New" menu lists kernels by
    display name; a "Select Kernel" dialog, if one comes up, is accepted as is.
    """
    page.locator('[data-jp-item-name="new-dropdown"] .lm-MenuBar-item').click()
    item = page.locator('.lm-Menu li[data-command="notebook:create-new"]').filter(has_text=kernel)
    with page.context.expect_page(timeout=ACTION_TIMEOUT) as new_tab:
        item.first.click()
    notebook = new_tab.value
    notebook.wait_for_url(re.compile(r"/notebooks/.+\.ipynb"))
    notebook.locator(CELLS).first.wait_for()
    wait_for_kernel_idle(notebook)
    return notebook


def wait_for_kernel_idle(nb_page: Page, timeout_ms: float = KERNEL_TIMEOUT) -> None:
    """Until the notebook's kernel is idle, both in the page and for the server.

    Accepts a "Select Kernel" dialog (its default choice) should one appear.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    indicator = nb_page.locator(f'{KERNEL_INDICATOR}[data-status="idle"]')
    kernel_select = nb_page.locator(DIALOG).filter(has_text="Select Kernel")
    while True:
        if kernel_select.is_visible():
            kernel_select.locator(DIALOG_ACCEPT).click()
            kernel_select.wait_for(state="detached")
            continue
        _fail_on_dialog(nb_page, "waiting for the kernel")
        if indicator.is_visible() and _server_kernel_state(nb_page) == "idle":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"kernel of {nb_page.url} not idle after {timeout_ms / 1000:g}s "
                f"(page says {_indicator_status(nb_page)!r}, "
                f"server says {_server_kernel_state(nb_page)!r})"
            )
        nb_page.wait_for_timeout(200)


def run_cell(
    nb_page: Page, code: str, timeout_ms: float = CELL_TIMEOUT, expect_output: bool = True
) -> str:
    """Type ``code`` into the active cell (the first if none is), Shift+Enter, return its output.

    Replaces what the cell held. Waits until the cell shows a new execution
    count and (unless ``expect_output`` is false) at least one output, and
    returns the outputs' text, one output per line, tracebacks included.
    Shift+Enter moves on to the next cell (a new one at the end), so calling
    this again fills the next cell.
    """
    cell = _active_cell(nb_page)
    prompt = cell.locator(".jp-InputPrompt")
    before = prompt.inner_text().strip()
    editor = cell.locator(".cm-content")
    editor.click()
    cell.locator(".cm-editor.cm-focused").wait_for()  # edit mode: keys go to this cell
    nb_page.keyboard.press("ControlOrMeta+A")
    nb_page.keyboard.press("Delete")
    # insert_text is one input event: no auto-closed brackets, no auto-indent
    nb_page.keyboard.insert_text(code)
    _wait_for_editor_text(editor, code)
    nb_page.keyboard.press("Shift+Enter")
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        now = prompt.inner_text().strip()
        if re.fullmatch(r"\[\d+\]:", now) and now != before:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"cell not executed after {timeout_ms / 1000:g}s: prompt {now!r}")
        nb_page.wait_for_timeout(100)
    outputs = cell.locator(".jp-OutputArea-output")
    if not expect_output:
        return "\n".join(text.rstrip("\n") for text in outputs.all_inner_texts())
    outputs.first.wait_for(timeout=max(1.0, (deadline - time.monotonic()) * 1000))
    return "\n".join(text.rstrip("\n") for text in outputs.all_inner_texts())


def save_notebook(nb_page: Page, name: str) -> str:
    """Rename the notebook to ``name`` (by its title), then Save (the Ctrl+S command).

    ``name`` is a file name (the notebook stays in its folder); ".ipynb" is added
    if it lacks it. Returns the notebook's new path once the server answered the
    rename, the save and the checkpoint.
    """
    if "/" in name:
        raise ValueError(f"a file name, not a path: {name!r}")
    if not name.endswith(".ipynb"):
        name += ".ipynb"
    path = posixpath.join(posixpath.dirname(notebook_path(nb_page)), name)
    if notebook_path(nb_page) != path:
        nb_page.locator("#jp-title h1").click()
        dialog = nb_page.locator(DIALOG).filter(has_text="Rename File")
        dialog.locator(".jp-Dialog-body input").fill(name)
        with nb_page.expect_response(lambda r: _is_contents_call(r, "PATCH")) as renamed:
            dialog.locator(DIALOG_ACCEPT).click()
        _expect_ok(renamed.value, f"rename to {path}")
        dialog.wait_for(state="detached")
        nb_page.wait_for_url(re.compile(rf"/notebooks/{re.escape(quote(path))}(?:[?#]|$)"))
        title = re.compile(rf"^\s*{re.escape(name.removesuffix('.ipynb'))}\s*$")
        nb_page.locator("#jp-title h1").filter(has_text=title).wait_for()
    _save(nb_page, path)
    return path


def _save(nb_page: Page, path: str, timeout_ms: float = ACTION_TIMEOUT) -> None:
    """Click Save until the server got the notebook (PUT) and the checkpoint (POST).

    Notebook 7 silently drops a save asked for while its previous save (with its
    checkpoint) is still under way, so a click that brings no PUT is repeated.
    """
    button = nb_page.locator('jp-button[data-command="docmanager:save"]')
    rename_on_save = nb_page.locator(DIALOG).filter(
        has=nb_page.locator(DIALOG_ACCEPT, has_text="Rename and Save")
    )
    seen: dict[str, Response] = {}

    def watch(response: Response) -> None:
        if "PUT" not in seen and _is_contents_call(response, "PUT", path):
            seen["PUT"] = response
        elif "PUT" in seen and _is_contents_call(response, "POST", f"{path}/checkpoints"):
            seen["POST"] = response

    nb_page.on("response", watch)
    try:
        deadline = time.monotonic() + timeout_ms / 1000
        clicked = 0.0
        while "POST" not in seen:
            if rename_on_save.is_visible():  # first save of an "Untitled": keep the name
                rename_on_save.locator(DIALOG_ACCEPT).click()
            elif "PUT" not in seen and time.monotonic() - clicked > SAVE_RETRY_S:
                _fail_on_dialog(nb_page, f"saving {path}")
                button.click()
                clicked = time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} not saved after {timeout_ms / 1000:g}s: {seen}")
            nb_page.wait_for_timeout(100)
    finally:
        nb_page.remove_listener("response", watch)
    _expect_ok(seen["PUT"], f"save of {path}")
    _expect_ok(seen["POST"], f"checkpoint of {path}")


def notebook_path(nb_page: Page) -> str:
    """The notebook's path below the server root, from the tab's URL."""
    path = urlsplit(nb_page.url).path
    if "/notebooks/" not in path:
        raise ValueError(f"not a notebook page: {nb_page.url}")
    return unquote(path.split("/notebooks/", 1)[1])


def server_url(page: Page) -> str:
    """The user's server URL ("http://127.0.0.1:PORT/user/<name>/"), from a tree/notebook URL."""
    parts = urlsplit(page.url)
    match = re.match(r"(/user/[^/]+/(?:[^/]+/)?)(?:tree|notebooks|edit|lab)(?:/|$)", parts.path)
    if not match:
        raise ValueError(f"not a Notebook page: {page.url}")
    return f"{parts.scheme}://{parts.netloc}{match.group(1)}"


def xsrf_headers(page: Page, url: str) -> dict[str, str]:
    """The X-XSRFToken header for calls through ``page.request`` to ``url`` (hub or server).

    Jupyter servers refuse cookie-authenticated writes without it, and log a
    warning for reads.
    """
    cookies = [c for c in page.context.cookies(url) if c.get("name") == "_xsrf"]
    cookies.sort(key=lambda c: len(c.get("path", "")), reverse=True)  # most specific first
    return {"X-XSRFToken": cookies[0].get("value", "")} if cookies else {}


# --- internals -------------------------------------------------------------------------


def _active_cell(nb_page: Page) -> Locator:
    cells = nb_page.locator(CELLS)
    cells.first.wait_for()
    index = nb_page.evaluate(
        """(selector) => Math.max(0, Array.from(document.querySelectorAll(selector))
               .findIndex((cell) => cell.classList.contains('jp-mod-active')))""",
        CELLS,
    )
    return cells.nth(int(index))


def _wait_for_editor_text(editor: Locator, code: str, timeout_s: float = 5.0) -> None:
    # innerText renders an empty line as two newlines, so compare without blank lines
    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.replace("\u00a0", " ").split("\n") if line.strip()]

    deadline = time.monotonic() + timeout_s
    while lines(editor.inner_text()) != lines(code):
        if time.monotonic() > deadline:
            raise AssertionError(f"editor holds {editor.inner_text()!r}, not {code!r}")
        time.sleep(0.05)


def _fail_on_dialog(page: Page, doing: str) -> None:
    """Raise with its text if a dialog (an error, a conflict) blocks the page."""
    dialog = page.locator(DIALOG)
    if dialog.count() and dialog.first.is_visible():
        text = re.sub(r"\s+", " ", dialog.first.inner_text()).strip()
        raise AssertionError(f"a dialog came up while {doing}: {text!r}")


def _indicator_status(nb_page: Page) -> str | None:
    indicator = nb_page.locator(KERNEL_INDICATOR)
    return indicator.first.get_attribute("data-status") if indicator.count() else None


def _server_kernel_state(nb_page: Page) -> str | None:
    """The execution state the server reports for this notebook's kernel (None: no session)."""
    base = server_url(nb_page)
    response = nb_page.request.get(f"{base}api/sessions", headers=xsrf_headers(nb_page, base))
    if not response.ok:
        return None
    path = notebook_path(nb_page)
    sessions: list[dict[str, Any]] = response.json()
    for session in sessions:
        if session.get("path") == path and session.get("kernel"):
            return str(session["kernel"].get("execution_state"))
    return None


def _is_contents_call(response: Response, method: str, name: str | None = None) -> bool:
    request = response.request
    if request.method != method or "/api/contents/" not in response.url:
        return False
    if name is None:
        return True
    return unquote(urlsplit(response.url).path).endswith(f"/api/contents/{name}")


def _expect_ok(response: Response, what: str) -> None:
    if not response.ok:
        raise AssertionError(f"{what} failed: {response.status} {response.text()[:500]}")
