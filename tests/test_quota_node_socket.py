"""The quota daemon's view of its node's engine: the socket guard's read-only address on
a unix socket, so that on every node of a cluster the daemon reads its own engine's
runtime labels without the engine's socket, and nobody else on the node can use it.

A real `kernelhub-socket-guard` process against the real engine (as
tests/security/test_socket_guard.py does over TCP): reads of runtimes allowed, their
environment (each runtime's own hub token) left out, every write refused; the sockets'
owners and modes let the daemon's user in and keep everyone else out, which the tests
check by connecting as those users.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest
from harness import docker_engine, end_process, free_port, wait_until

from kernelhub.contract import RUNTIME_TYPE_LABEL, SERVER_LABEL, USER_LABEL

# --- the node's read-only engine view, on a unix socket only its daemon may use ----------

GUARD = str(Path(sys.executable).parent / "kernelhub-socket-guard")
TEST_IMAGE = "kernelhub/runtime-test:latest"
PREFIX = f"khnode{os.getpid()}"
DAEMON_UID, STRANGER_UID = 10002, 10003  # the quota daemon's user; anyone else
RUNTIME_TOKEN = f"runtime-token-{PREFIX}"  # a stand-in: no hub issued it
# a bare client, run as another user: the system interpreter and its standard library
PING = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(type(e).__name__)
    raise SystemExit(0)
s.sendall(b"GET /_ping HTTP/1.0\\r\\nHost: docker\\r\\n\\r\\n")
print(s.recv(100).split(b"\\r\\n")[0].decode())
"""


@dataclass
class UnixGuard:
    read_write: str
    read_only: str
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    with docker_engine(PREFIX, TEST_IMAGE) as client:
        yield client


def sleeper(engine: docker.DockerClient, name: str, labels: dict[str, str]) -> str:
    container = engine.containers.run(
        TEST_IMAGE, ["sleep", "600"], name=f"{PREFIX}-{name}", entrypoint=[], labels=labels,
        detach=True, network_mode="none", environment=[f"JUPYTERHUB_API_TOKEN={RUNTIME_TOKEN}"],
    )  # fmt: skip
    return str(container.id)


