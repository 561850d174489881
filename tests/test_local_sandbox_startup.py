"""Local runtimes fail closed: no sandbox, no local runtimes, unless the operator names the
one user who may run without one; the start-up log says the isolation in force."""

from __future__ import annotations

import itertools
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from harness import HubProcess, free_port, start_runtime
from kernels import RuntimeClient
from test_service import assert_one_clear_line, run_up
from tornado.web import HTTPError

from kernelhub.spawner.local import LocalRuntimeSpawner
from kernelhub.spawner.sandbox import SandboxSpec, bwrap_command

# what bubblewrap says where the kernel forbids unprivileged user namespaces
NO_USERNS = (
    "bwrap: No permissions to creating new namespace, likely because the kernel does not "
    "allow non-privileged user namespaces."
)


def fake_bin(folder: Path, **scripts: str) -> dict[str, str]:
    """A PATH whose first folder holds the given shell scripts (and nothing else)."""
    folder.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def path_without_bwrap(folder: Path) -> dict[str, str]:
    """PATH with every folder that holds bwrap replaced by a copy of its other tools."""
    folder.mkdir(exist_ok=True)
    kept = []
    for entry in os.environ["PATH"].split(":"):
        if entry and (Path(entry) / "bwrap").exists():
            for tool in Path(entry).iterdir():
                if tool.name != "bwrap" and not (folder / tool.name).exists():
                    (folder / tool.name).symlink_to(tool)
            kept.append(str(folder))
        else:
            kept.append(entry)
    return {"PATH": ":".join(kept)}


@pytest.mark.parametrize(
    ("environment", "fragment"),
    [
        pytest.param(path_without_bwrap, "apt-get install bubblewrap", id="no-bubblewrap"),
        pytest.param(
            lambda folder: fake_bin(folder, bwrap=f"echo '{NO_USERNS}' >&2; exit 1"),
            "No permissions to creating new namespace",
            id="namespaces-forbidden",
        ),
    ],
)
@pytest.mark.parametrize("runtimes", ["local", "auto"])
def test_no_sandbox_means_no_local_runtimes_in_one_line(
    tmp_path: Path,
    environment: Callable[[Path], dict[str, str]],
    fragment: str,
    runtimes: str,
) -> None:
    env = environment(tmp_path / "bin")
    if runtimes == "auto":
        env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"  # auto must not fall back
    result = run_up(
        "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
        "--runtimes", runtimes, env=env,
    )  # fmt: skip
    assert_one_clear_line(result, fragment)
    assert "local runtimes need a sandbox" in result.stderr
    assert "--single-user NAME" in result.stderr
    assert not (tmp_path / "data" / "hub.pid").exists()


def test_the_start_up_log_states_the_backend_and_its_isolation(hub: HubProcess) -> None:
    notes = [line for line in hub.log().splitlines() if "Runtimes: local processes" in line]
    assert notes, hub.log()[-2000:]
    assert "bubblewrap sandboxes" in notes[-1]
    assert "Unix account of its own" in notes[-1]
    assert "limits enforced by cgroup" in notes[-1]


def test_single_user_mode_is_refused_to_a_root_hub_in_one_line(tmp_path: Path) -> None:
    assert os.geteuid() == 0
    result = run_up(
        "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
        "--single-user", "solo", env=fake_bin(tmp_path / "bin", bwrap="exit 1"),
    )  # fmt: skip
    assert_one_clear_line(result, "never as root")


async def test_an_unsandboxed_spawner_starts_runtimes_for_its_single_user_only(
    tmp_path: Path,
) -> None:
    spawner = LocalRuntimeSpawner(
        sandbox="none", single_user="solo", users_dir=str(tmp_path / "users")
    )
    spawner.user = SimpleNamespace(name="other")  # type: ignore[assignment]
    with pytest.raises(HTTPError) as refused:
        await spawner.start()
    assert refused.value.status_code == 403
    assert not (tmp_path / "users").exists()  # nothing made for the refused user


@pytest.mark.slow
def test_the_config_file_and_data_directory_stay_hidden_inside_a_read_only_folder(
    hub_factory: Callable[..., HubProcess], tmp_path_factory: pytest.TempPathFactory
) -> None:
    # an operator shares a folder that also holds the hub's data and its config file
    hub = hub_factory('c.Authenticator.admin_users = {"admin"}  # s3cret', name="shared")
    shared = hub.data_dir.parent
    config = next(shared.glob("*_config.py"))
    (shared / "public.txt").write_text("for everyone")
    shared.chmod(0o755)  # shared for reading: its files' own modes decide
    hub.stop()
    hub.config_text = (
        f"{hub.config_text}\nc.LocalRuntimeSpawner.extra_readonly_paths = [{str(shared)!r}]"
    )
    hub.start()
    token = hub.token("alice")
    with hub.api(token) as api:
        start_runtime(api, "alice", "")
    seen = RuntimeClient.of(hub.url, "alice", "", token).run(
        "import os, json\n"
        "def read(path):\n"
        "    try:\n        return open(path).read()\n"
        "    except OSError as e:\n        return type(e).__name__\n"
        f"print(json.dumps([read({str(shared / 'public.txt')!r}), read({str(config)!r}),"
        f" os.listdir({str(hub.data_dir)!r})]))"
    )
    public, config_text, data_listing = json.loads(seen.ok())
    assert public == "for everyone"
    assert config_text in ("", "PermissionError")  # /dev/null on a nodev mount
    assert data_listing == ["users"]


def test_a_python_under_tmp_stays_visible_and_its_parents_traversable(tmp_path: Path) -> None:
    # CI clones (and their virtualenvs) may live under /tmp, which each sandbox replaces
    venv, drive = tmp_path / "checkout" / ".venv", tmp_path / "data" / "users" / "alice"
    venv.mkdir(parents=True)
    drive.mkdir(parents=True)
    spec = SandboxSpec(drive=drive, readonly=(venv, tmp_path), hidden=(tmp_path / "data",))
    argv = bwrap_command(spec, ["true"])
    pairs = list(itertools.pairwise(argv))
    assert pairs.index(("--tmpfs", "/tmp")) < pairs.index(("--ro-bind", str(tmp_path)))
    binds = [argv[i + 1] for i, a in enumerate(argv) if a == "--ro-bind"]
    assert str(tmp_path) in binds and str(venv) not in binds  # the folder holds the venv
    masks = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert masks[:3] == ["/tmp", "/var/tmp", "/dev/shm"] and masks[3] == str(tmp_path / "data")
    made = [argv[i + 1] for i, a in enumerate(argv) if a == "--dir"]
    assert str(drive.parent) in made  # inside the masked data directory: made, 0755
    assert str(tmp_path) not in made  # inside /tmp's tmpfs, made before its bind
