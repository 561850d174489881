"""Which spawner and authenticator `kernelhub up` uses, and why (logged at start).

Each backend is chosen from what the machine offers. The embedded defaults need
nothing beyond this Python environment; later backends (Docker runtimes, Google
sign-in) slot in here, ahead of the defaults, when their prerequisites are met.
"""

from __future__ import annotations

from pathlib import Path

from kernelhub.credentials import LocalCredentials
from traitlets.config import Config

LOCAL_ADMIN = "admin"


def choose_spawner(c: Config, file_config: Config, data_dir: Path) -> str:
    if "spawner_class" in file_config.get("JupyterHub", {}):
        return "Runtimes: spawner set by the config file (JupyterHub.spawner_class)"
    from kernelhub.spawner import LocalRuntimeSpawner

    c.JupyterHub.spawner_class = LocalRuntimeSpawner
    c.LocalRuntimeSpawner.users_dir = str(data_dir / "users")
    c.LocalRuntimeSpawner.logs_dir = str(data_dir / "logs")
    return (
        "Runtimes: local processes (embedded default; no Docker runtime backend is "
        f"configured), each user's files in {data_dir / 'users'}"
    )


def choose_authenticator(
    c: Config, file_config: Config, data_dir: Path, creds: LocalCredentials
) -> str:
    if "authenticator_class" in file_config.get("JupyterHub", {}):
        return "Sign-in: authenticator set by the config file (JupyterHub.authenticator_class)"
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = creds.user_password
    c.SharedPasswordAuthenticator.admin_password = creds.admin_password
    c.Authenticator.allow_all = True
    if "admin_users" not in file_config.get("Authenticator", {}):
        c.Authenticator.admin_users = {LOCAL_ADMIN}
    return (
        "Sign-in: local shared password (embedded default; no Google OAuth client is "
        f"configured); passwords in {data_dir / 'local-credentials.json'}"
    )
