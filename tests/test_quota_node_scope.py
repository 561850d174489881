"""The quota daemon on every node of a cluster: which runtimes each one sees and judges.

One daemon per node reads that node's processes (the node's ``/proc``, bind-mounted
where the daemon runs as a Swarm service) and every server of the hub. Node-local,
it accounts, judges and stops only the runtimes whose processes it finds there: the
daemon of the node that does not run alice's runtime neither culls it as idle nor
accounts it a second time. A runtime's container is the innermost one its cgroup
names: on a node that is itself a container (Docker in Docker), or under an outer
container's cgroup, the first id is the outer container's.

The hub and the GPUs are stand-ins here; the fake ``/proc`` is a directory
(``ProcessScanner``'s ``proc`` seam). tests/test_quota_node_socket.py tests the
node's read-only engine view; tests/test_swarm_quotad.py runs the real thing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kernelhub.contract import RUNTIME_TYPE_LABEL, SERVER_LABEL, USER_LABEL
from kernelhub.quotas.clock import VirtualClock
from kernelhub.quotas.containers import LabelsUnavailable, container_id
from kernelhub.quotas.cycle import CycleReport
from kernelhub.quotas.daemon import QuotaDaemon
from kernelhub.quotas.hub_api import KernelReport, ServerInfo
from kernelhub.quotas.policy import Rule
from kernelhub.quotas.replay import ReplayTelemetry
from kernelhub.quotas.runtimes import LocalRoot, Owner, ProcessScanner, RuntimeUsage
from kernelhub.quotas.service import parse_args
from kernelhub.quotas.store import QuotaStore
from kernelhub.quotas.telemetry import TelemetrySample

START = 1_767_225_600.0
OUTER = "0123456789abcdef" * 4  # the node's own container (a Docker-in-Docker worker)
RUNTIME = "feedc0de" * 8  # alice's runtime container, inside the node
DAEMON = "dae0" * 16  # the quota daemon's container, inside the node
OTHER = "0ff1ce00" * 8  # a container that is not a runtime


# --- which container a process is in: the innermost id of its cgroup ---------------------


@pytest.mark.parametrize(
    ("cgroup", "container"),
    [
        # cgroup v2, systemd driver: the engine on the host
        (f"0::/system.slice/docker-{RUNTIME}.scope\n", RUNTIME),
        # cgroup v2, cgroupfs driver
        (f"0::/docker/{RUNTIME}\n", RUNTIME),
        # a node that is itself a container: its engine's containers nest under its id
        (f"0::/system.slice/docker-{OUTER}.scope/docker/{RUNTIME}\n", RUNTIME),
        (f"0::/docker/{OUTER}/docker/{RUNTIME}\n", RUNTIME),
        # cgroup v1: one line per hierarchy, all nested the same way
        (
            f"12:pids:/docker/{OUTER}/docker/{RUNTIME}\n"
            f"11:memory:/docker/{OUTER}/docker/{RUNTIME}\n"
            f"1:name=systemd:/docker/{OUTER}/docker/{RUNTIME}\n0::/\n",
            RUNTIME,
        ),
        # hybrid (v1 and v2): the nested engine manages the v1 hierarchies only, so the
        # unified line stays at the node's container (seen on the test swarm's workers)
        (
            f"9:name=systemd:/docker/{OUTER}/docker/{RUNTIME}\n"
            f"1:cpu:/docker/{OUTER}/docker/{RUNTIME}\n0::/docker/{OUTER}\n",
            RUNTIME,
        ),
        # read from inside a container with its own cgroup namespace: relative paths
        (f"0::/../docker-{RUNTIME}.scope\n", RUNTIME),
        (f"0::/../../docker/{RUNTIME}\n", RUNTIME),
        # in no container
        ("0::/user.slice/user-1000.slice/session-2.scope\n", None),
        ("0::/\n", None),
        ("", None),
        # a longer hex string is no container id
        (f"0::/docker/{RUNTIME}ab\n", None),
    ],
    ids=[
        "v2-systemd",
        "v2-cgroupfs",
        "nested-systemd",
        "nested-cgroupfs",
        "v1-nested",
        "hybrid-nested",
        "own-namespace-systemd",
        "own-namespace-cgroupfs",
        "session",
        "root",
        "unreadable",
        "65-hex",
    ],
)
def test_a_process_is_in_the_innermost_container_its_cgroup_names(
    cgroup: str, container: str | None
) -> None:
    assert container_id(cgroup) == container


TICK = 100  # clock ticks per second, as the fake stat files count them


class FakeProc:
    """A ``/proc`` in a directory: ``stat`` and ``cgroup`` per process, and ``self``."""

    def __init__(self, root: Path, own_cgroup: str) -> None:
        self.root = root
        (root / "self").mkdir(parents=True)
        (root / "self" / "cgroup").write_text(own_cgroup)

    def add(self, pid: int, ppid: int, start: int, cgroup: str, cpu: float = 0.0) -> None:
        d = self.root / str(pid)
        d.mkdir()
        ticks = str(round(cpu * os.sysconf("SC_CLK_TCK")))
        # after "(comm)": state ppid, 9 fields, utime stime cutime cstime, 4 fields,
        # starttime vsize rss, then the rest
        fields = ["S", str(ppid)] + ["0"] * 9 + [ticks, "0", "0", "0"]
        fields += ["20", "0", "1", "0", str(start), "100000000", "2500"] + ["0"] * 20
        (d / "stat").write_text(f"{pid} (python3) {' '.join(fields)}\n")
        (d / "cmdline").write_text("python3\0-c\0work\0")
        (d / "cgroup").write_text(cgroup)


def labels_of(container: str) -> dict[str, str] | None:
    """The node's engine: it knows its own containers (never the outer one)."""
    return {
        RUNTIME: {USER_LABEL: "alice", SERVER_LABEL: "", RUNTIME_TYPE_LABEL: "cpu"},
        DAEMON: {"purpose": "kernelhub-quotad"},
        OTHER: {"purpose": "something else"},
    }.get(container)


