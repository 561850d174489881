"""End to end in headless Chromium: Google sign-in to a saved notebook, then sign-out.

A real browser signs in at the real OIDC provider process standing in for Google,
chooses a runtime on "Change runtime type", opens Notebook 7, runs a cell, saves
the notebook to the user's drive and signs out; the runtime then asks for a new
sign-in. Each step's screenshot is kept in test-artifacts/browser-google/
(KERNELHUB_TEST_ARTIFACTS moves it).
"""

from __future__ import annotations

import json
import re

import pytest
from browser import (
    ARTIFACTS,
    Steps,
    browser_session,
    create_notebook,
    run_cell,
    save_notebook,
    start_runtime_from_form,
)
from harness import GOOGLE_DOMAIN, GoogleHub, google_user, stop_all_runtimes
from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def sign_in_with_google(
    page: Page, google: GoogleHub, email: str, steps: Steps, blocked: list[str]
) -> None:
    """Through the provider's sign-in page; the assets it wants from the internet
    are refused (by loopback_context) and forgotten: they are not kernelhub's."""
    page.goto(google.hub.url)
    page.wait_for_url(re.compile(r"/hub/login"))
    # kernelhub's page, saying which sign-in this hub uses
    assert page.title() == "kernelhub"
    assert page.locator('#kernelhub-brand img[alt="kernelhub logo"]').is_visible()
    said = page.locator("#kernelhub-sign-in").inner_text()
    assert (
        " ".join(said.split())
        == f"This hub uses Google sign-in: use your Google account in {GOOGLE_DOMAIN}."
    )
    steps.shot("hub-sign-in-page")
    before_provider = len(blocked)
    page.get_by_text("Sign in with Google").click()
    page.wait_for_url(f"{google.provider.url}/oauth2/authorize**")
    page.locator('input[name="sub"]').fill(email)
    steps.shot("provider-sign-in")
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(f"{google.hub.url}/hub/**")
    del blocked[before_provider:]


def test_google_sign_in_to_a_saved_notebook_and_out_again(google: GoogleHub) -> None:
    user, email = "judy", f"judy@{GOOGLE_DOMAIN}"
    google.provider.set_user(email, **google_user(email))
    blocked: list[str] = []
    artifacts = ARTIFACTS / "browser-google"
    with (
        browser_session(artifacts, blocked) as (context, page, steps),
        google.hub.api(google.hub.token(user)) as api,
    ):
        try:
            sign_in_with_google(page, google, email, steps, blocked)
            page.get_by_text("Change runtime type").first.wait_for()
            steps.shot("change-runtime-type")

            start_runtime_from_form(page, "cpu")
            assert page.url.startswith(f"{google.hub.url}/user/{user}/tree")
            steps.shot("notebook-7-tree")

            notebook = create_notebook(page)
            steps.shot("new-notebook", notebook)
            assert run_cell(notebook, "print(sum(range(10)))") == "45"
            steps.shot("cell-output", notebook)
            assert save_notebook(notebook, "first.ipynb") == "first.ipynb"
            steps.shot("saved", notebook)

            on_drive = google.hub.data_dir / "users" / user / "first.ipynb"
            cell = json.loads(on_drive.read_text())["cells"][0]
            assert "".join(cell["source"]) == "print(sum(range(10)))"
            assert [o.get("text") for o in cell["outputs"]] in (["45\n"], [["45\n"]])

            page.goto(f"{google.hub.url}/hub/logout")
            page.wait_for_url(re.compile(r"/hub/login"))
            steps.shot("signed-out")
            page.goto(f"{google.hub.url}/user/{user}/tree")
            page.wait_for_url(re.compile(r"/hub/login"))
            assert page.get_by_text("Sign in with Google").is_visible()
            steps.shot("runtime-asks-to-sign-in-again")
            context.close()
        finally:
            stop_all_runtimes(api, user)

    assert blocked == [], f"requests left loopback: {blocked}"
    shots = sorted(p.name for p in artifacts.glob("*.png"))
    assert len(shots) == steps.count == 9, shots
