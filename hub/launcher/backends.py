"""Which spawner and authenticator `kernelhub up` uses, and why (logged at start).

Each backend is chosen from what the machine offers. The embedded defaults need
nothing beyond this Python environment; Docker runtimes and Google sign-in
are used when their prerequisites are met, ahead of the defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from traitlets.config import Config

from kernelhub.launcher.credentials import CREDENTIALS_FILE, LocalAccount, first_account
from kernelhub.runtimes.engine import check_engine
from kernelhub.signin.names import normalize_user_name

LOCAL_ADMIN = "admin"


RUNTIME_BACKENDS = ("auto", "local", "docker", "swarm")


class BackendUnavailable(Exception):
    """The backend the operator asked for cannot run here; the message says why."""


def choose_spawner(
    c: Config,
    file_config: Config,
    data_dir: Path,
    runtimes: str = "auto",
    single_user: str | None = None,
) -> str:
    """Pick the runtime backend: Docker containers when usable, else sandboxed local
    processes; never a weaker isolation than asked for (see ``_use_local``)."""
    if "spawner_class" in file_config.get("JupyterHub", {}):
        return "Runtimes: spawner set by the config file (JupyterHub.spawner_class)"
    if runtimes != "local" and not single_user:
        check = check_engine(
            _default_runtime_image(file_config), look_for_swarm=runtimes in ("auto", "swarm")
        )
        if check.usable and check.swarm_address and runtimes in ("auto", "swarm"):
            _use_swarm(c, check.swarm_address)
            return f"Runtimes: Docker Swarm services ({check.reason}){_swarm_drives(file_config)}"
        if runtimes == "swarm":
            why = check.reason if not check.usable else "the Docker engine manages no swarm"
            raise BackendUnavailable(f"--runtimes swarm: {why} (`docker swarm init` makes one)")
        if check.usable:
            _use_docker(c, check.bridge_gateway)
            return f"Runtimes: Docker containers ({check.reason})"
        if runtimes == "docker":
            raise BackendUnavailable(f"--runtimes docker: {check.reason}")
        why = check.reason
    else:
        why = f"--single-user {single_user}" if single_user else "--runtimes local"
    if single_user and runtimes in ("docker", "swarm"):
        raise BackendUnavailable(f"--single-user runs local runtimes; drop --runtimes {runtimes}")
    return _use_local(c, file_config, data_dir, why, single_user)


def _use_local(
    c: Config, file_config: Config, data_dir: Path, why: str, single_user: str | None
) -> str:
    """Local runtimes, each in a bubblewrap sandbox; where one cannot be made, refuse
    (fail closed) unless the operator asked for one unsandboxed user by name."""
    from kernelhub.spawner.isolation import describe_isolation, sandbox_unavailable
    from kernelhub.spawner.local import LocalRuntimeSpawner

    c.JupyterHub.spawner_class = LocalRuntimeSpawner
    c.LocalRuntimeSpawner.users_dir = str(data_dir / "users")
    c.LocalRuntimeSpawner.logs_dir = str(data_dir / "logs")
    drives = f"each user's files in {data_dir / 'users'}"
    if single_user:
        if os.geteuid() == 0:
            raise BackendUnavailable(
                "--single-user runs runtimes without a sandbox as the hub's own user, never "
                "as root: start kernelhub up as an unprivileged user (as root, local "
                "runtimes are sandboxed, one Unix account per user)"
            )
        c.LocalRuntimeSpawner.sandbox = "none"
        # the name as the hub will know it (the authenticator lower-cases it too)
        c.LocalRuntimeSpawner.single_user = normalize_user_name(single_user)
        return (
            f"Runtimes: local processes ({why}), NOT sandboxed: single-user mode, only "
            f"{single_user!r} may start runtimes; {drives}"
        )
    problem = sandbox_unavailable()
    if problem:
        raise BackendUnavailable(
            f"local runtimes need a sandbox: {problem}; or start one unsandboxed user "
            "with --single-user NAME"
        )
    spawner = LocalRuntimeSpawner(config=_merged(c, file_config))
    return f"Runtimes: local processes ({why}), {describe_isolation(spawner)}; {drives}"


def _merged(c: Config, file_config: Config) -> Config:
    merged = Config()
    merged.merge(c)
    merged.merge(file_config)
    return merged


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


def _use_swarm(c: Config, manager_address: str) -> None:
    from kernelhub.spawner.swarm_runtime import SwarmRuntimeSpawner

    c.JupyterHub.spawner_class = SwarmRuntimeSpawner
    # runtimes on any node reach the hub's API at the manager's swarm address
    c.JupyterHub.hub_ip = manager_address
    c.JupyterHub.hub_connect_ip = manager_address


def _swarm_drives(file_config: Config) -> str:
    """Where the swarm's drives live, said at start-up; a shared drive root that is not
    a folder here is refused now, not at each user's first spawn."""
    from kernelhub.runtimes.shared_drives import check_drive_root

    spawner = file_config.get("SwarmRuntimeSpawner", {})
    root = str(spawner.get("drive_root", "") or "")
    if root:
        try:
            root = check_drive_root(root)
        except ValueError as e:
            raise BackendUnavailable(f"SwarmRuntimeSpawner.{e}") from None
        if not Path(root).is_dir():
            raise BackendUnavailable(
                f"SwarmRuntimeSpawner.drive_root {root} is not a folder on this hub: mount "
                "the cluster's shared filesystem there (README: Scaling out)"
            )
        return f"; drives: folders of {root}, shared by every node"
    if spawner.get("drive_driver_options"):
        return "; drives: volumes with the configured driver options"
    node = str(spawner.get("drive_node", "") or "") or "the manager"
    return f"; drives: node-local, every runtime on {node}"