def nested(container: str) -> str:
    """A process's cgroup on a hybrid host's nested node, as the test swarm's workers
    show it: the v1 hierarchies name the inner container, the unified line the node."""
    inner = f"/docker/{OUTER}/docker/{container}"
    return f"9:name=systemd:{inner}\n4:memory:{inner}\n1:cpu:{inner}\n0::/docker/{OUTER}\n"


@pytest.fixture
def worker(tmp_path: Path) -> FakeProc:
    """A Docker-in-Docker worker's /proc, as its quota daemon's container reads it."""
    proc = FakeProc(tmp_path / "proc", nested(DAEMON))
    proc.add(1, 0, 1, f"0::/system.slice/docker-{OUTER}.scope\n")  # the worker's init
    proc.add(50, 1, 50, nested(DAEMON), cpu=2.0)  # the daemon itself
    proc.add(100, 1, 100, nested(RUNTIME), cpu=3.0)  # alice's server
    proc.add(101, 100, 101, nested(RUNTIME), cpu=4.0)  # her kernel
    proc.add(200, 1, 200, nested(OTHER), cpu=9.0)
    return proc


def test_on_a_nested_node_the_runtimes_processes_are_its_own(worker: FakeProc) -> None:
    """The first id of every process here is the worker's: taken for the container, it
    would be the daemon's own too, and alice's runtime would be nobody's."""
    scanner = ProcessScanner(proc=worker.root, container_labels=labels_of, connections=False)
    usages = scanner.scan({})
    assert set(usages) == {"alice/"}
    assert usages["alice/"].pids == [100, 101]
    assert usages["alice/"].cpu_seconds == pytest.approx(7.0)
    assert usages["alice/"].owner.container == RUNTIME


