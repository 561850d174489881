"""The hub state file: where `kernelhub up` records, in its data directory, the hub's
public URL and the internal ports it chose, for later starts and for `kernelhub token`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kernelhub.launcher.credentials import write_private

DEFAULT_DATA_DIR = "kernelhub-data"
STATE_FILE = "hub-state.json"


class HubStateError(Exception):
    """No hub has recorded its state in this data directory (one line for the user)."""


def saved_ports(data_dir: Path) -> dict[str, int]:
    """The ports the last `kernelhub up` chose (none before the first), kept across
    restarts so that runtimes and services that outlive the hub still find it."""
    path = data_dir / STATE_FILE
    if not path.exists():
        return {}
    ports = json.loads(path.read_text()).get("ports") or {}
    return {name: int(port) for name, port in ports.items() if port}


def write_hub_state(data_dir: Path, public_url: str, ports: dict[str, int]) -> None:
    state = {"url": public_url, "ports": ports}
    write_private(data_dir / STATE_FILE, json.dumps(state, indent=2) + "\n")


def read_hub_state(data_dir: Path) -> dict[str, Any]:
    """The running (or last) hub's state: ``url`` and ``ports``; HubStateError if none."""
    path = data_dir.expanduser() / STATE_FILE
    if not path.exists():
        raise HubStateError(f"no kernelhub data directory at {data_dir} (run `kernelhub up` first)")
    return dict(json.loads(path.read_text()))
