"""GPU runtime types on a hub with a configured inventory of one GPU.

No GPU exists on the test machines: the inventory is configuration (as on a hub
that cannot see NVML). Local runtimes get their GPU through CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from harness import (
    HubProcess,
    runtime_pids,
    server_path,
    sign_in,
    start_runtime,
    stop_all_runtimes,
    text_of,
)

pytestmark = pytest.mark.slow

ONE_GPU_CONFIG = """
from kernelhub.runtimes.types import DEFAULT_RUNTIME_TYPES
c.GpuInventory.devices = ["0"]
c.RuntimeCatalog.runtime_types = DEFAULT_RUNTIME_TYPES + [
    {"name": "a100", "display_name": "A100 (ML team)", "gpus": 1,
     "allowed_groups": ["ml-team"]},
]
"""


@pytest.fixture(scope="module")
def gpu_hub(hub_factory: Callable[..., HubProcess]) -> HubProcess:
    hub = hub_factory(config_text=ONE_GPU_CONFIG, name="onegpu")
    with hub.api(hub.token("admin")) as admin:
        admin.post("users/erin")
        assert admin.post("groups/ml-team").status_code == 201
        joined = admin.post("groups/ml-team/users", json={"users": ["erin"]})
        assert joined.status_code == 200
    return hub


@pytest.fixture
def apis(gpu_hub: HubProcess) -> Iterator[dict[str, httpx.Client]]:
    clients = {name: gpu_hub.api(gpu_hub.token(name)) for name in ("alice", "bob", "erin")}
    yield clients
    for name, client in clients.items():
        stop_all_runtimes(client, name)
        client.close()


def availability(api: httpx.Client) -> dict[str, tuple[bool, str]]:
    types = api.get("kernelhub/runtime-types").json()["runtime_types"]
    return {t["name"]: (t["available"], t["reason"]) for t in types}


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_a_gpu_runtime_gets_the_gpu_exclusively(gpu_hub: HubProcess, apis: dict) -> None:
    assert availability(apis["alice"])["gpu"] == (True, "")

    start_runtime(apis["alice"], "alice", runtime="gpu")

    (pid,) = runtime_pids(gpu_hub.data_dir, "alice")
    assert environment_of(pid)["CUDA_VISIBLE_DEVICES"] == "0"
    available, reason = availability(apis["bob"])["gpu"]
    assert not available
    assert "all GPUs are in use (1 of 1 taken)" in reason
    refused = apis["bob"].post(server_path("bob", ""), json={"user_options": {"runtime": "gpu"}})
    assert refused.status_code == 400
    assert "all GPUs are in use" in refused.json()["message"]
    assert runtime_pids(gpu_hub.data_dir, "bob") == []


def test_a_cpu_runtime_sees_no_gpu(gpu_hub: HubProcess, apis: dict) -> None:
    start_runtime(apis["bob"], "bob", runtime="cpu")
    (pid,) = runtime_pids(gpu_hub.data_dir, "bob")
    assert environment_of(pid)["CUDA_VISIBLE_DEVICES"] == ""


def test_stopping_a_gpu_runtime_frees_its_gpu(apis: dict) -> None:
    start_runtime(apis["alice"], "alice", runtime="gpu")
    stop_all_runtimes(apis["alice"], "alice")

    assert availability(apis["bob"])["gpu"] == (True, "")
    start_runtime(apis["bob"], "bob", runtime="gpu")


def test_the_form_shows_a_taken_gpu_disabled_with_its_reason(
    gpu_hub: HubProcess, apis: dict
) -> None:
    start_runtime(apis["alice"], "alice", runtime="gpu")
    browser = sign_in(gpu_hub, "bob", gpu_hub.password("bob"))
    page = browser.get("/hub/spawn")
    browser.close()
    assert 'value="gpu" class="form-check-input" disabled' in page.text
    assert "Unavailable: all GPUs are in use" in text_of(page.text)


@pytest.mark.parametrize(
    ("user", "allowed"), [("bob", False), ("erin", True)], ids=["outsider", "ml-team-member"]
)
def test_a_group_restricted_type_is_only_for_its_groups(
    apis: dict, user: str, allowed: bool
) -> None:
    available, reason = availability(apis[user])["a100"]
    assert available is allowed
    response = apis[user].post(server_path(user, ""), json={"user_options": {"runtime": "a100"}})
    if allowed:
        assert response.status_code in (201, 202)
    else:
        assert reason == "only for members of group(s): ml-team"
        assert response.status_code == 400
        assert "only for members of group(s): ml-team" in response.json()["message"]


def test_gpu_assignments_survive_a_hub_restart(gpu_hub: HubProcess, apis: dict) -> None:
    start_runtime(apis["alice"], "alice", runtime="gpu")

    gpu_hub.stop(signal.SIGTERM)
    gpu_hub.start()

    with gpu_hub.api(gpu_hub.token("bob")) as bob:
        refused = bob.post(server_path("bob", ""), json={"user_options": {"runtime": "gpu"}})
        assert refused.status_code == 400
        assert "all GPUs are in use" in refused.json()["message"]
    with gpu_hub.api(gpu_hub.token("alice")) as alice:
        stop_all_runtimes(alice, "alice")
        assert availability(alice)["gpu"] == (True, "")