def test_a_runtime_seen_while_its_engine_does_not_answer_is_found_once_it_does(
    worker: FakeProc,
) -> None:
    """A daemon that starts before its node's socket guard listens (or while the engine
    restarts) must not remember "no such runtime" for the runtimes it saw meanwhile."""
    answering = False
    asked: list[str] = []

    def engine(container: str) -> dict[str, str] | None:
        asked.append(container)
        if not answering:
            raise LabelsUnavailable("the guard's socket is not there yet")
        return labels_of(container)

    scanner = ProcessScanner(proc=worker.root, container_labels=engine, connections=False)
    assert scanner.scan({}) == {}
    assert len(asked) == 1  # one try per scan while the engine is away, not one per process
    answering = True
    assert set(scanner.scan({})) == {"alice/"}


# --- the proc root: the node's /proc, bind-mounted ----------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "proc"),
    [
        ([], {}, "/proc"),
        ([], {"KERNELHUB_QUOTAD_PROC": "{worker}"}, "{worker}"),
        (["--proc", "{worker}"], {"KERNELHUB_QUOTAD_PROC": "/proc"}, "{worker}"),
    ],
    ids=["default", "environment", "option-wins"],
)
def test_the_daemon_reads_the_proc_root_it_is_given(
    worker: FakeProc,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    proc: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(worker=worker.root))
    args = parse_args(["--db-url", "sqlite://", *(a.format(worker=worker.root) for a in argv)])
    assert args.proc == proc.format(worker=worker.root)


def test_a_proc_root_that_is_no_proc_filesystem_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--db-url", "sqlite://", "--proc", str(tmp_path)])
    assert exited.value.code == 2
    assert "is not a proc filesystem" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "env", "node_local"),
    [
        ([], {}, False),  # one daemon for the whole (single) machine
        ([], {"KERNELHUB_QUOTAD_NODE_LOCAL": "1"}, True),
        (["--node-local"], {}, True),
        (["--no-node-local"], {"KERNELHUB_QUOTAD_NODE_LOCAL": "1"}, False),
    ],
)
def test_node_local_is_off_unless_asked(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str], node_local: bool
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert parse_args(["--db-url", "sqlite://", *argv]).node_local is node_local


# --- two nodes, one store: each daemon judges its own node's runtimes ---------------------

NOW = datetime.fromtimestamp(START, UTC)
# idle for two hours, past a one-hour session limit: due to stop wherever it is judged
ALICE = ServerInfo(
    "alice", "", "cpu", NOW - timedelta(hours=3), NOW - timedelta(hours=2), True, None,
    "/user/alice/", local_pid=700, local_pid_start=7000,
)  # fmt: skip
LIMITS = Rule(max_session_hours={"*": 1.0}, idle_minutes=30)


class Hub:
    def __init__(self, servers: list[ServerInfo]) -> None:
        self.all, self.stopped = servers, list[str]()

    async def servers(self) -> list[ServerInfo]:
        return list(self.all)

    async def kernel_reports(self) -> dict[str, KernelReport]:
        return {}

    async def stop_server(self, user: str, server: str) -> bool:
        self.stopped.append(f"{user}/{server}")
        return True


class NodeScanner:
    """A node's processes: alice's runtime where it runs here; the roots it was given."""

    def __init__(self, runs_alice: bool) -> None:
        self.runs_alice, self.scans, self.roots = runs_alice, 0, list[dict[int, LocalRoot]]()

    def scan(self, local_roots: Mapping[int, LocalRoot]) -> dict[str, RuntimeUsage]:
        self.scans += 1
        self.roots.append(dict(local_roots))
        if not self.runs_alice:
            return {}
        usage = RuntimeUsage(Owner("alice", "", "cpu"), [4242], cpu_seconds=2.0 * self.scans)
        return {"alice/": usage}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[QuotaStore]:
    with QuotaStore.open(f"sqlite:///{tmp_path / 'quotas.sqlite'}") as opened:
        yield opened


def node_daemon(
    store: QuotaStore, hub: Hub, scanner: NodeScanner, clock: VirtualClock, node_local: bool
) -> QuotaDaemon:
    no_gpus = [TelemetrySample(START + t, ()).to_json_line() for t in range(60)]
    return QuotaDaemon(
        store, ReplayTelemetry(no_gpus, clock, loop=True), hub, clock,
        interval=1.0, process_interval=5.0, scanner=scanner, default_limits=LIMITS,
        node_local=node_local,
    )  # fmt: skip


