"""`kernelhub images`: quick checks against the real Docker engine, never a rebuild.

They need a reachable engine and an up-to-date `kernelhub/runtime-test:latest`
(`kernelhub images bootstrap-base && kernelhub images build test`); without
either they fail and say so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import distributions, version
from pathlib import Path

import docker
import docker.errors
import pytest
from click.testing import CliRunner
from harness import KERNELHUB

from kernelhub.clients.images import images
from kernelhub.imagetools import build as img
from kernelhub.imagetools import packages as pkgs
from kernelhub.runtimes.engine import find_image

IMAGES_DIR = Path(__file__).resolve().parents[1] / "images"  # this checkout's
TEST_IMAGE = "kernelhub/runtime-test:latest"
SKIP_SECONDS = 5.0  # an up-to-date check is a few SDK calls; it measures well under 1s
SERVER_PINS = IMAGES_DIR / "common" / "server-requirements.txt"
FREEZE_LINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+$")


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


def built_from_these_sources(engine: docker.DockerClient, name: str) -> str:
    """The tag of image NAME, which must already be built from the current sources."""
    plan = img.plan_build(IMAGES_DIR, name)
    try:
        want = img.wanted_hash(engine, plan)
    except img.ImageError as e:
        problem = str(e)
    else:
        problem = ""
    if problem:
        pytest.fail(f"{problem}; then run `kernelhub images build {name}`", pytrace=False)
    image = find_image(engine, plan.tag)
    if image is None or image.labels.get(img.SOURCE_HASH_LABEL) != want:
        state = "missing" if image is None else "older than images/"
        pytest.fail(
            f"{plan.tag} is {state}: run `kernelhub images build {name}` first", pytrace=False
        )
    return plan.tag


@pytest.fixture(scope="module")
def test_image(engine: docker.DockerClient) -> str:
    tag = built_from_these_sources(engine, "test")
    assert tag == TEST_IMAGE
    return tag


@pytest.fixture(scope="module")
def cpu_image(engine: docker.DockerClient) -> str:
    return built_from_these_sources(engine, "cpu")


@pytest.mark.docker
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
        "Error: unknown image 'nonesuch': choose one of test, cpu, gpu, hub, docker-proxy, "
        "ci-postgres, registry, swarm-node"
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


@pytest.mark.docker
def test_missing_ca_bundle_is_one_line(engine: docker.DockerClient, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-bundle.pem"
    run = kernelhub("images", "build", "test", "--ca-bundle", str(missing))
    assert run.returncode != 0
    assert run.stderr.splitlines() == [
        f"Error: CA bundle {missing} does not exist (--ca-bundle, KERNELHUB_CA_BUNDLE)"
    ]


@pytest.mark.docker
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


LAUNCHER_CHECK = """
import runpy, sys
sys.argv = ["kernelhub-runtime"]
launcher = runpy.run_path("/usr/local/bin/kernelhub-runtime", run_name="launcher")
import jsonschema
print("loaded at start:", type(sys.modules["rfc3987_syntax"]).__name__ == "module")
checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
print("valid iri:", checker.conforms("http://example.invalid/ä", "iri"))
print("invalid iri:", checker.conforms("not an iri", "iri"))
print("loaded after use:", type(sys.modules["rfc3987_syntax"]).__name__ == "module")
"""


@pytest.mark.docker
def test_the_launcher_loads_the_iri_grammar_only_when_used(
    engine: docker.DockerClient, test_image: str
) -> None:
    image = engine.images.get(test_image)
    assert image.labels["org.kernelhub.launcher"] == "kernelhub-runtime"
    output = engine.containers.run(test_image, ["python", "-c", LAUNCHER_CHECK], remove=True)
    assert output.decode().splitlines() == [
        "loaded at start: False",
        "valid iri: True",
        "invalid iri: False",
        "loaded after use: True",
    ]


@pytest.mark.docker
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


def server_pins() -> list[str]:
    return [
        line.strip()
        for line in SERVER_PINS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_server_pins_are_the_hubs_own_versions() -> None:
    # every runtime image installs these next to its own packages
    assert server_pins() == [
        f"jupyterhub=={version('jupyterhub')}",
        f"notebook=={version('notebook')}",
    ]


@pytest.mark.docker
def test_smoke_test_imports_every_package_of_a_manifest(
    engine: docker.DockerClient, test_image: str, tmp_path: Path
) -> None:
    # the test image has no manifest: lend it one of packages it holds
    held = {canonical(p.name): p.version for p in pkgs.runtime_packages(engine, "test")}
    manifest = tmp_path / "packages.txt"
    manifest.write_text(
        "# a comment, then a blank line\n\n"
        + "".join(f"{pin}\n" for pin in server_pins())
        + f"pyyaml=={held['pyyaml']}   # import: yaml\n"
        + f"tornado=={held['tornado']}\n"
    )
    output = engine.containers.run(
        test_image,
        "kernelhub-smoke-test",
        volumes={str(manifest): {"bind": "/opt/kernelhub/packages.txt", "mode": "ro"}},
        remove=True,
    )
    lines = output.decode().splitlines()
    imports = [line for line in lines if line.startswith("import ")]
    assert imports == [
        f"import jupyterhub ({server_pins()[0]}) ... ok",
        f"import notebook ({server_pins()[1]}) ... ok",
        f"import yaml (pyyaml=={held['pyyaml']}) ... ok",
        f"import tornado (tornado=={held['tornado']}) ... ok",
    ], lines
    assert "4 of 4 packages in /opt/kernelhub/packages.txt import at their pinned versions" in lines
    # no tensorflow in the manifest: no GPU line
    assert not any(line.startswith("gpu_device_name:") for line in lines), lines
    assert lines[-1] == "kernelhub-smoke-test: ok", lines


@pytest.mark.docker
def test_smoke_test_fails_clearly_on_a_bad_manifest(
    engine: docker.DockerClient, test_image: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "packages.txt"
    jupyterhub_pin = server_pins()[0]
    manifest.write_text(
        f"{jupyterhub_pin}\n"
        "kernelhub-no-such-package==1.0\n"
        "jupyterhub==0.0.1   # import: jupyterhub\n"
        f"notebook=={version('notebook')}   # import: no_such_module\n"
    )
    container = engine.containers.run(
        test_image,
        "kernelhub-smoke-test",
        volumes={str(manifest): {"bind": "/opt/kernelhub/packages.txt", "mode": "ro"}},
        detach=True,
    )
    try:
        status = container.wait(timeout=60)["StatusCode"]
        stdout = container.logs(stdout=True, stderr=False).decode()
        stderr = container.logs(stdout=False, stderr=True).decode()
    finally:
        container.remove(force=True)
    assert status == 1, (stdout, stderr)
    assert "1 of 4 packages in /opt/kernelhub/packages.txt import at their pinned versions" in (
        stdout.splitlines()
    ), stdout
    assert stderr.splitlines() == [
        "kernelhub-smoke-test: FAILED (3 problems)",
        "  kernelhub-no-such-package==1.0: not installed",
        f"  jupyterhub==0.0.1: installed {version('jupyterhub')}, manifest pins 0.0.1",
        f"  notebook=={version('notebook')}: import no_such_module failed: "
        "ModuleNotFoundError: No module named 'no_such_module'",
    ], stderr
    assert "kernelhub-smoke-test: ok" not in stdout


@pytest.mark.docker
def test_packages_lists_the_runtime_in_freeze_form(test_image: str) -> None:
    run = kernelhub("images", "packages", "test")
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    lines = run.stdout.splitlines()
    assert lines, "no packages listed"
    assert all(FREEZE_LINE.match(line) for line in lines), lines
    for pin in server_pins():
        assert pin in lines, (pin, lines)
    assert any(line.startswith("pip==") for line in lines), lines
    # one line per package, in name order
    keys = [canonical(line.split("==")[0]) for line in lines]
    assert keys == sorted(set(keys))


@pytest.mark.docker
def test_diff_compares_the_runtime_with_this_python(test_image: str) -> None:
    listed = kernelhub("images", "packages", "test").stdout.splitlines()
    runtime = {canonical(line.split("==")[0]): line for line in listed}
    local: dict[str, str] = {}
    for dist in distributions():  # this test runs in the Python that runs kernelhub
        local.setdefault(
            canonical(dist.metadata["Name"]), f"{dist.metadata['Name']}=={dist.version}"
        )
    expected = []
    for key in sorted(runtime.keys() | local.keys()):
        ours, theirs = runtime.get(key), local.get(key)
        if ours is not None and theirs is not None:
            if ours.split("==")[1] != theirs.split("==")[1]:
                expected.append(f"- {ours} (runtime)  + {theirs} (local)")
        elif ours is not None:
            expected.append(f"- {ours} (runtime)")
        else:
            expected.append(f"+ {theirs} (local)")

    run = kernelhub("images", "diff", "test")
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    *lines, summary = run.stdout.splitlines()
    assert lines == expected
    # the hub's own packages are only here; the single-user server is the same in both
    assert f"+ kernelhub=={version('kernelhub')} (local)" in lines
    assert f"+ pytest=={version('pytest')} (local)" in lines
    assert not any("jupyterhub==" in line or "notebook==" in line for line in lines)
    changed = sum(1 for line in lines if line.startswith("- ") and " + " in line)
    only_runtime = sum(1 for line in lines if line.startswith("- ") and " + " not in line)
    only_local = sum(1 for line in lines if line.startswith("+ "))
    same = len(runtime) - changed - only_runtime
    match = re.fullmatch(rf"{re.escape(TEST_IMAGE)} vs (\S+): (.*)", summary)
    assert match, summary
    assert Path(match[1]).resolve() == Path(sys.executable).resolve(), summary
    assert match[2] == (
        f"{changed} at other versions, {only_runtime} only in the runtime (-), "
        f"{only_local} only local (+), {same} the same"
    ), summary


def test_diff_lines_for_each_kind_of_difference() -> None:
    runtime = pkgs.parse_freeze("pandas==2.2.3\nPyYAML==6.0.2\nonly-there==1\nsame_name==3\n")
    local = [pkgs.Package("pandas", "2.1.0"), pkgs.Package("pyyaml", "6.0.2")]
    local += [pkgs.Package("only.here", "2"), pkgs.Package("Same-Name", "3")]
    differences = pkgs.diff_packages(runtime, local)
    assert [pkgs.format_difference(d) for d in differences] == [
        "+ only.here==2 (local)",
        "- only-there==1 (runtime)",
        "- pandas==2.2.3 (runtime)  + pandas==2.1.0 (local)",
    ]
    assert pkgs.summarize_differences(differences, runtime) == (
        "1 at other versions, 1 only in the runtime (-), 1 only local (+), 2 the same"
    )


@pytest.mark.docker
@pytest.mark.parametrize("command", ["packages", "diff"])
def test_packages_and_diff_of_a_missing_image_are_one_line(
    engine: docker.DockerClient, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    missing = "kernelhub/runtime-test:kernelhub-tests-never-built"
    assert find_image(engine, missing) is None
    monkeypatch.setattr(pkgs, "runtime_tag", lambda name: missing)
    result = CliRunner().invoke(images, [command, "test"])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"Error: {missing} is not in the engine: build it with `kernelhub images build test`"
    ]


@pytest.mark.parametrize("command", ["packages", "diff"])
def test_packages_and_diff_of_an_unknown_image_are_one_line(command: str) -> None:
    run = kernelhub("images", command, "nonesuch")
    assert run.returncode != 0
    assert run.stderr.splitlines() == [
        "Error: unknown image 'nonesuch': choose one of test, cpu, gpu"
    ]
    assert run.stdout == ""


# --- the CPU runtime is clean: what a user runs first shows no red text -------------------

# the seed notebook's check, as a user types it in a new CPU runtime
SEED_CHECK = "import tensorflow as tf; print(repr(tf.test.gpu_device_name()))"
MANIFEST = IMAGES_DIR / "common" / "packages.txt"
MANIFEST_LINE = re.compile(
    r"^(?P<name>[A-Za-z0-9][\w.-]*)==(?P<version>\S+)(?:\s+#\s*import:\s*(?P<module>\S+))?\s*$"
)
# the CPU image installs these packages of the manifest as their CPU-only builds, at the
# manifest's versions (images/cpu/Dockerfile); the module a user imports stays the same
CPU_BUILDS = {"tensorflow": "tensorflow-cpu"}


def cpu_image_packages() -> list[tuple[str, str, str]]:
    """(distribution, version, module) for each line of the manifest, as the CPU image
    installs it."""
    packages = []
    for line in MANIFEST.read_text().splitlines():
        match = MANIFEST_LINE.match(line)
        if match is None:
            assert not line.strip() or line.startswith("#"), f"{MANIFEST}: {line!r}"
            continue
        name = match["name"]
        module = match["module"] or name.replace("-", "_")
        packages.append((CPU_BUILDS.get(name, name), match["version"], module))
    return packages


def run_in(engine: docker.DockerClient, image: str, command: list[str]) -> Run:
    """COMMAND in a container of IMAGE, as the image's user (jovyan) and without network,
    the way a runtime of it runs; its stdout and its stderr apart."""
    started = time.monotonic()
    container = engine.containers.run(image, command, network_mode="none", detach=True)
    try:
        status = container.wait(timeout=240)["StatusCode"]
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
        stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    return Run(status, stdout, stderr, time.monotonic() - started)


@pytest.mark.docker
def test_the_seed_check_in_the_cpu_runtime_prints_only_its_answer(
    engine: docker.DockerClient, cpu_image: str
) -> None:
    # no GPU here (none is requested), so TensorFlow's answer is '' and nothing else: no
    # CUDA driver, cuInit or log-initialisation lines, which a notebook shows in red
    run = run_in(engine, cpu_image, ["python3", "-c", SEED_CHECK])
    assert run.returncode == 0, run
    assert run.stdout == "''\n"
    assert run.stderr == ""


@pytest.mark.docker
def test_the_cpu_runtime_holds_tensorflows_cpu_build_only(
    engine: docker.DockerClient, cpu_image: str
) -> None:
    pinned = {module: pin for _, pin, module in cpu_image_packages()}["tensorflow"]
    held = {canonical(p.name): p.version for p in pkgs.runtime_packages(engine, "cpu")}
    assert held.get("tensorflow-cpu") == pinned, held
    # the CUDA build installs the same `tensorflow` files: with both, the last one wins
    assert "tensorflow" not in held, held


@pytest.mark.docker
def test_every_package_of_the_cpu_runtime_imports_without_a_word_on_stderr(
    engine: docker.DockerClient, cpu_image: str
) -> None:
    # kernelhub-smoke-test writes only its failures to stderr, so when it passes anything
    # there comes from a package while it imports or answers (a Python warning, a C++ log
    # line): what counts as a warning is any byte on stderr. Its stdout is exactly its
    # own report, so a package printing during its import shows up as well.
    packages = cpu_image_packages()
    assert ("tensorflow-cpu", "tensorflow") in {(n, m) for n, _, m in packages}  # the seed's
    run = run_in(engine, cpu_image, ["kernelhub-smoke-test"])
    assert run.returncode == 0, run
    assert run.stderr == ""
    lines = run.stdout.splitlines()
    assert lines[0].startswith("python 3.11."), lines
    assert lines[1:3] == [f"jupyterhub {version('jupyterhub')}", f"notebook {version('notebook')}"]
    count = len(packages)
    assert lines[3:] == [
        *(f"import {module} ({name}=={pinned}) ... ok" for name, pinned, module in packages),
        f"{count} of {count} packages in /opt/kernelhub/packages.txt import at their pinned "
        "versions",
        "gpu_device_name: ''",
        "kernelhub-smoke-test: ok",
    ]
