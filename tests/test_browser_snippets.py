"""Code snippets in Notebook 7, in headless Chromium: the kernelhub-snippets frontend
against its server extension, in local runtimes of the embedded default and in a
Docker runtime of the test image (which installs the wheel, as every runtime image).

Ctrl+Alt+P opens the palette; a search finds a built-in snippet, Enter inserts its cells
below the active cell, Shift+Enter runs them and the output shows. A malformed file in
the user's own snippets folder is reported (in the panel and the palette) and skipped,
while the panel lists the other snippets with their sources, inserts them, and saves
selected cells as a new snippet of the user's. Screenshots go to
test-artifacts/browser-snippets-*/.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import httpx
import pytest
from browser import ARTIFACTS, CELLS, DIALOG, browser_session, open_cpu_notebook
from harness import HubProcess, stop_all_runtimes
from playwright.sync_api import Locator, Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PALETTE = ".jp-kh-SnippetPalette"
PANEL = "#kernelhub-snippets-panel"
PROBLEMS = ".jp-kh-Snippets-problems"

# a built-in snippet (kernelhub_snippets/builtin/drive-location.md): a markdown cell,
# then code that prints where the drive is
DRIVE_SNIPPET = "drive-location"
DRIVE_TITLE = "Where your drive lives and how much space is left"

USER_SNIPPET = """---
title: Greet the answer
tags: [greeting]
category: Mine
---

```python
print("the answer is", 6 * 7)
```
"""
# no title: the server reports the file and skips it
MALFORMED_SNIPPET = """---
tags: [broken]
---

```python
print("never listed")
```
"""


TEST_IMAGE = "kernelhub/runtime-test:latest"
DOCKER_PREFIX = f"khsnip{secrets.token_hex(3)}"
DOCKER_CONFIG = f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "cpu", "display_name": "None (CPU)", "image": "{TEST_IMAGE}",
      "mem_limit": "1G", "cpu_limit": 1.0}},
]
c.DockerRuntimeSpawner.prefix = "{DOCKER_PREFIX}"
c.DockerRuntimeSpawner.drive_name_template = "{DOCKER_PREFIX}-drive-{{username}}"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
"""


@pytest.fixture(scope="module")
def docker_hub(hub_factory: Callable[..., HubProcess]) -> Iterator[HubProcess]:
    """A hub whose runtimes are containers of the test image; they and their drives are
    removed afterwards."""
    engine = docker.from_env()
    engine.images.get(TEST_IMAGE)  # built by scripts/dev test; missing: fail loudly
    yield hub_factory(config_text=DOCKER_CONFIG, name="docker-snippets", runtimes="docker")
    for container in engine.containers.list(all=True, filters={"name": DOCKER_PREFIX}):
        container.remove(force=True)
    for volume in engine.volumes.list(filters={"name": DOCKER_PREFIX}):
        volume.remove(force=True)
    engine.close()


def user_snippets_dir(hub: HubProcess, username: str) -> Path:
    """The user's own snippets folder: ~/.kernelhub/snippets on the drive (the home)."""
    return hub.data_dir / "users" / username / ".kernelhub" / "snippets"


def cell_sources(nb_page: Page) -> list[str]:
    """Each cell's source as the notebook's model holds it, through the page's editors."""
    return [
        text.replace("\u00a0", " ").rstrip("\n")
        for text in nb_page.locator(f"{CELLS} .jp-InputArea-editor .cm-content").all_inner_texts()
    ]


def press_ctrl_alt_p(nb_page: Page) -> Locator:
    """Ctrl+Alt+P in the notebook; returns the palette once it shows."""
    nb_page.keyboard.press("Control+Alt+p")
    palette = nb_page.locator(PALETTE)
    palette.wait_for()
    return palette


def show_snippets_panel(nb_page: Page) -> Locator:
    """View > Show Snippets Panel; returns the panel once it lists snippets."""
    nb_page.locator(".lm-MenuBar-item", has_text="View").click()
    nb_page.locator('.lm-Menu-item[data-command="kernelhub-snippets:show-panel"]').click()
    panel = nb_page.locator(PANEL)
    panel.locator(".jp-kh-SnippetPanel-item").first.wait_for()
    return panel


