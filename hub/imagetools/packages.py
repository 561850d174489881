"""What a runtime image holds: its packages, and how they differ from a local environment.

(`kernelhub images packages|diff`: hosted and local runtimes drifting apart is a
known pain of hosted notebooks.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kernelhub.imagetools.build import IMAGE_NAMES, ImageError, runtime_tag
from kernelhub.runtimes.engine import find_image

if TYPE_CHECKING:
    import docker

# `pip list` in a runtime: its own interpreter, no network, no pip self-check
PIP_LIST = ["/opt/runtime/bin/python", "-m", "pip", "list", "--format=freeze"]
PIP_LIST_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


@dataclass(frozen=True)
class Package:
    name: str  # as its metadata spells it
    version: str

    @property
    def key(self) -> str:
        """The name normalized as in PEP 503, so `PyYAML` and `pyyaml` are one package."""
        return re.sub(r"[-_.]+", "-", self.name).lower()

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class Difference:
    runtime: Package | None  # None: only in the local environment
    local: Package | None  # None: only in the runtime


def parse_freeze(text: str) -> list[Package]:
    """`name==version` lines (pip freeze form) as packages, sorted by name."""
    packages = []
    for line in text.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and name and version and not name.startswith("#"):
            packages.append(Package(name.strip(), version.strip()))
    return sorted(packages, key=lambda p: p.key)


def runtime_packages(client: docker.DockerClient, name: str) -> list[Package]:
    """The packages of runtime image NAME's Python environment (`pip list`, in a container)."""
    import docker.errors

    if name not in IMAGE_NAMES:
        raise ImageError(f"unknown image {name!r}: choose one of {', '.join(IMAGE_NAMES)}")
    tag = runtime_tag(name)
    if find_image(client, tag) is None:
        raise ImageError(
            f"{tag} is not in the engine: build it with `kernelhub images build {name}`"
        )
    try:
        output = client.containers.run(
            tag,
            PIP_LIST,
            environment=PIP_LIST_ENV,
            network_disabled=True,
            stdout=True,
            stderr=False,
            remove=True,
        )
    except docker.errors.ContainerError as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else ""
        last = stderr.strip().splitlines()[-1:] or [f"exit {e.exit_status}"]
        raise ImageError(f"`pip list` failed in a container of {tag}: {last[0]}") from None
    except docker.errors.APIError as e:
        raise ImageError(f"cannot run a container of {tag}: {e.explanation or e}") from None
    return parse_freeze(output.decode(errors="replace"))


def local_packages() -> list[Package]:
    """The packages of the Python environment running kernelhub, sorted by name.

    As `pip list` sees them: the first of each name on sys.path.
    """
    from importlib.metadata import distributions

    found: dict[str, Package] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            package = Package(name, dist.version)
            found.setdefault(package.key, package)
    return sorted(found.values(), key=lambda p: p.key)


def diff_packages(runtime: list[Package], local: list[Package]) -> list[Difference]:
    """The packages only in one of the two, or at different versions, sorted by name."""
    ours = {p.key: p for p in runtime}
    theirs = {p.key: p for p in local}
    return [
        Difference(ours.get(key), theirs.get(key))
        for key in sorted(ours.keys() | theirs.keys())
        if key not in ours or key not in theirs or ours[key].version != theirs[key].version
    ]


def format_difference(difference: Difference) -> str:
    """`- name==1 (runtime)`, `+ name==2 (local)`, or both on one line for a version change."""
    parts = []
    if difference.runtime is not None:
        parts.append(f"- {difference.runtime} (runtime)")
    if difference.local is not None:
        parts.append(f"+ {difference.local} (local)")
    return "  ".join(parts)


def summarize_differences(differences: list[Difference], runtime: list[Package]) -> str:
    changed = sum(1 for d in differences if d.runtime is not None and d.local is not None)
    only_runtime = sum(1 for d in differences if d.local is None)
    only_local = sum(1 for d in differences if d.runtime is None)
    same = len(runtime) - changed - only_runtime
    return (
        f"{changed} at other versions, {only_runtime} only in the runtime (-), "
        f"{only_local} only local (+), {same} the same"
    )
