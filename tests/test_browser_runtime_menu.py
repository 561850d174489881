"""Colab's Runtime menu and the resources panel, in headless Chromium against Docker runtimes.

A real hub (with its quota daemon) runs each runtime as a container of the small test
image. Two CPU-only runtime types stand in for "None" and "GPU" (no GPU here). As a
user would: open a notebook, write a file, Runtime -> Change runtime type -> the other
type -> Save, watch the progress, and find the same notebook open again in a runtime
of the new type with the file still there. A switch over the user's quota is refused
in the dialog and the runtime keeps running; the resources panel shows the container's
own cgroup figures and the quota service's GPU hours; Manage sessions stops another
runtime; Disconnect and delete stops this one. Screenshots: test-artifacts/browser-runtime-menu/.

The switch time (Save -> a cell runs again) is printed for the closing note.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import httpx
import pytest
from browser import (
    ACTION_TIMEOUT,
    ARTIFACTS,
    CELLS,
    DIALOG,
    browser_session,
    create_notebook,
    run_cell,
    save_notebook,
    sign_in,
    start_runtime_from_form,
    wait_for_kernel_idle,
)
from harness import HubProcess, docker_engine, start_runtime, stop_all_runtimes, wait_until
from playwright.sync_api import Page

from kernelhub.quotas.policy import Rule
from kernelhub.quotas.store import QuotaStore

pytestmark = [pytest.mark.docker, pytest.mark.browser, pytest.mark.slow]

TEST_IMAGE = "kernelhub/runtime-test:latest"
PREFIX = f"khmenu{secrets.token_hex(3)}"
GIB = 1024**3
CONFIG = f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "cpu", "display_name": "None (CPU)", "description": "A CPU runtime",
      "image": "{TEST_IMAGE}", "mem_limit": "1G", "cpu_limit": 1.0}},
    {{"name": "cpu-large", "display_name": "More memory (CPU)",
      "description": "A CPU runtime with 2 GB", "image": "{TEST_IMAGE}",
      "mem_limit": "2G", "cpu_limit": 1.0}},
]
c.RuntimeCatalog.max_running_runtimes_per_user = 3
c.DockerRuntimeSpawner.prefix = "{PREFIX}"
c.DockerRuntimeSpawner.drive_name_template = "{PREFIX}-drive-{{username}}"
c.DockerRuntimeSpawner.site_snippets_volume = "{PREFIX}-site-snippets"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
"""
SWITCH_TIMEOUT = 120_000  # ms: stop, then a new container and server on 2 cores
FILE_TEXT = "written before the switch"


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    with docker_engine(PREFIX, TEST_IMAGE) as client:
        yield client


@pytest.fixture(scope="module")
def hub(engine: docker.DockerClient, hub_factory: Callable[..., HubProcess]) -> HubProcess:
    return hub_factory(config_text=CONFIG, name="runtime-menu", runtimes="docker", quotas=True)


@pytest.fixture
def api(hub: HubProcess, username: str) -> Iterator[httpx.Client]:
    with hub.api(hub.token(username)) as client:
        yield client
        stop_all_runtimes(client, username)


@pytest.fixture
def store(hub: HubProcess) -> Iterator[QuotaStore]:
    with QuotaStore.open(f"sqlite:///{hub.data_dir / 'quotas.sqlite'}") as opened:
        yield opened


def container_of(
    engine: docker.DockerClient, user: str, server: str = ""
) -> docker.models.containers.Container:
    (found,) = engine.containers.list(
        filters={"label": [f"org.kernelhub.user={user}", f"org.kernelhub.server={server}"]}
    )
    return found


def cgroup_memory(container: docker.models.containers.Container) -> tuple[int, int]:
    """(used, limit) of the container's memory cgroup as the host sees it: usage less
    inactive page cache (as `docker stats`), and the limit."""
    container.reload()
    pid = container.attrs["State"]["Pid"]
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    v1 = [
        line.split(":", 2)[2] for line in lines if line.split(":", 2)[1].split(",").count("memory")
    ]
    if v1:
        group = Path("/sys/fs/cgroup/memory") / v1[0].lstrip("/")
        usage = int((group / "memory.usage_in_bytes").read_text())
        limit = int((group / "memory.limit_in_bytes").read_text())
        stat = dict(line.split() for line in (group / "memory.stat").read_text().splitlines())
        return usage - int(stat.get("total_inactive_file", 0)), limit
    path = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
    group = Path("/sys/fs/cgroup") / path.lstrip("/")
    stat = dict(line.split() for line in (group / "memory.stat").read_text().splitlines())
    usage = int((group / "memory.current").read_text()) - int(stat.get("inactive_file", 0))
    return usage, int((group / "memory.max").read_text())


