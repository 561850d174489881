"""Which runtime a host process is charged to: by its sandbox, never by what it claims.

A local runtime's processes are its root process (named, with its start time, in the
hub's server state) and that process's descendants; a Docker runtime's are its
container's. A process's environment (``JUPYTERHUB_USER``, ``JUPYTERHUB_SERVER_NAME``,
``JUPYTERHUB_API_URL``...) is the user's to set, so it decides nothing: alice's
process dressed as bob's stays alice's, bob's runtime never looks like a miner for it,
and alice's CPU time never disappears.

Most tests scan a fake ``/proc`` (``ProcessScanner``'s ``proc`` seam); the last ones
scan the real one, with real process trees: plain, and in a bubblewrap PID namespace
whose orphans are reparented to the sandbox's init.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from kernelhub.contract import GPUS_LABEL, RUNTIME_TYPE_LABEL, SERVER_LABEL, USER_LABEL
from kernelhub.quotas.hub_api import HubApi, ServerInfo
from kernelhub.quotas.runtime_view import local_roots
from kernelhub.quotas.runtimes import (
    MAX_CMDLINE_BYTES,
    LocalRoot,
    Owner,
    ProcessScanner,
    RuntimeUsage,
)

TICK = os.sysconf("SC_CLK_TCK")
API_URL = "http://127.0.0.1:8081/hub/api"
CONTAINER = "c0ffee" * 10 + "abcd"  # 64 hex digits, as /proc/<pid>/cgroup names one

ALICE = Owner("alice", "", "cpu")
BOB = Owner("bob", "gpu", "gpu", ("0",))
DAN = Owner("dan", "", "cpu", (), CONTAINER)  # a Docker runtime, by its labels
# what alice's processes claim: every variable the daemon once read
BOBS_ENVIRONMENT = {
    "JUPYTERHUB_USER": "bob",
    "JUPYTERHUB_SERVER_NAME": "gpu",
    "JUPYTERHUB_API_URL": API_URL,
    "KERNELHUB_RUNTIME_TYPE": "gpu",
    "CUDA_VISIBLE_DEVICES": "0",
}


# --- a fake /proc -------------------------------------------------------------------------


@dataclass
class FakeProc:
    """A ``/proc`` tree in a directory: ``stat``, ``cmdline``, ``cgroup``, ``environ``."""

    root: Path

    def __post_init__(self) -> None:
        (self.root / "self" / "ns").mkdir(parents=True)
        (self.root / "self" / "cgroup").write_text("0::/init.scope\n")
        (self.root / "self" / "ns" / "net").symlink_to("net:[4026531840]")

    def add(
        self,
        pid: int,
        ppid: int,
        start: int,
        *,
        cpu: float = 0.0,
        name: str = "python3",
        env: dict[str, str] | None = None,
        container: str | None = None,
    ) -> None:
        """Process ``pid`` started at ``start`` (clock ticks), ``cpu`` seconds used."""
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        self.restat(pid, ppid, start, cpu=cpu, name=name)
        (d / "cmdline").write_text(f"{name}\0-c\0work\0")
        cgroup = f"/system.slice/docker-{container}.scope" if container else "/user.slice"
        (d / "cgroup").write_text(f"0::{cgroup}\n")
        (d / "environ").write_text("".join(f"{k}={v}\0" for k, v in (env or {}).items()))

    def restat(self, pid: int, ppid: int, start: int, *, cpu: float = 0.0, name: str = "") -> None:
        """Rewrite ``stat`` in place (an open descriptor reads the new text, as a real
        one reads the live process)."""
        # after "(comm)": state ppid 9 fields, utime stime cutime cstime, 4 fields,
        # starttime vsize rss, then the rest
        fields = ["S", str(ppid)] + ["0"] * 9 + [str(round(cpu * TICK)), "0", "0", "0"]
        fields += ["20", "0", "1", "0", str(start), "100000000", "2500"] + ["0"] * 20
        (self.root / str(pid) / "stat").write_text(
            f"{pid} ({name or 'python3'}) {' '.join(fields)}\n"
        )


def dans_labels(container: str) -> dict[str, str] | None:
    if container != CONTAINER:
        return None
    return {USER_LABEL: "dan", SERVER_LABEL: "", RUNTIME_TYPE_LABEL: "cpu", GPUS_LABEL: ""}


def scanner_of(proc: FakeProc) -> ProcessScanner:
    return ProcessScanner(proc=proc.root, container_labels=dans_labels)


# alice: a sandbox (root 100) whose init (101) runs her server (102), a kernel with bob's
# environment (103) and a double-forked daemon with bob's environment, reparented to the
# sandbox's init (104); bob: his own root (200) and kernel (201)
ROOTS = {100: LocalRoot(1000, ALICE), 200: LocalRoot(2000, BOB), 400: LocalRoot(4000, ALICE)}


@pytest.fixture
def host(tmp_path: Path) -> FakeProc:
    proc = FakeProc(tmp_path / "proc")
    proc.add(1, 0, 1, name="systemd")
    proc.add(100, 1, 1000, name="bwrap")
    proc.add(101, 100, 1001, name="bwrap")
    proc.add(102, 101, 1002, cpu=1.0)
    proc.add(103, 102, 1010, cpu=50.0, env=BOBS_ENVIRONMENT)
    proc.add(104, 101, 1020, cpu=30.0, env=BOBS_ENVIRONMENT)
    proc.add(200, 1, 2000, name="bwrap")
    proc.add(201, 200, 2001, cpu=5.0)
    proc.add(300, 1, 3000, cpu=40.0, env=BOBS_ENVIRONMENT)
    # 400 was alice's root once: its PID now names a later process, with a child
    proc.add(400, 1, 4500, cpu=7.0, env=BOBS_ENVIRONMENT)
    proc.add(401, 400, 4600, cpu=7.0)
    # its parent's PID (103) names a process younger than it: 103's PID was reused
    proc.add(500, 103, 900, cpu=9.0)
    proc.add(600, 1, 6000, name="sleep", container=CONTAINER)
    proc.add(601, 600, 6001, cpu=3.0, container=CONTAINER)
    return proc


def owner_of(usages: dict[str, RuntimeUsage], pid: int) -> str | None:
    keys = [key for key, usage in usages.items() if pid in usage.pids]
    assert len(keys) <= 1, keys
    return keys[0] if keys else None


@pytest.mark.parametrize(
    ("pid", "charged_to"),
    [
        (100, "alice/"),  # a root whose start time matches the hub's state
        (101, "alice/"),  # the sandbox's init, a child of the root
        (102, "alice/"),  # her server
        (103, "alice/"),  # a kernel claiming bob's runtime in its environment
        (104, "alice/"),  # an orphan claiming bob's, reparented to the sandbox's init
        (200, "bob/gpu"),
        (201, "bob/gpu"),
        (300, None),  # outside every sandbox, with bob's environment: nobody's
        (400, None),  # a root's PID, another start time: the PID was reused
        (401, None),  # ... and its child
        (500, None),  # older than its "parent": that PID was reused, it hands nothing down
        (600, "dan/"),  # a Docker runtime: its container's labels
        (601, "dan/"),
        (1, None),
    ],
)
def test_a_process_is_charged_to_the_sandbox_it_runs_in(
    host: FakeProc, pid: int, charged_to: str | None
) -> None:
    assert owner_of(scanner_of(host).scan(ROOTS), pid) == charged_to


def test_dressing_up_as_bob_charges_alice_and_leaves_bobs_runtime_as_it_is(
    host: FakeProc,
) -> None:
    usages = scanner_of(host).scan(ROOTS)

    assert set(usages) == {"alice/", "bob/gpu", "dan/"}
    alice, bob = usages["alice/"], usages["bob/gpu"]
    assert (alice.owner, alice.pids, alice.cpu_seconds) == (ALICE, [100, 101, 102, 103, 104], 81)
    assert (bob.owner, bob.pids, bob.cpu_seconds) == (BOB, [200, 201], 5)
    assert [name for _, name, _ in alice.processes] == ["bwrap", "bwrap"] + ["python3"] * 3
    assert usages["dan/"].owner == DAN


def test_without_local_roots_only_containers_are_charged(host: FakeProc) -> None:
    """A daemon whose hub reports no local runtime: environments claim nothing."""
    assert set(scanner_of(host).scan({})) == {"dan/"}


def test_a_runtime_is_charged_from_the_scan_that_knows_its_root_until_it_stops(
    host: FakeProc,
) -> None:
    scanner = scanner_of(host)
    seen = []
    for roots in ({}, ROOTS, ROOTS, {200: ROOTS[200]}):  # alice's server starts, then stops
        seen.append(sorted(scanner.scan(roots)))

    assert seen == [
        ["dan/"],
        ["alice/", "bob/gpu", "dan/"],  # at once: nothing seen unrooted before is remembered
        ["alice/", "bob/gpu", "dan/"],
        ["bob/gpu", "dan/"],
    ]


def test_a_root_pid_reused_between_scans_stops_being_the_runtime(host: FakeProc) -> None:
    scanner = scanner_of(host)
    assert scanner.scan(ROOTS)["alice/"].pids == [100, 101, 102, 103, 104]
    # alice's sandbox exits and its processes with it; a new process gets PID 100
    for pid in (101, 102, 103, 104):
        shutil.rmtree(host.root / str(pid))
    host.restat(100, 1, 7000, cpu=20.0)

    assert "alice/" not in scanner.scan(ROOTS)


def test_a_container_pid_reused_on_the_host_stops_being_the_containers(host: FakeProc) -> None:
    scanner = scanner_of(host)
    assert scanner.scan(ROOTS)["dan/"].pids == [600, 601]
    shutil.rmtree(host.root / "601")
    host.add(600, 1, 7000, name="cron", cpu=20.0)  # dan's container is gone; a new PID 600

    assert "dan/" not in scanner.scan(ROOTS)


def test_a_process_joins_its_runtime_when_its_parent_does(host: FakeProc) -> None:
    """Attribution is by ancestry at each scan: a new kernel is its server's at once."""
    scanner = scanner_of(host)
    scanner.scan(ROOTS)
    host.add(105, 102, 1100, cpu=2.0, env=BOBS_ENVIRONMENT)

    usages = scanner.scan(ROOTS)

    assert owner_of(usages, 105) == "alice/" and usages["alice/"].cpu_seconds == 83


