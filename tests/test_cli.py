"""The client CLI (`kernelhub runtime ...`, `kernelhub token ...`) run as real processes.

Tokens are secrets even in tests: they travel on the command line or in the
environment of the child process, but no assertion here compares or shows one,
and `CliResult` leaves stdout (where `kernelhub token` prints one) out of its repr.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import httpx
import pytest
from harness import KERNELHUB, HubProcess, free_port, runtime_pids, wait_until

from kernelhub.launcher.credentials import operator_token
from kernelhub.launcher.state import write_hub_state

pytestmark = pytest.mark.slow

CLI_TIMEOUT = 120.0
PROGRESS_LINE = re.compile(r"\[\s*(\d{1,3})%\] \S.*")


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str = field(repr=False)
    stderr: str


def kernelhub(*args: str, env: Mapping[str, str] | None = None) -> CliResult:
    """Run `kernelhub ARGS` with no KERNELHUB_*/JUPYTERHUB_* variables but those in ``env``."""
    child_env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KERNELHUB_", "JUPYTERHUB_"))
    }
    child_env.update(env or {})
    try:
        done = subprocess.run(
            [KERNELHUB, *args],
            capture_output=True,
            text=True,
            env=child_env,
            stdin=subprocess.DEVNULL,
            timeout=CLI_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        # the exception's message would carry the whole command line, token included
        raise AssertionError(f"`kernelhub {' '.join(args[:2])}` ran past {CLI_TIMEOUT}s") from None
    return CliResult(done.returncode, done.stdout, done.stderr)


def runtime_cli(hub: HubProcess, token: str, *args: str) -> CliResult:
    """`kernelhub runtime ARGS --url HUB --token TOKEN`."""
    return kernelhub("runtime", *args, "--url", hub.url, "--token", token)


def assert_one_line_error(result: CliResult, fragments: list[str]) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


def user_server_names(user_api: httpx.Client, user: str) -> list[str]:
    return list(user_api.get(f"users/{user}").json()["servers"])


@pytest.fixture
def token(user_api: httpx.Client) -> str:
    """`username`'s token: the one user_api sends (which stops their runtimes afterwards)."""
    return user_api.headers["Authorization"].removeprefix("token ")


