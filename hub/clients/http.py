"""HTTP clients of the REST APIs behind the hub's public URL: one base, ``ApiClient``
(token header, timeouts, failures as one-line errors), and the hub's own API
(JupyterHub's plus kernelhub's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar, Self
from urllib.parse import quote

import httpx


class ApiError(Exception):
    """An API refused a request (``status`` is its HTTP status) or could not be reached
    (``status`` 0); ``message`` says why, in one line."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ApiClient:
    """Synchronous client of one REST API, authenticated with a hub API token.

    Subclasses name the API (``service``, in "cannot reach" messages), raise their own
    ``error`` (an ApiError), and may word refusals differently (``refusal``).
    """

    service: ClassVar[str] = "the API"
    error: ClassVar[type[ApiError]] = ApiError

    def __init__(
        self, api_url: str, token: str, timeout: float = 30.0, shown_url: str | None = None
    ) -> None:
        self.base_url = shown_url or api_url  # the URL messages name
        self._http = httpx.Client(
            base_url=api_url, headers={"Authorization": f"token {token}"}, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response to a request that succeeded; ``error`` for any other outcome."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            # the exception text names the URL only, never the Authorization header
            raise self.error(f"cannot reach {self.service} at {self.base_url}: {e}") from None
        if response.status_code >= 400:
            raise self.error(self.refusal(response), response.status_code)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON body of a successful request (None when it has none)."""
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:  # a redirect to a login page, or something else on that URL
            raise self.error(
                f"{self.service} at {self.base_url} answered {method} {path} with "
                f"HTTP {response.status_code} but no JSON",
                response.status_code,
            ) from None

    def refusal(self, response: httpx.Response) -> str:
        """The one-line message of an error response: the JSON body's message or reason."""
        body = json_body(response)
        message = (body.get("message") or body.get("reason")) if isinstance(body, dict) else None
        return f"HTTP {response.status_code}: {message or response.reason_phrase}"


def json_body(response: httpx.Response) -> Any:
    """The response's JSON body; None when empty or not JSON (a proxy's error page)."""
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


class HubError(ApiError):
    """The hub refused a request or could not be reached."""


class HubClient(ApiClient):
    service = "the hub"
    error = HubError
    # the hub sends a keepalive on progress streams every few seconds
    PROGRESS_READ_TIMEOUT = 120.0

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        hub_url = url.rstrip("/")
        super().__init__(f"{hub_url}/hub/api/", token, timeout, shown_url=hub_url)
        self.identified = False  # has the hub accepted the token yet?

    # -- JupyterHub API --------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        me = dict(self.json("GET", "user"))
        self.identified = True
        return me

    def user(self, name: str) -> dict[str, Any]:
        return dict(self.json("GET", f"users/{quote(name, safe='')}"))

    def create_user(self, name: str) -> dict[str, Any]:
        return dict(self.json("POST", f"users/{quote(name, safe='')}"))

    def new_token(self, user: str, note: str, expires_in: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"note": note}
        if expires_in:
            body["expires_in"] = expires_in
        return dict(self.json("POST", f"users/{quote(user, safe='')}/tokens", json=body))

    def start_server(self, user: str, server: str, user_options: dict[str, Any]) -> int:
        response = self.request(
            "POST", _server_path(user, server), json={"user_options": user_options}
        )
        return response.status_code

    def stop_server(self, user: str, server: str) -> int:
        return self.request("DELETE", _server_path(user, server)).status_code

    def progress(self, user: str, server: str) -> Iterator[dict[str, Any]]:
        """Spawn progress events (server-sent events) until the spawn ends."""
        path = f"{_server_path(user, server)}/progress"
        try:
            timeout = httpx.Timeout(30.0, read=self.PROGRESS_READ_TIMEOUT)
            with self._http.stream("GET", path, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise HubError(self.refusal(response), response.status_code)
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        yield json.loads(line[len("data:") :])
        except httpx.HTTPError as e:
            raise HubError(f"lost the progress stream from {self.base_url}: {e}") from None

    # -- kernelhub API ---------------------------------------------------
    def runtime_types(self) -> dict[str, Any]:
        return dict(self.json("GET", "kernelhub/runtime-types"))


def _server_path(user: str, server: str) -> str:
    user_path = f"users/{quote(user, safe='')}"
    return f"{user_path}/servers/{quote(server, safe='')}" if server else f"{user_path}/server"
