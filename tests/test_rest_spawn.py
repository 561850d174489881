"""Spawning runtimes through JupyterHub's REST API, as kernelhub completes it."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from harness import HubProcess, runtime_pids, server_path, start_runtime, wait_until

pytestmark = pytest.mark.slow

BAD_REQUESTS = [
    pytest.param({"user_options": {"runtime": "tpu"}}, ["'tpu'", "cpu, gpu"], id="unknown-type"),
    pytest.param(
        {"user_options": {"runtime": 7}},
        ["'runtime' must be a string", "cpu, gpu"],
        id="runtime-not-a-string",
    ),
    pytest.param(
        {"user_options": {"runtime": "cpu", "image": "attacker/miner"}},
        ["unknown user option(s): image", "cpu, gpu"],
        id="extra-option",
    ),
    pytest.param(
        {"user_options": ["cpu"]}, ["user_options must be an object"], id="options-not-object"
    ),
    pytest.param(
        {"user_options": {"runtime": "gpu"}},
        ["'gpu' is unavailable", "no GPU found", "available now: cpu"],
        id="gpu-without-gpus",
    ),
]


@pytest.mark.parametrize(("body", "fragments"), BAD_REQUESTS)
@pytest.mark.parametrize("server", ["", "exp1"], ids=["default-server", "named-server"])
def test_a_bad_spawn_request_is_refused_with_the_valid_choices_and_leaves_nothing(
    hub: HubProcess,
    user_api: httpx.Client,
    username: str,
    body: dict,
    fragments: list[str],
    server: str,
) -> None:
    response = user_api.post(server_path(username, server), json=body)

    assert response.status_code == 400
    error = response.json()
    assert error["status"] == 400
    for fragment in fragments:
        assert fragment in error["message"]
    servers = user_api.get(f"users/{username}", params={"include_stopped_servers": 1}).json()
    assert server not in servers["servers"] or servers["servers"][server]["pending"] is None
    assert "exp1" not in servers["servers"], "a refused named server must not be created"
    assert runtime_pids(hub.data_dir, username) == []


def test_a_body_that_is_not_json_is_refused(user_api: httpx.Client, username: str) -> None:
    response = user_api.post(
        server_path(username, ""),
        content=b"runtime=cpu",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["message"]


def test_runtime_types_list_cpu_available_and_gpu_disabled_with_reason(
    user_api: httpx.Client,
) -> None:
    catalog = user_api.get("kernelhub/runtime-types").json()

    by_name = {t["name"]: t for t in catalog["runtime_types"]}
    assert list(by_name) == ["cpu", "gpu"]
    assert by_name["cpu"]["available"] is True
    assert by_name["cpu"]["display_name"] == "None (CPU)"
    assert by_name["gpu"]["available"] is False
    assert "no GPU found" in by_name["gpu"]["reason"]
    assert catalog["gpus"]["total"] == 0


def test_runtime_types_need_credentials(hub: HubProcess) -> None:
    response = httpx.get(f"{hub.url}/hub/api/kernelhub/runtime-types")
    assert response.status_code == 403
    assert set(response.json()) == {"status", "message"}


def test_openapi_document_describes_the_additions(hub: HubProcess) -> None:
    spec = httpx.get(f"{hub.url}/hub/api/kernelhub/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert "/kernelhub/runtime-types" in spec["paths"]
    assert "/users/{name}/servers/{server_name}" in spec["paths"]


def test_a_cpu_and_a_second_runtime_run_side_by_side_up_to_the_cap(
    hub: HubProcess, user_api: httpx.Client, username: str
) -> None:
    default = start_runtime(user_api, username, "", "cpu")
    named = start_runtime(user_api, username, "exp1", "cpu")

    assert default["url"] == f"/user/{username}/"
    assert named["url"] == f"/user/{username}/exp1/"
    for model in (default, named):
        status = user_api.get(f"{hub.url}{model['url']}api/status")
        assert status.status_code == 200
        assert model["user_options"] == {"runtime": "cpu"}

    third = user_api.post(server_path(username, "exp2"), json={"user_options": {"runtime": "cpu"}})
    assert third.status_code == 403  # a limit, as a quota rule's max_concurrent answers it
    assert third.json()["message"] == (
        "runtime limit reached: 2 of 2 runtimes running; stop one to start another"
    )
    assert len(runtime_pids(hub.data_dir, username)) == 2


def test_stop_then_start_keeps_the_users_files(
    hub: HubProcess, user_api: httpx.Client, username: str
) -> None:
    model = start_runtime(user_api, username)
    contents = f"{hub.url}{model['url']}api/contents/keep.txt"
    saved = user_api.put(contents, json={"type": "file", "format": "text", "content": "still here"})
    assert saved.status_code in (200, 201)

    user_api.delete(server_path(username, ""))
    wait_until(lambda: not user_api.get(f"users/{username}").json()["servers"], what="stop")
    model = start_runtime(user_api, username)

    again = user_api.get(f"{hub.url}{model['url']}api/contents/keep.txt")
    assert again.json()["content"] == "still here"
    assert (hub.data_dir / "users" / username / "keep.txt").read_text() == "still here"


def test_a_server_that_dies_while_starting_fails_the_spawn_at_once(
    hub_factory: Callable[..., HubProcess], username: str
) -> None:
    hub = hub_factory('c.LocalRuntimeSpawner.cmd = ["false"]', name="dying-server")
    with hub.api(hub.token(username)) as api:
        started = time.monotonic()
        response = api.post(server_path(username, ""), json={"user_options": {"runtime": "cpu"}})
        assert response.status_code in (201, 202, 500), response.text

        def gone() -> bool:
            return not api.get(f"users/{username}").json()["servers"]

        wait_until(gone, timeout=30, what="the failed spawn to be cleaned up")
        assert time.monotonic() - started < 15, "a dead server must not wait for the timeout"
    assert "the runtime's server exited while starting (exit status 1)" in hub.log()