def test_start_shows_progress_on_stderr_then_prints_only_the_runtime_url(
    hub: HubProcess, username: str, token: str
) -> None:
    result = runtime_cli(hub, token, "start", "--type", "cpu")

    assert result.returncode == 0, result.stderr
    runtime_url = f"{hub.url}/user/{username}/"
    assert result.stdout == f"{runtime_url}\n"
    progress = result.stderr.splitlines()
    assert progress[0] == "[  0%] Server requested"
    assert progress[-1].startswith("[100%] ")
    matches = [PROGRESS_LINE.fullmatch(line) for line in progress]
    assert all(matches), f"not a progress line in:\n{result.stderr}"
    percents = [int(match.group(1)) for match in matches if match]
    assert percents == sorted(percents)

    status = httpx.get(
        f"{runtime_url}api/status", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert status.status_code == 200
    assert "last_activity" in status.json()
    assert len(runtime_pids(hub.data_dir, username)) == 1

    again = runtime_cli(hub, token, "start", "--type", "cpu")
    assert_one_line_error(again, ["already running"])


def test_list_shows_runtime_types_and_that_nothing_runs_yet(hub: HubProcess, token: str) -> None:
    result = runtime_cli(hub, token, "list")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "RUNTIME TYPES"
    cpu_line = next(line for line in lines if line.split()[0] == "cpu")
    gpu_line = next(line for line in lines if line.split()[0] == "gpu")
    assert cpu_line.endswith(" available")
    assert "unavailable: no GPU found" in gpu_line
    assert lines[-2:] == ["YOUR RUNTIMES", "  (none running)"]


def test_a_named_runtime_as_json_then_list_status_and_stop_through_env_vars(
    hub: HubProcess, user_api: httpx.Client, username: str, token: str
) -> None:
    env = {"KERNELHUB_URL": hub.url, "KERNELHUB_TOKEN": token}
    runtime_url = f"{hub.url}/user/{username}/exp1/"

    started = kernelhub("runtime", "start", "--name", "exp1", "--json", env=env)
    assert started.returncode == 0, started.stderr
    model = json.loads(started.stdout)
    assert model["full_url"] == runtime_url
    assert model["name"] == "exp1"
    assert model["ready"] is True
    assert user_server_names(user_api, username) == ["exp1"]

    listed = kernelhub("runtime", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(line.split()[0] == "cpu" and line.endswith(" available") for line in lines[1:])
    assert any(line.split()[0] == "gpu" and "unavailable: no GPU found" in line for line in lines)
    runtimes = lines[lines.index("YOUR RUNTIMES") + 1 :]
    assert len(runtimes) == 1
    assert runtimes[0].split()[0] == "exp1"
    assert "[cpu]" in runtimes[0], "a start without --type runs (and shows) the default type"
    assert runtimes[0].endswith(" ready")

    listed_json = json.loads(kernelhub("runtime", "list", "--json", env=env).stdout)
    assert [t["name"] for t in listed_json["runtime_types"]] == ["cpu", "gpu"]
    assert list(listed_json["runtimes"]) == ["exp1"]

    status = kernelhub("runtime", "status", "--name", "exp1", env=env)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("exp1: ")
    assert status.stdout.endswith(f" ready {runtime_url}\n")
    default_status = kernelhub("runtime", "status", env=env)
    assert default_status.stdout == "(default): not running\n"

    stopped = kernelhub("runtime", "stop", "--name", "exp1", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stderr == "stopping exp1\n"
    wait_until(
        lambda: (
            kernelhub("runtime", "status", "--name", "exp1", env=env).stdout
            == "exp1: not running\n"
        ),
        timeout=60,
        interval=0.5,
        what="`kernelhub runtime status` to say exp1 is not running",
    )
    wait_until(lambda: not runtime_pids(hub.data_dir, username), what="the runtime to exit")
    assert user_server_names(user_api, username) == []


# args and fragments may hold {url} (the hub) and {dead_url} (a port nobody listens on);
# token: "user" (username's token), "bad" (one the hub never issued) or "none"
ERROR_CASES = [
    pytest.param(
        ["runtime", "start", "--type", "tpu", "--url", "{url}"],
        "user",
        ["'tpu'", "cpu, gpu"],
        id="unknown-runtime-type",
    ),
    pytest.param(
        ["runtime", "start", "--type", "gpu", "--url", "{url}"],
        "user",
        ["'gpu' is unavailable", "no GPU found", "available now: cpu"],
        id="gpu-without-gpus",
    ),
    pytest.param(
        ["runtime", "start", "--type", "cpu", "--url", "{url}"],
        "none",
        ["no API token", "--token", "KERNELHUB_TOKEN", "{url}/hub/token"],
        id="no-token",
    ),
    pytest.param(
        ["runtime", "list", "--url", "{dead_url}"],
        "user",
        ["cannot reach the hub at {dead_url}"],
        id="unreachable-url-list",
    ),
    pytest.param(
        ["runtime", "start", "--type", "cpu", "--url", "{dead_url}"],
        "user",
        ["cannot reach the hub at {dead_url}"],
        id="unreachable-url-start",
    ),
    pytest.param(
        ["runtime", "list", "--url", "{url}"],
        "bad",
        ["the hub refused this API token", "/hub/token"],
        id="bad-token-list",
    ),
    pytest.param(
        ["runtime", "start", "--type", "cpu", "--url", "{url}"],
        "bad",
        ["the hub refused this API token", "/hub/token"],
        id="bad-token-start",
    ),
    pytest.param(
        ["runtime", "status", "--url", "{url}"],
        "bad",
        ["the hub refused this API token", "/hub/token"],
        id="bad-token-status",
    ),
    pytest.param(
        ["runtime", "stop", "--name", "nope", "--url", "{url}"],
        "user",
        ["no running runtime named 'nope'"],
        id="stop-what-is-not-running",
    ),
    pytest.param(
        ["token", "x", "--data-dir", "/nonexistent"],
        "none",
        ["no kernelhub data directory at /nonexistent", "kernelhub up"],
        id="token-without-data-dir",
    ),
]


@pytest.mark.parametrize(("args", "token_kind", "fragments"), ERROR_CASES)
def test_an_error_is_one_line_and_a_failing_exit_status(
    hub: HubProcess,
    user_api: httpx.Client,
    username: str,
    token: str,
    args: list[str],
    token_kind: str,
    fragments: list[str],
) -> None:
    places = {"url": hub.url, "dead_url": f"http://127.0.0.1:{free_port()}"}
    tokens = {"user": token, "bad": "0123456789abcdef0123456789abcdef"}
    command = [arg.format(**places) for arg in args]
    if token_kind in tokens:
        command += ["--token", tokens[token_kind]]

    result = kernelhub(*command)

    assert_one_line_error(result, [fragment.format(**places) for fragment in fragments])
    assert user_server_names(user_api, username) == []
    assert runtime_pids(hub.data_dir, username) == []


def test_token_creates_the_user_and_prints_only_a_token(hub: HubProcess, username: str) -> None:
    first = kernelhub("token", username, "--data-dir", str(hub.data_dir))

    assert first.returncode == 0, first.stderr
    only_a_token = re.fullmatch(r"\S{16,}\n", first.stdout) is not None
    assert only_a_token, "stdout must be the token alone on one line"
    assert first.stderr == f"created user {username}\n"
    with hub.api(first.stdout.strip()) as api:
        me = api.get("user")
    assert me.status_code == 200
    assert me.json()["name"] == username
    assert me.json()["admin"] is False

    second = kernelhub("token", username, "--data-dir", str(hub.data_dir))
    assert second.returncode == 0, second.stderr
    assert second.stderr == "", "an existing user is not created again"
    a_new_token = second.stdout.strip() not in ("", first.stdout.strip())
    assert a_new_token, "each call must issue a new token"


def test_an_admin_token_can_list_all_users_and_a_users_token_cannot(
    hub: HubProcess, user_api: httpx.Client, username: str
) -> None:
    issued = kernelhub("token", "admin", "--data-dir", str(hub.data_dir))
    assert issued.returncode == 0, issued.stderr

    with hub.api(issued.stdout.strip()) as admin_api:
        me = admin_api.get("user").json()
        users = admin_api.get("users")
    assert me["name"] == "admin"
    assert me["admin"] is True
    assert users.status_code == 200
    assert {"admin", username} <= {user["name"] for user in users.json()}

    refused = user_api.get("users")
    assert refused.status_code == 403


def test_token_for_a_hub_that_is_not_running_says_so_in_one_line(tmp_path: Path) -> None:
    dead_url = f"http://127.0.0.1:{free_port()}"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_hub_state(data_dir, f"{dead_url}/", {"hub": free_port(), "proxy_api": free_port()})
    operator_token(data_dir)

    result = kernelhub("token", "x", "--data-dir", str(data_dir))

    assert_one_line_error(
        result, [f"cannot reach the hub at {dead_url}", "is `kernelhub up` running for"]
    )


class NotTheHub(BaseHTTPRequestHandler):
    """A web server at the hub's URL that is not the hub: every path is an HTML page."""

    def do_GET(self) -> None:
        body = b"<html><body>Welcome to nginx!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # no request log in the test output


def test_a_url_that_is_not_the_hub_is_one_line_and_no_traceback() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), NotTheHub) as server:
        Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}"
        try:
            result = kernelhub("runtime", "list", "--url", url, "--token", "not-checked")
        finally:
            server.shutdown()

    assert_one_line_error(result, [f"the hub at {url} answered GET kernelhub/", "no JSON"])
