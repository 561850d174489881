"""The GPU runtime image, built and checked on a machine without a GPU.

`scripts/dev test` builds `kernelhub/runtime-gpu` (skipped when it carries the hash of
its sources), so CI proves on every run that the GPU package set installs and imports:
TensorFlow with NVIDIA's CUDA and cuDNN wheels, at the manifest's versions. No GPU
here: TensorFlow finds no device and says so once on stderr, and the seed's check
prints `''`, as on a CPU runtime.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from kernelhub.imagetools import build as img
from kernelhub.runtimes.engine import find_image

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGES_DIR = Path(__file__).resolve().parents[1] / "images"


@pytest.fixture(scope="module")
def gpu_image() -> Iterator[tuple[docker.DockerClient, str]]:
    engine = img.engine()
    plan = img.plan_build(IMAGES_DIR, "gpu")
    image = find_image(engine, plan.tag)
    want = img.wanted_hash(engine, plan)
    assert image is not None and image.labels.get(img.SOURCE_HASH_LABEL) == want, (
        f"{plan.tag} is missing or older than images/: `kernelhub images build gpu` first"
    )
    yield engine, plan.tag
    engine.close()


def run(engine: docker.DockerClient, image: str, command: list[str]) -> tuple[int, str, str]:
    """``command`` in a fresh container of ``image`` as its user, with no network: its
    exit status, stdout and stderr apart."""
    container = engine.containers.create(image, command, network_mode="none")
    try:
        container.start()
        status = int(container.wait(timeout=600)["StatusCode"])
        stdout = container.logs(stdout=True, stderr=False).decode()
        stderr = container.logs(stdout=False, stderr=True).decode()
        return status, stdout, stderr
    finally:
        container.remove(force=True)


def test_the_gpu_image_imports_its_whole_manifest_without_a_gpu(
    gpu_image: tuple[docker.DockerClient, str],
) -> None:
    engine, tag = gpu_image
    status, stdout, stderr = run(engine, tag, ["kernelhub-smoke-test"])
    assert status == 0, stdout + stderr
    lines = stdout.splitlines()
    assert lines[-1] == "kernelhub-smoke-test: ok", lines
    assert "gpu_device_name: ''" in lines
    counts = [line for line in lines if " packages in /opt/kernelhub/packages.txt import" in line]
    assert counts and counts[0].split()[0] == counts[0].split()[2], counts  # "N of N"


def test_the_gpu_image_installs_tensorflow_with_nvidias_cuda_wheels(
    gpu_image: tuple[docker.DockerClient, str],
) -> None:
    engine, tag = gpu_image
    probe = (
        "from importlib.metadata import distributions, version\n"
        "names = sorted(d.metadata['Name'] for d in distributions())\n"
        "print(version('tensorflow'))\n"
        "print(sum(n.startswith('nvidia-') for n in names))\n"
        "print(open('/opt/kernelhub/packages.txt').read())"
    )
    status, stdout, stderr = run(engine, tag, ["python3", "-c", probe])
    assert status == 0, stderr
    tensorflow, nvidia_wheels, *manifest = stdout.splitlines()
    assert f"tensorflow[and-cuda]=={tensorflow}" in manifest
    assert int(nvidia_wheels) >= 5  # cuDNN, cuBLAS, the CUDA runtime, NCCL, ...
