"""Runtime images: a Debian base image from debootstrap, and kernelhub's runtime images.

No registry is needed. The engine is reached through the docker SDK, except for two
subprocesses: `tar` into the SDK's image import, and `docker build` (BuildKit, for the
`cacert` build secret). A built image's label SOURCE_HASH_LABEL covers its
folder, `images/common/` and its base images' IDs; a build with a matching label is skipped.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kernelhub.contract import SOURCE_HASH_LABEL
from kernelhub.imagetools.checkout import IMAGES_DIR_ENV
from kernelhub.runtimes.engine import find_image

if TYPE_CHECKING:  # the SDK is imported when used: `kernelhub` starts faster without it
    import docker
    from docker.models.images import Image

IMAGE_NAMES = ("test", "cpu", "gpu")  # runtime images: images/NAME, tag kernelhub/runtime-NAME
# the deployments' own images (registry: the swarm's; swarm-node: the swarm tests' workers)
SERVICE_NAMES = ("hub", "docker-proxy", "ci-postgres", "registry", "swarm-node")
BUILDABLE = IMAGE_NAMES + SERVICE_NAMES

DEFAULT_BASE_TAG = "debian:bookworm-slim"
DEFAULT_SUITE = "bookworm"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Builds read a checkout (checkout.py finds it): the images folder, and its parent for the
# sources beside it; never this file's location, which a wheel puts in site-packages.
# Runtime Dockerfiles that mount common/wheels install kernelhub-snippets from the wheel
# this script of the checkout builds there (on the host, where Node.js is), only when its
# sources changed.
SNIPPETS_WHEELS = "common/wheels"
SNIPPETS_WHEEL_SCRIPT = Path("snippets/scripts/build-wheel")
# the hub image (images/hub/Dockerfile) is built from the repository itself
HUB_SOURCES = ("hub", "spawner", "quotas", "pyproject.toml", "README.md", "images/hub")
# forwarded to `docker build` when set: Docker's predefined build args, kept out of the image
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
# `docker import` starts an image with no command; the official Debian images run bash
BASE_CHANGES = ['CMD ["bash"]']
# what Debian's -slim images leave out, for the base and for every package installed later
SLIM_DPKG_CFG = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""
# emptied in the base image; apt recreates its folders
SLIM_CLEAR = ["usr/share/man", "usr/share/info", "usr/share/locale"]
SLIM_CLEAR += ["var/lib/apt/lists", "var/cache/apt"]

FROM_LINE = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.I | re.M)

Echo = Callable[[str], None]


class ImageError(Exception):
    """A failure with a one-line message for the user."""


def runtime_tag(name: str) -> str:
    return f"kernelhub/runtime-{name}:latest"


def image_tag(name: str) -> str:
    return f"kernelhub/{name}:latest" if name in SERVICE_NAMES else runtime_tag(name)


def engine() -> docker.DockerClient:
    """The Docker engine's client, or an ImageError saying why it cannot be reached."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise ImageError(
            f"cannot reach the Docker engine at {where} ({_reason(e)}): is dockerd running, "
            "and may this user use it?"
        ) from None
    return client


def _reason(error: Exception) -> str:
    """The innermost cause in a docker SDK error's message (an OS error, mostly)."""
    text = str(error).removeprefix("Error while fetching server API version: ")
    inner = re.search(r"\[Errno \d+\] ([^\"')]+)|Error\(\d+, '([^']+)'\)", text)
    if inner:
        return inner.group(1) or inner.group(2)
    return text.splitlines()[0] if text else type(error).__name__


def describe(image: Image) -> str:
    size_mb = image.attrs.get("Size", 0) / 1e6
    return f"{image.short_id.removeprefix('sha256:')}, {size_mb:.0f} MB"


# ---- the base image ---------------------------------------------------------------


def bootstrap_base(
    client: docker.DockerClient, suite: str, tag: str, mirror: str | None, echo: Echo
) -> Image:
    """debootstrap --variant=minbase SUITE, slimmed, imported into the engine as TAG."""
    if shutil.which("debootstrap") is None:
        raise ImageError(
            "debootstrap is not installed (on Debian/Ubuntu: apt-get install debootstrap)"
        )
    if os.geteuid() != 0:
        raise ImageError("debootstrap needs root: run `kernelhub images bootstrap-base` as root")
    rootfs = Path(tempfile.mkdtemp(prefix="kernelhub-rootfs-"))
    try:
        cmd = ["debootstrap", "--variant=minbase", suite, str(rootfs)]
        if mirror:
            cmd.append(mirror)
        echo(f"$ {' '.join(cmd)}")
        if _stream(cmd, echo) != 0:
            raise ImageError(f"debootstrap failed for suite {suite!r} (its log is above)")
        _slim(rootfs)
        echo(f"importing {rootfs} as {tag}")
        _import_rootfs(client, rootfs, tag)
    finally:
        _remove_rootfs(rootfs, echo)
    return client.images.get(tag)


