"""How long kernelhub takes to start, and to start a runtime, on this machine.

    .venv/bin/python benchmarks/startup.py --runs 5

Each run starts a real `kernelhub up` (hub + configurable-http-proxy) on a fresh
data directory and measures:

  hub up, fresh data dir    launch -> `GET /hub/api/` answers 200 through the proxy
  runtime spawn (cpu)       `POST /hub/api/users/U/server` -> `GET /user/U/api/status`
                            answers 200 through the proxy
  hub up, reused data dir   the same hub stopped (Ctrl-C) and launched again on the
                            same data directory (database, secrets, users' files kept)

Every hub is stopped with SIGINT, which stops its runtimes too; anything left of
them is killed, and the temporary data directories are removed.
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
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import HubProcess, free_port, runtime_pids, write_test_credentials

POLL_INTERVAL = 0.05
TIMEOUT = 120.0
USER = "bench"


def poll_until(answers: Callable[[], bool], hub: HubProcess, what: str) -> None:
    """Return once ``answers()`` is true; fail if the hub exits or TIMEOUT passes."""
    assert hub.proc is not None
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if hub.proc.poll() is not None:
            raise RuntimeError(f"kernelhub up exited with {hub.proc.returncode}:\n{hub.log()}")
        try:
            if answers():
                return
        except httpx.HTTPError:
            pass
        time.sleep(POLL_INTERVAL)
    raise TimeoutError(f"{what} not within {TIMEOUT}s")


def time_hub_start(hub: HubProcess) -> float:
    """Seconds from launching `kernelhub up` until the hub's API answers through the proxy."""
    t0 = time.monotonic()
    hub.start(wait=False)
    poll_until(
        lambda: httpx.get(f"{hub.url}/hub/api/", timeout=2).status_code == 200,
        hub,
        "the hub's API",
    )
    return time.monotonic() - t0


def time_runtime_spawn(hub: HubProcess, user: str) -> float:
    """Seconds from the REST spawn request until the runtime answers through the proxy."""
    token = hub.token(user)
    headers = {"Authorization": f"token {token}"}
    with httpx.Client(base_url=hub.url, headers=headers, timeout=30) as client:
        t0 = time.monotonic()
        response = client.post(
            f"/hub/api/users/{user}/server", json={"user_options": {"runtime": "cpu"}}
        )
        if response.status_code not in (201, 202):
            raise RuntimeError(f"spawn refused: HTTP {response.status_code} {response.text}")
        poll_until(
            lambda: client.get(f"/user/{user}/api/status").status_code == 200,
            hub,
            "the runtime's api/status",
        )
        return time.monotonic() - t0


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


def one_run(number: int) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix=f"kernelhub-bench-{number}-"))
    data_dir = workdir / "data"
    write_test_credentials(data_dir, secrets.token_urlsafe(12), secrets.token_urlsafe(33))
    timings: dict[str, float] = {}
    hub = HubProcess(data_dir=data_dir, port=free_port())
    try:
        timings["fresh"] = time_hub_start(hub)
        timings["spawn"] = time_runtime_spawn(hub, USER)
        stop_hub(hub)
        wait_port_free(hub.port)
        timings["reused"] = time_hub_start(hub)
    finally:
        stop_hub(hub)
        shutil.rmtree(workdir, ignore_errors=True)
    return timings


MEASURES = {
    "fresh": "hub up, fresh data dir",
    "reused": "hub up, reused data dir",
    "spawn": "runtime spawn (cpu) to api/status",
}


def report(runs: list[dict[str, float]]) -> None:
    print(f"kernelhub startup, {len(runs)} runs on {socket.gethostname()} (seconds)")
    print(f"  {'':<36}{'median':>8}{'min':>8}{'max':>8}")
    for key, label in MEASURES.items():
        values = [run[key] for run in runs]
        print(
            f"  {label:<36}{statistics.median(values):>8.2f}{min(values):>8.2f}{max(values):>8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="how many runs (default 5)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    runs = []
    for number in range(1, args.runs + 1):
        timings = one_run(number)
        print(
            f"run {number}: " + ", ".join(f"{key} {value:.2f}s" for key, value in timings.items()),
            file=sys.stderr,
        )
        runs.append(timings)
    report(runs)


if __name__ == "__main__":
    main()
