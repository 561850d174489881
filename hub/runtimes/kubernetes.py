"""Runtime types as zero-to-jupyterhub profiles: `kernelhub kubernetes profiles`.

kernelhub has no Kubernetes backend (README, "Scaling out"). This module renders its
runtime catalog as the Helm chart's values, so a cluster run by zero-to-jupyterhub
offers the same runtime types with the same limits, GPUs and drives. Field names are
KubeSpawner's (``profile_list``, ``kubespawner_override``) and the chart's
(``singleuser.profileList``, ``singleuser.storage``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable, Mapping
from html import escape
from pathlib import Path
from typing import Any

import click
from traitlets import Dict, List, TraitError, Unicode, validate
from traitlets.config import Config, Configurable

from kernelhub.clients.options import config_file_option, data_dir_option
from kernelhub.contract import CPU_LIMIT_LABEL, RUNTIME_TYPE_ENV, RUNTIME_TYPE_LABEL
from kernelhub.runtimes.catalog import RuntimeCatalog, user_group_names
from kernelhub.runtimes.types import RuntimeType, group_permission
from kernelhub.spawner.form import limits_text

HOME_MOUNT = "/home/jovyan"  # where every kernelhub backend mounts the user's drive
GPU_RESOURCE = "nvidia.com/gpu"  # what NVIDIA's device plugin advertises on each node
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany", "ReadOnlyMany")
_QUANTITY = re.compile(r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
_BYTES = re.compile(r"\d+(\.\d+)?")  # a memory limit without a unit: bytes

Profile = dict[str, Any]
# a runtime container's securityContext: no capabilities, the default seccomp profile,
# never root; what Pod Security Admission's "restricted" level requires of a container
LOCKED_DOWN: dict[str, Any] = {
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


class KubernetesConfigError(ValueError):
    """The catalog cannot be offered on Kubernetes as configured; the message says why."""


class KubernetesProfiles(Configurable):
    """How runtime types become KubeSpawner profiles (``c.KubernetesProfiles`` in
    kernelhub_config.py, read by `kernelhub kubernetes profiles`)."""

    image_prefix = Unicode(
        "",
        help="""Put before each runtime type's image, e.g. "registry.internal:5000/":
        cluster nodes pull images from a registry, where the Docker backend finds them
        on its one engine. Empty: the images as the catalog names them.""",
    ).tag(config=True)

    gpu_resource = Unicode(
        GPU_RESOURCE,
        help="""The extended resource a GPU runtime asks for. NVIDIA's device plugin
        advertises nvidia.com/gpu and gives each pod whole GPUs of its own.""",
    ).tag(config=True)

    shared_gpu_resource = Unicode(
        GPU_RESOURCE,
        help="""The resource a runtime type with gpu_sharing asks for. With the device
        plugin's time-slicing and renameByDefault, shared replicas are advertised as
        nvidia.com/gpu.shared: name that here to keep exclusive and shared GPUs apart.""",
    ).tag(config=True)

    gpu_node_selector = Dict(
        help="""Node labels GPU runtimes must land on, e.g.
        {"nvidia.com/gpu.present": "true"} (GPU feature discovery). Empty: wherever the
        scheduler finds a free GPU resource, which already means a GPU node.""",
    ).tag(config=True)

    gpu_tolerations = List(
        Dict(),
        help="""Tolerations of GPU runtimes, for GPU nodes tainted against other pods
        (e.g. {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}).
        KubeSpawner replaces its tolerations with these for a GPU profile, so repeat
        the chart's own (scheduling.userPods.tolerations) here. Empty: none set.""",
    ).tag(config=True)

    launcher = Unicode(
        "kernelhub-runtime",
        help="""The command that starts each runtime's server. kernelhub's images carry
        kernelhub-runtime: jupyterhub-singleuser under `python3 -s`, so nothing the user
        installs on their drive is imported by the server. Empty: the chart's
        singleuser.cmd.""",
    ).tag(config=True)

    drive_name_template = Unicode(
        "kernelhub-drive-{username}",
        help="""Name of each user's PersistentVolumeClaim, mounted at /home/jovyan in
        every runtime of that user. Per user, not per server: a user's runtimes share
        one drive, as with the Docker backend.""",
    ).tag(config=True)

    drive_capacity = Unicode("10Gi", help="Size of each user's drive (a quantity).").tag(
        config=True
    )

    drive_storage_class = Unicode(
        None, allow_none=True, help="StorageClass of drives. None: the cluster's default."
    ).tag(config=True)

    drive_access_modes = List(
        Unicode(),
        ["ReadWriteOnce"],
        help="""Access modes of drives. ReadWriteOnce pins a user's runtimes to the node
        holding the drive; ReadWriteMany (NFS, CephFS) lets them run on any node.""",
    ).tag(config=True)

    @validate("drive_capacity")
    def _check_capacity(self, proposal: Any) -> str:
        if not _QUANTITY.fullmatch(proposal.value):
            raise TraitError(
                f"KubernetesProfiles.drive_capacity must be a quantity like '10Gi', "
                f"got {proposal.value!r}"
            )
        return str(proposal.value)

    @validate("drive_access_modes")
    def _check_access_modes(self, proposal: Any) -> list[str]:
        wrong = [mode for mode in proposal.value if mode not in ACCESS_MODES]
        if wrong or not proposal.value:
            raise TraitError(
                f"KubernetesProfiles.drive_access_modes must be some of "
                f"{', '.join(ACCESS_MODES)}, got {list(proposal.value)!r}"
            )
        return list(proposal.value)

    def profile(self, runtime_type: RuntimeType, default: bool = False) -> Profile:
        """One KubeSpawner profile: a runtime type with its limits, GPUs and image."""
        if not runtime_type.image:
            raise KubernetesConfigError(
                f"runtime type {runtime_type.name!r} names no image: give it one that "
                "the cluster's nodes can pull"
            )
        limits = limits_text(runtime_type.mem_limit, runtime_type.cpu_limit, runtime_type.gpus)
        description = " ".join(filter(None, [runtime_type.description, f"{limits}."]))
        gpu_resources = {self.gpu_resource, self.shared_gpu_resource}
        resource = self.shared_gpu_resource if runtime_type.gpu_sharing else self.gpu_resource
        # overrides of dict settings are merged into the spawner's own dicts, which
        # outlive one spawn, and a None removes a key: each profile clears what another
        # profile may have left (a GPU limit, or the "no GPU" variable)
        gpu_limits: dict[str, str | None] = dict.fromkeys(sorted(gpu_resources))
        if runtime_type.gpus:
            gpu_limits[resource] = str(runtime_type.gpus)
        override: dict[str, Any] = {"image": self.image_prefix + runtime_type.image}
        if self.launcher:
            override["cmd"] = [self.launcher]
        memory = _memory(runtime_type.mem_limit)
        if memory is not None:
            # guarantee = limit: the scheduler reserves all a runtime may use, as a
            # runtime type promises; overcommitted nodes would OOM-kill neighbours
            override["mem_limit"] = override["mem_guarantee"] = memory
        if runtime_type.cpu_limit is not None:
            override["cpu_limit"] = override["cpu_guarantee"] = runtime_type.cpu_limit
        override["extra_resource_limits"] = gpu_limits
        override["environment"] = {
            RUNTIME_TYPE_ENV: runtime_type.name,
            # the NVIDIA runtime shows every GPU to a container whose image says
            # NVIDIA_VISIBLE_DEVICES=all (CUDA images do) unless the pod says otherwise;
            # the device plugin sets it for pods it gave GPUs to
            "NVIDIA_VISIBLE_DEVICES": None if runtime_type.gpus else "void",
        }
        override["extra_labels"] = {
            RUNTIME_TYPE_LABEL: runtime_type.name,
            CPU_LIMIT_LABEL: f"{runtime_type.cpu_limit:g}" if runtime_type.cpu_limit else "",
        }
        if self.gpu_node_selector:
            selector = dict(self.gpu_node_selector) if runtime_type.gpus else {}
            override["node_selector"] = {
                key: selector.get(key) for key in sorted(self.gpu_node_selector)
            }
        if runtime_type.gpus and self.gpu_tolerations:
            override["tolerations"] = [dict(t) for t in self.gpu_tolerations]
        profile: Profile = {
            "slug": runtime_type.name,
            # KubeSpawner's form template puts both into the page unescaped
            "display_name": escape(runtime_type.display_name),
            "description": escape(description),
        }
        if default:
            profile["default"] = True
        profile["kubespawner_override"] = override
        return profile

    def profile_list(self, catalog: RuntimeCatalog) -> list[Profile]:
        """Every runtime type of ``catalog``, in its order, the default marked."""
        return [self.profile(t, t.name == catalog.default_runtime) for t in catalog.types]

    def storage(self) -> dict[str, Any]:
        """The chart's ``singleuser.storage``: one PersistentVolumeClaim per user."""
        dynamic: dict[str, Any] = {
            "pvcNameTemplate": self.drive_name_template,
            "volumeNameTemplate": "drive",
            "storageAccessModes": list(self.drive_access_modes),
        }
        if self.drive_storage_class is not None:
            dynamic["storageClass"] = self.drive_storage_class
        return {
            "type": "dynamic",
            "capacity": self.drive_capacity,
            "homeMountPath": HOME_MOUNT,
            "dynamic": dynamic,
        }

    def values(self, catalog: RuntimeCatalog) -> dict[str, Any]:
        """The Helm values fragment: profiles, drives, and what keeps drives alive."""
        hub: dict[str, Any] = {
            # KubeSpawner deletes a server's claim with the server; a drive is the
            # user's, shared by all their servers, and only an admin deletes it
            "config": {
                "KubeSpawner": {
                    "delete_pvc": False,
                    # what the Docker backend's locked-down containers get (the chart
                    # already sets allowPrivilegeEscalation false and uid 1000, jovyan's)
                    "container_security_context": copy.deepcopy(LOCKED_DOWN),
                }
            },
        }
        restricted = restricted_groups(catalog.types)
        if restricted:
            hub["extraConfig"] = {"kernelhub-runtime-groups.py": group_filter_config(restricted)}
        return {
            "hub": hub,
            "singleuser": {"profileList": self.profile_list(catalog), "storage": self.storage()},
        }


