"""What makes a warm runtime claimable: its fingerprint, and the hub's registry of them.

A warm runtime may serve a spawn only if the spawn would create exactly the same
container; the per-spawn token and public URL are the only things allowed to differ
(the activation sends them, and the server reads them only when it starts). The real
claim is exercised in tests/test_warm_runtimes.py.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

import pytest

from kernelhub.spawner.warm_registry import (
    WarmRecord,
    WarmRuntimes,
    fingerprint_of,
    fingerprint_parts,
    parts_differing,
)

IMAGE_ID = "sha256:" + "a" * 64
SPAWN: dict[str, Any] = {
    "image": "kernelhub/runtime-cpu:latest",
    "name": "kernelhub-alice",
    "command": ["kernelhub-runtime", "--ip=0.0.0.0", "--port=8888"],
    "environment": {
        "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_API_TOKEN": "t" * 32,
        "JPY_API_TOKEN": "t" * 32,
        "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
        "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/user/alice/",
        "JUPYTERHUB_PUBLIC_URL": "",
        "JUPYTERHUB_SINGLEUSER_APP": "notebook.app.JupyterNotebookApp",
        "NVIDIA_VISIBLE_DEVICES": "void",
    },
    "labels": {"org.kernelhub.user": "alice", "org.kernelhub.gpus": ""},
    "host_config": {"Memory": 1 << 30, "CpuQuota": 100_000, "CapDrop": ["ALL"]},
}


def changed(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    spawn = copy.deepcopy(SPAWN)
    edit(spawn)
    return spawn


def env(key: str, value: str | None) -> Callable[[dict[str, Any]], None]:
    def edit(spawn: dict[str, Any]) -> None:
        if value is None:
            spawn["environment"].pop(key)
        else:
            spawn["environment"][key] = value

    return edit


SAME_CONTAINER = {
    "another API token": env("JUPYTERHUB_API_TOKEN", "u" * 32),
    "no token yet (a warm runtime is made before one exists)": env("JPY_API_TOKEN", None),
    "another public URL (read when the server starts)": env("JUPYTERHUB_PUBLIC_URL", "x"),
    "the warm runtime's own secret": env("KERNELHUB_WARM_SECRET", "s" * 64),
    "the warm label itself": lambda s: s["labels"].update({"org.kernelhub.warm": "f" * 64}),
}
ANOTHER_CONTAINER = {
    "another user": env("JUPYTERHUB_USER", "bob"),
    "another user's labels": lambda s: s["labels"].update({"org.kernelhub.user": "bob"}),
    "a GPU": lambda s: s["labels"].update({"org.kernelhub.gpus": "0"}),
    "a GPU made visible": env("NVIDIA_VISIBLE_DEVICES", "0"),
    "another memory limit": lambda s: s["host_config"].update({"Memory": 1 << 29}),
    "another CPU limit": lambda s: s["host_config"].update({"CpuQuota": 50_000}),
    "capabilities": lambda s: s["host_config"].update({"CapDrop": []}),
    "another image tag": lambda s: s.update({"image": "kernelhub/runtime-gpu:latest"}),
    "another server app": env("JUPYTERHUB_SINGLEUSER_APP", "jupyter_server.serverapp.ServerApp"),
    "an added variable": env("EXTRA", "1"),
    # JupyterHub reads these when it is imported: its cookies' path comes from them
    "another service prefix": env("JUPYTERHUB_SERVICE_PREFIX", "/"),
    "no service prefix": env("JUPYTERHUB_SERVICE_PREFIX", None),
    "another service URL": env("JUPYTERHUB_SERVICE_URL", "http://0.0.0.0:8888/"),
    "another command": lambda s: s.update({"command": ["start-notebook.sh"]}),
    "another container name": lambda s: s.update({"name": "kernelhub-bob"}),
    "a mount": lambda s: s["host_config"].update({"Binds": ["/:/host:rw"]}),
}


@pytest.mark.parametrize("what", SAME_CONTAINER)
def test_a_spawn_differing_only_per_spawn_may_claim(what: str) -> None:
    assert fingerprint_of(changed(SAME_CONTAINER[what]), IMAGE_ID) == fingerprint_of(
        SPAWN, IMAGE_ID
    )


@pytest.mark.parametrize("what", ANOTHER_CONTAINER)
def test_a_spawn_of_any_other_container_never_claims(what: str) -> None:
    assert fingerprint_of(changed(ANOTHER_CONTAINER[what]), IMAGE_ID) != fingerprint_of(
        SPAWN, IMAGE_ID
    )


def test_a_rebuilt_image_under_the_same_tag_never_claims() -> None:
    assert fingerprint_of(SPAWN, "sha256:" + "b" * 64) != fingerprint_of(SPAWN, IMAGE_ID)


def test_a_value_json_cannot_write_can_only_fail_a_claim() -> None:
    odd = changed(lambda s: s["host_config"].update({"Odd": object()}))
    assert fingerprint_of(odd, IMAGE_ID) != fingerprint_of(copy.deepcopy(odd), IMAGE_ID)


class Remover:
    """Stands for the spawner that made a warm runtime: records what it removes."""

    warm_runtime_idle_timeout = 30

    def __init__(self) -> None:
        self.removed: list[tuple[str, str]] = []

    async def remove_warm(self, container_id: str, why: str) -> None:
        self.removed.append((container_id, why))


def test_the_registry_reaps_only_what_outlived_its_idle_timeout_and_takes_each_once() -> None:
    registry, spawner = WarmRuntimes(), Remover()
    registry.ready["old/"] = WarmRecord("c-old", "f", {}, "s", created=0.0, spawner=spawner)
    registry.ready["new/"] = WarmRecord("c-new", "f", {}, "s", created=1e12, spawner=spawner)

    asyncio.run(registry.reap())

    assert spawner.removed == [("c-old", "unused")]
    record = registry.take("new/")
    assert record is not None and record.container_id == "c-new"
    assert registry.take("new/") is None  # claimed once, by one spawn


def test_the_hub_stopping_removes_every_warm_runtime() -> None:
    registry, spawner = WarmRuntimes(), Remover()
    registry.ready = {
        f"u{i}/": WarmRecord(f"c{i}", "f", {}, "s", created=0.0, spawner=spawner) for i in range(3)
    }

    asyncio.run(registry.remove_all())

    assert sorted(spawner.removed) == [(f"c{i}", "the hub stops") for i in range(3)]
    assert registry.count() == 0


def test_a_failed_claim_names_the_parts_that_differ_never_their_values() -> None:
    made = fingerprint_parts(SPAWN, IMAGE_ID)
    wanted = fingerprint_parts(
        changed(lambda s: s["host_config"].update({"Memory": 1 << 29})), IMAGE_ID
    )
    assert parts_differing(made, wanted) == ["host_config"]
    with_token = changed(env("JUPYTERHUB_API_TOKEN", "u" * 32))
    assert parts_differing(made, fingerprint_parts(with_token, IMAGE_ID)) == []
    extra = fingerprint_parts(changed(env("EXTRA", "1")), IMAGE_ID)
    assert parts_differing(made, extra) == ["environment.EXTRA"]
