"""The embedded default in headless Chromium: local sign-in to a saved notebook, and
the hub's own pages.

Sign in with the local password, start a CPU runtime from the "Change runtime
type" form, create a notebook, run a cell, save it, check it through the contents
API, sign out. Screenshots go to test-artifacts/browser-local/ (see
test_browser_google.py for the Google sign-in version).

The hub's pages carry kernelhub's name and logo, the sign-in page says which sign-in
the hub uses, and the home page lists the user's runtimes with type, age and time
left, and changes a runtime's type (test-artifacts/browser-home/).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from browser import (
    ARTIFACTS,
    browser_session,
    create_notebook,
    run_cell,
    save_notebook,
    sign_in,
    sign_out,
    start_runtime_from_form,
)
from harness import HubProcess, stop_all_runtimes
from playwright.sync_api import Locator, Page

from kernelhub.quotas.policy import Rule
from kernelhub.quotas.store import QuotaStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# two CPU-only types (no GPU here), so a runtime's type can change
TWO_TYPES = """
c.RuntimeCatalog.runtime_types = [
    {"name": "cpu", "display_name": "None (CPU)"},
    {"name": "cpu-small", "display_name": "Small CPU"},
]
"""


@pytest.fixture(scope="module")
def home_hub(hub_factory: Callable[..., HubProcess]) -> HubProcess:
    """Two runtime types and the quota daemon: time left on the home page is the
    maximum session length of the daemon's rules."""
    return hub_factory(TWO_TYPES, name="browser-home", quotas=True)


def test_a_notebook_is_created_run_saved_and_kept_after_sign_out(
    hub: HubProcess,
    username: str,
    user_api: httpx.Client,  # stops the runtime afterwards
) -> None:
    blocked: list[str] = []
    artifacts = ARTIFACTS / "browser-local"
    with browser_session(artifacts, blocked) as (context, page, steps):
        sign_in(page, hub.url, username, hub.password(username))
        page.goto(f"{hub.url}/hub/spawn")
        steps.shot("runtime-form")
        start_runtime_from_form(page, "cpu")
        assert page.url.startswith(f"{hub.url}/user/{username}/tree")
        steps.shot("tree")

        notebook = create_notebook(page)
        steps.shot("new-notebook", notebook)
        assert run_cell(notebook, "print(6 * 7)") == "42"
        steps.shot("ran-cell", notebook)
        assert save_notebook(notebook, "hello.ipynb") == "hello.ipynb"
        steps.shot("saved", notebook)

        response = page.request.get(f"{hub.url}/user/{username}/api/contents/hello.ipynb")
        assert response.status == 200, response.text()
        model = response.json()
        assert model["type"] == "notebook"
        first = model["content"]["cells"][0]
        assert first["source"] == "print(6 * 7)"
        assert [output.get("text") for output in first["outputs"]] == ["42\n"]

        sign_out(page, hub.url)
        steps.shot("signed-out")
        page.goto(f"{hub.url}/user/{username}/tree")
        page.wait_for_url(f"{hub.url}/hub/login**")
        assert page.locator('input[name="password"]').is_visible()
        steps.shot("tree-asks-to-sign-in")
        context.close()

    assert blocked == [], f"requests left loopback: {blocked}"
    assert len(list(artifacts.glob("*.png"))) == steps.count == 7


def text(locator: Locator) -> str:
    return re.sub(r"\s+", " ", locator.inner_text()).strip()


def assert_kernelhub_brand(page: Page) -> None:
    """kernelhub's name in the title and the nav bar, its logo loaded."""
    assert page.title() == "kernelhub"
    brand = page.locator("#kernelhub-brand")
    assert text(brand.locator(".kernelhub-name")) == "kernelhub"
    logo = brand.locator('img[alt="kernelhub logo"]')
    assert logo.is_visible()
    assert logo.evaluate("img => img.complete && img.naturalWidth > 0"), "logo not loaded"


def runtime_row(page: Page, server: str = "") -> Locator:
    return page.locator(f'#kernelhub-runtime-table tr.kh-runtime[data-server-name="{server}"]')


def test_the_home_page_lists_runtimes_and_changes_their_type(
    home_hub: HubProcess, username: str
) -> None:
    hub = home_hub
    blocked: list[str] = []
    with (
        browser_session(ARTIFACTS / "browser-home", blocked) as (context, page, steps),
        hub.api(hub.token(username)) as api,
    ):
        try:
            page.goto(f"{hub.url}/hub/login")
            assert_kernelhub_brand(page)
            said = text(page.locator("#kernelhub-sign-in"))
            assert said.startswith("This hub uses local accounts: your user name and the password")
            steps.shot("sign-in-page")

            sign_in(page, hub.url, username, hub.password(username))
            page.goto(f"{hub.url}/hub/spawn")
            start_runtime_from_form(page, "cpu")
            # a rule of the quota store: CPU sessions of this user end after 2 hours
            with QuotaStore.open(f"sqlite:///{hub.data_dir / 'quotas.sqlite'}") as store:
                store.set_rule(Rule("user", username, max_session_hours={"cpu": 2}))

            page.goto(f"{hub.url}/hub/home")
            assert_kernelhub_brand(page)
            row = runtime_row(page)
            assert text(row.locator(".kh-label")) == "Default"
            assert text(row.locator(".kh-type")) == "None (CPU)"
            assert text(row.locator(".kh-status")) == "running"
            assert re.fullmatch(r"under a minute|[1-5] min", text(row.locator(".kh-age")))
            assert re.fullmatch(r"1 h 5\d min", text(row.locator(".kh-time-left")))
            steps.shot("home-cpu-runtime")

            # Change type: confirm, the runtime stops, the type form opens for it
            page.once("dialog", lambda dialog: dialog.accept())
            row.locator(".kh-change-type").click()
            page.wait_for_url(f"{hub.url}/hub/spawn/{username}")
            assert not api.get(f"users/{username}").json().get("servers")
            steps.shot("change-type-form")
            start_runtime_from_form(page, "cpu-small")

            page.goto(f"{hub.url}/hub/home")
            row = runtime_row(page)
            assert text(row.locator(".kh-type")) == "Small CPU"
            assert text(row.locator(".kh-status")) == "running"
            # no rule names cpu-small: the 12-hour default
            assert re.fullmatch(r"11 h 5\d min", text(row.locator(".kh-time-left")))
            model = api.get(f"users/{username}").json()["servers"][""]
            assert model["user_options"]["runtime"] == "cpu-small"
            steps.shot("home-after-change")

            row.locator(".kh-stop").click()
            runtime_row(page).locator('.kh-status:text-is("stopped")').wait_for()
            assert not api.get(f"users/{username}").json().get("servers")
            assert runtime_row(page).locator(".kh-start").is_visible()
            steps.shot("home-stopped")
            context.close()
        finally:
            stop_all_runtimes(api, username)

    assert blocked == [], f"requests left loopback: {blocked}"