def cycles(daemon: QuotaDaemon, clock: VirtualClock, n: int) -> list[CycleReport]:
    async def go() -> list[CycleReport]:
        reports = []
        for _ in range(n):
            reports.append(await daemon.run_cycle())
            clock.advance(1.0)
        return reports

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("node_local", "runs_alice", "judges_alice"),
    [
        (True, True, True),  # alice's node: accounts and stops her idle runtime
        (True, False, False),  # another node: leaves her runtime to its node's daemon
        (False, True, True),  # a single machine's daemon: as before
        (False, False, True),  # ... sees every server: a second one would double everything
    ],
)
def test_a_node_local_daemon_judges_only_the_runtimes_on_its_node(
    store: QuotaStore, node_local: bool, runs_alice: bool, judges_alice: bool
) -> None:
    clock, hub = VirtualClock(START), Hub([ALICE])
    daemon = node_daemon(store, hub, NodeScanner(runs_alice), clock, node_local)
    reports = cycles(daemon, clock, 3)

    assert bool(hub.stopped) is judges_alice
    assert any("alice/" in r.accounted_seconds for r in reports) is judges_alice
    assert bool(store.events("alice")) is judges_alice  # the stop's record
    assert bool(store.cursor("alice/")) is judges_alice


def test_two_node_daemons_account_a_runtime_once(store: QuotaStore, tmp_path: Path) -> None:
    """alice's runtime on node A: one store, A's daemon and B's, the same cycles."""
    clock = VirtualClock(START)
    busy = ServerInfo("alice", "", "cpu", NOW - timedelta(minutes=5), NOW, True, None, "/u/")
    with QuotaStore.open(f"sqlite:///{tmp_path / 'quotas.sqlite'}") as store_b:
        a = node_daemon(store, Hub([busy]), NodeScanner(True), clock, node_local=True)
        b = node_daemon(store_b, Hub([busy]), NodeScanner(False), clock, node_local=True)

        async def both() -> None:
            for _ in range(11):
                await a.run_cycle()
                await b.run_cycle()
                clock.advance(1.0)

        asyncio.run(both())
    usage = store.usage("alice", NOW.date())
    assert len(usage) == 1
    # the ten seconds A accounted (from its first cycle's interval on), not twice that
    assert usage[0].cpu_seconds == pytest.approx(4.0)  # two scans after the first
    cursor = store.cursor("alice/")
    assert cursor is not None and cursor == NOW + timedelta(seconds=10)


def test_a_node_local_daemon_looks_for_a_new_runtime_at_once_and_no_more(
    store: QuotaStore,
) -> None:
    """A runtime's first scan is not left to the next process interval (until then no
    daemon would account it), and a runtime on another node costs no extra scans."""
    clock, hub = VirtualClock(START), Hub([])
    scanner = NodeScanner(runs_alice=True)
    daemon = node_daemon(store, hub, scanner, clock, node_local=True)
    cycles(daemon, clock, 2)  # t=0, 1: one scan, at 0
    busy = ServerInfo("alice", "", "cpu", NOW, NOW + timedelta(seconds=2), True, None, "/u/")
    hub.all = [busy]
    reports = cycles(daemon, clock, 8)  # t=2..9: alice's at 2, then on schedule at 7
    assert scanner.scans == 3
    assert "alice/" in reports[0].accounted_seconds  # accounted from her first cycle


def test_a_node_local_daemon_charges_nobody_by_a_hub_pid(store: QuotaStore) -> None:
    """A local runtime's PID names a process of the hub's machine; on another node the
    same PID (and start time) may be anyone's, so no node daemon goes by it."""
    for node_local, roots in [(False, {700}), (True, set())]:
        clock, scanner = VirtualClock(START), NodeScanner(runs_alice=False)
        cycles(node_daemon(store, Hub([ALICE]), scanner, clock, node_local), clock, 1)
        assert set(scanner.roots[0]) == roots