def wait_for_output(cell: Locator, pattern: str) -> str:
    output = cell.locator(".jp-OutputArea-output").first
    expect(output).to_contain_text(re.compile(pattern))
    return output.inner_text()


def insert_and_run_with_ctrl_alt_p(
    hub: HubProcess, username: str, password: str, artifacts: Path
) -> str:
    """Sign in, start a CPU runtime, open a notebook; Ctrl+Alt+P, search "drive space",
    Enter, Shift+Enter. Returns the code cell's output."""
    blocked: list[str] = []
    errors: list[str] = []  # the extension's errors in the browser console, on any page
    with browser_session(artifacts, blocked) as (context, page, steps):
        context.on(
            "console",
            lambda message: (
                errors.append(message.text)
                if message.type == "error" and re.search("snippet", message.text, re.I)
                else None
            ),
        )
        notebook = open_cpu_notebook(page, hub.url, username, password)
        steps.page = notebook
        assert cell_sources(notebook) == [""]

        palette = press_ctrl_alt_p(notebook)
        search = palette.locator(".jp-kh-SnippetPalette-search")
        expect(search).to_be_focused()
        # every built-in snippet is listed before a search, each with its source
        expect(palette.locator(".jp-kh-SnippetPalette-item")).to_have_count(29)
        steps.shot("palette")

        search.press_sequentially("drive space")  # fuzzy: title and tags, any order
        first = palette.locator(".jp-kh-SnippetPalette-item").first
        expect(first).to_have_attribute("data-snippet-id", DRIVE_SNIPPET)
        expect(first).to_have_class(re.compile("jp-mod-selected"))
        expect(first.locator(".jp-kh-Snippets-source")).to_have_text("built-in")
        preview = palette.locator(".jp-kh-SnippetPalette-preview")
        expect(preview).to_contain_text(DRIVE_TITLE)
        expect(preview.locator('[data-cell-type="code"]')).to_contain_text("shutil.disk_usage")
        expect(palette.locator(PROBLEMS)).to_have_count(0)  # nothing malformed here
        steps.shot("searched")

        search.press("Enter")
        expect(notebook.locator(DIALOG)).to_have_count(0)
        # below the (empty) active cell: the snippet's markdown cell, then its code cell
        cells = notebook.locator(CELLS)
        expect(cells).to_have_count(3)
        expect(cells.nth(1)).to_have_class(re.compile("jp-MarkdownCell"))
        sources = cell_sources(notebook)
        assert sources[0] == ""
        assert sources[1].startswith("kernelhub keeps your home directory")
        assert sources[2].startswith("import shutil")
        steps.shot("inserted")

        # the inserted cells are selected, in command mode: Shift+Enter runs them all
        notebook.keyboard.press("Shift+Enter")
        output = wait_for_output(cells.nth(2), r"drive:\s+/")
        expect(cells.nth(1).locator(".jp-MarkdownOutput")).to_contain_text("that is your drive")
        steps.shot("ran")
        context.close()

    assert blocked == [], f"requests left loopback: {blocked}"
    assert errors == [], errors
    return output


def test_ctrl_alt_p_finds_inserts_and_runs_a_snippet(
    hub: HubProcess,
    username: str,
    user_api: httpx.Client,  # stops the runtime afterwards
) -> None:
    artifacts = ARTIFACTS / "browser-snippets-palette"
    output = insert_and_run_with_ctrl_alt_p(hub, username, hub.password(username), artifacts)
    home = hub.data_dir / "users" / username
    assert f"drive:  {home}" in output
    assert f"cwd:    {home}" in output
    assert re.search(r"free:\s+[\d.]+ GiB", output), output


@pytest.mark.docker
def test_the_test_image_serves_the_snippets_in_a_docker_runtime(
    docker_hub: HubProcess, username: str
) -> None:
    # the runtime images install the wheel: the same flow in a container of the test image
    artifacts = ARTIFACTS / "browser-snippets-docker"
    try:
        password = docker_hub.password(username)
        output = insert_and_run_with_ctrl_alt_p(docker_hub, username, password, artifacts)
    finally:
        with docker_hub.api(docker_hub.token(username)) as api:
            stop_all_runtimes(api, username)
    assert "drive:  /home/jovyan" in output  # the drive volume, mounted as the home
    assert re.search(r"free:\s+[\d.]+ GiB", output), output


