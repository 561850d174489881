"""The error answers of every kernelhub endpoint in the runtime: JSON {"status", "message"}."""

from __future__ import annotations

import json
from http.client import responses
from typing import Any

from tornado import web


def error_json(status_code: int, exc_info: Any, unexpected: str) -> str:
    """The body of an error answer: an HTTPError's own message, the status's name, or
    ``unexpected`` for an exception (whose details stay in the server's log)."""
    exc = (exc_info or (None, None, None))[1]
    message = responses.get(status_code, "Unknown HTTP Error")
    if isinstance(exc, web.HTTPError) and exc.log_message:
        message = exc.log_message % exc.args if exc.args else exc.log_message
    elif exc is not None:
        message = unexpected
    return json.dumps({"status": status_code, "message": message})
