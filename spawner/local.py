"""Runtimes as local processes: the embedded default that needs no Docker engine.

One ``jupyterhub-singleuser`` (Notebook 7) per runtime, running as the hub's own
OS user, in the user's own directory under the data directory. The directory is
the user's "drive": every runtime of that user (CPU or GPU, default or named)
sees the same files, and stopping a runtime never touches them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from jupyterhub.slugs import safe_slug
from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Unicode, default, validate

from kernelhub.runtimes.types import RuntimeType

from .runtime import RuntimeSpawnerMixin


class LocalRuntimeSpawner(RuntimeSpawnerMixin, LocalProcessSpawner):
    """Spawn each runtime as a local ``jupyterhub-singleuser`` process."""

    users_dir = Unicode(
        help="""Directory holding one sub-directory (the user's drive) per user.
        kernelhub up sets it to DATA_DIR/users.""",
    ).tag(config=True)

    logs_dir = Unicode(
        help="Directory for one log file per runtime. Default: USERS_DIR/../logs.",
    ).tag(config=True)

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
        # the hub's own interpreter, so an unactivated virtualenv still works
        return [sys.executable, "-m", "jupyterhub.singleuser"]

    @property
    def home_dir(self) -> Path:
        return Path(self.users_dir) / safe_slug(self.user.name)

    @default("notebook_dir")
    def _drive_is_notebook_dir(self) -> str:
        return str(self.home_dir)

    def make_preexec_fn(self, name: str) -> None:  # type: ignore[override]
        # same OS user as the hub: nothing to switch (and no fork-time Python code)
        return None

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        env["USER"] = self.user.name
        env["HOME"] = str(self.home_dir)
        env["SHELL"] = "/bin/bash"
        env.update(self.runtime_env())
        return env

    def get_args(self) -> list[str]:
        args: list[str] = super().get_args()
        if os.geteuid() == 0:
            # the runtime runs as the hub's OS user; Jupyter refuses root unless told
            args.append("--ServerApp.allow_root=True")
        return args

    async def move_certs(self, paths: dict[str, str]) -> dict[str, str]:
        return paths

    async def apply_runtime_type(self, runtime_type: RuntimeType) -> None:
        # a local process has no enforced limits; advertise them to the server
        # the way JupyterHub does for every spawner (MEM_LIMIT / CPU_LIMIT env)
        if runtime_type.cpu_limit:
            self.cpu_limit = runtime_type.cpu_limit
        if runtime_type.mem_limit:
            self.mem_limit = runtime_type.mem_limit

    async def start(self) -> Any:
        self.report_progress(20, "Attaching your drive")
        self.home_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        logs = Path(self.logs_dir)
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        log_path = (
            logs / f"runtime-{safe_slug(self.user.name)}-{safe_slug(self.name or 'default')}.log"
        )
        # the child keeps its own copies of these descriptors
        log_file = open(log_path, "ab")  # noqa: SIM115
        no_input = open(os.devnull)  # noqa: SIM115
        try:
            inherited: dict[str, Any] = dict(self.popen_kwargs)  # type: ignore[has-type]
            self.popen_kwargs = {
                **inherited,
                "cwd": str(self.home_dir),
                "stdout": log_file,
                "stderr": log_file,
                "stdin": no_input,
            }
            self.report_progress(40, "Starting Notebook 7")
            address = await super().start()
            self.report_progress(60, f"Runtime process {self.pid} started; waiting for it")
            return address
        finally:
            log_file.close()
            no_input.close()
