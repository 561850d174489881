"""Secrets from files (the compose deployment's Docker secrets): read right, and every
problem stops the start with one line that names the file and never the secret."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import KERNELHUB

from kernelhub.secrets_files import (
    SecretFileError,
    read_secret_file,
    secret_from_env,
    url_with_password,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-value-0123456789abcdef0123456789"


def test_a_secret_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")  # what `openssl rand -hex 32 > FILE` writes
    assert read_secret_file(path) == SECRET
    assert secret_from_env("TOKEN", {"TOKEN_FILE": str(path)}) == SECRET


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, None),  # neither: no secret (the caller decides whether that is fine)
        ({"TOKEN": "plain"}, "plain"),  # a deployment without files keeps working
        ({"TOKEN_FILE": "FILE"}, SECRET),
    ],
)
def test_secret_from_env_prefers_the_file(
    tmp_path: Path, environment: dict[str, str], expected: str | None
) -> None:
    (tmp_path / "FILE").write_text(SECRET)
    environment = {
        k: str(tmp_path / v) if k.endswith("_FILE") else v for k, v in environment.items()
    }
    assert secret_from_env("TOKEN", environment) == expected


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "is a directory"),  # Docker's bind mount of a missing file
        (lambda p: p.write_text("\n"), "is empty"),
        (lambda p: p.write_text(f"{SECRET}\nsecond\n"), "more than one line"),
    ],
)
def test_an_unusable_secret_file_is_one_line_naming_the_file(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    path = tmp_path / "token"
    make(path)
    with pytest.raises(SecretFileError) as raised:
        read_secret_file(path)
    text = str(raised.value)
    assert message in text and str(path) in text and "\n" not in text
    assert SECRET not in text


def test_a_file_and_a_value_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text(SECRET)
    with pytest.raises(SecretFileError, match="not both"):
        secret_from_env("TOKEN", {"TOKEN": "x", "TOKEN_FILE": str(tmp_path / "f")})


@pytest.mark.parametrize(
    ("url", "password", "expected"),
    [
        (
            "postgresql://kernelhub@postgres/kernelhub",
            None,
            "postgresql://kernelhub@postgres/kernelhub",
        ),
        # quoted in the URL, so any character survives
        ("postgresql://kh@db/kh", "p@ss:/w%rd", "postgresql://kh:p%40ss%3A%2Fw%25rd@db/kh"),
    ],
)
def test_url_with_password(url: str, password: str | None, expected: str) -> None:
    assert url_with_password(url, password) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://kh:old@db/kh", "has a password already"),
        ("postgresql://db/kh", "names no user"),
        ("not a url", "is not a URL"),
    ],
)
def test_url_with_password_refuses(url: str, message: str) -> None:
    with pytest.raises(SecretFileError, match=message) as raised:
        url_with_password(url, SECRET)
    assert "old" not in str(raised.value)


def _run(
    command: list[str], env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KERNELHUB_", "JUPYTERHUB_"))}
    return subprocess.run(
        command,
        env={**clean, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


MISSING = "/run/secrets/kernelhub-test-missing"


@pytest.mark.parametrize(
    ("what", "command", "env"),
    [
        (
            "the hub's database password (the compose config file)",
            [KERNELHUB, "up", "--config", str(ROOT / "images/hub/kernelhub_config.py")],
            {"KERNELHUB_DB_PASSWORD_FILE": MISSING},
        ),
        (
            "the quota daemon's token, registered by the hub",
            [KERNELHUB, "up"],
            {"KERNELHUB_QUOTAD_URL": "http://quotad:8090", "KERNELHUB_QUOTAD_TOKEN_FILE": MISSING},
        ),
        (
            "the quota daemon's database password",
            [sys.executable, "-m", "kernelhub.quotas.service"],
            {
                "KERNELHUB_QUOTA_DB_URL": "postgresql://kernelhub_quotad@postgres/kernelhub",
                "KERNELHUB_QUOTA_DB_PASSWORD_FILE": MISSING,
            },
        ),
        (
            "the quota daemon's hub token",
            [sys.executable, "-m", "kernelhub.quotas.service", "--db-url", "sqlite:///q.sqlite"],
            {"JUPYTERHUB_API_URL": "http://hub:8081/hub/api", "JUPYTERHUB_API_TOKEN_FILE": MISSING},
        ),
    ],
)
def test_a_missing_secret_file_stops_the_start_in_one_line(
    tmp_path: Path, what: str, command: list[str], env: dict[str, str]
) -> None:
    if command[:2] == [KERNELHUB, "up"]:
        command = [*command, "--data-dir", str(tmp_path / "data"), "--runtimes", "local"]
    done = _run(command, env, tmp_path)
    assert done.returncode != 0, f"{what}: started anyway"
    assert f"secret file {MISSING} does not exist" in done.stderr, f"{what}: {done.stderr}"
    assert "Traceback" not in done.stderr, f"{what}: {done.stderr}"