def _slim(rootfs: Path) -> None:
    (rootfs / "etc/dpkg/dpkg.cfg.d/kernelhub-slim").write_text(SLIM_DPKG_CFG)
    for folder in SLIM_CLEAR:
        shutil.rmtree(rootfs / folder, ignore_errors=True)
        (rootfs / folder).mkdir(parents=True, exist_ok=True)
    for path in list((rootfs / "usr/share/doc").glob("*/*")):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name != "copyright":
            path.unlink(missing_ok=True)


def _import_rootfs(client: docker.DockerClient, rootfs: Path, tag: str) -> None:
    repository, version = tag, "latest"
    if ":" in tag.rsplit("/", 1)[-1]:
        repository, version = tag.rsplit(":", 1)
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert tar.stdout is not None
    try:
        chunks = iter(lambda: tar.stdout.read(1 << 20), b"")  # type: ignore[union-attr]
        client.api.import_image_from_stream(
            chunks, repository=repository, tag=version, changes=BASE_CHANGES
        )
    finally:
        tar.stdout.close()
        if tar.wait() != 0:
            raise ImageError(f"tar of {rootfs} failed (exit {tar.returncode})")


def _stream(cmd: list[str], echo: Echo, env: dict[str, str] | None = None) -> int:
    """Run ``cmd``, passing its output (stdout and stderr) to ``echo`` line by line."""
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            echo(line.rstrip("\n"))
    return process.returncode


def _remove_rootfs(rootfs: Path, echo: Echo) -> None:
    # debootstrap mounts /proc and /sys in the target; never delete through a mount
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    if any(f" {rootfs}/" in line or f" {rootfs} " in line for line in mounts):
        echo(f"warning: {rootfs} still has mounts below it; left in place")
        return
    shutil.rmtree(rootfs, ignore_errors=True)


# ---- runtime images ---------------------------------------------------------------


@dataclass(frozen=True)
class BuildPlan:
    tag: str
    dockerfile: Path
    context: Path  # images/, or the repository for the hub image
    source_hash: str
    base_images: tuple[str, ...]


def plan_build(images_dir: Path, name: str) -> BuildPlan:
    """What building image NAME means; ImageError for unknown or missing ones."""
    if name not in BUILDABLE:
        raise ImageError(f"unknown image {name!r}: choose one of {', '.join(BUILDABLE)}")
    if not images_dir.is_dir():
        raise ImageError(
            f"images folder {images_dir} does not exist (--images-dir, {IMAGES_DIR_ENV}: "
            "a kernelhub checkout's images/ folder)"
        )
    dockerfile = images_dir / name / "Dockerfile"
    if name == "hub":
        context = images_dir.parent
        sources = [context / source for source in HUB_SOURCES]
        missing = [str(source) for source in sources if not source.exists()]
        if missing:
            raise ImageError(
                f"the hub image is built from a kernelhub checkout, which {context} is not "
                f"({', '.join(missing)} missing): --images-dir must be the images/ folder of one"
            )
    else:
        context = images_dir
        sources = [images_dir / name]
        if name in IMAGE_NAMES:
            sources.append(images_dir / "common")
    if not dockerfile.is_file():
        raise ImageError(f"image {name!r} has no Dockerfile yet ({dockerfile} is missing)")
    if SNIPPETS_WHEELS in dockerfile.read_text():  # before hashing: the wheel is a source
        _build_snippets_wheel(images_dir.parent, images_dir / SNIPPETS_WHEELS)
    stages: set[str] = set()
    bases: list[str] = []  # images FROM names that are not earlier stages
    for image, stage in FROM_LINE.findall(dockerfile.read_text()):
        if image.lower() != "scratch" and image not in stages:
            bases.append(image)
        stages.add(stage)
    return BuildPlan(
        tag=image_tag(name),
        dockerfile=dockerfile,
        context=context,
        source_hash=_hash_sources(context, sources),
        base_images=tuple(dict.fromkeys(bases)),
    )


