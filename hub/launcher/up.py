"""`kernelhub up`: turn flags, environment and the config file into a running hub."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from traitlets import TraitError
from traitlets.config import Config, PyFileConfigLoader

from kernelhub.contract import QUOTA_CONTACT_ENV, QUOTA_DB_ENV, QUOTA_SERVICE
from kernelhub.launcher.backends import (
    BackendUnavailable,
    SignInChoice,
    choose_authenticator,
    choose_spawner,
)
from kernelhub.launcher.credentials import CredentialsError, LocalAccount, operator_token
from kernelhub.launcher.state import saved_ports, write_hub_state
from kernelhub.secrets_files import SecretFileError, secret_from_env

CONFIG_FILE_NAME = "kernelhub_config.py"
OPERATOR_SERVICE = "kernelhub-operator"
OPERATOR_SCOPES = ["admin:users", "tokens", "list:users", "read:users", "admin:servers"]


class StartupError(Exception):
    """A problem `kernelhub up` reports in one line, without a traceback."""


@dataclass
class UpOptions:
    data_dir: Path
    ip: str = "127.0.0.1"
    port: int = 8000
    config_file: Path | None = None
    db_url: str | None = None
    log_level: str = "INFO"
    runtimes: str = "auto"
    single_user: str | None = None  # one user, local runtimes without a sandbox
    # flags given on the command line or in the environment (they beat the file)
    explicit: set[str] = field(default_factory=set)


def load_config_file(path: Path) -> Config:
    """Load a traitlets Python config file; any problem becomes one StartupError line."""
    if not path.exists():
        raise StartupError(f"config file {path} does not exist")
    try:
        path.read_bytes()
    except OSError as e:
        raise StartupError(f"cannot read config file {path}: {e.strerror}") from None
    loader = PyFileConfigLoader(path.name, str(path.parent))
    try:
        return loader.load_config()
    except SyntaxError as e:
        raise StartupError(f"config file {path}, line {e.lineno}: {e.msg}") from None
    except Exception as e:  # the file is user code: anything may go wrong in it
        cause = e.__cause__ or e
        raise StartupError(f"config file {path} failed: {type(cause).__name__}: {cause}") from None


def prepare_data_dir(data_dir: Path) -> Path:
    data_dir = data_dir.expanduser().resolve()
    # whatever the hub, proxy and daemon create in it (databases, logs, pid files) is
    # theirs alone; runtimes make their own files in their own processes
    os.umask(0o077)
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = data_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise StartupError(f"data directory {data_dir} is not writable: {e.strerror}") from None
    return data_dir


def find_proxy_command(configured: Any = None) -> list[str]:
    if configured:
        return list(configured)
    candidates = [
        shutil.which("configurable-http-proxy"),
        str(Path(sys.prefix) / "bin" / "configurable-http-proxy"),
        str(Path(sys.prefix) / "node_modules" / ".bin" / "configurable-http-proxy"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return [candidate]
    raise StartupError(
        "configurable-http-proxy not found: run the README's setup command "
        "(it installs it with npm into the virtualenv)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def internal_ports(data_dir: Path) -> dict[str, int]:
    """Hub and proxy-API ports: chosen once, then kept, so runtimes that outlive a
    hub restart still find the hub's API where they were told it is."""
    ports = saved_ports(data_dir)
    if not {"hub", "proxy_api"} <= set(ports):
        ports = {"hub": free_port(), "proxy_api": free_port()}
    return {"hub": ports["hub"], "proxy_api": ports["proxy_api"]}


def check_port_free(ip: str, port: int, data_dir: Path) -> None:
    if _stale_proxy_running(data_dir):
        return  # our previous proxy holds it; JupyterHub replaces it on start
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip or "0.0.0.0", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} on {ip} is already in use; stop what uses it or pick "
                    "another with --port"
                ) from None
            raise StartupError(f"cannot listen on {ip}:{port}: {e.strerror}") from None


