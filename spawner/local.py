"""Runtimes as local processes: the embedded default that needs no Docker engine.

One ``jupyterhub-singleuser`` (Notebook 7) per runtime, each in a bubblewrap sandbox
(``sandbox.py``) that shows it its own drive and nothing else of the host's data.
When the hub runs as root, each hub user's runtimes run as that user's own Unix
account (``accounts.py``) and the drive belongs to it (mode 0700); memory, CPU and
process limits come from cgroups (``cgroups.py``) where they are writable, from
rlimits otherwise. Every process a runtime starts lives in the sandbox's PID
namespace, so all of them end when the runtime stops.

The drive is the user's directory under ``users_dir``: every runtime of that user
(CPU or GPU, default or named) sees the same files, and stopping a runtime never
touches them. ``sandbox = "none"`` (``kernelhub up --single-user NAME``) runs without a
sandbox for exactly one user: a laptop's old behaviour, asked for by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

from jupyterhub.slugs import safe_slug
from jupyterhub.spawner import LocalProcessSpawner
from jupyterhub.utils import random_port
from traitlets import Bool, Enum, Integer, List, Unicode, default, validate

from kernelhub.contract import runtime_key
from kernelhub.executor import run_blocking
from kernelhub.hubapp.errors import http_refusal
from kernelhub.runtimes.types import RuntimeType

from . import processes
from .accounts import Account, AccountError, Accounts
from .cgroups import CgroupTree, Limits, RuntimeCgroup, hub_cgroups
from .runtime import RuntimeSpawnerMixin
from .sandbox import SandboxSpec, bwrap_command, gpu_device_nodes, python_paths

SERVER_STOP_GRACE = 5.0  # seconds the server gets to shut down before its sandbox is killed


class LocalRuntimeSpawner(RuntimeSpawnerMixin, LocalProcessSpawner):
    """Spawn each runtime as a sandboxed local ``jupyterhub-singleuser`` process."""

    users_dir = Unicode(
        help="""Directory holding one sub-directory (the user's drive) per user.
        kernelhub up sets it to DATA_DIR/users.""",
    ).tag(config=True)

    logs_dir = Unicode(
        help="Directory for one log file per runtime. Default: USERS_DIR/../logs.",
    ).tag(config=True)

    sandbox = Enum(
        ["bubblewrap", "none"],
        "bubblewrap",
        help="""How each runtime is confined. "bubblewrap": its own mount, PID, IPC and
        UTS namespaces, seeing only its drive, the system and the Python environment.
        "none" runs runtimes unconfined and admits only `single_user`
        (kernelhub up --single-user NAME).""",
    ).tag(config=True)

    single_user = Unicode(
        "",
        help="""With sandbox = "none": the one hub user whose runtimes may start; every
        other user is refused, since unconfined runtimes could read each other's files.""",
    ).tag(config=True)

    account_prefix = Unicode(
        "kh-",
        help="""Prefix of the Unix accounts made for hub users when the hub runs as root
        (kh-alice-<hash>).""",
    ).tag(config=True)

    max_processes = Integer(
        1024,
        help="Most processes (and threads) one runtime may have at once; 0 for no limit.",
    ).tag(config=True)

    use_cgroups = Bool(
        True,
        help="""Enforce memory, CPU and process limits with cgroups where the hub can
        write them (as root); otherwise (or when False) rlimits are used.""",
    ).tag(config=True)

    gpu_device_dir = Unicode(
        "/dev",
        help="Where the NVIDIA device nodes are (nvidia0, nvidiactl, ...).",
    ).tag(config=True)

    extra_readonly_paths = List(
        Unicode(),
        help="Host directories every sandbox sees read-only, besides /usr, /etc and Python's.",
    ).tag(config=True)

    hidden_paths = List(
        Unicode(),
        help="""Host files and directories no sandbox may see even where a read-only
        directory holds them (the data directory always; kernelhub up adds the config
        file): directories are covered by an empty tmpfs, files by /dev/null.""",
    ).tag(config=True)

    # spawner state of a running runtime (restored after a hub restart)
    pid_start = Integer(0, help="Start time of the runtime's outermost process (state).")
    sandbox_init_pid = Integer(0, help="PID of the sandbox's init process (state).")
    oom_kills_seen = Integer(0, help="Memory-limit kills already reported (state).")

    @default("users_dir")
    def _default_users_dir(self) -> str:
        return str(Path.cwd() / "kernelhub-data" / "users")

    @validate("users_dir")
    def _absolute_users_dir(self, proposal: Any) -> str:
        return str(Path(proposal.value).expanduser().resolve())

    @default("logs_dir")
    def _default_logs_dir(self) -> str:
        return str(Path(self.users_dir).parent / "logs")

    @default("cmd")
    def _same_python_singleuser(self) -> list[str]:
        # the hub's own interpreter, so an unactivated virtualenv still works; -s: the
        # server never imports from the user's site-packages (their `pip install --user`
        # is for their kernels), so nothing on the drive can rewrite the server
        return [sys.executable, "-s", "-m", "jupyterhub.singleuser"]

    @property
    def home_dir(self) -> Path:
        return Path(self.users_dir) / safe_slug(self.user.name)

    @default("notebook_dir")
    def _drive_is_notebook_dir(self) -> str:
        return str(self.home_dir)

    @property
    def hub_id(self) -> str:
        """Tells apart the runtimes of several hubs on one host (their cgroups)."""
        return hashlib.sha256(self.users_dir.encode()).hexdigest()[:12]

    @property
    def runtime_slug(self) -> str:
        return f"{safe_slug(self.user.name)}--{safe_slug(self.name or 'default')}"

    def make_preexec_fn(self, name: str) -> None:  # type: ignore[override]
        # nothing to do at fork time: the account switch happens in the sandbox (setpriv)
        return None

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        env["USER"] = self.user.name
        env["HOME"] = str(self.home_dir)
        env["SHELL"] = "/bin/bash"
        env.update(self.runtime_env())
        return env

    async def move_certs(self, paths: dict[str, str]) -> dict[str, str]:
        return paths

    async def apply_runtime_type(self, runtime_type: RuntimeType) -> None:
        # enforced by the sandbox's cgroup (or rlimits), and advertised to the server
        # the way JupyterHub does for every spawner (MEM_LIMIT / CPU_LIMIT env)
        # (None where the type sets none: no limit left over from a previous type)
        self.cpu_limit = runtime_type.cpu_limit
        self.mem_limit = runtime_type.mem_limit  # type: ignore[assignment]

    # ---- state ----------------------------------------------------------------------------

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.pid_start = int(state.get("pid_start") or 0)
        self.sandbox_init_pid = int(state.get("sandbox_init_pid") or 0)
        self.oom_kills_seen = int(state.get("oom_kills_seen") or 0)

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.pid and self.pid_start:
            state["pid_start"] = self.pid_start
        if self.sandbox_init_pid:
            state["sandbox_init_pid"] = self.sandbox_init_pid
        if self.oom_kills_seen:
            state["oom_kills_seen"] = self.oom_kills_seen
        return state

    def clear_state(self) -> None:
        super().clear_state()
        self.pid_start = 0
        self.sandbox_init_pid = 0
        self.oom_kills_seen = 0

    # ---- start ----------------------------------------------------------------------------

    async def start(self) -> Any:
        if self.sandbox == "none" and self.user.name != self.single_user:
            raise http_refusal(
                "this hub runs runtimes without a sandbox for a single user only", 403
            )
        self.report_progress(20, "Attaching your drive")
        account = await self._account()
        await run_blocking(self._prepare_drive, account)
        cgroup = await run_blocking(self._prepare_cgroup)
        spec = SandboxSpec(
            drive=self.home_dir,
            readonly=(*python_paths(), *(Path(p) for p in self.extra_readonly_paths)),
            hidden=(Path(self.users_dir).parent, *(Path(p) for p in self.hidden_paths)),
            devices=gpu_device_nodes(list(self.gpu_ids), Path(self.gpu_device_dir)),
            account=account,
            rlimits={} if cgroup is not None else self._limits().rlimits(os.geteuid() == 0),
            venv_config=await run_blocking(self._venv_config),
        )
        prefix = cgroup.join_command() if cgroup is not None else []
        if self.sandbox == "none":
            if account is not None:
                prefix += processes.setpriv_prefix(account)
            return await self._start_process(prefix, None)
        info_read, info_write = os.pipe()
        info = asyncio.ensure_future(run_blocking(processes.read_sandbox_info, info_read))
        prefix += bwrap_command(spec, [], info_fd=info_write)
        try:
            return await self._start_process(prefix, info_write)
        finally:
            os.close(info_write)
            # known even when the start fails, so that stop() can end the sandbox
            self.sandbox_init_pid = await info

    async def _start_process(self, prefix: list[str], info_fd: int | None) -> Any:
        logs = Path(self.logs_dir)
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        log_path = logs / f"runtime-{self.runtime_slug}.log"
        # the child keeps its own copies of these descriptors
        log_file = open(log_path, "ab")  # noqa: SIM115
        no_input = open(os.devnull)  # noqa: SIM115
        if self.port == 0:  # type: ignore[has-type]
            self.port = random_port()
        command = list(self.cmd)  # type: ignore[has-type]
        self.cmd = [*prefix, *command]  # LocalProcessSpawner.start runs cmd + get_args()
        inherited: dict[str, Any] = dict(self.popen_kwargs)  # type: ignore[has-type]
        try:
            self.popen_kwargs = {
                **inherited,
                "cwd": str(self.home_dir),
                "stdout": log_file,
                "stderr": log_file,
                "stdin": no_input,
                "pass_fds": () if info_fd is None else (info_fd,),
            }
            self.report_progress(40, "Starting Notebook 7")
            address = await super().start()
            self.report_progress(60, f"Runtime process {self.pid} is up")
            return address
        finally:
            self.cmd = command
            self.popen_kwargs = inherited
            self.pid_start = processes.start_time(self.pid) if self.pid else 0
            log_file.close()
            no_input.close()

    async def _account(self) -> Account | None:
        if os.geteuid() != 0:
            return None  # an unprivileged hub: the runtime keeps its UID, in a user namespace
        try:
            return await self.accounts().ensure(self.user.name)
        except AccountError as e:
            self.log.error("Runtime %s: %s", self._log_name, e)
            raise http_refusal(f"cannot prepare your runtime's account: {e}", 500) from None

    _accounts: Accounts | None = None

    def accounts(self) -> Accounts:
        # one per class: account creation is serialised across all spawners
        if LocalRuntimeSpawner._accounts is None:
            LocalRuntimeSpawner._accounts = Accounts(self.account_prefix)
        return LocalRuntimeSpawner._accounts

    def _prepare_drive(self, account: Account | None) -> None:
        self.home_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if account is not None and self.home_dir.stat().st_uid != account.uid:
            # first start under the account (or a drive from before accounts): hand it over
            processes.chown_tree(self.home_dir, account.uid, account.gid)
        self.home_dir.chmod(0o700)

    def _prepare_cgroup(self) -> RuntimeCgroup | None:
        tree = self.cgroup_tree()
        if tree is None:
            return None
        cgroup = tree.runtime(self.runtime_slug)
        cgroup.kill_all()  # leftovers of a runtime of the same name that died with the hub
        cgroup.remove()
        cgroup.create(self._limits())
        self.oom_kills_seen = cgroup.oom_kills()
        return cgroup

    _oom_lock: ClassVar[threading.Lock] = threading.Lock()

    def cgroup_tree(self) -> CgroupTree | None:
        """This hub's cgroup parent, or None where cgroups are not used or usable."""
        if not (self.use_cgroups and os.geteuid() == 0 and self.sandbox == "bubblewrap"):
            return None
        return hub_cgroups(self.hub_id, self.log)

    def _cgroup(self) -> RuntimeCgroup | None:
        tree = self.cgroup_tree()
        return tree.runtime(self.runtime_slug) if tree is not None else None

    def _limits(self) -> Limits:
        return Limits(
            memory_bytes=int(self.mem_limit) if self.mem_limit else None,
            cpu_cores=float(self.cpu_limit) if self.cpu_limit else None,
            max_processes=self.max_processes or None,
        )

    def _venv_config(self) -> Path | None:
        return processes.user_site_venv_config(Path(self.logs_dir).parent / "sandbox")

    @property
    def _log_name(self) -> str:
        return runtime_key(self.user.name, self.name)

    # ---- poll and stop ----------------------------------------------------------------------

    async def poll(self) -> int | None:
        status = await super().poll()
        await run_blocking(self._report_oom_kills)
        if status is not None and (self.sandbox_init_pid or self._cgroup() is not None):
            await run_blocking(self._end_sandbox)
        return status

    def _report_oom_kills(self) -> None:
        cgroup = self._cgroup()
        if cgroup is None:
            return
        with self._oom_lock:  # poll and stop may both look at once
            self._report_new_oom_kills(cgroup)

    def _report_new_oom_kills(self, cgroup: RuntimeCgroup) -> None:
        kills = cgroup.oom_kills()
        if kills > self.oom_kills_seen:
            self.log.warning(
                "Runtime %s reached its memory limit (%s bytes): the kernel killed %d of "
                "its processes",
                self._log_name,
                self.mem_limit,
                kills - self.oom_kills_seen,
            )
            self.oom_kills_seen = kills

    async def stop(self, now: bool = False) -> None:
        if self.sandbox == "none":
            await super().stop(now=now)
            return
        try:
            if self.sandbox_init_pid and not now:
                await self._stop_server_gracefully()
            await run_blocking(self._end_sandbox)
            await super().stop(now=True)
        finally:
            await run_blocking(self._report_oom_kills)
            cgroup = self._cgroup()
            if cgroup is not None:
                await run_blocking(cgroup.remove)

    async def _stop_server_gracefully(self) -> None:
        """SIGTERM the server inside the sandbox and give it a moment: bubblewrap does
        not pass signals on, and killing the sandbox first would cut the server off."""
        for pid in processes.children(self.sandbox_init_pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        await self.wait_for_death(SERVER_STOP_GRACE)

    def _end_sandbox(self) -> None:
        """Kill the sandbox's init (the kernel then kills every process in its PID
        namespace: setsid'd, nohup'd and double-forked ones too) and empty its cgroup."""
        init = self.sandbox_init_pid
        if init and processes.alive(init):
            with contextlib.suppress(OSError):
                os.kill(init, signal.SIGKILL)
        cgroup = self._cgroup()
        if cgroup is not None:
            left = cgroup.kill_all()
            if left:
                self.log.info("Runtime %s: killed %d leftover processes", self._log_name, left)
        self.sandbox_init_pid = 0