def runtime_menu(page: Page, item: str) -> None:
    page.get_by_role("menuitem", name="Runtime", exact=True).click()
    page.get_by_role("menuitem", name=item).click()


def figure(page: Page, name: str) -> float:
    node = page.locator(f'[data-kernelhub-figure="{name}"]').first
    node.wait_for(state="attached", timeout=ACTION_TIMEOUT)  # some are data only, hidden
    return float(node.get_attribute("data-value") or "nan")


def runtime_type_of(api: httpx.Client, user: str, server: str = "") -> str:
    model = api.get(f"users/{user}").json()["servers"].get(server) or {}
    return str((model.get("user_options") or {}).get("runtime", ""))


def test_the_runtime_menu_switches_type_keeps_files_refuses_over_quota_and_stops(
    hub: HubProcess,
    engine: docker.DockerClient,
    api: httpx.Client,
    store: QuotaStore,
    username: str,
) -> None:
    # 2 of 10 GPU hours used this week: the quota bar must say what the quota API says
    now = datetime.now(UTC)
    store.set_rule(Rule(scope="user", subject=username, gpu_hours_week=10))
    store.account_interval(
        f"{username}/old",
        username,
        "gpu",
        now - timedelta(hours=3),
        now - timedelta(hours=1),
        1,
        0.9,
        0.0,
    )
    with browser_session(ARTIFACTS / "browser-runtime-menu") as (_, page, steps):
        sign_in(page, hub.url, username, hub.password(username))
        page.goto(f"{hub.url}/hub/spawn")
        start_runtime_from_form(page, "cpu")
        notebook = create_notebook(page)
        steps.page = notebook
        path = save_notebook(notebook, "switch-me")
        run_cell(notebook, f"open('kept.txt', 'w').write({FILE_TEXT!r})")
        steps.shot("notebook-in-cpu-runtime")

        # the resources panel: this container's cgroup, and the quota service's figures
        runtime_menu(notebook, "Show Resources Panel")
        used = figure(notebook, "memory-used")
        limit = figure(notebook, "memory-limit")
        host_used, host_limit = cgroup_memory(container_of(engine, username))
        assert limit == host_limit == 1 * GIB
        assert abs(used - host_used) <= 0.10 * host_used, (used, host_used)
        quota = httpx.get(
            f"{hub.url}/services/kernelhub-quotas/api/user",
            headers={"Authorization": f"token {hub.token(username)}"},
        ).json()
        wait_until(lambda: figure(notebook, "gpu-hours-left") > 0, what="the quota bar")
        assert figure(notebook, "gpu-hours-left") == pytest.approx(
            quota["remaining_gpu_hours"]["week"], abs=0.01
        )
        assert figure(notebook, "gpu-hours-used") == pytest.approx(2.0, abs=0.01)
        steps.shot("resources-panel")

        # Runtime -> Change runtime type -> the other type -> Save
        runtime_menu(notebook, "Change runtime type…")
        dialog = notebook.locator(DIALOG).filter(has_text="Change runtime type")
        dialog.locator('[data-runtime-type="cpu-large"]').click()
        steps.shot("change-runtime-type-dialog")
        old_container = container_of(engine, username).id
        saved_at = time.monotonic()
        dialog.get_by_role("button", name="Save").click()
        # the hub's switch page, then its progress page (both may pass in a second)
        notebook.wait_for_url(
            re.compile(r"/hub/(kernelhub/switch|spawn-pending)/"),
            wait_until="commit",
            timeout=SWITCH_TIMEOUT,
        )
        steps.shot("switching")
        notebook.wait_for_url(re.compile(rf"/notebooks/{re.escape(path)}$"), timeout=SWITCH_TIMEOUT)
        wait_for_kernel_idle(notebook, SWITCH_TIMEOUT)
        # the new kernel counts from [1] again: run the (empty) last cell, not the first
        notebook.locator(f"{CELLS} .cm-content").last.click()
        output = run_cell(notebook, "print(open('kept.txt').read())")
        switch_seconds = time.monotonic() - saved_at
        print(f"switch time (Save -> a cell ran in the new runtime): {switch_seconds:.1f} s")
        steps.shot("same-notebook-in-new-runtime")
        assert output == FILE_TEXT
        assert runtime_type_of(api, username) == "cpu-large"
        new_container = container_of(engine, username)
        assert new_container.id != old_container
        assert new_container.attrs["HostConfig"]["Memory"] == 2 * GIB

        # a second runtime, then a quota of one runtime: switching is refused, nothing stops
        start_runtime(api, username, "second", "cpu")
        store.set_rule(Rule(scope="user", subject=username, gpu_hours_week=10, max_concurrent=1))
        runtime_menu(notebook, "Change runtime type…")
        dialog = notebook.locator(DIALOG).filter(has_text="Change runtime type")
        dialog.locator('[data-runtime-type="cpu"]').click()
        dialog.get_by_role("button", name="Save").click()
        refusal = notebook.locator(".kh-RuntimeChooser-error")
        refusal.wait_for(timeout=ACTION_TIMEOUT)
        steps.shot("switch-refused-over-quota")
        assert "limit" in refusal.inner_text().lower()
        notebook.locator(DIALOG).get_by_role("button", name="Cancel").click()
        assert container_of(engine, username).id == new_container.id  # still the same runtime
        assert runtime_type_of(api, username) == "cpu-large"
        assert run_cell(notebook, "print(6 * 7)") == "42"

        # Manage sessions: both runtimes listed; stop the second one from there
        runtime_menu(notebook, "Manage sessions")
        sessions = notebook.locator(DIALOG).filter(has_text="Active sessions")
        row = sessions.locator('tr[data-server="second"]')
        row.wait_for(timeout=ACTION_TIMEOUT)
        assert "More memory (CPU)" in sessions.locator('tr[data-server=""]').inner_text()
        steps.shot("manage-sessions")
        row.get_by_role("button", name="Stop").click()
        row.locator(".kh-SessionList-status", has_text="stopped").wait_for(timeout=ACTION_TIMEOUT)
        wait_until(
            lambda: "second" not in (api.get(f"users/{username}").json()["servers"]),
            timeout=60,
            what="the second runtime stopped",
        )
        sessions.get_by_role("button", name="Close").click()

        # the same menu and figures in JupyterLab (its status bar has them too)
        notebook.goto(f"{hub.url}/user/{username}/lab/tree/{path}")
        notebook.locator("#kernelhub-resources-indicator-statusbar").wait_for(
            timeout=ACTION_TIMEOUT
        )
        notebook.locator(f"{CELLS}").first.wait_for(timeout=ACTION_TIMEOUT)
        runtime_menu(notebook, "Change runtime type…")
        lab_dialog = notebook.locator(DIALOG).filter(has_text="Change runtime type")
        lab_dialog.locator('[data-runtime-type="cpu-large"]').wait_for(timeout=ACTION_TIMEOUT)
        steps.shot("jupyterlab-runtime-menu")
        lab_dialog.get_by_role("button", name="Cancel").click()

        # Disconnect and delete runtime: this runtime stops, the hub shows it stopped
        runtime_menu(notebook, "Disconnect and delete runtime")
        confirm = notebook.locator(DIALOG).filter(has_text="Disconnect and delete runtime")
        confirm.get_by_role("button", name="Delete runtime").click()
        notebook.wait_for_url(re.compile(r"/hub/home"), timeout=ACTION_TIMEOUT)
        wait_until(
            lambda: not api.get(f"users/{username}").json()["servers"],
            timeout=60,
            what="the runtime stopped",
        )
        notebook.reload()
        steps.shot("hub-home-after-disconnect")
        assert "stopped" in notebook.locator("#kernelhub-runtimes").inner_text().lower()