def _build_snippets_wheel(checkout: Path, dest: Path) -> None:
    """CHECKOUT/snippets/scripts/build-wheel DEST with this Python (and its `jupyter`);
    its progress goes to stderr, and it does nothing when the wheel is up to date."""
    script = checkout / SNIPPETS_WHEEL_SCRIPT
    if not script.is_file():
        raise ImageError(
            f"this image installs kernelhub-snippets, built by {script}, which is missing: "
            "--images-dir must be the images/ folder of a kernelhub checkout"
        )
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PYTHON": sys.executable}
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])
    done = subprocess.run([str(script), str(dest)], env=env, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise ImageError(
            f"could not build the kernelhub-snippets wheel into {dest} "
            f"({SNIPPETS_WHEEL_SCRIPT} exit {done.returncode}; log above)"
        )


def _hash_sources(context: Path, sources: list[Path]) -> str:
    digest = hashlib.sha256()
    files: list[Path] = []
    for source in sources:
        files += [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
    for path in sorted(files):
        if "__pycache__" in path.parts:
            continue
        digest.update(f"{path.relative_to(context)}\0{path.stat().st_mode & 0o111:o}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def wanted_hash(client: docker.DockerClient, plan: BuildPlan) -> str:
    """The plan's source hash joined with the IDs of its base images, which must exist."""
    digest = hashlib.sha256(plan.source_hash.encode())
    for base in plan.base_images:
        image = find_image(client, base)
        if image is None:
            hint = " (`kernelhub images bootstrap-base`)" if base == DEFAULT_BASE_TAG else ""
            raise ImageError(f"base image {base} of {plan.tag} is not in the engine{hint}")
        digest.update(f"\0{base}\0{image.id}".encode())
    return digest.hexdigest()


def ca_bundle_for_pip(given: Path | None) -> Path | None:
    """The CA bundle to pass as the `cacert` secret: the one given, else the system's."""
    if given is None:
        return SYSTEM_CA_BUNDLE if SYSTEM_CA_BUNDLE.is_file() else None
    if not given.is_file():
        raise ImageError(f"CA bundle {given} does not exist (--ca-bundle, KERNELHUB_CA_BUNDLE)")
    return given


def buildkit_cli() -> str:
    """The first `docker` on PATH that can run BuildKit builds.

    A CLI before 23.0 has BuildKit built in (DOCKER_BUILDKIT=1); later ones need the
    buildx plugin and refuse `DOCKER_BUILDKIT=1 docker build` without it.
    """
    found = []
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        cli = shutil.which("docker", path=folder or ".")
        if cli is None or cli in found:
            continue
        found.append(cli)
        version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=False)
        match = re.search(r"version (\d+)\.", version.stdout)
        if match and int(match.group(1)) < 23:
            return cli
        buildx = subprocess.run([cli, "buildx", "version"], capture_output=True, check=False)
        if buildx.returncode == 0:
            return cli
    if not found:
        raise ImageError("the docker command is not installed (builds run `docker build`)")
    raise ImageError(
        f"no docker command on PATH can run BuildKit builds ({', '.join(found)}): "
        "install the buildx plugin (docker-buildx or docker-buildx-plugin package)"
    )


def build_image(
    client: docker.DockerClient, plan: BuildPlan, want: str, ca_bundle: Path | None, echo: Echo
) -> Image:
    """`docker build` with BuildKit, its output passed line by line to ``echo``."""
    docker_cli = buildkit_cli()
    cmd = [docker_cli, "build", "--progress=plain", "--file", str(plan.dockerfile)]
    cmd += ["--tag", plan.tag, "--label", f"{SOURCE_HASH_LABEL}={want}"]
    if ca_bundle is not None:
        cmd += ["--secret", f"id=cacert,src={ca_bundle}"]
    cmd += [arg for var in PROXY_VARIABLES if var in os.environ for arg in ("--build-arg", var)]
    cmd.append(str(plan.context))
    returncode = _stream(cmd, echo, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    if returncode != 0:
        raise ImageError(f"docker build of {plan.tag} failed (exit {returncode}; log above)")
    image = client.images.get(plan.tag)
    if image.labels.get(SOURCE_HASH_LABEL) != want:
        raise ImageError(
            f"{plan.tag} was built but does not carry the expected {SOURCE_HASH_LABEL}"
        )
    return image
