"""Local runtimes are sandboxed: each user's code sees only its own drive, runs as its
own account, ends with its runtime and stays within its limits.

Every test here performs the attack from inside a real runtime (code in a notebook
kernel, commands in a terminal) of a real hub running as root, the embedded default.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from harness import HubProcess, runtime_pids, server_path, start_runtime, tiny_wheel, wait_until
from kernels import RuntimeClient, assert_server_not_rewritten, plant_server_rewrites

from kernelhub.quotas.hub_api import HubApi
from kernelhub.quotas.runtimes import ProcessScanner

pytestmark = pytest.mark.slow

MEMORY_LIMIT = "300M"
MAX_PROCESSES = 200


def config(device_dir: Path) -> str:
    return f"""
c.RuntimeCatalog.runtime_types = [
    {{"name": "cpu", "display_name": "None (CPU)", "mem_limit": "{MEMORY_LIMIT}",
      "cpu_limit": 1.0}},
    {{"name": "gpu", "display_name": "GPU", "gpus": 1, "mem_limit": "1G", "cpu_limit": 1.0}},
]
c.RuntimeCatalog.max_running_runtimes_per_user = 2
c.GpuInventory.devices = ["0", "1"]
c.LocalRuntimeSpawner.gpu_device_dir = "{device_dir}"
c.LocalRuntimeSpawner.max_processes = {MAX_PROCESSES}
c.Spawner.poll_interval = 2
"""


@pytest.fixture(scope="module")
def device_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-ins for NVIDIA device nodes (files: what matters is which are visible)."""
    folder = tmp_path_factory.mktemp("dev")
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (folder / name).write_text(name)
    return folder


@pytest.fixture(scope="module")
def hub(hub_factory: Callable[..., HubProcess], device_dir: Path) -> HubProcess:
    assert os.geteuid() == 0, "these tests run the hub as root, as the quick start does"
    return hub_factory(config(device_dir), name="sandboxed", quotas=False)


@pytest.fixture(scope="module")
def tokens(hub: HubProcess) -> dict[str, str]:
    return {name: hub.token(name) for name in ("alice", "bob")}


def runtime(hub: HubProcess, tokens: dict[str, str], user: str, server: str = "") -> RuntimeClient:
    with hub.api(tokens[user]) as api:
        model = api.get(f"users/{user}").json()["servers"].get(server)
        if not (model and model["ready"]):
            start_runtime(api, user, server, "gpu" if server == "gpu" else "cpu")
    return RuntimeClient.of(hub.url, user, server, tokens[user])


@pytest.fixture(scope="module")
def alice(hub: HubProcess, tokens: dict[str, str]) -> RuntimeClient:
    return runtime(hub, tokens, "alice")


@pytest.fixture(scope="module")
def bob(hub: HubProcess, tokens: dict[str, str]) -> RuntimeClient:
    return runtime(hub, tokens, "bob")


def stop(hub: HubProcess, token: str, user: str, server: str = "") -> None:
    with hub.api(token) as api:
        assert api.delete(server_path(user, server)).status_code in (202, 204)
        wait_until(
            lambda: server not in api.get(f"users/{user}").json()["servers"],
            timeout=60,
            what=f"{user}/{server} to stop",
        )


