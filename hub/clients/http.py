"""A small client for the hub's REST API (JupyterHub's plus kernelhub's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx


class HubError(Exception):
    """The hub refused a request or could not be reached; ``message`` says why."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class HubClient:
    # the hub sends a keepalive on progress streams every few seconds
    PROGRESS_READ_TIMEOUT = 120.0

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = url.rstrip("/")
        self.identified = False  # has the hub accepted the token yet?
        self._http = httpx.Client(
            base_url=f"{self.base_url}/hub/api/",
            headers={"Authorization": f"token {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise HubError(f"cannot reach the hub at {self.base_url}: {e}") from None
        if response.status_code >= 400:
            raise HubError(_error_message(response), response.status_code)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

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
                    raise HubError(_error_message(response), response.status_code)
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


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body.get("message") or body.get("reason")
    except (ValueError, AttributeError):
        message = None
    return f"HTTP {response.status_code}: {message or response.reason_phrase}"