def test_a_malformed_snippet_file_is_reported_and_skipped_and_the_panel_still_works(
    hub: HubProcess,
    username: str,
    user_api: httpx.Client,  # stops the runtime afterwards
) -> None:
    folder = user_snippets_dir(hub, username)
    folder.mkdir(parents=True)
    (folder / "greet.md").write_text(USER_SNIPPET)
    (folder / "broken.md").write_text(MALFORMED_SNIPPET)
    blocked: list[str] = []
    artifacts = ARTIFACTS / "browser-snippets-panel"
    with browser_session(artifacts, blocked) as (context, page, steps):
        notebook = open_cpu_notebook(page, hub.url, username, hub.password(username))
        steps.page = notebook

        # the panel: one skipped file, named with its reason, and every good snippet
        panel = show_snippets_panel(notebook)
        problems = panel.locator(PROBLEMS)
        expect(problems.locator("summary")).to_have_text("⚠ 1 snippet file skipped")
        problems.locator("summary").click()
        expect(problems.locator("li")).to_have_text(
            "broken.md (your snippets): front matter has no title"
        )
        items = panel.locator(".jp-kh-SnippetPanel-item")
        expect(items).to_have_count(30)  # 29 built-in and the user's good one
        expect(panel.locator('[data-snippet-id="broken"]')).to_have_count(0)
        mine = panel.locator('.jp-kh-SnippetPanel-category[data-category="Mine"]')
        greet = mine.locator('[data-snippet-id="greet"]')
        expect(greet.locator(".jp-kh-Snippets-source")).to_have_text("yours")
        expect(panel.locator('[data-snippet-id="pandas-csv"] .jp-kh-Snippets-source')).to_have_text(
            "built-in"
        )
        steps.shot("panel-with-problem")

        # the palette says so too, and still works
        palette = press_ctrl_alt_p(notebook)
        expect(palette.locator(f"{PROBLEMS} summary")).to_have_text("⚠ 1 snippet file skipped")
        palette.locator(".jp-kh-SnippetPalette-search").press_sequentially("greet")
        first = palette.locator(".jp-kh-SnippetPalette-item").first
        expect(first).to_have_attribute("data-snippet-id", "greet")
        expect(first.locator(".jp-kh-Snippets-source")).to_have_text("yours")
        steps.shot("palette-with-problem")
        notebook.keyboard.press("Escape")
        expect(notebook.locator(DIALOG)).to_have_count(0)

        # a click in the panel inserts the user's snippet; it runs
        greet.locator(".jp-kh-SnippetPanel-insert").click()
        cells = notebook.locator(CELLS)
        expect(cells).to_have_count(2)
        assert cell_sources(notebook)[1] == 'print("the answer is", 6 * 7)'
        notebook.keyboard.press("Shift+Enter")
        assert wait_for_output(cells.nth(1), "the answer is 42").strip() == "the answer is 42"
        steps.shot("inserted-from-panel")

        # save that cell as a new snippet of the user's: Edit > Save Selected Cells...
        cells.nth(1).locator(".jp-InputPrompt").click()
        notebook.locator(".lm-MenuBar-item", has_text="Edit").click()
        notebook.locator('.lm-Menu-item[data-command="kernelhub-snippets:save-selection"]').click()
        form = notebook.locator(DIALOG).filter(has=notebook.locator(".jp-kh-SaveSnippet"))
        form.locator('input[name="title"]').fill("Answer again")
        form.locator('input[name="tags"]').fill("answer, demo")
        form.locator(".jp-Dialog-button.jp-mod-accept").click()
        expect(notebook.locator(DIALOG)).to_have_count(0)
        saved = panel.locator('[data-snippet-id="answer-again"]')
        expect(saved.locator(".jp-kh-Snippets-source")).to_have_text("yours")
        steps.shot("saved-selection")
        context.close()

    text = (folder / "answer-again.md").read_text()
    assert "title: Answer again" in text
    assert "tags: [answer, demo]" in text
    assert 'print("the answer is", 6 * 7)' in text
    assert (folder / "broken.md").read_text() == MALFORMED_SNIPPET  # reported, left alone
    assert blocked == [], f"requests left loopback: {blocked}"
