"""HTTP refusals whose message users see verbatim, on hub pages and in API JSON, and
the strict reading of request bodies that produces them."""

from __future__ import annotations

from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from tornado import web


def http_refusal(message: str, status: int = 400) -> web.HTTPError:
    """An HTTPError that JupyterHub renders as ``message`` alone.

    JupyterHub shows ``jupyterhub_message`` instead of tornado's
    "HTTP 400: Bad Request (...)" wrapping, on the spawn page and in
    ``{"status", "message"}`` API errors alike.
    """
    error = web.HTTPError(status, message)
    error.jupyterhub_message = message  # type: ignore[attr-defined]
    return error


def json_object(handler: APIHandler, fields: frozenset[str]) -> dict[str, Any]:
    """The request's JSON body: an object with no fields but ``fields`` (empty: {})."""
    body = handler.get_json_body()  # 400 with a message when it is no JSON
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise http_refusal("the request body must be a JSON object")
    unknown = sorted(set(body) - fields)
    if unknown:
        allowed = ", ".join(sorted(fields)) or "none"
        raise http_refusal(f"unknown field(s) {', '.join(unknown)} (allowed: {allowed})")
    return body