def test_a_command_line_is_read_up_to_its_cap(host: FakeProc) -> None:
    """Its user writes it: 1 MiB of arguments is read as its first MAX_CMDLINE_BYTES,
    where a miner's options are."""
    miner = b"xmrig\0-o\0stratum+tcp://eu.pool.example:3333\0"
    (host.root / "103" / "cmdline").write_bytes(miner + b"-o\0" + b"pool" * (1 << 18) + b"\0")

    alice = scanner_of(host).scan(ROOTS)["alice/"]

    (cmdline,) = [cmdline for pid, _, cmdline in alice.processes if pid == 103]
    assert cmdline.startswith("xmrig -o stratum+tcp://eu.pool.example:3333 -o poolpool")
    assert len(cmdline) == MAX_CMDLINE_BYTES


# --- the roots, from the hub's server state -------------------------------------------------


def user_model(state: Any) -> dict[str, Any]:
    """The hub's model of alice with one running server (``state``: absent if None)."""
    server: dict[str, Any] = {
        "name": "",
        "started": "2026-01-01T00:00:00Z",
        "last_activity": "2026-01-01T00:00:00Z",
        "ready": True,
        "pending": None,
        "url": "/user/alice/",
        "user_options": {"runtime": "cpu"},
    }
    if state is not None:
        server["state"] = state
    return {"name": "alice", "groups": [], "servers": {"": server}}