@pytest.fixture(scope="module")
def guard_sockets() -> Iterator[Path]:
    # a directory others may traverse (pytest's temporary ones are its user's only): the
    # sockets' own modes decide who connects, as in the node's shared volume
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def unix_guard(
    engine: docker.DockerClient, guard_sockets: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UnixGuard]:
    log = tmp_path_factory.mktemp("guard") / "guard.log"
    read_write, read_only = str(guard_sockets / "rw.sock"), str(guard_sockets / "quotad.sock")
    with socket.socket(socket.AF_UNIX) as stale:  # an earlier run's, left behind
        stale.bind(read_only)
    command = [
        GUARD, "--listen", f"unix:{read_write}", "--read-only-listen", f"unix:{read_only}",
        "--unix-owner", f"{DAEMON_UID}:{DAEMON_UID}", "--unix-mode", "600", "--prefix", PREFIX,
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    guard = UnixGuard(read_write, read_only, proc, log)

    def answers() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return client(read_only).ping() is True
        except Exception:
            return False

    try:
        wait_until(answers, timeout=30, what="the guard's unix socket to answer")
        yield guard
    finally:
        end_process(proc)


def client(path: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=f"unix://{path}", timeout=30)


def ping_as(uid: int, path: str) -> str:
    """What a bare client of user ``uid`` gets from the socket at ``path``."""
    ran = subprocess.run(
        ["/usr/bin/python3", "-c", PING, path], user=uid, group=uid, extra_groups=[],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return ran.stdout.strip()


@pytest.mark.docker
def test_the_read_only_unix_socket_reads_runtimes_and_changes_nothing(
    engine: docker.DockerClient, unix_guard: UnixGuard
) -> None:
    labels = {USER_LABEL: "alice", SERVER_LABEL: "", RUNTIME_TYPE_LABEL: "cpu"}
    runtime, decoy = sleeper(engine, "alice", labels), sleeper(engine, "decoy", {"x": "y"})
    view = client(unix_guard.read_only)
    # what the quota daemon asks: a runtime's labels, without its environment
    seen = view.api.inspect_container(runtime)
    assert seen["Config"]["Labels"][USER_LABEL] == "alice"
    assert "Env" not in seen["Config"] and RUNTIME_TOKEN not in json.dumps(seen)
    assert runtime in {c["Id"] for c in view.api.containers()}
    before = {c.id: c.status for c in engine.containers.list(all=True)}
    attacks = [
        lambda: view.api.inspect_container(decoy),  # not a runtime
        lambda: view.api.stop(runtime),
        lambda: view.api.remove_container(runtime, force=True),
        lambda: view.api.create_container(TEST_IMAGE, name=f"{PREFIX}-new", labels=labels),
        lambda: view.api.create_volume(f"{PREFIX}-drive"),
        lambda: view.api.inspect_image(TEST_IMAGE),
    ]
    for attack in attacks:
        with pytest.raises(docker.errors.APIError) as refused:
            attack()
        assert refused.value.response is not None
        assert refused.value.response.status_code == 403
    assert {c.id: c.status for c in engine.containers.list(all=True)} == before
    assert engine.volumes.list(filters={"name": f"{PREFIX}-drive"}) == []
    # the read-write address, on its own socket, is the spawner's (it sees the token)
    assert RUNTIME_TOKEN in json.dumps(client(unix_guard.read_write).api.inspect_container(runtime))


@pytest.mark.docker
def test_only_the_daemons_user_may_connect_to_its_socket(unix_guard: UnixGuard) -> None:
    stat = os.stat(unix_guard.read_only)
    assert (stat.st_uid, stat.st_gid, oct(stat.st_mode & 0o777)) == (
        DAEMON_UID,
        DAEMON_UID,
        "0o600",
    )
    assert ping_as(DAEMON_UID, unix_guard.read_only) == "HTTP/1.1 200 OK"
    assert ping_as(STRANGER_UID, unix_guard.read_only) == "PermissionError"
    # the spawner's read-write address is not the daemon's
    stat = os.stat(unix_guard.read_write)
    assert (stat.st_uid, oct(stat.st_mode & 0o777)) == (os.getuid(), "0o600")
    for uid in (DAEMON_UID, STRANGER_UID):
        assert ping_as(uid, unix_guard.read_write) == "PermissionError"


@pytest.mark.docker
def test_the_guard_removes_its_sockets_when_it_stops(
    engine: docker.DockerClient, tmp_path: Path, guard_sockets: Path
) -> None:
    path = guard_sockets / "once.sock"
    proc = subprocess.Popen([GUARD, "--listen", f"unix:{path}"], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: path.is_socket(), timeout=30, what="the guard's socket")
        assert client(str(path)).ping() is True
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0 and not path.exists()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--listen", "unix:/etc/hostname"], "exists and is not a socket"),  # never removed
        (["--listen", "unix:/nonexistent/dir/g.sock"], "cannot listen on unix:/nonexistent"),
        (["--listen", "unix:relative.sock"], "a unix socket needs an absolute path"),
        (["--listen", "nowhere"], "is not HOST:PORT or unix:PATH"),
        (["--unix-owner", "quotad"], "is not UID or UID:GID"),
        (["--unix-mode", "1777"], "is not a permission mode"),
    ],
)
def test_bad_guard_addresses_are_one_clear_error(argv: list[str], says: str) -> None:
    ran = subprocess.run([GUARD, *argv], capture_output=True, text=True, timeout=60)
    assert ran.returncode in (1, 2) and says in ran.stderr and "Traceback" not in ran.stderr


def test_a_store_not_yet_reachable_is_one_line_without_its_password() -> None:
    # in a stack, PostgreSQL may still be starting when a node's daemon does; the
    # service's restart policy tries again, and its log says why in one line
    password = secrets.token_hex(8)
    env = {
        **os.environ,
        "KERNELHUB_QUOTA_DB_URL": (
            f"postgresql://kernelhub_quotad:{password}@127.0.0.1:{free_port()}/k"
        ),
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{free_port()}/hub/api",
        "JUPYTERHUB_API_TOKEN": secrets.token_hex(16),
    }
    result = subprocess.run(
        [sys.executable, "-m", "kernelhub.quotas.service"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    said = [line for line in result.stderr.splitlines() if line.startswith("kernelhub-quotad:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(said) == 1 and "cannot open the quota store" in said[0], result.stderr[-2000:]
    assert password not in result.stderr + result.stdout
