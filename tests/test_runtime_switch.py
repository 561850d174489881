"""Changing a running runtime's type, listing a user's runtimes, and who may do either.

The hub's switch endpoint (what the notebook's Runtime menu calls through its runtime)
stops the server and starts it again under the same name with the new type, after
the checks every start makes; a refusal stops nothing. A runtime's own token acts on
its user's servers only: the attacks below use a real runtime's token, read from its
process as code in that runtime reads its environment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from harness import HubProcess, runtime_pids, start_runtime, stop_all_runtimes, wait_ready

pytestmark = pytest.mark.slow

CONFIG = """
c.RuntimeCatalog.runtime_types = [
    {"name": "cpu", "display_name": "None (CPU)", "mem_limit": "1G", "cpu_limit": 1.0},
    {"name": "cpu-large", "display_name": "More memory (CPU)", "mem_limit": "2G",
     "cpu_limit": 1.0},
    {"name": "team", "display_name": "Team only", "allowed_groups": ["ml-team"]},
]
c.RuntimeCatalog.max_running_runtimes_per_user = 2
"""


@pytest.fixture(scope="module")
def hub(hub_factory: Callable[..., HubProcess]) -> HubProcess:
    return hub_factory(config_text=CONFIG, name="switch", quotas=False)


@pytest.fixture
def api(hub: HubProcess, username: str) -> Iterator[httpx.Client]:
    with hub.api(hub.token(username)) as client:
        yield client
        stop_all_runtimes(client, username)


@pytest.fixture
def victim(hub: HubProcess, username: str) -> Iterator[tuple[str, httpx.Client]]:
    """Another user with a running runtime."""
    name = f"{username}-victim"
    with hub.api(hub.token(name)) as client:
        start_runtime(client, name, "", "cpu")
        yield name, client
        stop_all_runtimes(client, name)


def runtime_token(hub: HubProcess, user: str) -> str:
    """The JUPYTERHUB_API_TOKEN of ``user``'s (one) local runtime, as its code reads it."""
    (pid,) = runtime_pids(hub.data_dir, user)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(e for e in environ if e.startswith(b"JUPYTERHUB_API_TOKEN=")).decode()[21:]


def switch(api: httpx.Client, user: str, server: str, body: object) -> httpx.Response:
    return api.post(f"kernelhub/users/{user}/servers/{server}/switch", json=body)


def options_of(api: httpx.Client, user: str, server: str = "") -> dict:
    return dict(api.get(f"users/{user}").json()["servers"][server]["user_options"])


def test_a_switch_restarts_the_same_server_with_the_new_type_and_keeps_the_drive(
    hub: HubProcess, api: httpx.Client, username: str
) -> None:
    start_runtime(api, username, "", "cpu")
    (pid,) = runtime_pids(hub.data_dir, username)
    drive = hub.data_dir / "users" / username
    (drive / "kept.txt").write_text("still here")

    response = switch(api, username, "", {"runtime_type": "cpu-large"})

    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["runtime_type"] == "cpu-large"
    assert answer["switch_url"] == f"/hub/kernelhub/switch/{username}/"
    model = wait_ready(api, username, "")
    assert model["user_options"] == {"runtime": "cpu-large"}
    (new_pid,) = runtime_pids(hub.data_dir, username)
    assert new_pid != pid
    assert (drive / "kept.txt").read_text() == "still here"
    rows = api.get(f"kernelhub/users/{username}/runtimes").json()["runtimes"]
    (row,) = [r for r in rows if r["name"] == ""]
    assert (row["runtime_type"], row["runtime_type_label"], row["status"]) == (
        "cpu-large",
        "More memory (CPU)",
        "running",
    )


REFUSED = [
    # (body, HTTP status, words of the message)
    pytest.param({"runtime_type": "tpu"}, 400, ["'tpu'", "cpu, cpu-large"], id="unknown-type"),
    pytest.param({"runtime_type": "team"}, 400, ["ml-team"], id="another-groups-type"),
    pytest.param({"runtime_type": 7}, 400, ["runtime_type"], id="not-a-name"),
    pytest.param({"runtime_type": "x" * 65}, 400, ["runtime_type"], id="overlong-name"),
    pytest.param(
        {"runtime_type": "cpu", "image": "attacker/miner"}, 400, ["image"], id="extra-field"
    ),
    pytest.param(["cpu-large"], 400, ["JSON object"], id="not-an-object"),
]