def _stale_proxy_running(data_dir: Path) -> bool:
    try:
        pid = int((data_dir / "proxy.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def check_db_url(db_url: str) -> None:
    """Fail early, in one line, on a database URL SQLAlchemy cannot use."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(db_url)
        url.get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError):
        raise StartupError(
            f"unsupported database URL {_without_password(db_url)!r}: "
            "use sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from None
    except ImportError as e:
        raise StartupError(
            f"the {url.get_backend_name()} database driver is not installed ({e.name}): "
            "pip install 'kernelhub[postgres]'"
        ) from None


def _without_password(db_url: str) -> str:
    parsed = urlparse(db_url)
    if parsed.password:
        return db_url.replace(f":{parsed.password}@", ":***@")
    return db_url


def build_config(options: UpOptions) -> tuple[Config, list[str], LocalAccount | None]:
    """The hub's whole configuration; also start-up notes and, with local sign-in, the
    first account (whose password `kernelhub up` shows once, on a terminal)."""
    data_dir = prepare_data_dir(options.data_dir)
    config_path = options.config_file
    if config_path is None and (data_dir / CONFIG_FILE_NAME).exists():
        config_path = data_dir / CONFIG_FILE_NAME
    file_config = load_config_file(config_path.resolve()) if config_path else Config()

    c = Config()
    default_config = data_dir / CONFIG_FILE_NAME
    single_user = options.single_user  # `kernelhub up --single-user NAME`
    runtimes_note = _choose_spawner(c, file_config, data_dir, options.runtimes, single_user)
    sign_in = _choose_authenticator(c, file_config, data_dir, single_user)
    notes = [
        f"kernelhub data directory: {data_dir}",
        f"Config file: {config_path or f'none ({default_config} is read when present)'}",
        runtimes_note,
        sign_in.note,
    ]
    ports = internal_ports(data_dir)
    c.JupyterHub.bind_url = f"http://{_url_host(options.ip)}:{options.port}/"
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = ports["hub"]
    c.JupyterHub.db_url = options.db_url or f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(data_dir / "hub.pid")
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.template_paths = [str(files("kernelhub.hubapp").joinpath("templates"))]
    c.JupyterHub.log_level = options.log_level
    # answer spawn requests at once (202) and let clients follow progress events
    c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{ports['proxy_api']}"
    c.ConfigurableHTTPProxy.pid_file = str(data_dir / "proxy.pid")
    c.Spawner.default_url = "/tree"  # Notebook 7
    # a runtime's own token may read its user's quota notices, to show them in the notebook
    c.Spawner.server_token_scopes = RUNTIME_TOKEN_SCOPES

    c.merge(file_config)
    if config_path:  # it may hold secrets: no local runtime sees it, wherever it lives
        hidden = list(c.LocalRuntimeSpawner.get("hidden_paths", []))
        c.LocalRuntimeSpawner.hidden_paths = [*hidden, str(config_path.resolve())]
    if "ip" in options.explicit or "port" in options.explicit:
        c.JupyterHub.bind_url = f"http://{_url_host(options.ip)}:{options.port}/"
    if options.db_url:
        c.JupyterHub.db_url = options.db_url
    c.ConfigurableHTTPProxy.command = find_proxy_command(
        file_config.get("ConfigurableHTTPProxy", {}).get("command")
    )
    _add_operator_service(c, operator_token(data_dir))
    ports["quotas"] = _add_quota_service(c, data_dir)  # kernelhub-quotad
    c.KernelHubApp.startup_notes = notes

    check_db_url(c.JupyterHub.db_url)
    bind = urlparse(c.JupyterHub.bind_url)
    check_port_free(bind.hostname or "", bind.port or 80, data_dir)
    write_hub_state(data_dir, c.JupyterHub.bind_url, ports)
    return c, notes, sign_in.account


def _choose_spawner(
    c: Config, file_config: Config, data_dir: Path, runtimes: str, single_user: str | None
) -> str:
    try:
        return choose_spawner(c, file_config, data_dir, runtimes, single_user)
    except BackendUnavailable as e:
        raise StartupError(str(e)) from None
    except TraitError as e:
        raise StartupError(f"invalid configuration: {e}") from None


def _choose_authenticator(
    c: Config, file_config: Config, data_dir: Path, single_user: str | None
) -> SignInChoice:
    try:
        return choose_authenticator(c, file_config, data_dir, single_user)
    except (BackendUnavailable, CredentialsError) as e:
        raise StartupError(str(e)) from None


# a runtime's own token (JUPYTERHUB_API_TOKEN, which its user's code can read): its
# activity and kernel reports, its user's quota notices, and its user's own servers
# (the notebook's Runtime menu: change type, list, stop), nothing of anyone else's
RUNTIME_TOKEN_SCOPES = [
    "users:activity!user",
    "access:servers!server",
    "read:users:activity!user",
    "servers!user",
]


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _add_operator_service(c: Config, token: str) -> None:
    services = list(c.JupyterHub.get("services", []))
    services.append({"name": OPERATOR_SERVICE, "api_token": token})
    c.JupyterHub.services = services
    roles = list(c.JupyterHub.get("load_roles", []))
    roles.append(
        {"name": OPERATOR_SERVICE, "scopes": OPERATOR_SCOPES, "services": [OPERATOR_SERVICE]}
    )
    c.JupyterHub.load_roles = roles


QUOTA_DB_FILE = "quotas.sqlite"
MIN_SERVICE_TOKEN = 32  # characters of a shared secret: `openssl rand -hex 16` or longer
# only what the service does: list users, read them (groups decide rules, activity
# decides idleness, the runtimes' kernel reports need read:users:activity on everyone;
# the quota API looks users up), read and stop servers, read their state (a local
# runtime's root process, by which its processes are attributed: the hub's user model
# shows state only to admin:server_state). Never access:servers: its token goes to no
# user's server, where the user could capture it
QUOTA_SCOPES = [
    "list:users",
    "read:users",
    "read:servers",
    "admin:server_state",
    "delete:servers",
]


def _add_quota_service(c: Config, data_dir: Path) -> int:
    """Register the quota daemon as a managed service; its port, kept across restarts.

    On by default; KERNELHUB_QUOTAS=0 (or c.JupyterHub.services naming it already)
    leaves it out. KERNELHUB_QUOTA_ARGS adds daemon options (e.g. "--interval 1").
    KERNELHUB_QUOTAD_URL (with KERNELHUB_QUOTAD_TOKEN) registers a daemon that runs
    elsewhere instead, as the compose deployment's `quotad` service, which sees the
    host's GPUs and processes.
    """
    port = saved_ports(data_dir).get("quotas") or free_port()
    services = list(c.JupyterHub.get("services", []))
    if os.environ.get("KERNELHUB_QUOTAS", "1") == "0" or any(
        s.get("name") == QUOTA_SERVICE for s in services
    ):
        return port
    db_url = os.environ.get(QUOTA_DB_ENV) or f"sqlite:///{data_dir / QUOTA_DB_FILE}"
    if "db_url" not in c.QuotaGate:
        c.QuotaGate.db_url = db_url  # spawns are checked against the daemon's store
    roles = list(c.JupyterHub.get("load_roles", []))
    roles.append({"name": QUOTA_SERVICE, "scopes": QUOTA_SCOPES, "services": [QUOTA_SERVICE]})
    c.JupyterHub.load_roles = roles
    external = os.environ.get("KERNELHUB_QUOTAD_URL")
    if external:
        try:  # KERNELHUB_QUOTAD_TOKEN_FILE (compose's Docker secret), else the variable
            token = secret_from_env("KERNELHUB_QUOTAD_TOKEN") or ""
        except SecretFileError as e:
            raise StartupError(str(e)) from None
        if len(token) < MIN_SERVICE_TOKEN:
            raise StartupError(
                f"KERNELHUB_QUOTAD_URL is set: KERNELHUB_QUOTAD_TOKEN must be the quota "
                f"daemon's API token, at least {MIN_SERVICE_TOKEN} characters"
            )
        service = {"name": QUOTA_SERVICE, "url": external, "api_token": token, "display": False}
        c.JupyterHub.services = [*services, service]
        return port
    # the URL may hold a database password: the environment, never the logged command
    command = [sys.executable, "-m", "kernelhub.quotas.service"]
    command += os.environ.get("KERNELHUB_QUOTA_ARGS", "").split()
    environment = {"PYTHONUNBUFFERED": "1", QUOTA_DB_ENV: db_url}
    if os.environ.get(QUOTA_CONTACT_ENV):  # the hub's spawn refusal reads it too
        environment[QUOTA_CONTACT_ENV] = os.environ[QUOTA_CONTACT_ENV]
    services.append(
        {
            "name": QUOTA_SERVICE,
            "command": command,
            "url": f"http://127.0.0.1:{port}",
            "display": False,
            "environment": environment,
        }
    )
    c.JupyterHub.services = services
    return port


def run_hub(config: Config) -> None:
    from kernelhub.hubapp.app import KernelHubApp

    app = KernelHubApp.instance(config=config)
    app.launch_instance([])
