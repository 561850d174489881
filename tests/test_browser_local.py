"""The embedded default in headless Chromium: local sign-in to a saved notebook.

Sign in with the local password, start a CPU runtime from the "Change runtime
type" form, create a notebook, run a cell, save it, check it through the contents
API, sign out. Screenshots go to test-artifacts/browser-local/ (see
test_browser_google.py for the Google sign-in version).
"""

from __future__ import annotations

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
from harness import HubProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]


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