def servers_answering(state: Any) -> ServerInfo:
    """What ``HubApi.servers`` makes of alice's server with ``state``."""
    body = {"items": [user_model(state)], "_pagination": {"next": None}}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps(body))

    async def ask() -> list[ServerInfo]:
        hub = HubApi(API_URL, "token", transport=httpx.MockTransport(answer))
        try:
            return await hub.servers()
        finally:
            await hub.close()

    (server,) = asyncio.run(ask())
    return server


@pytest.mark.parametrize(
    ("state", "pid", "start", "gpus"),
    [
        ({"pid": 4242, "pid_start": 777, "gpu_ids": ["0", "GPU-1"]}, 4242, 777, ("0", "GPU-1")),
        ({"pid": 4242, "pid_start": 0}, 4242, 0, ()),  # started at boot
        (None, None, None, ()),  # a token without admin:server_state sees no state
        ({}, None, None, ()),  # a Docker runtime's
        ({"pid": "4242", "pid_start": "777"}, None, None, ()),  # numbers as text
        ({"pid": 4242.0, "pid_start": 777.0}, None, None, ()),
        ({"pid": True, "pid_start": False}, None, None, ()),  # booleans are ints to Python
        ({"pid": 0, "pid_start": -1}, None, None, ()),  # no such process
        ({"pid": -4242, "pid_start": 777}, None, 777, ()),
        ({"pid": [4242], "pid_start": {"t": 777}}, None, None, ()),
        ([4242, 777], None, None, ()),  # state that is not an object
        ({"gpu_ids": "0"}, None, None, ()),  # GPUs as one string
        ({"gpu_ids": [0, 1]}, None, None, ()),
        ({"gpu_ids": ["0", ""]}, None, None, ()),
    ],
)
def test_server_state_is_read_strictly(
    state: Any, pid: int | None, start: int | None, gpus: tuple[str, ...]
) -> None:
    server = servers_answering(state)
    assert (server.local_pid, server.local_pid_start, server.gpu_ids) == (pid, start, gpus)


