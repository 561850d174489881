"""Where the image definitions are: a kernelhub source checkout, never the installed package.

`images/` (and the snippets and hub sources the builds use) live in the repository, not
in the wheel: installed in site-packages, ``Path(__file__)`` says nothing about where a
checkout is. So the images folder is, in order: the one given (--images-dir, env
KERNELHUB_IMAGES_DIR), a checkout's found from the current directory upward, or the
checkout this package runs from (an editable install, or the sources on sys.path).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

IMAGES_DIR_ENV = "KERNELHUB_IMAGES_DIR"
PROJECT_NAME = "kernelhub"
# this file in a checkout: hub/imagetools/checkout.py (a strict editable install links to it)
PACKAGE_FILE = Path(__file__)


class NoCheckout(Exception):
    """No images folder was given and no checkout was found; the message says what to do."""


def is_checkout(folder: Path) -> bool:
    """A kernelhub source checkout: images/ beside a pyproject.toml naming kernelhub."""
    pyproject = folder / "pyproject.toml"
    if not (folder / "images").is_dir() or not pyproject.is_file():
        return False
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # someone else's project, or no project at all
    return isinstance(project, dict) and project.get("name") == PROJECT_NAME


def find_checkout(cwd: Path | None = None, package_file: Path | None = None) -> Path | None:
    """The checkout around ``cwd`` (default: the current directory), else the one the
    package's sources are in; None for a package installed from a wheel."""
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if is_checkout(folder):
            return folder
    # only the sources' own folder counts: a wheel installed into a virtualenv that
    # happens to sit inside a checkout (.venv/lib/...) is still no checkout install
    sources = (package_file or PACKAGE_FILE).resolve().parents
    if len(sources) > 2 and sources[1].name == "hub" and is_checkout(sources[2]):
        return sources[2]
    return None


def default_images_dir(cwd: Path | None = None, package_file: Path | None = None) -> Path:
    """The found checkout's images/ folder; NoCheckout says how to name one instead."""
    checkout = find_checkout(cwd, package_file)
    if checkout is None:
        where = (cwd or Path.cwd()).resolve()
        raise NoCheckout(
            f"no kernelhub checkout found at or above {where}, and this kernelhub is not "
            f"installed from one: pass --images-dir (or set {IMAGES_DIR_ENV}) to a "
            "checkout's images/ folder, or run this from inside a checkout"
        )
    return checkout / "images"
