"""HTTP refusals whose message users see verbatim, on hub pages and in API JSON."""

from __future__ import annotations

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
