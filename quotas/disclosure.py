"""What a flagged user is told, and what only administrators see: one function, ``disclose``.

A flag's ``reason`` holds the mining detector's explanation (its signals, their values
and thresholds, the score, pool addresses, process names) or an administrator's note;
an event's ``details`` hold the decision behind a warning or stop. Shown to the user,
the explanation would tell a miner which signals to avoid. So users learn only that
they are flagged, since when, what it means for them and whom to contact; the reason
and the details stay with administrators.

Every path that shows a flag or an event goes through ``disclose``: the quota API
(a user's own summary, the events list, an admin's flag answer), the hub's spawn
refusal for a GPU block (``usage.UsageSummary.spawn_refusal``) and its home-page
notice (``kernelhub.quotagate.notices``). A user's JSON keeps the admin's schema,
with the admin-only fields (``ADMIN_ONLY``) set to null.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, date
from typing import Any

from kernelhub.contract import QUOTA_CONTACT_ENV
from kernelhub.quotas.store import Event, Flag

DEFAULT_CONTACT = "an administrator of this hub"

# the fields of a row's JSON that only administrators read: null in a user's view
ADMIN_ONLY: dict[type, tuple[str, ...]] = {Flag: ("reason",), Event: ("details",)}


def default_contact() -> str:
    """Whom flagged users are told to contact: $KERNELHUB_QUOTA_CONTACT, or an admin."""
    return os.environ.get(QUOTA_CONTACT_ENV, "").strip() or DEFAULT_CONTACT


def disclose(
    row: Flag | Event, *, admin: bool, contact: str | None = DEFAULT_CONTACT
) -> dict[str, Any]:
    """A flag or an event as JSON for its reader: everything for administrators; for
    the user, the same fields with the explanation (``ADMIN_ONLY``) null.

    A flag's JSON also carries ``message`` (what the user is told: flagged since
    when, what it blocks, and, unless ``contact`` is None, whom to contact) and
    ``contact``. Events keep their ``message``: it is what the user was told.
    """
    hidden = ADMIN_ONLY[type(row)]  # a row of any other kind is an error, not a leak
    body = _row_json(row)
    if isinstance(row, Flag):
        body["message"] = _flag_message(row, contact)
        body["contact"] = contact
    if not admin:
        body.update(dict.fromkeys(hidden))
    return body


def _flag_message(flag: Flag, contact: str | None) -> str:
    # the home page's wording (notices.build_notices shows it without a contact)
    at = f"{flag.flagged_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    if flag.block_gpu:
        message = (
            f"GPU runtimes are blocked for your account (flagged for review on {at}); "
            "an administrator will review it. CPU runtimes are not affected."
        )
    else:
        message = (
            f"Your account is flagged for review (since {at}); an administrator will "
            "review it. Your runtimes are not affected."
        )
    return f"{message} To ask about it, contact {contact}." if contact else message


def _row_json(row: Flag | Event) -> dict[str, Any]:
    """A row's fields as JSON: ``user`` for ``username``, ISO times, no ``id``."""
    body = {}
    for field in dataclasses.fields(row):
        value = getattr(row, field.name)
        name = "user" if field.name == "username" else field.name
        body[name] = value.isoformat() if isinstance(value, date) else value
    body.pop("id", None)
    return body
