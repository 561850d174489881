"""`kernelhub kubernetes profiles`: the runtime catalog as zero-to-jupyterhub Helm values.

No cluster runs here, and none is faked. The field names are KubeSpawner's
(``profile_list``, ``kubespawner_override``, ``extra_resource_limits``, ``delete_pvc``)
and the chart's (``singleuser.profileList``, ``singleuser.storage``). The memory limits
are read back with JupyterHub's own ByteSpecification, which KubeSpawner's ``mem_limit``
is; the group filter is run as the chart's hub runs ``hub.extraConfig`` code (exec'd
with its config object ``c``); the command runs as a real process.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from docker.utils import parse_bytes
from jupyterhub.traitlets import ByteSpecification
from traitlets import HasTraits, TraitError
from traitlets.config import Config

from kernelhub.runtimes.catalog import RuntimeCatalog
from kernelhub.runtimes.kubernetes import (
    KubernetesConfigError,
    KubernetesProfiles,
    group_filtered_profile_list,
)
from kernelhub.runtimes.types import group_permission

KERNELHUB = str(Path(sys.executable).parent / "kernelhub")

# the default catalog (cpu, gpu), exactly as the chart gets it
DEFAULT_VALUES: dict[str, Any] = {
    "hub": {
        "config": {
            "KubeSpawner": {
                "delete_pvc": False,
                "container_security_context": {
                    "capabilities": {"drop": ["ALL"]},
                    "runAsNonRoot": True,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }
        }
    },
    "singleuser": {
        "profileList": [
            {
                "slug": "cpu",
                "display_name": "None (CPU)",
                "description": "A CPU-only runtime. Good for data wrangling, plotting and "
                "small models. 2 CPU core(s), 4G memory, no GPU.",
                "default": True,
                "kubespawner_override": {
                    "image": "kernelhub/runtime-cpu:latest",
                    "cmd": ["kernelhub-runtime"],
                    "mem_limit": "4G",
                    "mem_guarantee": "4G",
                    "cpu_limit": 2.0,
                    "cpu_guarantee": 2.0,
                    "extra_resource_limits": {"nvidia.com/gpu": None},
                    "environment": {
                        "KERNELHUB_RUNTIME_TYPE": "cpu",
                        "NVIDIA_VISIBLE_DEVICES": "void",
                    },
                    "extra_labels": {
                        "org.kernelhub.runtime-type": "cpu",
                        "org.kernelhub.cpu-limit": "2",
                    },
                },
            },
            {
                "slug": "gpu",
                "display_name": "GPU",
                "description": "A runtime with one dedicated NVIDIA GPU for training and "
                "inference. 4 CPU core(s), 16G memory, 1 GPU(s).",
                "kubespawner_override": {
                    "image": "kernelhub/runtime-gpu:latest",
                    "cmd": ["kernelhub-runtime"],
                    "mem_limit": "16G",
                    "mem_guarantee": "16G",
                    "cpu_limit": 4.0,
                    "cpu_guarantee": 4.0,
                    "extra_resource_limits": {"nvidia.com/gpu": "1"},
                    "environment": {
                        "KERNELHUB_RUNTIME_TYPE": "gpu",
                        "NVIDIA_VISIBLE_DEVICES": None,
                    },
                    "extra_labels": {
                        "org.kernelhub.runtime-type": "gpu",
                        "org.kernelhub.cpu-limit": "4",
                    },
                },
            },
        ],
        "storage": {
            "type": "dynamic",
            "capacity": "10Gi",
            "homeMountPath": "/home/jovyan",
            "dynamic": {
                "pvcNameTemplate": "kernelhub-drive-{username}",
                "volumeNameTemplate": "drive",
                "storageAccessModes": ["ReadWriteOnce"],
            },
        },
    },
}


def catalog_of(*types: dict[str, Any], default: str | None = None) -> RuntimeCatalog:
    config = Config()
    config.RuntimeCatalog.runtime_types = [
        {"image": "kernelhub/runtime-cpu:latest", **t} for t in types
    ]
    if default:
        config.RuntimeCatalog.default_runtime = default
    return RuntimeCatalog(config=config)


def override_of(entry: dict[str, Any], **settings: Any) -> dict[str, Any]:
    profile = KubernetesProfiles(**settings).profile_list(catalog_of({"name": "t", **entry}))[0]
    return dict(profile["kubespawner_override"])


def test_the_default_catalog_renders_exactly_these_values() -> None:
    assert KubernetesProfiles().values(RuntimeCatalog(config=Config())) == DEFAULT_VALUES


class MemoryLimit(HasTraits):
    value = ByteSpecification()  # the trait type of KubeSpawner's mem_limit and mem_guarantee


# runtime type fields -> what its profile overrides (keys not named here are checked absent)
LIMITS = [
    ({"mem_limit": "512M", "cpu_limit": 0.5}, {"mem_limit": "512M", "cpu_limit": 0.5}),
    ({"mem_limit": "1.5G"}, {"mem_limit": "1.5G"}),
    ({"mem_limit": "1073741824"}, {"mem_limit": 1073741824}),  # bytes: no unit letter
    ({"mem_limit": 2048}, {"mem_limit": 2048}),
    ({"cpu_limit": 3}, {"cpu_limit": 3.0}),
    ({}, {}),  # unlimited: the chart's singleuser.memory and .cpu apply
]


@pytest.mark.parametrize(("entry", "expected"), LIMITS)
def test_limits_become_equal_limits_and_guarantees(
    entry: dict[str, Any], expected: dict[str, Any]
) -> None:
    override = override_of(entry)
    for key in ("mem", "cpu"):
        assert override.get(f"{key}_limit") == expected.get(f"{key}_limit")
        assert override.get(f"{key}_guarantee") == expected.get(f"{key}_limit")
    if "mem_limit" in expected:  # KubeSpawner reads the same bytes as the Docker backend
        assert MemoryLimit(value=override["mem_limit"]).value == parse_bytes(
            str(entry["mem_limit"])
        )


SHARED = {"shared_gpu_resource": "nvidia.com/gpu.shared"}  # time-slicing, renameByDefault

# (type fields, KubernetesProfiles settings) -> extra_resource_limits, NVIDIA_VISIBLE_DEVICES
GPUS = [
    ({"gpus": 0}, {}, {"nvidia.com/gpu": None}, "void"),
    ({"gpus": 1}, {}, {"nvidia.com/gpu": "1"}, None),
    ({"gpus": 4}, {}, {"nvidia.com/gpu": "4"}, None),
    ({"gpus": 1, "gpu_sharing": True}, {}, {"nvidia.com/gpu": "1"}, None),
    ({"gpus": 0}, SHARED, {"nvidia.com/gpu": None, "nvidia.com/gpu.shared": None}, "void"),
    ({"gpus": 2}, SHARED, {"nvidia.com/gpu": "2", "nvidia.com/gpu.shared": None}, None),
    (
        {"gpus": 1, "gpu_sharing": True},
        SHARED,
        {"nvidia.com/gpu": None, "nvidia.com/gpu.shared": "1"},
        None,
    ),
]


@pytest.mark.parametrize(("entry", "settings", "limits", "visible"), GPUS)
def test_gpus_become_device_plugin_limits_and_clear_what_another_profile_left(
    entry: dict[str, Any], settings: dict[str, str], limits: dict[str, Any], visible: str | None
) -> None:
    # KubeSpawner merges a profile's dicts into the spawner's, and None removes a key:
    # a GPU limit or "void" left by the previous spawn of the same server is cleared
    override = override_of(entry, **settings)
    assert override["extra_resource_limits"] == limits
    assert override["environment"]["NVIDIA_VISIBLE_DEVICES"] == visible
    assert "extra_resource_guarantees" not in override  # the limit is the request


def test_gpu_node_selector_and_tolerations_go_to_gpu_profiles_only() -> None:
    settings = {
        "gpu_node_selector": {"nvidia.com/gpu.present": "true"},
        "gpu_tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ],
    }
    gpu = override_of({"gpus": 1}, **settings)
    cpu = override_of({"gpus": 0}, **settings)
    assert gpu["node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert gpu["tolerations"] == settings["gpu_tolerations"]
    assert cpu["node_selector"] == {"nvidia.com/gpu.present": None}
    assert "tolerations" not in cpu
    assert "node_selector" not in override_of({"gpus": 1})  # nothing configured, nothing set


def test_images_take_the_registry_prefix_and_a_type_without_one_is_refused() -> None:
    assert override_of({}, image_prefix="registry.internal:5000/")["image"] == (
        "registry.internal:5000/kernelhub/runtime-cpu:latest"
    )
    with pytest.raises(KubernetesConfigError, match="runtime type 'bare' names no image"):
        KubernetesProfiles().profile_list(catalog_of({"name": "bare", "image": None}))


def test_the_server_starts_through_kernelhubs_launcher_unless_told_otherwise() -> None:
    assert override_of({})["cmd"] == ["kernelhub-runtime"]  # python3 -s: no user site
    assert "cmd" not in override_of({}, launcher="")  # the chart's singleuser.cmd


def test_names_and_descriptions_are_escaped_for_kubespawners_unescaped_form() -> None:
    profile = KubernetesProfiles().profile_list(
        catalog_of({"name": "t", "display_name": "<b>GPU</b> & co", "description": "<img src=x>"})
    )[0]
    assert profile["display_name"] == "&lt;b&gt;GPU&lt;/b&gt; &amp; co"
    assert profile["description"].startswith("&lt;img src=x&gt; ")


def test_drives_are_one_claim_per_user_that_outlives_its_servers() -> None:
    values = KubernetesProfiles(
        drive_capacity="50Gi", drive_storage_class="cephfs", drive_access_modes=["ReadWriteMany"]
    ).values(RuntimeCatalog(config=Config()))
    assert values["singleuser"]["storage"] == {
        "type": "dynamic",
        "capacity": "50Gi",
        "homeMountPath": "/home/jovyan",
        "dynamic": {
            "pvcNameTemplate": "kernelhub-drive-{username}",  # {username}: not per server
            "volumeNameTemplate": "drive",
            "storageAccessModes": ["ReadWriteMany"],
            "storageClass": "cephfs",
        },
    }
    assert values["hub"]["config"]["KubeSpawner"]["delete_pvc"] is False


# ---- group-restricted runtime types ----------------------------------------------------------

GROUPED = (
    {"name": "cpu"},
    {"name": "gpu", "gpus": 1, "allowed_groups": ["ml"]},
    {"name": "a100", "gpus": 1, "allowed_groups": ["ml", "research"]},
)

# the user's groups -> the profiles they are offered and may spawn
GROUP_RULES = [
    ([], ["cpu"]),
    (["ml"], ["cpu", "gpu", "a100"]),
    (["research"], ["cpu", "a100"]),
    (["ML"], ["cpu"]),  # group names are compared exactly, as kernelhub does
    (["students", "research"], ["cpu", "a100"]),
]


def spawner_of(groups: list[str]) -> SimpleNamespace:
    user = SimpleNamespace(name="alice", groups=[SimpleNamespace(name=g) for g in groups])
    return SimpleNamespace(user=user)


def chart_filter(values: dict[str, Any]) -> Any:
    """c.KubeSpawner.profile_list after the chart's hub ran the rendered hub.extraConfig."""
    c = Config()
    c.KubeSpawner.profile_list = values["singleuser"]["profileList"]  # as the chart sets it
    for code in values["hub"]["extraConfig"].values():
        exec(code, {"c": c})
    return c.KubeSpawner.profile_list


