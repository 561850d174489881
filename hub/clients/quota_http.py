"""The HTTP client the `kernelhub quota` admin commands use to reach the quota service
from anywhere, through the hub's public proxy."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from kernelhub.contract import QUOTA_SERVICE, QUOTA_SERVICE_PREFIX


class QuotaError(Exception):
    """The quota service refused a request or could not be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class QuotaClient:
    """Synchronous client of the quota REST API, through the hub's public proxy."""

    def __init__(
        self, hub_url: str, token: str, prefix: str = QUOTA_SERVICE_PREFIX, timeout: float = 30.0
    ) -> None:
        self.base_url = f"{hub_url.rstrip('/')}{prefix.rstrip('/')}/api/"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"token {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> QuotaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            # the exception text names the URL only, never the Authorization header
            raise QuotaError(f"cannot reach the quota service at {self.base_url}: {e}") from None
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        if response.status_code >= 400:
            if not isinstance(body, dict) or "message" not in body:
                # the proxy's own error page: the service is not registered or not running
                raise QuotaError(
                    f"the quota service at {self.base_url} is not answering "
                    f"(HTTP {response.status_code}); is {QUOTA_SERVICE} running and "
                    "registered with the hub?",
                    response.status_code,
                )
            raise QuotaError(str(body["message"]), response.status_code)
        return body

    # -- endpoints ---------------------------------------------------------
    def me(self) -> dict[str, Any]:
        return dict(self.request("GET", "user"))

    def summary(self, user: str) -> dict[str, Any]:
        return dict(self.request("GET", f"users/{_seg(user)}"))

    def usage(self, user: str, since: str) -> dict[str, Any]:
        return dict(self.request("GET", f"users/{_seg(user)}/usage", params={"since": since}))

    def rule(self, path: str) -> dict[str, Any] | None:
        try:
            return dict(self.request("GET", f"rules/{path}"))
        except QuotaError as e:
            if e.status == 404 and "no rule" in e.message:
                return None
            raise

    def set_rule(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("PUT", f"rules/{path}", json=body))

    def rules(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "rules")["rules"])

    def reset(self, user: str, window: str) -> dict[str, Any]:
        return dict(self.request("POST", f"users/{_seg(user)}/reset", json={"window": window}))

    def events(self, user: str | None, since: str | None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("user", user), ("since", since)) if v is not None}
        return list(self.request("GET", "events", params=params)["events"])

    def flag(self, user: str, reason: str, block_gpu: bool) -> dict[str, Any]:
        body = {"reason": reason, "block_gpu": block_gpu}
        return dict(self.request("PUT", f"users/{_seg(user)}/flag", json=body))

    def unflag(self, user: str) -> None:
        self.request("DELETE", f"users/{_seg(user)}/flag")


def rule_path(user: str | None = None, group: str | None = None) -> str:
    """The ``rules/...`` path of a user's, a group's or (neither) the default rule."""
    if user is not None:
        return f"users/{_seg(user)}"
    if group is not None:
        return f"groups/{_seg(group)}"
    return "default"


def _seg(name: str) -> str:
    return quote(name, safe="")
