"""The `kernelhub quota` command group (attached to the main CLI in hub/cli.py)."""

from __future__ import annotations

import click

from kernelhub.quotas import admin_cli
from kernelhub.quotas.record import record_command


@click.group("quota", context_settings={"help_option_names": ["-h", "--help"]})
def quota() -> None:
    """GPU quotas: tools for the quota daemon (kernelhub-quotad).

    `record` writes this host's GPU telemetry as a trace that the daemon's
    tests replay.
    """


quota.add_command(record_command)
for admin_command in admin_cli.COMMANDS:  # show, set, rules, reset, usage, events, flag, ...
    quota.add_command(admin_command)
