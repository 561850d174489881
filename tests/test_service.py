"""`kernelhub up` as an operator meets it: start-up, refusals, Ctrl-C, restarts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from harness import (
    KERNELHUB,
    HubProcess,
    free_port,
    runtime_pids,
    start_runtime,
    stop_all_runtimes,
    wait_for_process_exit,
    write_test_credentials,
)

pytestmark = pytest.mark.slow

CONFIG_PROBLEMS = [
    pytest.param(None, "does not exist", id="missing-file"),
    pytest.param("c.JupyterHub.port = (\n", "line 1", id="syntax-error"),
    pytest.param("raise RuntimeError('boom')", "RuntimeError: boom", id="file-raises"),
    pytest.param(
        "c.RuntimeCatalog.runtime_types = [{'name': 'GPU!'}]",
        "invalid configuration",
        id="bad-runtime-type-name",
    ),
    pytest.param(
        "c.RuntimeCatalog.runtime_types = [{'name': 'cpu', 'gpus': -1}]",
        "gpus must be a whole number",
        id="negative-gpus",
    ),
    pytest.param(
        "c.RuntimeCatalog.default_runtime = 'tpu'",
        "choose one of: cpu, gpu",
        id="unknown-default-runtime",
    ),
    pytest.param("c.GpuInventory.devices = ['0', '0']", "twice", id="duplicate-gpu"),
    pytest.param(
        "c.GoogleOAuthenticator.client_id = 'id.apps.example'",
        "Google sign-in has no client secret: set both GoogleOAuthenticator.client_id",
        id="google-without-secret",
    ),
    pytest.param(
        "c.GoogleOAuthenticator.client_secret = 'not-printed-s3cret'",
        "Google sign-in has no client id",
        id="google-without-id",
    ),
    pytest.param(
        "c.GoogleOAuthenticator.client_id = 'id.apps.example'\n"
        "c.GoogleOAuthenticator.client_secret = 'not-printed-s3cret'",
        "Google sign-in would admit nobody: set GoogleOAuthenticator.hosted_domain",
        id="google-admitting-nobody",
    ),
]


def run_up(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KERNELHUB, "up", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
        env={**os.environ, **(env or {})},
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert fragment in lines[0]


@pytest.mark.parametrize(("config_text", "fragment"), CONFIG_PROBLEMS)
def test_a_bad_config_file_is_one_clear_line(
    tmp_path: Path, passwords: dict[str, str], config_text: str | None, fragment: str
) -> None:
    write_test_credentials(tmp_path / "data", passwords["admin"])
    config = tmp_path / "kernelhub_config.py"
    if config_text is not None:
        config.write_text(config_text)
    result = run_up(
        "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), "--config", str(config)
    )
    assert_one_clear_line(result, fragment)
    assert "s3cret" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("stored", "fragment"),
    [
        pytest.param("{not json", "JSONDecodeError", id="not-json"),
        pytest.param("[]", "not a JSON object", id="not-an-object"),
        pytest.param('{"admin_user": "admin"}', "KeyError: 'admin_password'", id="no-password"),
        pytest.param(
            '{"admin_user": "admin", "admin_password": "short"}',
            "admin_password must be 8 to 72 characters",
            id="short-password",
        ),
        pytest.param(
            '{"admin_user": "admin", "admin_password": "' + "x" * 73 + '"}',
            "admin_password must be 8 to 72 characters",
            id="password-over-bcrypts-72-bytes",
        ),
        pytest.param(
            '{"admin_user": "", "admin_password": "long enough"}',
            "admin_user must be a user name",
            id="empty-user",
        ),
        pytest.param(
            '{"user_password": "long enough", "admin_password": "short"}',
            "admin_password must be 8 to 72 characters",
            id="shared-password-file-with-a-short-admin-password",
        ),
    ],
)
def test_unusable_stored_passwords_are_one_clear_line(
    tmp_path: Path, stored: str, fragment: str
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "local-credentials.json").write_text(stored)
    result = run_up("--data-dir", str(data_dir), "--port", str(free_port()))
    assert_one_clear_line(result, fragment)
    assert "delete it to generate a new password" in result.stderr


@pytest.mark.parametrize("token", ["", "short-s3cret"])
def test_an_external_quota_daemon_without_a_usable_token_is_one_clear_line(
    tmp_path: Path, passwords: dict[str, str], token: str
) -> None:
    write_test_credentials(tmp_path / "data", passwords["admin"])
    env = {"KERNELHUB_QUOTAD_URL": "http://127.0.0.1:9", "KERNELHUB_QUOTAD_TOKEN": token}
    result = run_up("--data-dir", str(tmp_path / "data"), "--port", str(free_port()), env=env)
    assert_one_clear_line(result, "KERNELHUB_QUOTAD_TOKEN must be the quota daemon's API token")
    assert "s3cret" not in result.stderr + result.stdout


def test_a_port_in_use_is_one_clear_line(tmp_path: Path, passwords: dict[str, str]) -> None:
    write_test_credentials(tmp_path / "data", passwords["admin"])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_up("--data-dir", str(tmp_path / "data"), "--port", str(port))
    assert_one_clear_line(result, f"port {port} on 127.0.0.1 is already in use")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(["--db-url", "nosuchdb://db/hub"], "unsupported database URL", id="db"),
        pytest.param(
            ["--db-url", "postgresql+pg8000://u:secret@db/hub"],
            "the postgresql database driver is not installed (pg8000)",
            id="db-driver-missing",
        ),
        pytest.param(["--port", "70000"], "70000", id="port-out-of-range"),
    ],
)
def test_bad_flags_are_one_clear_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = run_up("--data-dir", str(tmp_path / "data"), *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr


def test_an_unwritable_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_up("--data-dir", str(blocker / "data"), "--port", str(free_port()))
    assert_one_clear_line(result, "is not writable")


def test_help_lists_the_environment_variables() -> None:
    result = subprocess.run([KERNELHUB, "up", "--help"], capture_output=True, text=True, check=True)
    for variable in (
        "KERNELHUB_DATA_DIR",
        "KERNELHUB_CONFIG",
        "KERNELHUB_IP",
        "KERNELHUB_PORT",
        "KERNELHUB_DB_URL",
    ):
        assert variable in result.stdout


def test_the_start_up_log_says_which_backends_are_used_and_why(hub: HubProcess) -> None:
    log = hub.log()
    assert "Runtimes: local processes (--runtimes local)" in log
    assert "Sign-in: local passwords, one per person (embedded default" in log
    assert "No GPUs (NVML unavailable" in log


def test_ctrl_c_stops_hub_proxy_and_runtimes(hub_factory: Callable[..., HubProcess]) -> None:
    hub = hub_factory(name="ctrlc")
    with hub.api(hub.token("carol")) as api:
        start_runtime(api, "carol")
    runtimes = runtime_pids(hub.data_dir)
    proxy_pid = int((hub.data_dir / "proxy.pid").read_text())
    assert runtimes

    exit_code = hub.stop(signal.SIGINT)

    assert exit_code == 0
    wait_for_process_exit([*runtimes, proxy_pid])
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{hub.url}/hub/api/")


def test_a_hub_restart_leaves_runtimes_running_and_reachable(
    hub_factory: Callable[..., HubProcess],
) -> None:
    hub = hub_factory(name="restart")
    token = hub.token("dave")
    with hub.api(token) as api:
        model = start_runtime(api, "dave")
    runtimes = runtime_pids(hub.data_dir)

    assert hub.stop(signal.SIGTERM) == 0
    assert runtime_pids(hub.data_dir) == runtimes
    hub.start()

    with hub.api(token) as api:
        assert api.get("users/dave").json()["servers"][""]["ready"] is True
        assert api.get(f"{hub.url}{model['url']}api/status").status_code == 200
    assert runtime_pids(hub.data_dir) == runtimes


def test_the_hub_database_can_be_postgresql(
    hub_factory: Callable[..., HubProcess], postgres_url: str
) -> None:
    # the quota daemon keeps its store there too; the URL (a password, in production)
    # travels in its environment and never reaches the log
    quota_env = {"KERNELHUB_QUOTA_DB_URL": postgres_url}
    hub = hub_factory(name="postgres", db_url=postgres_url, env=quota_env, quotas=True)
    token = hub.token("frank")
    with hub.api(token) as api:
        start_runtime(api, "frank")
    hub.stop(signal.SIGTERM)
    hub.start()

    with hub.api(token) as api:
        assert api.get("users/frank").json()["servers"][""]["ready"] is True
        stop_all_runtimes(api, "frank")
    # now, while its database still runs (the server outlives this test only), so that
    # the hub takes its proxy and quota service down with it
    hub.stop(signal.SIGINT)
    assert not (hub.data_dir / "jupyterhub.sqlite").exists()
    assert "PostgresqlImpl" in hub.log()
    assert "GPU sampling is off" in hub.log(), "the quota daemon ran"
    assert postgres_url not in hub.log()
