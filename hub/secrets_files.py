"""Secrets read from files (Docker secrets), so that none sits in an environment.

A container's environment is part of its configuration: ``docker inspect`` shows it
to anyone who may talk to the engine, and it travels into crash reports and support
bundles. The compose deployment therefore mounts each secret as a file under
``/run/secrets`` and names the file in a ``*_FILE`` variable (the convention of the
official PostgreSQL image's ``POSTGRES_PASSWORD_FILE``):

* ``secret_from_env("NAME")``: the content of the file ``$NAME_FILE`` names, else
  ``$NAME`` itself (a deployment without files keeps working), else None;
* ``url_with_password(url, password)``: a database URL with the password put in,
  so that URLs in the environment carry none.

Every problem is a ``SecretFileError`` whose one-line message names the file and how
to create it, never the secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

FILE_SUFFIX = "_FILE"
# what the README tells operators to run; repeated in every error about a missing file
CREATE_HINT = "create it as the README's production section says (openssl rand -hex 32 > FILE)"


class SecretFileError(ValueError):
    """A secret file that cannot be used; the message is one line, without the secret."""


def read_secret_file(path: str | os.PathLike[str]) -> str:
    """The secret in ``path``: its text without the trailing newline ``echo`` adds."""
    where = Path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretFileError(f"secret file {where} does not exist: {CREATE_HINT}") from None
    except IsADirectoryError:
        # a bind mount of a file the host did not have becomes an empty directory
        raise SecretFileError(f"secret file {where} is a directory: {CREATE_HINT}") from None
    except PermissionError:
        raise SecretFileError(
            f"secret file {where} is not readable by uid {os.getuid()}: outside swarm, "
            "compose mounts the host file as it is, so make it readable (mode 644) and "
            "keep the directory holding it private (mode 700)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SecretFileError(f"cannot read secret file {where}: {type(e).__name__}") from None
    secret = text.rstrip("\r\n")
    if not secret.strip():
        raise SecretFileError(f"secret file {where} is empty: {CREATE_HINT}")
    if "\n" in secret:
        raise SecretFileError(f"secret file {where} holds more than one line")
    return secret


def secret_from_env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """``$NAME_FILE``'s content, else ``$NAME``, else None (set neither: no secret)."""
    environ = os.environ if environ is None else environ
    path = environ.get(name + FILE_SUFFIX)
    if path:
        if environ.get(name):
            raise SecretFileError(f"set {name} or {name}{FILE_SUFFIX}, not both")
        return read_secret_file(path)
    return environ.get(name) or None


def url_with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` in it (``url`` unchanged when ``password`` is None)."""
    if password is None:
        return url
    # SQLAlchemy loads for database URLs only: `kernelhub up` imports this module early
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SecretFileError("the database URL is not a URL (postgresql://USER@HOST/DB)") from None
    if parsed.password:
        raise SecretFileError(
            f"the database URL {parsed.render_as_string(hide_password=True)} has a password "
            "already; give it without one when the password comes from a file"
        )
    if not parsed.username:
        raise SecretFileError("the database URL names no user (postgresql://USER@HOST/DB)")
    # URL objects quote the password themselves when rendered
    return parsed.set(password=password).render_as_string(hide_password=False)
