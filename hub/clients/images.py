"""`kernelhub images bootstrap-base|build|packages|diff`: the Docker images runtimes run in."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kernelhub.imagetools import build as img
from kernelhub.imagetools import packages as pkgs
from kernelhub.imagetools.checkout import IMAGES_DIR_ENV, NoCheckout, default_images_dir
from kernelhub.runtimes.engine import find_image

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image


def _progress(line: str) -> None:
    click.echo(line, err=True)


def _engine() -> docker.DockerClient:
    try:
        return img.engine()
    except img.ImageError as e:
        raise click.ClickException(str(e)) from None


def _remove_replaced(client: docker.DockerClient, old: Image | None, new: Image) -> None:
    """Remove the image a tag pointed to before, unless containers or images still use it."""
    import docker.errors

    if old is None or old.id == new.id:
        return
    try:
        client.images.remove(old.id)
        _progress(f"removed the replaced image {old.short_id}")
    except docker.errors.APIError:
        _progress(f"kept the replaced image {old.short_id}: a container or image still uses it")


@click.group()
def images() -> None:
    """Build the Docker images that runtimes run in."""


@images.command("bootstrap-base")
@click.option("--suite", default=img.DEFAULT_SUITE, show_default=True, help="Debian suite.")
@click.option("--tag", default=img.DEFAULT_BASE_TAG, show_default=True, help="Image tag.")
@click.option(
    "--mirror",
    envvar="KERNELHUB_DEBIAN_MIRROR",
    default=None,
    help="Debian mirror URL for debootstrap (env KERNELHUB_DEBIAN_MIRROR; "
    "default: debootstrap's own).",
)
@click.option("--force", is_flag=True, help="Replace the image if the tag already exists.")
def bootstrap_base(suite: str, tag: str, mirror: str | None, force: bool) -> None:
    """Make the Debian base image with debootstrap.

    A minbase system, slimmed like Debian's -slim images, imported as TAG.
    Needs root and debootstrap. Runtime Dockerfiles start FROM this image, so
    nothing is pulled from a registry.
    """
    client = _engine()
    existing = find_image(client, tag)
    if existing is not None and not force:
        click.echo(f"{tag} already exists ({img.describe(existing)}); --force replaces it")
        return
    started = time.monotonic()
    try:
        image = img.bootstrap_base(client, suite, tag, mirror, _progress)
    except img.ImageError as e:
        raise click.ClickException(str(e)) from None
    elapsed = time.monotonic() - started
    _remove_replaced(client, existing, image)
    click.echo(f"imported {tag} ({img.describe(image)}) in {elapsed:.1f}s")


@images.command("build")
@click.argument("name", metavar=f"{{{'|'.join(img.BUILDABLE)}}}")
@click.option(
    "--ca-bundle",
    envvar="KERNELHUB_CA_BUNDLE",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA certificates pip trusts inside the build, passed as the build secret `cacert` "
    "(env KERNELHUB_CA_BUNDLE; default /etc/ssl/certs/ca-certificates.crt if present). "
    "Behind a TLS-inspecting proxy, give a bundle that holds the proxy's root.",
)
@click.option(
    "--images-dir",
    envvar=IMAGES_DIR_ENV,
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of image definitions: the build context, with NAME/Dockerfile in it "
    f"(env {IMAGES_DIR_ENV}; default: images/ of the kernelhub checkout at or above the "
    "current directory, or of the one kernelhub is installed from).",
)
@click.option("--force", is_flag=True, help="Build even if the image is up to date.")
def build(name: str, ca_bundle: Path | None, images_dir: Path | None, force: bool) -> None:
    """Build runtime image NAME (kernelhub/runtime-NAME:latest).

    The Dockerfile is images/NAME/Dockerfile, the build context images/.
    Skipped when the image exists and its source-hash label matches
    the image's files and base image. Runs `docker build` with BuildKit; the
    host's HTTP(S)_PROXY/NO_PROXY variables are passed on as build args.
    """
    try:
        plan = img.plan_build(images_dir or default_images_dir(), name)
    except (img.ImageError, NoCheckout) as e:
        raise click.ClickException(str(e)) from None
    client = _engine()
    started = time.monotonic()
    try:
        bundle = img.ca_bundle_for_pip(ca_bundle)
        want = img.wanted_hash(client, plan)
        current = find_image(client, plan.tag)
        if current is not None and current.labels.get(img.SOURCE_HASH_LABEL) == want and not force:
            click.echo(f"{plan.tag} is up to date ({img.describe(current)}); --force rebuilds it")
            return
        click.echo(
            f"building {plan.tag} from {plan.dockerfile} "
            f"(CA bundle for pip: {bundle or 'none, pip uses its own'})",
            err=True,
        )
        image = img.build_image(client, plan, want, bundle, _progress)
    except img.ImageError as e:
        raise click.ClickException(str(e)) from None
    _remove_replaced(client, current, image)
    elapsed = time.monotonic() - started
    click.echo(f"built {plan.tag} ({img.describe(image)}) in {elapsed:.1f}s")


NAME_ARGUMENT = click.argument("name", metavar=f"{{{'|'.join(img.IMAGE_NAMES)}}}")


def _runtime_packages(name: str) -> list[pkgs.Package]:
    if name not in img.IMAGE_NAMES:  # before the engine: a typo needs no Docker
        raise click.ClickException(
            f"unknown image {name!r}: choose one of {', '.join(img.IMAGE_NAMES)}"
        )
    client = _engine()
    try:
        return pkgs.runtime_packages(client, name)
    except img.ImageError as e:
        raise click.ClickException(str(e)) from None


@images.command("packages")
@NAME_ARGUMENT
def packages(name: str) -> None:
    """List the Python packages of runtime image NAME, in pip freeze form.

    Runs `python -m pip list --format=freeze` in a throwaway container of
    kernelhub/runtime-NAME:latest (no network; removed afterwards).
    """
    for package in _runtime_packages(name):
        click.echo(str(package))


@images.command("diff")
@NAME_ARGUMENT
def diff(name: str) -> None:
    """Compare runtime image NAME's Python packages with this environment's.

    This environment is the Python running kernelhub. `- name==version (runtime)`
    is only in the image, `+ name==version (local)` only here; a package at two
    versions gets both on one line. A summary ends the list. Differences are no
    error: the exit status is 0.
    """
    runtime = _runtime_packages(name)
    differences = pkgs.diff_packages(runtime, pkgs.local_packages())
    for difference in differences:
        click.echo(pkgs.format_difference(difference))
    click.echo(
        f"{img.runtime_tag(name)} vs {sys.executable}: "
        f"{pkgs.summarize_differences(differences, runtime)}"
    )