def server(
    user: str, name: str = "", pid: int | None = None, start: int | None = None
) -> ServerInfo:
    return ServerInfo(
        user, name, "gpu", None, None, True, None, f"/user/{user}/{name}",
        local_pid=pid, local_pid_start=start, gpu_ids=("0",) if name else (),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("servers", "roots"),
    [
        ([server("ann", "big", 10, 5)], {10: LocalRoot(5, Owner("ann", "big", "gpu", ("0",)))}),
        ([server("ann", "", 10, 0)], {10: LocalRoot(0, Owner("ann", "", "gpu"))}),
        ([server("ann", "", 10, None)], {}),  # a bare PID may name another process by now
        ([server("ann", "", None, 5)], {}),
        ([server("ann")], {}),  # a Docker runtime
        # a PID two servers claim is neither's
        ([server("ann", "", 10, 5), server("bo", "", 10, 5)], {}),
        ([server("ann", "", 10, 5), server("bo", "", 10, 5), server("cy", "", 10, 5)], {}),
        (
            [server("ann", "", 10, 5), server("bo", "", 11, 6)],
            {10: LocalRoot(5, Owner("ann", "", "gpu")), 11: LocalRoot(6, Owner("bo", "", "gpu"))},
        ),
    ],
)
def test_local_roots_need_a_pid_and_its_start_time(
    servers: list[ServerInfo], roots: dict[int, LocalRoot]
) -> None:
    assert local_roots(servers) == roots


# --- real processes ------------------------------------------------------------------------

BURN = """
import pathlib, sys, time
t = time.process_time()
while time.process_time() - t < 0.2:
    pass
pathlib.Path(sys.argv[1]).touch()
time.sleep(60)
"""


def start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[19])


def wait_for(paths: list[Path], what: str) -> None:
    deadline = time.monotonic() + 20
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def real_scan(roots: dict[int, LocalRoot]) -> dict[str, RuntimeUsage]:
    # no container lookups: the Docker engine is not this test's
    return ProcessScanner(connections=False, container_labels=lambda _: None).scan(roots)


@pytest.fixture
def bobs_environment() -> dict[str, str]:
    return {**os.environ, **BOBS_ENVIRONMENT}


