"""Command-line options shared by several `kernelhub` commands."""

from __future__ import annotations

from pathlib import Path

import click

from kernelhub.launcher.up import DEFAULT_DATA_DIR


def data_dir_option(help_text: str):  # type: ignore[no-untyped-def]
    """``--data-dir`` (env KERNELHUB_DATA_DIR), the hub's data directory."""
    return click.option(
        "--data-dir",
        envvar="KERNELHUB_DATA_DIR",
        default=DEFAULT_DATA_DIR,
        type=click.Path(file_okay=False, path_type=Path),
        help=help_text,
    )
