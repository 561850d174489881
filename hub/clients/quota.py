"""`kernelhub quota show|set|reset|usage|events|flag|unflag|rules`: the quota REST API
from any machine, with a hub API token (admins for everything but your own quota)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from kernelhub.clients.http import ApiError
from kernelhub.clients.options import (
    json_option,
    one_line_errors,
    require_token,
    token_option,
    token_page,
    url_option,
)
from kernelhub.clients.quota_http import QuotaClient, rule_path
from kernelhub.contract import QUOTA_DB_ENV
from kernelhub.quotas.policy import LIMIT_FIELDS, UNLIMITED
from kernelhub.quotas.record import record_command

INHERIT = "inherit"


class OneLineUsageError(click.UsageError):
    """Bad flags as one line on stderr (click's usual three are noise in scripts)."""

    def show(self, file: Any = None) -> None:
        hint = f" (see `{self.ctx.command_path} --help`)" if self.ctx else ""
        click.echo(f"Error: {self.format_message()}{hint}", err=True)


class QuotaCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            raise OneLineUsageError(e.format_message(), ctx) from None


# the admin commands, in the order `kernelhub quota --help` lists them (cli.py adds them)
COMMANDS: list[click.Command] = []


def command(name: str) -> Callable[[Callable[..., Any]], click.Command]:
    def make(fn: Callable[..., Any]) -> click.Command:
        for option in (json_option, token_option, url_option):
            fn = option(fn)
        made = click.command(name, cls=QuotaCommand)(fn)
        COMMANDS.append(made)
        return made

    return make


class LimitValue(click.ParamType):
    """A number, ``unlimited`` (-1) or ``inherit`` (clear the field)."""

    name = "N|unlimited|inherit"

    def __init__(self, integer: bool = False) -> None:
        self.integer = integer

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        word = value.strip().lower()
        if word in ("unlimited", str(UNLIMITED)):
            return UNLIMITED
        if word == INHERIT:
            return INHERIT
        try:
            number = int(word) if self.integer else float(word)
        except ValueError:
            kind = "a whole number" if self.integer else "a number"
            self.fail(f"{value!r}: expected {kind}, 'unlimited' or 'inherit'", param, ctx)
        if number < 0:
            self.fail(f"{value!r}: must be >= 0 (or 'unlimited')", param, ctx)
        return number


@contextmanager
def quota_client(url: str, token: str | None) -> Iterator[QuotaClient]:
    def token_refusal(_: QuotaClient, e: ApiError) -> str | None:
        if e.status != 401:
            return None
        return (
            f"the quota service refused this API token ({e.message}); "
            f"create a new one at {token_page(url)}"
        )

    client = QuotaClient(url, require_token(url, token))
    with one_line_errors(client, token_refusal) as session:
        yield session


def emit_json(body: Any) -> None:
    click.echo(json.dumps(body, indent=2))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def _limit(value: Any) -> str:
    return "unlimited" if value is None else _cell(value)


@command("show")
@click.argument("user", required=False)
def show(user: str | None, url: str, token: str | None, as_json: bool) -> None:
    """USER's quota (yours without USER): usage, limits, what is left, flag (its reason
    only for administrators)."""
    with quota_client(url, token) as api:
        s = api.summary(user) if user else api.me()
    if as_json:
        return emit_json(s)
    usage, limits, left = s["usage"], s["limits"], s["remaining_gpu_hours"]
    flag = s["flag"]
    rows = [
        ("GPU hours today", usage["today_gpu_hours"], _limit(limits["gpu_hours_day"]),
         _limit(left["day"]), s["resets"]["day"]),
        (f"GPU hours since {usage['week_since']}", usage["week_gpu_hours"],
         _limit(limits["gpu_hours_week"]), _limit(left["week"]), s["resets"]["week"]),
    ]  # fmt: skip
    click.echo(f"USER {s['user']}  groups: {', '.join(s['groups']) or '-'}")
    table(["WINDOW", "USED", "LIMIT", "LEFT", "FREES UP FROM"], rows)
    click.echo("")
    table(
        ["LIMIT", "VALUE"],
        [(name, _limit(limits[name])) for name in LIMIT_FIELDS if "gpu_hours" not in name],
    )
    for kind, sums in sorted(usage["by_runtime_type"].items()):
        click.echo(f"  {kind}: {sums['gpu_hours']:g} GPU-h, {sums['cpu_hours']:g} CPU-h this week")
    if s["gpu_refusal"]:
        click.echo(f"GPU runtimes refused now: {s['gpu_refusal']['message']}")
    if flag:
        # users read the flag's message; its reason (the detector's explanation) is
        # null for them, and only administrators' answers carry it
        blocked = ", GPU blocked" if flag["block_gpu"] else ""
        click.echo(f"FLAGGED {flag['flagged_at']}{blocked}: {flag.get('message', '')}")
        if flag.get("reason") is not None:
            click.echo(f"  reason (administrators only): {flag['reason']}")


@command("set")
@click.argument("user", required=False)
@click.option("--group", default=None, help="Set the rule of this hub group.")
@click.option("--default", "default", is_flag=True, help="Set the default rule.")
@click.option("--gpu-hours-day", type=LimitValue(), default=None)
@click.option("--gpu-hours-week", type=LimitValue(), default=None)
@click.option(
    "--max-session-hours",
    multiple=True,
    metavar="TYPE=H",
    help="Maximum session age per runtime type ('*' for all); repeatable.",
)
@click.option("--idle-minutes", type=LimitValue(), default=None)
@click.option("--max-concurrent", type=LimitValue(integer=True), default=None)
@click.option("--max-gpus", type=LimitValue(integer=True), default=None)
def set_rule(
    user: str | None,
    group: str | None,
    default: bool,
    max_session_hours: tuple[str, ...],
    url: str,
    token: str | None,
    as_json: bool,
    **limits: Any,
) -> None:
    """Change the rule of USER, --group G or --default; fields not named keep their value.

    Values: a number, 'unlimited', or 'inherit' (take the value of the level below).
    """
    if sum((user is not None, group is not None, default)) != 1:
        raise OneLineUsageError("name exactly one of USER, --group G or --default")
    changes = {name: value for name, value in limits.items() if value is not None}
    hours = _parse_hours(max_session_hours)
    if not changes and not hours:
        raise OneLineUsageError("name at least one limit to set, e.g. --gpu-hours-week 30")
    path = rule_path(user, group)
    with quota_client(url, token) as api:
        current = api.rule(path) or {}
        body = {name: current.get(name) for name in LIMIT_FIELDS}
        body.update(changes)
        if hours:
            merged = {**(body["max_session_hours"] or {}), **hours}
            body["max_session_hours"] = {k: v for k, v in merged.items() if v != INHERIT} or None
        body = {k: (None if v == INHERIT else v) for k, v in body.items()}
        stored = api.set_rule(path, body)
    if as_json:
        return emit_json(stored)
    _rules_table([stored])


def _parse_hours(items: tuple[str, ...]) -> dict[str, Any]:
    hours: dict[str, Any] = {}
    for item in items:
        kind, sep, value = item.partition("=")
        if not sep or not kind:
            raise OneLineUsageError(f"--max-session-hours wants TYPE=HOURS, not {item!r}")
        converted = LimitValue().convert(value, None, None) if value else None
        if converted is None or converted == 0:
            raise OneLineUsageError(f"--max-session-hours {item!r}: hours must be > 0")
        hours[kind] = converted
    return hours


@command("rules")
def rules(url: str, token: str | None, as_json: bool) -> None:
    """Every quota rule: the default, groups', users'."""
    with quota_client(url, token) as api:
        found = api.rules()
    if as_json:
        return emit_json(found)
    _rules_table(found)


def _rules_table(found: list[dict[str, Any]]) -> None:
    rows = [
        [r["scope"], r["subject"] or "-", *(_rule_cell(r.get(n)) for n in LIMIT_FIELDS)]
        for r in found
    ]
    table(["SCOPE", "SUBJECT", *(n.upper() for n in LIMIT_FIELDS)], rows)


def _rule_cell(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={_rule_cell(v)}" for k, v in value.items())
    return "inherit" if value is None else "unlimited" if value == UNLIMITED else _cell(value)


@command("reset")
@click.argument("user")
@click.option(
    "--window",
    type=click.Choice(["day", "week"]),
    default="week",
    show_default=True,
    help="Forget today's usage, or the rolling week's.",
)
def reset(user: str, window: str, url: str, token: str | None, as_json: bool) -> None:
    """Forget USER's GPU usage of today or of the rolling week."""
    with quota_client(url, token) as api:
        done = api.reset(user, window)
    if as_json:
        return emit_json(done)
    click.echo(f"{user}: forgot {done['forgotten_gpu_hours']:g} GPU-hours since {done['since']}")


@command("usage")
@click.argument("user", required=False)
@click.option("--since", default="7d", show_default=True, help="Nd or YYYY-MM-DD (UTC).")
def usage(user: str | None, since: str, url: str, token: str | None, as_json: bool) -> None:
    """USER's usage (yours without USER) per day and runtime type."""
    with quota_client(url, token) as api:
        found = api.usage(user or api.me()["user"], since)
    if as_json:
        return emit_json(found)
    keys = ("gpu_hours", "gpu_hours_weighted", "cpu_hours")
    rows = [[d["day"], d["runtime_type"], *(d[k] for k in keys)] for d in found["days"]]
    rows.append(["total", "", *(found["totals"][k] for k in keys)])
    table(["DAY", "TYPE", "GPU-HOURS", "GPU-HOURS x UTIL", "CPU-HOURS"], rows)


@command("events")
@click.option("--user", default=None, help="Only this user's events.")
@click.option("--since", default=None, help="Nd or YYYY-MM-DD (UTC).")
def events(user: str | None, since: str | None, url: str, token: str | None, as_json: bool) -> None:
    """Warnings, stops (with their reasons) and flags, oldest first (their details, with
    --json, only for administrators)."""
    with quota_client(url, token) as api:
        found = api.events(user, since)
    if as_json:
        return emit_json(found)
    rows = [
        [e["time"][:19].replace("T", " "), e["user"], e["server"] or "-", e["kind"], e["reason"],
         e["message"]]
        for e in found
    ]  # fmt: skip
    table(["TIME (UTC)", "USER", "SERVER", "KIND", "REASON", "MESSAGE"], rows)


@command("flag")
@click.argument("user")
@click.option(
    "--reason",
    required=True,
    help="Why; for administrators only (USER is told they are flagged and whom to contact).",
)
@click.option("--block-gpu", is_flag=True, help="Refuse USER's GPU runtimes.")
def flag(
    user: str, reason: str, block_gpu: bool, url: str, token: str | None, as_json: bool
) -> None:
    """Flag USER (replacing an earlier flag)."""
    with quota_client(url, token) as api:
        done = api.flag(user, reason, block_gpu)
    if as_json:
        return emit_json(done)
    click.echo(f"flagged {user}{' (GPU blocked)' if done['block_gpu'] else ''}: {done['reason']}")


@command("unflag")
@click.argument("user")
def unflag(user: str, url: str, token: str | None, as_json: bool) -> None:
    """Lift USER's flag."""
    with quota_client(url, token) as api:
        api.unflag(user)
    if as_json:
        return emit_json({"user": user, "flagged": False})
    click.echo(f"unflagged {user}")


@click.command("migrate", cls=QuotaCommand)
@click.option(
    "--db-url",
    envvar=QUOTA_DB_ENV,
    show_envvar=True,
    required=True,
    metavar="URL",
    help="The quota store: a SQLite or PostgreSQL URL.",
)
def migrate(db_url: str) -> None:
    """Create or upgrade the quota store's schema.

    Migrates the database to this kernelhub's revision, directly: no hub, no token.
    kernelhub-quotad does the same when it starts; the hub never does.
    """
    # SQLAlchemy and Alembic load for this command only
    from kernelhub.quotas.store import QuotaStore, QuotaStoreError

    try:
        with QuotaStore.open(db_url) as store:
            revision = store.revision()
    except QuotaStoreError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"quota store at revision {revision}")


@click.group("quota", context_settings={"help_option_names": ["-h", "--help"]})
def quota() -> None:
    """GPU quotas: tools for the quota daemon (kernelhub-quotad).

    `record` writes this host's GPU telemetry as a trace that the daemon's
    tests replay; `migrate` creates or upgrades the daemon's store.
    """


quota.add_command(record_command)
quota.add_command(migrate)
for admin_command in COMMANDS:  # show, set, rules, reset, usage, events, flag, ...
    quota.add_command(admin_command)
