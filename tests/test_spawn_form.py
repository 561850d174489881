"""The "Change runtime type" form, posted as a browser does (session cookie + XSRF)."""

from __future__ import annotations

import httpx
import pytest
from harness import HubProcess, runtime_pids, sign_in, text_of, wait_ready, xsrf_token

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(hub: HubProcess, username: str) -> httpx.Client:
    session = sign_in(hub, username, hub.password(username))
    yield session
    session.close()


def post_form(
    browser: httpx.Client, fields: dict[str, str], path: str = "/hub/spawn"
) -> httpx.Response:
    browser.get(path)
    return browser.post(path, data={**fields, "_xsrf": xsrf_token(browser)})


def test_the_form_offers_cpu_and_shows_gpu_disabled_with_its_reason(browser: httpx.Client) -> None:
    page = browser.get("/hub/spawn")

    assert page.status_code == 200
    text = text_of(page.text)
    assert "Change runtime type" in text
    assert "Hardware accelerator" in text
    assert 'value="cpu" class="form-check-input" checked' in page.text
    assert 'value="gpu" class="form-check-input" disabled' in page.text
    assert "Unavailable: no GPU found on this host" in text


def test_start_with_none_cpu_opens_notebook_7(
    hub: HubProcess, browser: httpx.Client, user_api: httpx.Client, username: str
) -> None:
    response = post_form(browser, {"runtime": "cpu"})

    assert response.status_code == 200
    assert f"/hub/spawn-pending/{username}" in str(response.url)
    model = wait_ready(user_api, username)
    assert model["user_options"] == {"runtime": "cpu"}
    notebook = browser.get(f"/user/{username}/tree")
    assert notebook.status_code == 200
    assert '"appName": "Jupyter Notebook"' in notebook.text
    assert '"appVersion": "7.' in notebook.text


@pytest.mark.parametrize(
    ("fields", "fragments"),
    [
        pytest.param({"runtime": "tpu"}, ["unknown runtime type 'tpu'", "cpu, gpu"], id="unknown"),
        pytest.param({"runtime": "gpu"}, ["'gpu' is unavailable", "available now: cpu"], id="gpu"),
        pytest.param({}, ["choose one hardware accelerator: cpu, gpu"], id="nothing-chosen"),
    ],
)
def test_a_refused_choice_shows_the_form_again_with_the_reason(
    hub: HubProcess,
    browser: httpx.Client,
    user_api: httpx.Client,
    username: str,
    fields: dict[str, str],
    fragments: list[str],
) -> None:
    response = post_form(browser, fields)

    assert response.status_code == 400
    text = text_of(response.text)
    for fragment in fragments:
        assert fragment in text
    assert "Change runtime type" in text, "the form is shown again to choose anew"
    assert "Traceback" not in response.text
    user = user_api.get(f"users/{username}").json()
    assert user["servers"] == {}
    assert runtime_pids(hub.data_dir, username) == []


def test_a_named_runtime_is_started_from_its_own_form(
    hub: HubProcess, browser: httpx.Client, user_api: httpx.Client, username: str
) -> None:
    response = post_form(browser, {"runtime": "cpu"}, path=f"/hub/spawn/{username}/exp1")

    assert response.status_code == 200
    model = wait_ready(user_api, username, "exp1")
    notebook = browser.get(f"/user/{username}/exp1/tree")
    assert notebook.status_code == 200
    assert '"appName": "Jupyter Notebook"' in notebook.text
    assert model["url"] == f"/user/{username}/exp1/"


def test_the_form_post_requires_the_xsrf_token(
    hub: HubProcess, browser: httpx.Client, user_api: httpx.Client, username: str
) -> None:
    browser.get("/hub/spawn")
    response = browser.post("/hub/spawn", data={"runtime": "cpu"})

    assert response.status_code == 403
    assert user_api.get(f"users/{username}").json()["servers"] == {}