@pytest.fixture
def group_reaper() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Popens started in sessions of their own: killed, with their groups, at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        with contextlib.suppress(ProcessLookupError):  # its group is gone already
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def test_real_processes_dressed_as_bob_are_charged_by_their_ancestry(
    tmp_path: Path,
    bobs_environment: dict[str, str],
    group_reaper: list[subprocess.Popen[bytes]],
) -> None:
    # alice's runtime: a root whose child burns CPU as "bob"; a stranger burns as "bob" too
    script = (
        "import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1], sys.argv[2]])"
    )
    kernel_done, stranger_done = tmp_path / "kernel", tmp_path / "stranger"
    root = subprocess.Popen(
        [sys.executable, "-c", script, BURN, str(kernel_done)],
        env=bobs_environment,
        start_new_session=True,
    )
    stranger = subprocess.Popen(
        [sys.executable, "-c", BURN, str(stranger_done)],
        env=bobs_environment,
        start_new_session=True,
    )
    group_reaper.extend([root, stranger])
    wait_for([kernel_done, stranger_done], "the burners")

    usages = real_scan({root.pid: LocalRoot(start_ticks(root.pid), ALICE)})

    assert "bob/gpu" not in usages
    alice = usages["alice/"]
    assert alice.pids[0] == root.pid and len(alice.pids) == 2  # the root and its kernel
    assert alice.cpu_seconds >= 0.2  # the kernel's burn is alice's
    assert owner_of(usages, stranger.pid) is None


def test_real_processes_with_a_reused_start_time_are_nobodys(
    tmp_path: Path, group_reaper: list[subprocess.Popen[bytes]]
) -> None:
    done = tmp_path / "done"
    p = subprocess.Popen([sys.executable, "-c", BURN, str(done)], start_new_session=True)
    group_reaper.append(p)
    wait_for([done], "the burner")

    assert real_scan({p.pid: LocalRoot(start_ticks(p.pid) - 1, ALICE)}) == {}


# a PID namespace over the host's files: what matters here is where orphans go
SANDBOX = ["bwrap", "--dev-bind", "/", "/", "--unshare-pid"]


def bwrap_works() -> bool:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False
    probe = [bwrap, *SANDBOX[1:], "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def test_an_orphan_in_a_sandbox_stays_its_runtimes(
    tmp_path: Path,
    bobs_environment: dict[str, str],
    group_reaper: list[subprocess.Popen[bytes]],
) -> None:
    """A double-forked, setsid daemon leaves its parent, not the sandbox: the PID
    namespace hands it to the sandbox's init, a child of the runtime's root."""
    # a prerequisite of local runtimes (.ci/run installs it): missing, this fails
    assert bwrap_works(), "bubblewrap cannot make a PID namespace here: apt-get install bubblewrap"
    orphan_done, kernel_done = tmp_path / "orphan", tmp_path / "kernel"
    python = sys.executable
    shell = (
        f'(setsid "{python}" -c "$BURN" "{orphan_done}" orphan-marker &); '
        f'exec "{python}" -c "$BURN" "{kernel_done}"'
    )
    root = subprocess.Popen(
        [*SANDBOX, "--die-with-parent", "sh", "-c", shell],
        env={**bobs_environment, "BURN": BURN},
        start_new_session=True,
    )
    group_reaper.append(root)
    wait_for([orphan_done, kernel_done], "the sandbox's burners")

    usages = real_scan({root.pid: LocalRoot(start_ticks(root.pid), ALICE)})

    assert set(usages) == {"alice/"}
    alice = usages["alice/"]
    # (the bwrap processes' command lines hold the whole script)
    burners = [(pid, cmdline) for pid, name, cmdline in alice.processes if name != "bwrap"]
    (orphan,) = [pid for pid, cmdline in burners if "orphan-marker" in cmdline]
    (kernel,) = [pid for pid, cmdline in burners if str(kernel_done) in cmdline]
    init = int(Path(f"/proc/{orphan}/stat").read_bytes().rpartition(b")")[2].split()[1])
    assert init != kernel and init in alice.pids  # reparented: to the sandbox's init
    assert alice.cpu_seconds >= 0.4  # both burns are alice's