def group_filters(catalog: RuntimeCatalog) -> dict[str, Any]:
    values = KubernetesProfiles().values(catalog)
    profiles = values["singleuser"]["profileList"]
    return {
        "hub.extraConfig (chart)": chart_filter(values),
        "group_filtered_profile_list (kernelhub)": group_filtered_profile_list(
            profiles, catalog.types
        ),
    }


@pytest.mark.parametrize(("groups", "offered"), GROUP_RULES)
def test_a_restricted_type_is_offered_to_its_groups_only(
    groups: list[str], offered: list[str]
) -> None:
    catalog = catalog_of(*GROUPED, default="gpu")
    for where, profile_list in group_filters(catalog).items():
        slugs = [p["slug"] for p in profile_list(spawner_of(groups))]
        assert slugs == offered, where
    # the same verdict as kernelhub's own form and REST API
    assert offered == [t.name for t in catalog.types if group_permission(t, groups).available]


def test_a_user_with_no_open_type_is_refused_rather_than_given_kubespawners_defaults() -> None:
    catalog = catalog_of({"name": "gpu", "allowed_groups": ["ml"]})
    for where, profile_list in group_filters(catalog).items():
        with pytest.raises(ValueError, match="no runtime type is open"):
            profile_list(spawner_of(["students"]))
        assert [p["slug"] for p in profile_list(spawner_of(["ml"]))] == ["gpu"], where


