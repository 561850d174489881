"""The HTTP client the `kernelhub quota` admin commands use to reach the quota service
from anywhere, through the hub's public proxy."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from kernelhub.clients.http import ApiClient, ApiError, json_body
from kernelhub.contract import QUOTA_SERVICE, QUOTA_SERVICE_PREFIX


class QuotaError(ApiError):
    """The quota service refused a request or could not be reached."""


class QuotaClient(ApiClient):
    """Synchronous client of the quota REST API, through the hub's public proxy."""

    service = "the quota service"
    error = QuotaError

    def __init__(
        self, hub_url: str, token: str, prefix: str = QUOTA_SERVICE_PREFIX, timeout: float = 30.0
    ) -> None:
        super().__init__(f"{hub_url.rstrip('/')}{prefix.rstrip('/')}/api/", token, timeout)

    def refusal(self, response: httpx.Response) -> str:
        """The service's own message; anything else is the proxy's error page, which means
        the service is not registered or not running."""
        body = json_body(response)
        if isinstance(body, dict) and "message" in body:
            return str(body["message"])
        return (
            f"the quota service at {self.base_url} is not answering "
            f"(HTTP {response.status_code}); is {QUOTA_SERVICE} running and "
            "registered with the hub?"
        )

    # -- endpoints ---------------------------------------------------------
    def me(self) -> dict[str, Any]:
        return dict(self.json("GET", "user"))

    def summary(self, user: str) -> dict[str, Any]:
        return dict(self.json("GET", f"users/{_seg(user)}"))

    def usage(self, user: str, since: str) -> dict[str, Any]:
        return dict(self.json("GET", f"users/{_seg(user)}/usage", params={"since": since}))

    def rule(self, path: str) -> dict[str, Any] | None:
        try:
            return dict(self.json("GET", f"rules/{path}"))
        except QuotaError as e:
            if e.status == 404 and "no rule" in e.message:
                return None
            raise

    def set_rule(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.json("PUT", f"rules/{path}", json=body))

    def rules(self) -> list[dict[str, Any]]:
        return list(self.json("GET", "rules")["rules"])

    def reset(self, user: str, window: str) -> dict[str, Any]:
        return dict(self.json("POST", f"users/{_seg(user)}/reset", json={"window": window}))

    def events(self, user: str | None, since: str | None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("user", user), ("since", since)) if v is not None}
        return list(self.json("GET", "events", params=params)["events"])

    def flag(self, user: str, reason: str, block_gpu: bool) -> dict[str, Any]:
        body = {"reason": reason, "block_gpu": block_gpu}
        return dict(self.json("PUT", f"users/{_seg(user)}/flag", json=body))

    def unflag(self, user: str) -> None:
        self.json("DELETE", f"users/{_seg(user)}/flag")


def rule_path(user: str | None = None, group: str | None = None) -> str:
    """The ``rules/...`` path of a user's, a group's or (neither) the default rule."""
    if user is not None:
        return f"users/{_seg(user)}"
    if group is not None:
        return f"groups/{_seg(group)}"
    return "default"


def _seg(name: str) -> str:
    return quote(name, safe="")
