"""The house rules of the package layout: one contract, and each audience loads only its own.

- The label prefix and the runtime-key format are written once, in kernelhub.contract;
  the spawners and the quota daemon import them from there.
- The running hub (``kernelhub up``: launcher, hub application, spawners, sign-in, quota
  gate) never imports image-build code, nor the client commands it does not run.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FOLDERS = ("hub", "spawner", "quotas")
CONTRACT = Path("hub/contract.py")

# what the hub process imports to run: `kernelhub up`, then what its config names
HUB_PROCESS_MODULES = [
    "kernelhub.cli",
    "kernelhub.launcher.up",
    "kernelhub.hubapp.app",
    "kernelhub.spawner.local",
    "kernelhub.spawner.docker_runtime",
    "kernelhub.signin.google",
    "kernelhub.quotagate.gate",
    "kernelhub.quotagate.notices",
]
NEVER_IN_THE_HUB = ("kernelhub.imagetools", "kernelhub.clients.images", "kernelhub.clients.quota")


def package_sources() -> list[Path]:
    return sorted(
        path.relative_to(ROOT)
        for folder in PACKAGE_FOLDERS
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def test_the_label_prefix_is_spelled_only_in_the_contract() -> None:
    spelled = [path for path in package_sources() if "org.kernelhub" in (ROOT / path).read_text()]
    assert spelled == [CONTRACT]


def _mentions(node: ast.expr, *names: str) -> bool:
    text = ast.unparse(node).lower()
    return any(name in text for name in names)


def runtime_key_formats(path: Path) -> list[str]:
    """f-strings shaped like "{user}/{server}" in one source file."""
    found = []
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if not isinstance(node, ast.JoinedStr) or len(node.values) != 3:
            continue
        first, slash, second = node.values
        if (
            isinstance(first, ast.FormattedValue)
            and isinstance(slash, ast.Constant)
            and slash.value == "/"
            and isinstance(second, ast.FormattedValue)
            and _mentions(first.value, "user")
            and _mentions(second.value, "server", "name")
        ):
            found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_runtime_key_is_built_only_by_the_contract() -> None:
    built = [key for path in package_sources() for key in runtime_key_formats(path)]
    assert [line.split(":")[0] for line in built] == [str(CONTRACT)], built


@pytest.mark.parametrize("forbidden", NEVER_IN_THE_HUB)
def test_the_running_hub_loads_no_image_build_or_client_command_code(forbidden: str) -> None:
    probe = (
        "import importlib, json, sys\n"
        f"for name in {HUB_PROCESS_MODULES!r}: importlib.import_module(name)\n"
        "import kernelhub.cli as cli\n"
        "cli.main.get_command(None, 'up')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('kernelhub'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd="/", check=True
    )
    loaded = json.loads(done.stdout)
    assert "kernelhub.hubapp.app" in loaded
    assert [m for m in loaded if m == forbidden or m.startswith(f"{forbidden}.")] == []