def _memory(mem_limit: str | None) -> str | int | None:
    """A catalog memory limit as KubeSpawner's ByteSpecification takes it: a unit
    suffix (K, M, G, T: powers of 1024, as Docker reads them) or whole bytes."""
    if mem_limit is not None and _BYTES.fullmatch(mem_limit):
        return int(float(mem_limit))
    return mem_limit


# ---- group-restricted runtime types ------------------------------------------------------
# KubeSpawner has no per-profile group list. Its profile_list may be a callable taking the
# spawner; KubeSpawner calls it for the form and again to validate every spawn's
# user_options, so a profile left out is refused even when asked for over the REST API.
# Unlike kernelhub's own form (which shows a closed type disabled, with its reason), a
# closed profile is hidden.


def restricted_groups(types: Iterable[RuntimeType]) -> dict[str, list[str]]:
    """Slug -> the groups allowed it, for the runtime types open to some groups only."""
    return {t.name: list(t.allowed_groups) for t in types if t.allowed_groups}


def permitted_profiles(
    profiles: list[Profile], catalog_types: Iterable[RuntimeType], user_groups: Iterable[str]
) -> list[Profile]:
    """The profiles one user may start, by kernelhub's own rule (``group_permission``)."""
    groups = list(user_groups)
    closed = {t.name for t in catalog_types if not group_permission(t, groups).available}
    permitted = [p for p in profiles if p["slug"] not in closed]
    if not permitted:
        # an empty list would make KubeSpawner spawn its bare defaults: refuse instead
        raise ValueError("no runtime type is open to this user's groups")
    return permitted