@dataclass(frozen=True)
class SignInChoice:
    """The authenticator's start-up note, and local sign-in's first account (else None)."""

    note: str
    account: LocalAccount | None = None


def choose_authenticator(
    c: Config, file_config: Config, data_dir: Path, single_user: str | None = None
) -> SignInChoice:
    """Google sign-in when a Google OAuth client is configured, else local passwords.

    ``single_user`` (kernelhub up --single-user NAME): only NAME may sign in, whichever
    the authenticator; with local passwords NAME is the first account, and nobody can
    sign up.
    """
    if single_user is None:
        return _choose_authenticator(c, file_config, data_dir, None)
    user = _only_user(c, file_config, single_user)
    choice = _choose_authenticator(c, file_config, data_dir, user)
    if choice.account is None:
        return SignInChoice(f"{choice.note}; only {user} may sign in (--single-user)")
    return choice


def _choose_authenticator(
    c: Config, file_config: Config, data_dir: Path, single_user: str | None
) -> SignInChoice:
    if "authenticator_class" in file_config.get("JupyterHub", {}):
        return SignInChoice(
            "Sign-in: authenticator set by the config file (JupyterHub.authenticator_class)"
        )
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
        return SignInChoice(note)
    return _local_passwords(c, file_config, data_dir, single_user)


def _only_user(c: Config, file_config: Config, name: str) -> str:
    """Admit ``name`` alone (the allow-list, no existing users, no other admins)."""
    from kernelhub.signin.names import normalize_user_name, user_name_problem

    user = normalize_user_name(name)
    problem = user_name_problem(user)
    if problem:
        raise BackendUnavailable(f"--single-user: {problem}: {name!r}")
    configured = file_config.get("Authenticator", {})
    for trait in ("allowed_users", "admin_users"):
        others = sorted({normalize_user_name(n) for n in configured.get(trait, ())} - {user})
        if others:
            raise BackendUnavailable(
                f"--single-user {user}: the config file's Authenticator.{trait} admits "
                f"{', '.join(others)} as well; remove them or leave out --single-user"
            )
    c.Authenticator.allowed_users = {user}
    # JupyterHub admits admins and every user already in its database otherwise
    c.Authenticator.admin_users = {user}
    c.Authenticator.allow_existing_users = False
    c.Authenticator.allow_all = False
    return user


def _local_passwords(
    c: Config, file_config: Config, data_dir: Path, single_user: str | None
) -> SignInChoice:
    c.JupyterHub.authenticator_class = "kernelhub.signin.local.LocalPasswordAuthenticator"
    credentials = data_dir / CREDENTIALS_FILE
    if single_user is not None:
        c.LocalPasswordAuthenticator.enable_signup = False
        first: str | None = single_user
        who = f"only {single_user} may sign in (--single-user), no sign-up"
    elif "admin_users" in file_config.get("Authenticator", {}):
        # the config names the administrators: the operator gives them passwords
        first = None
        who = (
            "administrators from the config file get passwords with "
            "`kernelhub user add NAME`; sign-up at /hub/signup, approval at /hub/authorize"
        )
    else:
        c.Authenticator.admin_users = {LOCAL_ADMIN}
        first = LOCAL_ADMIN
        who = "sign-up at /hub/signup, approval at /hub/authorize, `kernelhub user add NAME`"
    note = (
        "Sign-in: local passwords, one per person (embedded default; no Google OAuth client "
        f"is configured): {who}"
    )
    if first is None:
        return SignInChoice(note)
    account = first_account(data_dir, first)
    c.LocalPasswordAuthenticator.credentials_file = str(credentials)
    c.LocalPasswordAuthenticator.set_first_password = account.created_now
    note += f"; {first}'s first password is in {credentials}"
    if account.migrated:
        note += (
            " (kept from the shared-password sign-in of an earlier kernelhub; the shared "
            "user password no longer signs anyone in)"
        )
    return SignInChoice(note, account)
