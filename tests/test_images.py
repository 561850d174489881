"""`kernelhub images`: quick checks against the real Docker engine, never a rebuild.

They need a reachable engine and an up-to-date `kernelhub/runtime-test:latest`
(`kernelhub images bootstrap-base && kernelhub images build test`); without
either they fail and say so.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import docker
import docker.errors
import pytest
from harness import KERNELHUB

from kernelhub import images as img

TEST_IMAGE = "kernelhub/runtime-test:latest"
SKIP_SECONDS = 5.0  # an up-to-date check is a few SDK calls; it measures well under 1s


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def kernelhub(*args: str, env: dict[str, str] | None = None) -> Run:
    """`kernelhub ARGS` with no KERNELHUB_* variables but those in ``env``."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELHUB_")}
    started = time.monotonic()
    done = subprocess.run(
        [KERNELHUB, *args],
        capture_output=True,
        text=True,
        env={**child_env, **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


@pytest.fixture(scope="module")
def engine() -> docker.DockerClient:
    try:
        return img.engine()
    except img.ImageError as e:
        problem = str(e)
    pytest.fail(f"these tests need a Docker engine: {problem}", pytrace=False)


@pytest.fixture(scope="module")
def test_image(engine: docker.DockerClient) -> str:
    """The test image, which must already be built from the current sources."""
    plan = img.plan_build(img.DEFAULT_IMAGES_DIR, "test")
    try:
        want = img.wanted_hash(engine, plan)
    except img.ImageError as e:
        problem = str(e)
    else:
        problem = ""
    if problem:
        pytest.fail(f"{problem}; then run `kernelhub images build test`", pytrace=False)
    image = img.find_image(engine, TEST_IMAGE)
    if image is None or image.labels.get(img.HASH_LABEL) != want:
        state = "missing" if image is None else "older than images/"
        pytest.fail(
            f"{TEST_IMAGE} is {state}: run `kernelhub images build test` first", pytrace=False
        )
    return TEST_IMAGE


def test_build_of_an_up_to_date_image_skips(test_image: str) -> None:
    run = kernelhub("images", "build", "test")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"{test_image} is up to date ("), run.stdout
    assert "#1 " not in run.stderr, "no docker build should have run"
    assert run.seconds < SKIP_SECONDS, f"the up-to-date check took {run.seconds:.1f}s"


def test_unknown_image_name_is_one_line() -> None:
    run = kernelhub("images", "build", "nonesuch")
    assert run.returncode != 0
    assert run.stderr.splitlines() == [
        "Error: unknown image 'nonesuch': choose one of test, cpu, gpu"
    ]
    assert run.stdout == ""


def test_image_without_a_dockerfile_is_one_line(tmp_path: Path) -> None:
    # an images folder without cpu/, so this holds once images/cpu/ exists too
    run = kernelhub("images", "build", "cpu", "--images-dir", str(tmp_path))
    assert run.returncode != 0
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("Error: image 'cpu' has no Dockerfile yet ("), lines[0]
    assert str(tmp_path / "cpu" / "Dockerfile") in lines[0]


def test_unreachable_engine_is_one_line(tmp_path: Path) -> None:
    socket = tmp_path / "no-engine.sock"
    run = kernelhub("images", "build", "test", env={"DOCKER_HOST": f"unix://{socket}"})
    assert run.returncode != 0
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"Error: cannot reach the Docker engine at unix://{socket} ")


def test_missing_ca_bundle_is_one_line(engine: docker.DockerClient, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-bundle.pem"
    run = kernelhub("images", "build", "test", "--ca-bundle", str(missing))
    assert run.returncode != 0
    assert run.stderr.splitlines() == [
        f"Error: CA bundle {missing} does not exist (--ca-bundle, KERNELHUB_CA_BUNDLE)"
    ]


def test_smoke_test_runs_in_a_container(engine: docker.DockerClient, test_image: str) -> None:
    try:
        output = engine.containers.run(test_image, "kernelhub-smoke-test", remove=True)
    except docker.errors.ContainerError as e:
        output = b""
        problem = f"kernelhub-smoke-test failed in {test_image}: {e}"
    else:
        problem = ""
    assert not problem, problem
    lines = output.decode().splitlines()
    # the runtime runs the hub's own versions of the single-user server
    assert f"jupyterhub {version('jupyterhub')}" in lines, lines
    assert f"notebook {version('notebook')}" in lines, lines
    assert lines[-1] == "kernelhub-smoke-test: ok", lines


def test_image_runs_the_single_user_server_as_jovyan(
    engine: docker.DockerClient, test_image: str
) -> None:
    config = engine.images.get(test_image).attrs["Config"]
    assert config["User"] == "jovyan"
    assert config["WorkingDir"] == "/home/jovyan"
    assert config["Cmd"] == ["jupyterhub-singleuser"]
    assert "8888/tcp" in config["ExposedPorts"]
    assert config["Labels"]["org.kernelhub.image"] == "test"
    assert any(v.startswith("PATH=/opt/runtime/bin:") for v in config["Env"])