def group_filtered_profile_list(
    profiles: list[Profile], catalog_types: Iterable[RuntimeType]
) -> Callable[[Any], list[Profile]]:
    """A callable for ``c.KubeSpawner.profile_list`` in a hub that has kernelhub."""
    types = list(catalog_types)

    def profile_list(spawner: Any) -> list[Profile]:
        return permitted_profiles(profiles, types, user_group_names(spawner.user))

    return profile_list


_GROUP_FILTER = """\
# kernelhub: runtime types open to some groups only (`kernelhub kubernetes profiles`).
# The chart's hub has no kernelhub: this is kernelhub's group_permission rule.
_kernelhub_groups = {groups}
_kernelhub_profiles = list(c.KubeSpawner.profile_list)


def _kernelhub_profile_list(spawner):
    mine = {{group.name for group in spawner.user.groups}}
    permitted = [
        profile
        for profile in _kernelhub_profiles
        if profile["slug"] not in _kernelhub_groups
        or mine & set(_kernelhub_groups[profile["slug"]])
    ]
    if not permitted:  # an empty list would spawn KubeSpawner's bare defaults
        raise ValueError("no runtime type is open to this user's groups")
    return permitted


c.KubeSpawner.profile_list = _kernelhub_profile_list
"""


def group_filter_config(restricted: Mapping[str, list[str]]) -> str:
    """``hub.extraConfig`` code that makes the chart's profileList a per-user callable."""
    return _GROUP_FILTER.format(groups=repr(dict(restricted)))


