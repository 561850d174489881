"""How long kernelhub takes to start, and to start a runtime, next to stock JupyterHub.

    .venv/bin/python benchmarks/startup.py --runs 5

Each run starts a real `kernelhub up` (hub + configurable-http-proxy) on a fresh
data directory, then stock JupyterHub (the `jupyterhub` command of the same
virtualenv, with a generated jupyterhub_config.py: SimpleLocalProcessSpawner,
nativeauthenticator as kernelhub's local sign-in uses it, a service token for the
REST API) on another, and
measures for each:

  hub up, fresh data dir    launch -> `GET /hub/api/` answers 200 through the proxy
  runtime spawn (cpu)       `POST /hub/api/users/U/server` -> `GET /user/U/api/status`
                            answers 200 through the proxy (polled while the POST is
                            in flight: stock JupyterHub may hold it up to 10 s)
  hub up, reused data dir   the same hub stopped (Ctrl-C) and launched again on the
                            same data directory (database, secrets, users' files kept)

Every hub is stopped with SIGINT, which stops its runtimes too; anything left of
them is killed, and the temporary directories are removed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import HubProcess, free_port, runtime_pids, write_test_credentials

POLL_INTERVAL = 0.05
TIMEOUT = 120.0
USER = "bench"
VENV_BIN = Path(sys.executable).parent
SERVICE = "startup-benchmark"
SERVICE_SCOPES = ["admin:users", "admin:servers", "tokens"]


@dataclass
class StockHub(HubProcess):
    """Stock `jupyterhub` laid out like `kernelhub up`: homes in DATA_DIR/users, proxy.pid."""

    service_token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.data_dir / "jupyterhub_config.py"
        self.config_path.touch(mode=0o600)  # it holds the service token
        settings = self.settings()
        self.config_path.write_text("".join(f"c.{k} = {v!r}\n" for k, v in settings.items()))

    def settings(self) -> dict[str, object]:
        """The generated jupyterhub_config.py, as ``{"Class.trait": value}``."""
        d = self.data_dir
        return {
            "JupyterHub.bind_url": f"http://127.0.0.1:{self.port}",
            "JupyterHub.hub_port": free_port(),
            "JupyterHub.db_url": f"sqlite:///{d / 'jupyterhub.sqlite'}",
            "JupyterHub.cookie_secret_file": str(d / "jupyterhub_cookie_secret"),
            "JupyterHub.pid_file": str(d / "hub.pid"),
            "JupyterHub.authenticator_class": "native",
            "Authenticator.allow_all": True,
            "JupyterHub.spawner_class": "jupyterhub.spawner.SimpleLocalProcessSpawner",
            "SimpleLocalProcessSpawner.home_dir_template": str(d / "users" / "{username}"),
            "Spawner.default_url": "/tree",
            "Spawner.args": ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else [],
            "Spawner.cmd": [sys.executable, "-m", "jupyterhub.singleuser"],
            "ConfigurableHTTPProxy.api_url": f"http://127.0.0.1:{free_port()}",
            "ConfigurableHTTPProxy.command": [str(VENV_BIN / "configurable-http-proxy")],
            "ConfigurableHTTPProxy.pid_file": str(d / "proxy.pid"),
            "JupyterHub.services": [{"name": SERVICE, "api_token": self.service_token}],
            "JupyterHub.load_roles": [
                {"name": SERVICE, "scopes": SERVICE_SCOPES, "services": [SERVICE]}
            ],
        }

    def command(self) -> list[str]:
        return [str(VENV_BIN / "jupyterhub"), "-f", str(self.config_path)]

    def token(self, user: str) -> str:
        """Like `kernelhub token USER`: create USER if needed, then issue USER a token."""
        with self.api(self.service_token) as api:
            created = api.post(f"users/{user}")
            if created.status_code not in (201, 409):
                raise RuntimeError(f"creating {user}: HTTP {created.status_code} {created.text}")
            issued = api.post(f"users/{user}/tokens", json={"note": "startup benchmark"})
            if issued.status_code != 201:
                raise RuntimeError(f"token for {user}: HTTP {issued.status_code} {issued.text}")
        return str(issued.json()["token"])


def poll_until(answers: Callable[[], bool], hub: HubProcess, what: str) -> None:
    """Return once ``answers()`` is true; fail if the hub exits or TIMEOUT passes."""
    assert hub.proc is not None
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if hub.proc.poll() is not None:
            raise RuntimeError(f"the hub exited with {hub.proc.returncode}:\n{hub.log()}")
        try:
            if answers():
                return
        except httpx.HTTPError:
            pass
        time.sleep(POLL_INTERVAL)
    raise TimeoutError(f"{what} not within {TIMEOUT}s")


def time_hub_start(hub: HubProcess) -> float:
    """Seconds from launching the hub until its API answers through the proxy."""
    t0 = time.monotonic()
    hub.start(wait=False)
    poll_until(
        lambda: httpx.get(f"{hub.url}/hub/api/", timeout=2).status_code == 200,
        hub,
        "the hub's API",
    )
    return time.monotonic() - t0


def check_spawn(post: Future[httpx.Response]) -> None:
    """Raise if the spawn request failed or was refused (it must have finished)."""
    error = post.exception()
    if error is not None:
        raise RuntimeError(f"spawn request failed: {error!r}") from error
    response = post.result()
    if response.status_code not in (201, 202):
        raise RuntimeError(f"spawn refused: HTTP {response.status_code} {response.text}")


def time_runtime_spawn(hub: HubProcess, user: str, options: dict[str, str] | None) -> float:
    """Seconds from the REST spawn request until the runtime answers through the proxy.

    The POST runs in a thread while api/status is polled, so a hub that holds the
    POST until the spawn is done (or slow_spawn_timeout passes) is timed the same way
    as one that answers 202 at once.
    """
    headers = {"Authorization": f"token {hub.token(user)}"}
    body = {"user_options": options} if options else None
    with (
        httpx.Client(base_url=hub.url, headers=headers, timeout=30) as client,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        t0 = time.monotonic()
        post = pool.submit(client.post, f"/hub/api/users/{user}/server", json=body)

        def answers() -> bool:
            if post.done():
                check_spawn(post)
            return client.get(f"/user/{user}/api/status").status_code == 200

        poll_until(answers, hub, "the runtime's api/status")
        elapsed = time.monotonic() - t0
        post.exception(timeout=TIMEOUT)  # wait for the POST's answer, then check it
        check_spawn(post)
        return elapsed


def stop_hub(hub: HubProcess) -> None:
    """Ctrl-C the hub (it stops its runtimes), then kill whatever of it is left."""
    hub.stop(signal.SIGINT)
    for pid in runtime_pids(hub.data_dir):
        _kill(pid)
    proxy_pid_file = hub.data_dir / "proxy.pid"
    if proxy_pid_file.exists():  # only left behind when the hub itself had to be killed
        pid = int(proxy_pid_file.read_text().strip() or 0)
        if pid and "configurable-http-proxy" in _cmdline(pid):
            _kill(pid)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def wait_port_free(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return
            except OSError:
                time.sleep(0.1)
    raise TimeoutError(f"port {port} still in use after {timeout}s")


def kernelhub_hub(data_dir: Path) -> HubProcess:
    write_test_credentials(data_dir, secrets.token_urlsafe(18))
    return HubProcess(data_dir=data_dir, port=free_port())


def stock_hub(data_dir: Path) -> HubProcess:
    return StockHub(data_dir=data_dir, port=free_port())


HUBS: dict[str, tuple[Callable[[Path], HubProcess], dict[str, str] | None]] = {
    "kernelhub": (kernelhub_hub, {"runtime": "cpu"}),
    "stock": (stock_hub, None),  # SimpleLocalProcessSpawner takes no options
}


def one_run(kind: str, number: int) -> dict[str, float]:
    make_hub, options = HUBS[kind]
    workdir = Path(tempfile.mkdtemp(prefix=f"{kind}-bench-{number}-"))
    timings: dict[str, float] = {}
    hub: HubProcess | None = None
    try:
        hub = make_hub(workdir / "data")
        timings["fresh"] = time_hub_start(hub)
        timings["spawn"] = time_runtime_spawn(hub, USER, options)
        stop_hub(hub)
        wait_port_free(hub.port)
        timings["reused"] = time_hub_start(hub)
    finally:
        if hub is not None:
            stop_hub(hub)
        shutil.rmtree(workdir, ignore_errors=True)
    return timings


MEASURES = {
    "fresh": "hub up, fresh data dir",
    "reused": "hub up, reused data dir",
    "spawn": "runtime spawn (cpu) to api/status",
}


def report(runs: dict[str, list[dict[str, float]]]) -> None:
    count = len(runs["kernelhub"])
    print(f"kernelhub vs stock JupyterHub, {count} runs on {socket.gethostname()} (seconds)")
    print(f"  {'':<36}{'kernelhub':>10}{'min':>8}{'max':>8}{'stock':>8}{'ratio':>8}")
    print(f"  {'':<36}{'median':>10}{'':>16}{'median':>8}{'kh/st':>8}")
    for key, label in MEASURES.items():
        ours = [run[key] for run in runs["kernelhub"]]
        stock = statistics.median(run[key] for run in runs["stock"])
        median = statistics.median(ours)
        print(
            f"  {label:<36}{median:>10.2f}{min(ours):>8.2f}{max(ours):>8.2f}"
            f"{stock:>8.2f}{median / stock:>8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="how many runs (default 5)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in HUBS}
    for number in range(1, args.runs + 1):
        for kind in HUBS:
            timings = one_run(kind, number)
            print(
                f"run {number} {kind}: "
                + ", ".join(f"{key} {value:.2f}s" for key, value in timings.items()),
                file=sys.stderr,
            )
            runs[kind].append(timings)
    report(runs)


if __name__ == "__main__":
    main()