@pytest.mark.parametrize(("body", "status", "words"), REFUSED)
def test_a_refused_switch_says_why_and_leaves_the_runtime_running(
    hub: HubProcess, api: httpx.Client, username: str, body: object, status: int, words: list[str]
) -> None:
    start_runtime(api, username, "", "cpu")
    (pid,) = runtime_pids(hub.data_dir, username)

    response = switch(api, username, "", body)

    assert response.status_code == status, response.text
    assert set(response.json()) == {"status", "message"}
    for word in words:
        assert word in response.json()["message"]
    assert runtime_pids(hub.data_dir, username) == [pid]
    assert options_of(api, username) == {"runtime": "cpu"}


def test_a_switch_over_the_runtime_limit_is_refused_and_stops_nothing(
    hub: HubProcess, api: httpx.Client, username: str
) -> None:
    start_runtime(api, username, "", "cpu")
    start_runtime(api, username, "second", "cpu")
    before = sorted(runtime_pids(hub.data_dir, username))
    # two running is the limit: counted without the switched server, so allowed...
    assert switch(api, username, "second", {"runtime_type": "cpu"}).json()["switch_url"] is None
    # ...and a stopped server cannot be switched, only started
    response = switch(api, username, "third", {"runtime_type": "cpu-large"})
    assert response.status_code == 409 and "not running" in response.json()["message"]
    assert sorted(runtime_pids(hub.data_dir, username)) == before


def test_a_runtimes_own_token_acts_on_its_own_users_servers_only(
    hub: HubProcess, api: httpx.Client, username: str, victim: tuple[str, httpx.Client]
) -> None:
    victim_name, victim_api = victim
    start_runtime(api, username, "", "cpu")
    victim_pid = runtime_pids(hub.data_dir, victim_name)
    attacks = {
        "switch another user's runtime": (
            "POST",
            f"kernelhub/users/{victim_name}/servers//switch",
            {"runtime_type": "cpu-large"},
        ),
        "stop another user's runtime": ("DELETE", f"users/{victim_name}/server", None),
        "start another user's named runtime": (
            "POST",
            f"users/{victim_name}/servers/x",
            {"user_options": {"runtime": "cpu"}},
        ),
        "list another user's runtimes": ("GET", f"kernelhub/users/{victim_name}/runtimes", None),
        "read another user's model": ("GET", f"users/{victim_name}", None),
        "list all users": ("GET", "users", None),
    }
    with hub.api(runtime_token(hub, username)) as runtime:
        own = runtime.get(f"kernelhub/users/{username}/runtimes")
        answers = {
            what: runtime.request(method, path, json=body).status_code
            for what, (method, path, body) in attacks.items()
        }

    assert own.status_code == 200
    refused = {what: status in (403, 404) for what, status in answers.items()}
    assert all(refused.values()), answers
    assert runtime_pids(hub.data_dir, victim_name) == victim_pid
    assert victim_api.get(f"users/{victim_name}").json()["servers"][""]["ready"]


def test_the_runtime_list_answers_json_and_refuses_strangers(
    hub: HubProcess, api: httpx.Client, username: str
) -> None:
    start_runtime(api, username, "", "cpu")

    answer = api.get(f"kernelhub/users/{username}/runtimes").json()

    (row,) = answer["runtimes"]
    assert row["status"] == "running" and row["age"] and row["started"]
    assert answer["quota"] is None  # this hub runs no quota daemon
    assert row["time_left"] == "no limit" and row["idle_stop_at"] is None
    anonymous = httpx.get(f"{hub.url}/hub/api/kernelhub/users/{username}/runtimes")
    assert anonymous.status_code == 403 and set(anonymous.json()) == {"status", "message"}