# ---- `kernelhub kubernetes profiles` ---------------------------------------------------------


def _yaml(values: Mapping[str, Any]) -> str:
    """PyYAML's safe dump, writing multi-line strings (the extraConfig code) as blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
        return dumper.represent_scalar(
            "tag:yaml.org,2002:str", data, style="|" if "\n" in data else None
        )

    Dumper.add_representer(str, text)
    return yaml.dump(dict(values), Dumper=Dumper, sort_keys=False, allow_unicode=True)


def load_kernelhub_config(data_dir: Path, config_file: Path | None) -> Config:
    """The config file `kernelhub up` would read: --config, else DATA_DIR's if present."""
    from kernelhub.launcher.up import CONFIG_FILE_NAME, StartupError, load_config_file

    path = config_file
    if path is None and (data_dir.expanduser() / CONFIG_FILE_NAME).exists():
        path = data_dir.expanduser() / CONFIG_FILE_NAME
    if path is None:
        return Config()
    try:
        return load_config_file(path.resolve())
    except StartupError as e:
        raise click.ClickException(str(e)) from None


def render_values(config: Config, fmt: str) -> str:
    """The values fragment for ``config``, as YAML or JSON; one-line errors."""
    try:
        catalog = RuntimeCatalog(config=config)
        values = KubernetesProfiles(config=config).values(catalog)
    except TraitError as e:  # the catalog's own words, as `kernelhub up` says them
        raise click.ClickException(f"invalid configuration: {e}") from None
    except KubernetesConfigError as e:
        raise click.ClickException(str(e)) from None
    if fmt == "json":
        return json.dumps(values, indent=2) + "\n"
    return _yaml(values)


@click.group()
def kubernetes() -> None:
    """Kubernetes: runtime types as zero-to-jupyterhub Helm values."""


@kubernetes.command()
@data_dir_option("The hub's data directory, whose kernelhub_config.py is read when present.")
@config_file_option("kernelhub_config.py: the runtime catalog and c.KubernetesProfiles settings.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="Output format (JSON is YAML too: helm takes either).",
)
def profiles(data_dir: Path, config_file: Path | None, fmt: str) -> None:
    """Print zero-to-jupyterhub values: singleuser.profileList and storage from the
    runtime catalog (`helm upgrade ... --values FILE`)."""
    click.echo(render_values(load_kernelhub_config(data_dir, config_file), fmt), nl=False)
