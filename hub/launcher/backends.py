"""Which spawner and authenticator `kernelhub up` uses, and why (logged at start).

Each backend is chosen from what the machine offers. The embedded defaults need
nothing beyond this Python environment; Docker runtimes and Google sign-in
are used when their prerequisites are met, ahead of the defaults.
"""

from __future__ import annotations

from pathlib import Path

from traitlets.config import Config

from kernelhub.launcher.credentials import LocalCredentials
from kernelhub.runtimes.engine import check_engine

LOCAL_ADMIN = "admin"


RUNTIME_BACKENDS = ("auto", "local", "docker")


class BackendUnavailable(Exception):
    """The backend the operator asked for cannot run here; the message says why."""


def choose_spawner(c: Config, file_config: Config, data_dir: Path, runtimes: str = "auto") -> str:
    """Pick the runtime backend: Docker containers when usable, else local processes."""
    if "spawner_class" in file_config.get("JupyterHub", {}):
        return "Runtimes: spawner set by the config file (JupyterHub.spawner_class)"
    if runtimes != "local":
        check = check_engine(_default_runtime_image(file_config))
        if check.usable:
            _use_docker(c, check.bridge_gateway)
            return f"Runtimes: Docker containers ({check.reason})"
        if runtimes == "docker":
            raise BackendUnavailable(f"--runtimes docker: {check.reason}")
        why = check.reason
    else:
        why = "--runtimes local"
    from kernelhub.spawner.local import LocalRuntimeSpawner

    c.JupyterHub.spawner_class = LocalRuntimeSpawner
    c.LocalRuntimeSpawner.users_dir = str(data_dir / "users")
    c.LocalRuntimeSpawner.logs_dir = str(data_dir / "logs")
    return f"Runtimes: local processes ({why}), each user's files in {data_dir / 'users'}"


def _default_runtime_image(file_config: Config) -> list[str]:
    """The image a Docker hub needs before it starts: the default runtime type's.

    Other types whose images are missing are shown disabled, with that reason.
    """
    from kernelhub.runtimes.catalog import RuntimeCatalog

    catalog = RuntimeCatalog(config=file_config)
    image = catalog.get(catalog.default_runtime).image
    return [image] if image else []


def _use_docker(c: Config, bridge_gateway: str) -> None:
    from kernelhub.spawner.docker_runtime import DockerRuntimeSpawner

    c.JupyterHub.spawner_class = DockerRuntimeSpawner
    # containers reach the hub's API on the engine's bridge, not on loopback
    c.JupyterHub.hub_ip = bridge_gateway
    c.JupyterHub.hub_connect_ip = bridge_gateway


def choose_authenticator(
    c: Config, file_config: Config, data_dir: Path, creds: LocalCredentials
) -> str:
    if "authenticator_class" in file_config.get("JupyterHub", {}):
        return "Sign-in: authenticator set by the config file (JupyterHub.authenticator_class)"
    # oauthenticator (through jsonschema) costs seconds to import: only `up` pays it
    from kernelhub.signin.google import GoogleSignInError, check_google_settings, google_settings

    google = google_settings(file_config)
    if google:
        try:
            note = check_google_settings(google, file_config)
        except GoogleSignInError as e:
            raise BackendUnavailable(str(e)) from None
        c.JupyterHub.authenticator_class = "kernelhub-google"
        # oauthenticator reads the client id and secret from the config or its own
        # environment variables; copying them here would put the secret in more places
        return note
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
