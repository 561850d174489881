"""Test harness: a real `kernelhub up` process, and helpers that drive it like a user."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import docker
import httpx

from kernelhub.launcher.credentials import CREDENTIALS_FILE, OPERATOR_TOKEN_FILE

KERNELHUB = str(Path(sys.executable).parent / "kernelhub")
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_test_credentials(data_dir: Path, admin_password: str, admin_user: str = "admin") -> None:
    """Pre-seed the first account's password (local sign-in), so the test knows it and
    `kernelhub up` generates none."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CREDENTIALS_FILE
    path.write_text(json.dumps({"admin_user": admin_user, "admin_password": admin_password}))
    path.chmod(0o600)


@dataclass
class HubProcess:
    data_dir: Path
    port: int
    config_text: str | None = None
    db_url: str | None = None
    runtimes: str = "local"
    env: dict[str, str] = field(default_factory=dict)  # on top of this process's
    args: list[str] = field(default_factory=list)  # more `kernelhub up` options
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    starts: int = 0
    # local sign-in passwords handed out by password(), kept across restarts of this hub
    _passwords: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-hub.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [KERNELHUB, "up", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        cmd += ["--runtimes", self.runtimes, *self.args]
        if self.db_url:
            cmd += ["--db-url", self.db_url]
        if self.config_text is not None:
            config = self.data_dir.parent / f"{self.data_dir.name}_config.py"
            config.write_text(self.config_text)
            cmd += ["--config", str(config)]
        return cmd

    def start(self, wait: bool = True) -> HubProcess:
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        log.write(f"\n===== start #{self.starts} =====\n".encode())
        log.flush()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELHUB_")}
        env.update(self.env)
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> float:
        """Seconds until the hub answered through the proxy."""
        assert self.proc is not None
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"kernelhub up exited with {self.proc.returncode}:\n{self.log()}"
                )
            try:
                if httpx.get(f"{self.url}/hub/api/", timeout=2).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"hub at {self.url} not ready after {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def runtime_logs(self) -> dict[str, str]:
        logs = self.data_dir / "logs"
        if not logs.is_dir():
            return {}
        return {p.name: p.read_text(errors="replace") for p in sorted(logs.glob("*.log"))}

    def token(self, user: str, note: str = "test token") -> str:
        """A new API token for ``user`` (created if missing), minted through the hub's
        REST API with the operator token, as `kernelhub token` does but without a
        subprocess (tests/test_cli.py runs the real command)."""
        operator = (self.data_dir / OPERATOR_TOKEN_FILE).read_text().strip()
        with self.api(operator) as hub:
            path = f"users/{quote(user, safe='')}"
            if hub.get(path).status_code == 404:
                created = hub.post(path)
                assert created.status_code == 201, f"creating {user}: {created.status_code}"
            issued = hub.post(f"{path}/tokens", json={"note": note})
            # the response body carries the token: only the status goes into a message
            assert issued.status_code in (200, 201), f"a token for {user}: {issued.status_code}"
            return str(issued.json()["token"])

    def password(self, user: str, admin: bool = False) -> str:
        """``user``'s local sign-in password: the account is created (approved) through
        the hub's REST API with the operator token, as `kernelhub user add` does but
        without a subprocess (tests/test_local_signin.py runs the real command). Asked
        again, the same password."""
        if user not in self._passwords:
            operator = (self.data_dir / OPERATOR_TOKEN_FILE).read_text().strip()
            with self.api(operator) as hub:
                created = hub.post("kernelhub/local-users", json={"name": user, "admin": admin})
            # the body carries the password: only the status (or the refusal) in a message
            assert created.status_code == 201, (
                f"an account for {user}: {created.status_code} {refusal(created)}"
            )
            self._passwords[user] = str(created.json()["password"])
        return self._passwords[user]

    def cli_token(self, user: str) -> str:
        """A token for ``user`` from `kernelhub token` (the operator's CLI, a subprocess)."""
        result = subprocess.run(
            [KERNELHUB, "token", user, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kernelhub token failed: {result.stderr}")
        return result.stdout.strip()

    def api(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/hub/api/", headers={"Authorization": f"token {token}"}, timeout=30
        )


def runtime_pids(data_dir: Path, user: str = "", with_sandbox: bool = False) -> list[int]:
    """PIDs of the servers of ``data_dir``'s hub's local runtimes (of one ``user`` if
    given); ``with_sandbox`` adds their sandboxes' bubblewrap processes (the outer one
    and the sandbox's init), whose command lines name the server too."""
    users = str(data_dir / "users" / user).rstrip("/") + "/"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            sandbox = (entry / "comm").read_text().strip() == "bwrap"
        except OSError:
            continue
        if "jupyterhub.singleuser" not in cmdline or (sandbox and not with_sandbox):
            continue
        if (cwd + "/").startswith(users) or (sandbox and f"\0{users}" in cmdline):
            pids.append(int(entry.name))
    return pids


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def end_process(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if ``proc`` lingers past ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_all_runtimes(api: httpx.Client, user: str) -> None:
    servers = api.get(f"users/{user}").json().get("servers", {})
    for name in servers:
        path = f"users/{user}/servers/{name}" if name else f"users/{user}/server"
        api.delete(path)
    wait_until(
        lambda: not api.get(f"users/{user}").json().get("servers"),
        timeout=60,
        what=f"{user}'s runtimes to stop",
    )


def server_path(user: str, server: str) -> str:
    return f"users/{user}/servers/{server}" if server else f"users/{user}/server"


def start_runtime(
    api: httpx.Client, user: str, server: str = "", runtime: str | None = "cpu"
) -> dict[str, Any]:
    """Start a runtime through the REST API and wait until it is ready."""
    options = {"runtime": runtime} if runtime else {}
    response = api.post(server_path(user, server), json={"user_options": options})
    assert response.status_code in (201, 202), response.text
    return wait_ready(api, user, server)


def wait_ready(api: httpx.Client, user: str, server: str = "") -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        model = api.get(f"users/{user}").json()["servers"].get(server)
        assert model is not None, f"{user}/{server} vanished while starting"
        return model if model["ready"] else None

    return wait_until(ready, timeout=90, what=f"runtime {user}/{server} to be ready")  # type: ignore[no-any-return]


def xsrf_token(session: httpx.Client) -> str:
    for cookie in session.cookies.jar:
        if cookie.name == "_xsrf":
            return str(cookie.value)
    raise AssertionError("hub set no _xsrf cookie")


def sign_in(hub: HubProcess, user: str, password: str) -> httpx.Client:
    """A browser-like session signed in through the hub's login form."""
    session = httpx.Client(base_url=hub.url, timeout=30, follow_redirects=True)
    session.get("/hub/login")
    response = session.post(
        "/hub/login",
        data={"username": user, "password": password, "_xsrf": xsrf_token(session)},
    )
    assert response.status_code == 200 and "/hub/login" not in str(response.url), (
        f"sign-in as {user} failed: {response.status_code} {response.url}"
    )
    return session


def refusal(response: httpx.Response) -> str:
    """The message of an API error answer ({"status", "message"}); never a 2xx body."""
    if response.is_success:
        return ""
    try:
        return str(response.json().get("message"))
    except ValueError:
        return response.text[:200]


def text_of(html: str) -> str:
    """Visible-ish text of a page, whitespace collapsed, for assertions on messages."""
    without_tags = re.sub(r"<[^>]+>", " ", html)
    return re.sub(r"\s+", " ", unescape(without_tags))


def wait_for_process_exit(pids: list[int], timeout: float = 30.0) -> None:
    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() and _not_zombie(pid) for pid in pids)

    wait_until(gone, timeout=timeout, what=f"processes {pids} to exit")


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def elapsed(t0: float) -> float:
    return time.monotonic() - t0


class PostgresCluster:
    """A throwaway PostgreSQL cluster (Debian's server binaries), trust auth on loopback.

    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.
    """

    def __init__(self, port: int) -> None:
        # not under pytest's tmp dirs: those are private to root
        self.base = Path(tempfile.mkdtemp(prefix="kernelhub-pg-"))
        self.data = self.base / "cluster"
        self.port = port
        self.bin = self._find_bin()

    @staticmethod
    def _find_bin() -> Path:
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
        if not candidates:
            raise RuntimeError("PostgreSQL server binaries missing: apt-get install postgresql")
        return candidates[0].parent

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} failed: {result.stderr or result.stdout}")

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres")
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        log = str(self.base / "server.log")  # keeps the server off our pipes
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start"
        )

    def create_database(self, name: str) -> str:
        self._run(
            str(self.bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            name,
        )
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


class OidcProvider:
    """A real OpenID Connect provider process on loopback (oidc-provider-mock).

    Users are whoever the sign-in form names; `set_user` gives a user the claims
    Google's userinfo endpoint returns (email, verified_email, hd).
    """

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> OidcProvider:
        command = [
            str(Path(sys.executable).parent / "oidc-provider-mock"),
            "--port",
            str(self.port),
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"oidc-provider-mock exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/.well-known/openid-configuration").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"OIDC provider at {self.url} not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def register_client(self, redirect_uri: str) -> tuple[str, str]:
        """A client with a real secret (sent in the token request body, as Google's is)."""
        response = httpx.post(
            f"{self.url}/oauth2/clients",
            json={
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": "client_secret_post",
            },
        )
        response.raise_for_status()
        body = response.json()
        return str(body["client_id"]), str(body["client_secret"])

    def set_user(self, sub: str, **claims: Any) -> None:
        httpx.put(f"{self.url}/users/{sub}", json=claims).raise_for_status()

    def google_config(self, client_id: str, client_secret: str, hub_url: str) -> str:
        """Config-file lines pointing GoogleOAuthenticator at this provider."""
        return "\n".join(
            [
                f"c.GoogleOAuthenticator.client_id = {client_id!r}",
                f"c.GoogleOAuthenticator.client_secret = {client_secret!r}",
                f"c.GoogleOAuthenticator.oauth_callback_url = '{hub_url}/hub/oauth_callback'",
                f"c.GoogleOAuthenticator.authorize_url = '{self.url}/oauth2/authorize'",
                f"c.GoogleOAuthenticator.token_url = '{self.url}/oauth2/token'",
                f"c.GoogleOAuthenticator.userdata_url = '{self.url}/userinfo'",
                "",
            ]
        )


def google_user(email: str, verified: bool = True) -> dict[str, Any]:
    """The userinfo claims Google returns for an account (hd only for Workspace domains)."""
    claims: dict[str, Any] = {"email": email, "verified_email": verified, "name": email}
    domain = email.split("@", 1)[1]
    if domain != "gmail.com":
        claims["hd"] = domain
    return claims


def sign_in_at_provider(
    hub_url: str, sub: str, follow_to_hub: bool = True
) -> tuple[httpx.Client, httpx.Response]:
    """Sign in through the hub's Google button and the provider's form, as a browser does.

    Returns the session and the hub's answer to the OAuth callback (redirects
    followed when `follow_to_hub`).
    """
    session = httpx.Client(base_url=hub_url, timeout=30, follow_redirects=True)
    form = session.get("/hub/oauth_login")
    assert form.status_code == 200 and "/oauth2/authorize" in str(form.url), (
        f"the hub did not send the browser to the provider: {form.status_code} {form.url}"
    )
    answer = session.post(str(form.url), data={"sub": sub}, follow_redirects=False)
    assert answer.status_code in (302, 303), answer.text
    callback = answer.headers["location"]
    response = session.get(callback, follow_redirects=follow_to_hub)
    return session, response


GOOGLE_DOMAIN = "example.com"
GOOGLE_POLICY = f"""
c.GoogleOAuthenticator.hosted_domain = [{GOOGLE_DOMAIN!r}]
c.Authenticator.admin_users = {{"carol"}}
c.Authenticator.blocked_users = {{"mallory"}}
"""


@dataclass
class GoogleHub:
    hub: HubProcess
    provider: OidcProvider
    client_secret: str

    def sign_in(self, email: str, verified: bool = True) -> tuple[httpx.Client, httpx.Response]:
        self.provider.set_user(email, **google_user(email, verified))
        return sign_in_at_provider(self.hub.url, email)


def start_google_hub(
    hub_factory: Callable[..., HubProcess], provider: OidcProvider, name: str
) -> GoogleHub:
    """A hub signing in with Google at `provider`: domain example.com, admin carol,
    mallory blocked."""
    port = free_port()
    hub_url = f"http://127.0.0.1:{port}"
    client_id, secret = provider.register_client(f"{hub_url}/hub/oauth_callback")
    config = provider.google_config(client_id, secret, hub_url) + GOOGLE_POLICY
    return GoogleHub(hub_factory(config, name=name, port=port), provider, secret)


@contextmanager
def docker_engine(prefix: str, image: str) -> Iterator[docker.DockerClient]:
    """The real engine, holding ``image``: no engine or no image fails loudly, never
    skips. Afterwards every container and volume named ``prefix...`` is removed."""
    client = docker.from_env()
    try:
        client.ping()
        client.images.get(image)
        yield client
    finally:
        for container in client.containers.list(all=True, filters={"name": prefix}):
            container.remove(force=True)
        for volume in client.volumes.list(filters={"name": prefix}):
            volume.remove(force=True)
        client.close()


def tiny_wheel(module: str, source: str) -> tuple[str, bytes]:
    """A one-module wheel made here (runtimes have no package index to install from):
    its file name and bytes, with a RECORD of real hashes, as pip checks them."""
    dist_info = f"{module}-1.0.dist-info"
    files = {
        f"{module}.py": source.encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n".encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: kernelhub-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return f"{module}-1.0-py3-none-any.whl", buffer.getvalue()