def host_pids_of(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def runtime_uid(client: RuntimeClient) -> int:
    return int(client.run("import os; print(os.getuid())").ok())


# ---- who runs the code ------------------------------------------------------------------


def test_runtime_code_runs_as_the_users_own_account_never_root(
    alice: RuntimeClient, bob: RuntimeClient
) -> None:
    alice_uid, bob_uid = runtime_uid(alice), runtime_uid(bob)
    assert 0 not in (alice_uid, bob_uid)
    assert os.geteuid() == 0 and alice_uid != bob_uid  # the hub is root; they are not
    assert pwd.getpwuid(alice_uid).pw_name.startswith("kh-alice-")
    groups = alice.run("import os; print(os.getgroups())").ok()
    assert groups.strip() in ("[]", f"[{pwd.getpwuid(alice_uid).pw_gid}]")
    caps = alice.run("print(open('/proc/self/status').read())").ok()
    assert re.search(r"CapEff:\s+0+\n", caps) and re.search(r"NoNewPrivs:\s+1", caps)


def test_no_runtime_is_started_with_allow_root(hub: HubProcess, alice: RuntimeClient) -> None:
    assert "allow_root" not in hub.log()
    assert (
        "--ServerApp.allow_root" not in alice.run("print(open('/proc/self/cmdline').read())").ok()
    )


# ---- what it can see --------------------------------------------------------------------


def test_alice_cannot_read_bobs_drive(alice: RuntimeClient, bob: RuntimeClient) -> None:
    secret_path = (
        bob.run(
            "import os; p = os.path.expanduser('~/secret.txt'); open(p, 'w').write('bob only');"
            " print(p)"
        )
        .ok()
        .strip()
    )
    attempt = alice.run(
        f"import os\ntry:\n    print(open({secret_path!r}).read())\nexcept OSError as e:\n"
        f"    print(type(e).__name__)\nprint(os.listdir(os.path.dirname(os.path.expanduser('~'))))"
    ).ok()
    assert "bob only" not in attempt
    assert "FileNotFoundError" in attempt
    assert "bob" not in attempt.splitlines()[-1]  # the drives' folder shows alice's alone


def test_alice_cannot_read_any_file_of_the_data_directory(
    hub: HubProcess, alice: RuntimeClient
) -> None:
    data_files = [str(p) for p in hub.data_dir.rglob("*") if p.is_file() and "users" not in p.parts]
    assert any(p.endswith("operator-token") for p in data_files)
    probe = alice.run(
        "import json\nseen = {}\n"
        f"for path in {data_files!r}:\n"
        "    try:\n        seen[path] = len(open(path, 'rb').read())\n"
        "    except OSError as e:\n        pass\n"
        "print(json.dumps(seen))"
    ).ok()
    assert json.loads(probe) == {}, "files of the data directory readable from a runtime"
    operator = (hub.data_dir / "operator-token").read_text().strip()
    found = alice.run(
        "import os\nhits = []\nfor root, dirs, files in os.walk('/', onerror=None):\n"
        # everything but pseudo-files and the (large, read-only) system and Python trees
        "    dirs[:] = [d for d in dirs if not (root == '/' and d in ('proc', 'sys', 'dev', 'usr'))"
        " and d not in ('site-packages', 'python3.11', 'node_modules')]\n"
        "    for f in files:\n        p = os.path.join(root, f)\n"
        "        try:\n"
        f"            if {operator!r}.encode() in open(p, 'rb').read(1 << 20): hits.append(p)\n"
        "        except OSError:\n            pass\n"
        "print(hits)",
        timeout=120,
    ).ok()
    assert found.strip() == "[]"


def test_the_hub_and_other_runtimes_are_invisible_and_unsignalable(
    hub: HubProcess, alice: RuntimeClient, bob: RuntimeClient
) -> None:
    hub_pid = int((hub.data_dir / "hub.pid").read_text())
    # never run this attack where runtimes run as root: it would signal the whole host
    assert runtime_uid(alice) != 0, "runtimes run as root"
    bob_pids = runtime_pids(hub.data_dir, "bob")
    assert bob_pids
    result = alice.run(
        "import os, json, signal\nout = {}\n"
        f"for pid in {[hub_pid, *bob_pids]!r}:\n"
        "    try:\n        os.kill(pid, signal.SIGTERM)\n        out[pid] = 'signalled'\n"
        "    except OSError as e:\n        out[pid] = type(e).__name__\n"
        "envs = []\nfor p in os.listdir('/proc'):\n"
        "    if p.isdigit():\n"
        "        try:\n            envs.append(open(f'/proc/{p}/environ', 'rb').read())\n"
        "        except OSError:\n            pass\n"
        "print(json.dumps({'kill': out, 'secrets': any(b'CONFIGPROXY_AUTH_TOKEN' in e or "
        "b'JPY_COOKIE_SECRET' in e for e in envs), 'procs': sorted(int(p) for p in "
        "os.listdir('/proc') if p.isdigit())}))"
    ).ok()
    seen = json.loads(result)
    assert "signalled" not in seen["kill"].values()
    assert seen["secrets"] is False
    # its own PID namespace: a handful of its own processes, numbered from 1
    assert max(seen["procs"]) < 1000 and 1 in seen["procs"]
    os.kill(hub_pid, 0)
    for pid in bob_pids:
        os.kill(pid, 0)
    assert bob.run("print('bob is fine')").ok().strip() == "bob is fine"


def test_a_runtime_has_a_private_tmp(alice: RuntimeClient, bob: RuntimeClient) -> None:
    name = f"/tmp/alice-was-here-{uuid.uuid4().hex}"
    alice.run(f"open({name!r}, 'w').write('x')").ok()
    assert bob.run(f"import os; print(os.path.exists({name!r}))").ok().strip() == "False"
    assert not Path(name).exists()


def test_a_gpu_runtime_sees_only_its_own_gpus_device_nodes(
    hub: HubProcess, tokens: dict[str, str]
) -> None:
    gpu = runtime(hub, tokens, "alice", "gpu")
    try:
        seen = gpu.run(
            "import os, json; print(json.dumps([sorted(n for n in os.listdir('/dev') if "
            "n.startswith('nvidia')), os.environ.get('CUDA_VISIBLE_DEVICES')]))"
        ).ok()
        nodes, visible = json.loads(seen)
        assert nodes == sorted([f"nvidia{visible}", "nvidia-uvm", "nvidiactl"])
        other = "1" if visible == "0" else "0"
        forged = gpu.run(
            f"import os; os.environ['CUDA_VISIBLE_DEVICES'] = {other!r}\n"
            f"print(os.path.exists('/dev/nvidia{other}'))"
        ).ok()
        assert forged.strip() == "False"
    finally:
        stop(hub, tokens["alice"], "alice", "gpu")


# ---- how processes end -------------------------------------------------------------------


def test_everything_a_runtime_started_ends_when_it_stops(
    hub: HubProcess, tokens: dict[str, str]
) -> None:
    carol = hub.token("carol")
    tokens = {**tokens, "carol": carol}
    client = runtime(hub, tokens, "carol")
    client.terminal(
        "setsid sleep 4101 & nohup sleep 4102 >/dev/null 2>&1 & (sleep 4103 &) ; echo 'st'arted",
        wait_for="started",
    )
    client.run("import subprocess; subprocess.Popen(['setsid', 'sleep', '4104'])").ok()

    def leftovers() -> list[str]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmd = (entry / "cmdline").read_bytes().decode()
                except OSError:
                    continue
                if re.fullmatch(r"sleep\x0041\d\d\x00", cmd):
                    found.append(cmd)
        return found

    wait_until(lambda: len(leftovers()) == 4, timeout=10, what="the sleeps to start")
    stop(hub, carol, "carol")
    wait_until(lambda: not leftovers(), timeout=10, what="the runtime's processes to end")


# ---- attribution -------------------------------------------------------------------------


async def test_a_process_dressed_as_bob_in_alices_runtime_is_charged_to_alice(
    hub: HubProcess, alice: RuntimeClient, bob: RuntimeClient
) -> None:
    alice.run(
        "import os, subprocess, sys\n"
        "env = dict(os.environ, JUPYTERHUB_USER='bob', JUPYTERHUB_SERVER_NAME='',"
        " JUPYTERHUB_CLIENT_ID='jupyterhub-user-bob', KERNELHUB_RUNTIME_TYPE='gpu')\n"
        "burner = subprocess.Popen([sys.executable, '-c', 'import time\\nt = time.time()\\n"
        "while time.time() - t < 30: pass'], env=env)\nprint(burner.pid)"
    ).ok()
    state = json.loads((hub.data_dir / "hub-state.json").read_text())
    operator = (hub.data_dir / "operator-token").read_text().strip()
    api = HubApi(f"http://127.0.0.1:{state['ports']['hub']}/hub/api", operator)
    try:
        servers = [s for s in await api.servers() if s.user in ("alice", "bob") and not s.name]
    finally:
        await api.close()
    from kernelhub.quotas.runtime_view import local_roots  # the daemon's own mapping

    scanner = ProcessScanner(connections=False, container_labels=lambda _: None)
    usages = scanner.scan(local_roots(servers))

    def burners(key: str) -> list[str]:
        return [cmd for _, _, cmd in usages[key].processes if "time.time() - t < 30" in cmd]

    assert len(burners("alice/")) == 1, "the forged process is alice's"
    assert burners("bob/") == []
    assert usages["alice/"].owner.runtime_type == "cpu"  # from the hub, not the forged variable


# ---- limits ------------------------------------------------------------------------------


def test_a_runtime_over_its_memory_limit_is_killed_alone_and_the_hub_says_why(
    hub: HubProcess, alice: RuntimeClient, bob: RuntimeClient
) -> None:
    hog = alice.run("x = bytearray(600 * 1024 * 1024)\nfor i in range(0, len(x), 4096): x[i] = 1")
    assert hog.error is not None and hog.error.startswith("kernel "), hog
    wait_until(lambda: "reached its memory limit" in hub.log(), timeout=30, what="the hub's report")
    line = next(line for line in hub.log().splitlines() if "reached its memory limit" in line)
    assert "alice/" in line
    assert bob.run("print(6 * 7)").ok().strip() == "42"
    alice._kernel = None  # the old kernel is gone or restarting: a fresh one works
    wait_until(lambda: alice.get("api").status_code == 200, timeout=30, what="alice's server")
    assert alice.run("print('still here')").ok().strip() == "still here"


def test_a_runtime_gets_no_more_cpu_than_its_limit(alice: RuntimeClient) -> None:
    # two busy processes for 3 s: 6 CPU-seconds on two free cores, 3 under a 1-core limit
    used = alice.run(
        "import resource, subprocess, sys\n"
        "burn = 'import time\\nt = time.time()\\nwhile time.time() - t < 3: pass'\n"
        "ps = [subprocess.Popen([sys.executable, '-c', burn]) for _ in range(2)]\n"
        "[p.wait() for p in ps]\n"
        "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(r.ru_utime + r.ru_stime)"
    ).ok()
    assert float(used) < 3.0 * 1.0 * 1.25, f"{used} CPU-seconds in 3 s under a 1-core limit"


def test_a_fork_bomb_hits_its_own_limit_while_the_host_and_others_carry_on(
    hub: HubProcess, tokens: dict[str, str], bob: RuntimeClient
) -> None:
    dave = hub.token("dave")
    client = runtime(hub, {**tokens, "dave": dave}, "dave")
    uid = runtime_uid(client)
    assert uid != 0, "runtimes run as root: a fork bomb would take the host down"
    client.terminal("b(){ b|b& };b 2>/dev/null; echo 'bo'mbed", wait_for="bombed")
    time.sleep(3)
    assert len(host_pids_of(uid)) <= MAX_PROCESSES
    assert httpx.get(f"{hub.url}/hub/api/", timeout=10).status_code == 200
    assert bob.run("print('bob works')").ok().strip() == "bob works"
    stop(hub, dave, "dave")
    wait_until(lambda: not host_pids_of(uid), timeout=20, what="the bomb's processes to end")


# ---- the drive and the notebook still work --------------------------------------------------


def test_files_on_the_drive_survive_stop_and_start(hub: HubProcess, tokens: dict[str, str]) -> None:
    erin = hub.token("erin")
    tokens = {**tokens, "erin": erin}
    runtime(hub, tokens, "erin").run("open('kept.txt', 'w').write('kept')").ok()
    stop(hub, erin, "erin")
    again = runtime(hub, tokens, "erin")
    assert again.run("print(open('kept.txt').read())").ok().strip() == "kept"
    drive = hub.data_dir / "users" / "erin"
    assert drive.stat().st_mode & 0o777 == 0o700
    assert pwd.getpwuid(drive.stat().st_uid).pw_name.startswith("kh-erin-")


def test_user_config_and_user_site_packages_cannot_change_the_server(
    hub: HubProcess, tokens: dict[str, str]
) -> None:
    frank = hub.token("frank")
    tokens = {**tokens, "frank": frank}
    plant_server_rewrites(runtime(hub, tokens, "frank"))
    stop(hub, frank, "frank")
    assert_server_not_rewritten(runtime(hub, tokens, "frank"))  # the drive keeps both


def test_notebook_terminals_pip_user_and_snippets_work_in_the_sandbox(
    alice: RuntimeClient,
) -> None:
    tree = alice.get("tree")
    assert tree.status_code == 200 and "jupyter-config-data" in tree.text
    assert "hello-from-terminal" in alice.terminal(
        "echo 'hello-from'-terminal; id -un", wait_for="hello-from-terminal"
    )
    snippets = alice.get("kernelhub-snippets/snippets")
    assert snippets.status_code == 200 and snippets.json()
    home = alice.run("import os; print(os.path.expanduser('~'))").ok().strip()
    wheel = tiny_wheel("khdemo", "ANSWER = 42\n")
    alice.run(f"open({home + '/' + wheel[0]!r}, 'wb').write({wheel[1]!r})").ok()
    installed = alice.run(
        "import subprocess, sys\n"
        "r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--user', '--no-index',"
        f" '--no-deps', {home + '/' + wheel[0]!r}], capture_output=True, text=True)\n"
        "print(r.returncode, r.stderr[-400:])\n"
        "r = subprocess.run([sys.executable, '-c', 'import khdemo; print(khdemo.ANSWER)'],"
        " capture_output=True, text=True)\nprint(r.stdout, r.stderr[-400:])"
    ).ok()
    assert installed.startswith("0 "), installed
    assert "42" in installed.splitlines()[-1] or "42" in installed


@pytest.fixture(autouse=True)
def _runtime_logs_on_failure(request: pytest.FixtureRequest, hub: HubProcess) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for name, text in hub.runtime_logs().items():
            print(f"----- {name} -----\n{text[-3000:]}")