def test_without_restricted_types_the_chart_gets_no_python() -> None:
    assert "extraConfig" not in KubernetesProfiles().values(catalog_of({"name": "cpu"}))


# ---- the command -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str = field(repr=False)
    stderr: str = field(repr=False)


def kernelhub(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Run:
    child_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KERNELHUB_", "JUPYTERHUB_"))
    }
    done = subprocess.run(
        [KERNELHUB, "kubernetes", "profiles", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**child_env, **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


CONFIG = """\
c = get_config()
c.RuntimeCatalog.runtime_types = [
    {"name": "cpu", "mem_limit": "2G", "cpu_limit": 1, "image": "kernelhub/runtime-cpu:latest"},
    {"name": "gpu", "gpus": 1, "allowed_groups": ["ml"], "image": "kernelhub/runtime-gpu:latest"},
]
c.KubernetesProfiles.image_prefix = "registry.internal:5000/"
c.KubernetesProfiles.drive_capacity = "20Gi"
c.JupyterHub.cookie_secret = bytes.fromhex("{secret}")
c.GoogleOAuthenticator.client_secret = "{secret}"
c.QuotaGate.db_url = "postgresql://quotas:{secret}@db/quotas"
"""


def in_process_values(path: Path) -> dict[str, Any]:
    from kernelhub.launcher.up import load_config_file

    config = load_config_file(path)
    return KubernetesProfiles(config=config).values(RuntimeCatalog(config=config))


def test_the_command_prints_yaml_and_json_of_the_same_values_and_no_secret(tmp_path: Path) -> None:
    secret = secrets.token_hex(16)
    config = tmp_path / "kernelhub_config.py"
    config.write_text(CONFIG.replace("{secret}", secret))
    expected = in_process_values(config)
    assert [p["slug"] for p in expected["singleuser"]["profileList"]] == ["cpu", "gpu"]

    as_yaml = kernelhub("--config", str(config), cwd=tmp_path)
    as_json = kernelhub("--config", str(config), "--format", "json", cwd=tmp_path)
    # as `kernelhub up` finds it: DATA_DIR/kernelhub_config.py, and KERNELHUB_CONFIG
    from_data_dir = kernelhub("--data-dir", str(tmp_path), cwd=Path("/"))
    from_env = kernelhub(cwd=Path("/"), env={"KERNELHUB_CONFIG": str(config)})
    runs = [as_yaml, as_json, from_data_dir, from_env]
    assert [r.returncode for r in runs] == [0, 0, 0, 0], [r.stderr for r in runs]
    assert yaml.safe_load(as_yaml.stdout) == expected
    assert json.loads(as_json.stdout) == expected
    assert yaml.safe_load(from_data_dir.stdout) == expected
    assert yaml.safe_load(from_env.stdout) == expected
    # the group filter is there, and YAML keeps it readable Python
    code = expected["hub"]["extraConfig"]["kernelhub-runtime-groups.py"]
    assert "kernelhub-runtime-groups.py: |" in as_yaml.stdout
    compile(code, "extraConfig", "exec")
    leaked = any(secret in r.stdout or secret in r.stderr for r in runs)
    assert not leaked, "a secret of the config file reached the command's output"


def test_without_a_config_file_it_prints_the_default_catalog(tmp_path: Path) -> None:
    run = kernelhub("--data-dir", str(tmp_path / "absent"), "--format", "json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == DEFAULT_VALUES
    assert not (tmp_path / "absent").exists()  # printing values creates nothing


def catalog_error(config_text: str, tmp_path: Path) -> str:
    """What RuntimeCatalog itself says of this configuration."""
    from kernelhub.launcher.up import load_config_file

    path = tmp_path / "probe_config.py"
    path.write_text(config_text)
    with pytest.raises(TraitError) as refused:
        RuntimeCatalog(config=load_config_file(path))
    return f"invalid configuration: {refused.value}"


BAD_CATALOGS = [
    'c.RuntimeCatalog.runtime_types = [{"name": "GPU!"}]',
    'c.RuntimeCatalog.runtime_types = [{"name": "cpu", "colour": "red"}]',
    'c.RuntimeCatalog.runtime_types = [{"name": "cpu", "gpus": -1}]',
    'c.RuntimeCatalog.default_runtime = "tpu"',
    "c.RuntimeCatalog.runtime_types = []",
]


@pytest.mark.parametrize("line", BAD_CATALOGS)
def test_an_invalid_catalog_is_refused_in_the_catalogs_own_words(line: str, tmp_path: Path) -> None:
    config = tmp_path / "kernelhub_config.py"
    config.write_text(f"c = get_config()\n{line}\n")
    run = kernelhub("--config", str(config), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr == f"Error: {catalog_error(config.read_text(), tmp_path)}\n"


# other bad input: one line saying what is wrong, no traceback
BAD_INPUT = [
    ("", ["does not exist"]),
    ("c = get_config()\nc.RuntimeCatalog.runtime_types = [\n", ["line"]),
    ('c = get_config()\nc.KubernetesProfiles.drive_access_modes = ["RWX"]\n', ["ReadWriteMany"]),
    ('c = get_config()\nc.KubernetesProfiles.drive_capacity = "lots"\n', ["'10Gi'"]),
    (
        'c = get_config()\nc.RuntimeCatalog.runtime_types = [{"name": "cpu"}]\n',
        ["runtime type 'cpu' names no image"],
    ),
]


@pytest.mark.parametrize(("text", "fragments"), BAD_INPUT)
def test_bad_input_is_one_line_without_a_traceback(
    text: str, fragments: list[str], tmp_path: Path
) -> None:
    config = tmp_path / "kernelhub_config.py"
    if text:
        config.write_text(text)
    run = kernelhub("--config", str(config), cwd=tmp_path)
    assert run.returncode != 0
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr
    for fragment in fragments:
        assert fragment in lines[0]
