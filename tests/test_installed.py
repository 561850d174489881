"""kernelhub installed from its wheel: complete, and never assuming a source checkout.

The wheel is built from a copy of the package's sources (so nothing stale in the
checkout's build/ can slip in), unpacked, and run with that copy first on sys.path,
from a folder outside any checkout: as in the hub image, where site-packages holds
kernelhub and no images/ or tests/ folder is anywhere near.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import KERNELHUB

from kernelhub.imagetools.checkout import NoCheckout, default_images_dir, find_checkout

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "tests" / "data" / "labels.json"
# pyproject.toml's package-dir: each source folder and the package it installs as
PACKAGE_DIRS = {"hub": "kernelhub", "spawner": "kernelhub/spawner", "quotas": "kernelhub/quotas"}
WHEEL_SOURCES = [*PACKAGE_DIRS, "pyproject.toml", "README.md"]
BUILD_TIMEOUT = 300.0


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def run(
    args: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> Run:
    """ARGS in CWD, with no KERNELHUB_* variables but those in ``env``."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("KERNELHUB_")}
    child_env.update(env or {})
    done = subprocess.run(
        args,
        cwd=cwd,
        env=child_env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def one_line(result: Run) -> str:
    """The single line a failing command wrote to stderr (and no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    return lines[0]


def make_checkout(folder: Path, project: str = "kernelhub") -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{project}"\n')
    return folder


# --- where `kernelhub images build` finds image definitions ---


def test_an_images_dir_that_does_not_exist_is_one_line_naming_the_option(tmp_path: Path) -> None:
    result = run([KERNELHUB, "images", "build", "test", "--images-dir", "/nonexistent"], tmp_path)

    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith("Error: images folder /nonexistent does not exist")
    assert "--images-dir" in line and "KERNELHUB_IMAGES_DIR" in line


def test_the_checkout_is_found_from_the_current_directory_upward(tmp_path: Path) -> None:
    checkout = make_checkout(tmp_path / "src" / "kernelhub")
    inside = checkout / "images" / "test"
    inside.mkdir()
    elsewhere = tmp_path / "site-packages" / "kernelhub" / "imagetools" / "checkout.py"

    assert find_checkout(inside, elsewhere) == checkout
    assert default_images_dir(inside, elsewhere) == checkout / "images"


def test_another_projects_folder_is_no_checkout(tmp_path: Path) -> None:
    other = make_checkout(tmp_path / "other", project="not-kernelhub")
    elsewhere = tmp_path / "site-packages" / "kernelhub" / "imagetools" / "checkout.py"

    assert find_checkout(other, elsewhere) is None


def test_an_editable_install_finds_the_checkout_it_runs_from(tmp_path: Path) -> None:
    checkout = make_checkout(tmp_path / "kernelhub")
    package_file = checkout / "hub" / "imagetools" / "checkout.py"
    somewhere = tmp_path / "somewhere"
    somewhere.mkdir()

    assert find_checkout(somewhere, package_file) == checkout


def test_a_wheel_installed_in_a_virtualenv_inside_a_checkout_is_no_checkout_install(
    tmp_path: Path,
) -> None:
    checkout = make_checkout(tmp_path / "kernelhub")
    site = checkout / ".venv" / "lib" / "python3.11" / "site-packages"
    package_file = site / "kernelhub" / "imagetools" / "checkout.py"
    somewhere = tmp_path / "somewhere"
    somewhere.mkdir()

    assert find_checkout(somewhere, package_file) is None
    with pytest.raises(NoCheckout) as refused:
        default_images_dir(somewhere, package_file)
    assert "--images-dir" in str(refused.value)
    assert "KERNELHUB_IMAGES_DIR" in str(refused.value)


# --- the wheel ---


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kernelhub's wheel, built from a copy of its sources.

    With build isolation: pyproject.toml's license needs a newer setuptools than the dev
    virtualenv may hold, and pip fetches one from the configured index.
    """
    work = tmp_path_factory.mktemp("wheel")
    sources = work / "sources"
    for name in WHEEL_SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, sources / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            sources.mkdir(exist_ok=True)
            shutil.copy2(source, sources / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(work)]
    built = run([*pip, f"{sources}/"], work, timeout=BUILD_TIMEOUT)
    assert built.returncode == 0, f"pip wheel failed:\n{built.stderr[-3000:]}"
    [found] = work.glob("kernelhub-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked: what pip would put in site-packages."""
    site = tmp_path_factory.mktemp("site-packages")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def package_files() -> set[str]:
    """Every file of every package in the sources, as its path in the wheel."""
    expected: set[str] = set()
    for folder, package in PACKAGE_DIRS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            for path in init.parent.iterdir():
                if path.is_file() and path.suffix != ".pyc":
                    relative = path.relative_to(ROOT / folder)
                    expected.add(f"{package}/{relative.as_posix()}")
    return expected


def test_the_wheel_holds_every_package_and_its_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())

    missing = sorted(package_files() - names)

    assert not missing, f"pyproject.toml's packages or package-data leave out: {missing}"


def test_the_wheel_holds_the_files_installed_code_reads(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())

    for name in [
        "kernelhub/py.typed",
        "kernelhub/contract.py",
        "kernelhub/hubapp/templates/home.html",
        "kernelhub/hubapp/templates/spawn.html",
        "kernelhub/hubapp/templates/page.html",
        "kernelhub/hubapp/static/kernelhub-logo.svg",
        "kernelhub/hubapp/openapi.json",
        "kernelhub/quotas/openapi.json",
        "kernelhub/quotas/mining_signatures.toml",
        "kernelhub/quotas/migrations/script.py.mako",
        "kernelhub/quotas/migrations/versions/__init__.py",
    ]:
        assert name in names, f"{name} is not in {wheel.name}"


def installed_python(installed: Path, *args: str, cwd: Path) -> Run:
    """This Python with the unpacked wheel first on sys.path, so it shadows the checkout."""
    return run([sys.executable, *args], cwd, env={"PYTHONPATH": str(installed)})


def test_the_installed_package_is_the_one_these_tests_run(installed: Path, tmp_path: Path) -> None:
    where = installed_python(
        installed, "-c", "import kernelhub; print(kernelhub.__file__)", cwd=tmp_path
    )

    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed)


def test_installed_images_build_without_a_checkout_names_images_dir(
    installed: Path, tmp_path: Path
) -> None:
    result = installed_python(
        installed, "-m", "kernelhub.cli", "images", "build", "test", cwd=tmp_path
    )

    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith("Error: no kernelhub checkout found")
    assert "--images-dir" in line and "KERNELHUB_IMAGES_DIR" in line


def test_installed_images_commands_that_read_no_sources_still_run(
    installed: Path, tmp_path: Path
) -> None:
    # `packages` and `diff` inspect the engine only: a bad name fails before Docker
    result = installed_python(
        installed, "-m", "kernelhub.cli", "images", "packages", "nope", cwd=tmp_path
    )

    assert result.returncode == 1
    assert one_line(result).startswith("Error: unknown image 'nope'")


def test_installed_evaluate_without_labels_says_labels_is_needed(
    installed: Path, tmp_path: Path
) -> None:
    result = installed_python(installed, "-m", "kernelhub.quotas.evaluate", cwd=tmp_path)

    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("error: LABELS is needed")
    assert "tests/data/labels.json" in line


def test_installed_evaluate_with_the_checkouts_labels_works_as_before(
    installed: Path, tmp_path: Path
) -> None:
    result = installed_python(
        installed, "-m", "kernelhub.quotas.evaluate", str(LABELS), cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert "precision 1.00" in result.stdout
    assert "recall    1.00" in result.stdout
