"""The hub's one seam to the Docker engine, for decisions made before spawning.

(Spawning itself goes through DockerSpawner's client, on the shared pool.)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image


@dataclass(frozen=True)
class EngineCheck:
    usable: bool
    reason: str
    bridge_gateway: str = ""
    # the engine manages a swarm: its address there and how many nodes are ready
    swarm_address: str = ""
    swarm_nodes: int = 0


def check_engine(images: list[str], look_for_swarm: bool = False) -> EngineCheck:
    """Does a Docker engine answer, and are the runtime images there? Blocking.

    ``look_for_swarm``: also whether it manages a swarm (``swarm_address``)."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except docker.errors.DockerException as e:
        return EngineCheck(False, f"no Docker engine answered ({_short(e)})")
    try:
        missing = _lacking(client, images)
        if missing:
            return EngineCheck(
                False,
                f"the Docker engine lacks runtime image(s) {', '.join(missing)} "
                "(build them with `kernelhub images build`)",
            )
        ipam = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
        gateway = ipam.get("Gateway") or _first_host(ipam["Subnet"])
        swarm = _swarm_of(client) if look_for_swarm else {}
        if swarm.get("ControlAvailable"):  # a manager: it can place services on any node
            nodes = client.nodes.list(filters={"role": "worker"}) + client.nodes.list(
                filters={"role": "manager"}
            )
            ready = sum(1 for n in nodes if n.attrs.get("Status", {}).get("State") == "ready")
            return EngineCheck(
                True,
                f"the Docker engine manages a swarm of {ready} ready node(s) and has the "
                "runtime images",
                gateway,
                swarm_address=str(swarm.get("NodeAddr") or ""),
                swarm_nodes=ready,
            )
        return EngineCheck(True, "a Docker engine answers and has the runtime images", gateway)
    except (docker.errors.DockerException, KeyError, IndexError) as e:
        return EngineCheck(False, f"the Docker engine could not be inspected ({_short(e)})")
    finally:
        client.close()


def _swarm_of(client: docker.DockerClient) -> dict[str, Any]:
    """The engine's swarm state; {} when it will not say (a socket guard in front of
    it allows only the calls a container spawner makes, and /info is not one)."""
    import docker.errors

    try:
        return dict(client.info().get("Swarm") or {})
    except docker.errors.APIError:
        return {}


def missing_images(images: list[str]) -> list[str]:
    """Which of ``images`` the engine lacks ([] when it cannot be asked). Blocking."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=10)
    except docker.errors.DockerException:
        return []
    try:
        return _lacking(client, images)
    except docker.errors.DockerException:
        return []
    finally:
        client.close()


def find_image(client: docker.DockerClient, tag: str) -> Image | None:
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def _first_host(subnet: str) -> str:
    # the default bridge often lists only its subnet; the engine gives the host
    # side of the bridge the subnet's first address
    return str(next(ipaddress.ip_network(subnet).hosts()))


def _lacking(client: docker.DockerClient, images: list[str]) -> list[str]:
    return [image for image in images if find_image(client, image) is None]


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:200]
