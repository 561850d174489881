"""The quota REST API as a real hub's service: HubAuth checks tokens against the hub."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode

from kernelhub.quotas.policy import week_start

if TYPE_CHECKING:  # imported by pytest as a plugin; importing it here too would skip its rewrite
    from quota_fixtures import QuotaService

pytest_plugins = ["quota_fixtures"]


def account(service: QuotaService, user: str, hours: float, days_ago: int = 0, kind: str = "gpu"):  # type: ignore[no-untyped-def]
    """``hours`` of one GPU for ``user`` at noon ``days_ago`` days ago (UTC)."""
    day = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    start = day - timedelta(days=days_ago) - timedelta(hours=hours)
    key = f"{user}/{kind}-{days_ago}-{hours}"
    service.store.account_interval(
        key, user, kind, start, start + timedelta(hours=hours), 1, 0.5, 0
    )


@pytest.fixture
def user_token(quota_service: QuotaService, username: str) -> str:
    return quota_service.hub.token(username)


def assert_error(response: httpx.Response, status: int, fragment: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "message"} and body["status"] == status
    assert fragment in body["message"]
    assert "Traceback" not in response.text
    return dict(body)


def test_user_reads_own_quota(quota_service: QuotaService, username: str, user_token: str) -> None:
    account(quota_service, username, 2)
    account(quota_service, username, 5, days_ago=3)
    account(quota_service, username, 7, days_ago=8)  # outside the rolling week
    with quota_service.api(user_token) as api:
        mine = api.get(f"users/{username}")
        me = api.get("user")
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert me.json()["user"] == username
    today = 2
    assert body["usage"]["today_gpu_hours"] == pytest.approx(today)
    assert body["usage"]["week_gpu_hours"] == pytest.approx(today + 5)
    assert body["usage"]["by_runtime_type"]["gpu"]["gpu_hours_weighted"] == pytest.approx(
        (today + 5) / 2
    )
    assert body["limits"]["gpu_hours_week"] == 30  # the built-in default
    assert body["remaining_gpu_hours"]["week"] == pytest.approx(30 - today - 5)
    assert body["remaining_gpu_hours"]["day"] is None  # no daily limit by default
    three_days_ago = datetime.now(UTC).date() - timedelta(days=3)
    assert body["resets"]["week"].startswith((three_days_ago + timedelta(days=7)).isoformat())
    assert body["flag"] is None and body["gpu_refusal"] is None


def test_user_cannot_read_or_change_others(
    quota_service: QuotaService, username: str, user_token: str
) -> None:
    with quota_service.api(user_token) as api:
        assert_error(api.get("users/admin"), 403, "only your own")
        assert_error(api.get("users/admin/usage"), 403)
        assert_error(api.get("events", params={"user": "admin"}), 403)
        assert_error(api.put(f"rules/users/{username}", json={"max_gpus": 8}), 403, "admin")
        assert_error(api.put("rules/default", json={}), 403)
        assert_error(api.post(f"users/{username}/reset"), 403)
        assert_error(api.put(f"users/{username}/flag", json={"reason": "x"}), 403)
        assert api.get("events").status_code == 200  # their own


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_no_valid_token_is_401(quota_service: QuotaService, token: str | None) -> None:
    with quota_service.api(token) as api:
        assert_error(api.get("users/admin"), 401, "API token")


def test_admin_reads_and_sets_anyones_rule(
    quota_service: QuotaService, username: str, user_token: str
) -> None:
    with quota_service.admin() as admin:
        assert admin.get(f"users/{username}").status_code == 200
        rule = {"gpu_hours_day": 2, "max_session_hours": {"gpu": 4, "*": -1}, "max_gpus": 1}
        stored = admin.put(f"rules/users/{username}", json=rule)
        assert stored.status_code == 200, stored.text
        assert stored.json()["scope"] == "user" and stored.json()["max_gpus"] == 1
        assert admin.get(f"rules/users/{username}").json()["gpu_hours_day"] == 2
        assert any(r["subject"] == username for r in admin.get("rules").json()["rules"])
    with quota_service.api(user_token) as api:
        limits = api.get(f"users/{username}").json()["limits"]
    assert limits["gpu_hours_day"] == 2 and limits["max_gpus"] == 1
    assert limits["max_session_hours"] == {"gpu": 4, "*": None}  # -1: unlimited
    with quota_service.admin() as admin:
        assert admin.delete(f"rules/users/{username}").status_code == 204
        assert_error(admin.delete(f"rules/users/{username}"), 404, "no rule")


def test_group_rule_applies_to_hub_group_members(
    quota_service: QuotaService, username: str, user_token: str
) -> None:
    group = f"{username}-lab"
    with quota_service.hub.api(quota_service.admin_token) as hub_api:
        assert hub_api.post(f"groups/{group}").status_code == 201
        assert hub_api.post(f"groups/{group}/users", json={"users": [username]}).is_success
    with quota_service.admin() as admin:
        assert admin.put(f"rules/groups/{group}", json={"gpu_hours_week": 100}).status_code == 200
        body = admin.get(f"users/{username}").json()
        assert admin.delete(f"rules/groups/{group}").status_code == 204
    assert body["groups"] == [group] and body["limits"]["gpu_hours_week"] == 100


def test_unknown_user_is_404(quota_service: QuotaService) -> None:
    with quota_service.admin() as admin:
        for method, path, body in [
            ("GET", "users/nobody-here", None),
            ("GET", "users/nobody-here/usage", None),
            ("PUT", "rules/users/nobody-here", {"max_gpus": 1}),
            ("POST", "users/nobody-here/reset", None),
            ("PUT", "users/nobody-here/flag", {"reason": "x"}),
            ("GET", "events?user=nobody-here", None),
            ("GET", "users/..", None),
        ]:
            assert_error(admin.request(method, path, json=body), 404, "no")


BAD_RULES = [
    ({"gpu_hours_week": "30"}, "must be a number"),
    ({"gpu_hours_week": True}, "must be a number"),
    ({"gpu_hours_week": -2}, ">= 0"),
    ({"gpu_hours_week": 1e300}, "at most"),
    ({"idle_minutes": 0}, "> 0"),
    ({"max_gpus": 1.5}, "integer"),
    ({"max_concurrent": -5}, ">= 0"),
    ({"max_session_hours": 12}, "object"),
    ({"max_session_hours": {"gpu": 0}}, "> 0"),
    ({"max_session_hours": {"gpu": "12"}}, "number"),
    ({"max_session_hours": {"": 1}}, "runtime type"),
    ({"gpu_hours": 3}, "unknown field"),
]


@pytest.mark.parametrize(("body", "fragment"), BAD_RULES, ids=[json.dumps(b) for b, _ in BAD_RULES])
def test_bad_rule_bodies_are_400(quota_service: QuotaService, body: Any, fragment: str) -> None:
    with quota_service.admin() as admin:
        assert_error(admin.put("rules/default", json=body), 400, fragment)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"", "JSON object"), (b"{", "not valid JSON"), (b"[1]", "JSON object"),
     (b'{"gpu_hours_day": NaN}', "not valid JSON"), (b"\xff\xfe", "not valid JSON")],
)  # fmt: skip
def test_malformed_bodies_are_400(
    quota_service: QuotaService, content: bytes, fragment: str
) -> None:
    with quota_service.admin() as admin:
        assert_error(admin.put("rules/default", content=content), 400, fragment)


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("users/admin/flag", {}, "reason"),
        ("users/admin/flag", {"reason": " "}, "reason"),
        ("users/admin/flag", {"reason": "x", "block_gpu": "yes"}, "block_gpu"),
        ("users/admin/flag", {"reason": "x", "why": 1}, "unknown field"),
    ],
)
def test_bad_flag_bodies_are_400(
    quota_service: QuotaService, path: str, body: Any, fragment: str
) -> None:
    with quota_service.admin() as admin:
        assert_error(admin.put(path, json=body), 400, fragment)


@pytest.mark.parametrize("since", ["7x", "0d", "99999d", "2024-13-01", "yesterday", "1" * 40])
def test_bad_since_is_400(quota_service: QuotaService, since: str) -> None:
    with quota_service.admin() as admin:
        assert_error(admin.get("users/admin/usage", params={"since": since}), 400, "since")
        assert_error(admin.get("events", params={"since": since}), 400, "since")


def test_usage_since_and_reset(quota_service: QuotaService, username: str, user_token: str) -> None:
    account(quota_service, username, 1, days_ago=1)
    account(quota_service, username, 3, days_ago=5)
    with quota_service.api(user_token) as api:
        two_days = api.get(f"users/{username}/usage", params={"since": "2d"}).json()
        since = (datetime.now(UTC).date() - timedelta(days=5)).isoformat()
        dated = api.get(f"users/{username}/usage", params={"since": since}).json()
    assert two_days["totals"]["gpu_hours"] == pytest.approx(1)
    assert [d["gpu_hours"] for d in dated["days"]] == pytest.approx([3, 1])
    with quota_service.admin() as admin:
        done = admin.post(f"users/{username}/reset", json={"window": "week"})
        assert done.status_code == 200, done.text
        assert done.json()["forgotten_gpu_hours"] == pytest.approx(4)
        assert done.json()["since"] == week_start(datetime.now(UTC)).isoformat()
        assert admin.get(f"users/{username}").json()["usage"]["week_gpu_hours"] == 0
        assert_error(admin.post(f"users/{username}/reset", json={"window": "year"}), 400, "window")


def test_events_and_flags(quota_service: QuotaService, username: str, user_token: str) -> None:
    store = quota_service.store
    store.record_event(username, "", "gpu", "stop", "idle", "stopped after 90 min idle")
    store.record_event("admin", "", "cpu", "warn", "idle", "not yours")
    with quota_service.api(user_token) as api:
        mine = api.get("events").json()["events"]
    assert [(e["user"], e["kind"], e["reason"]) for e in mine] == [(username, "stop", "idle")]
    with quota_service.admin() as admin:
        everyone = {e["user"] for e in admin.get("events", params={"since": "1d"}).json()["events"]}
        assert {username, "admin"} <= everyone
        flagged = admin.put(f"users/{username}/flag", json={"reason": "mining", "block_gpu": True})
        assert flagged.status_code == 200 and flagged.json()["block_gpu"] is True
        body = admin.get(f"users/{username}").json()
        assert body["flag"]["reason"] == "mining"
        assert body["gpu_refusal"]["reason"] == "gpu-blocked"
        assert admin.delete(f"users/{username}/flag").status_code == 204
        assert_error(admin.delete(f"users/{username}/flag"), 404, "not flagged")


# what the mining detector writes: the explanation as the flag's reason, the decision as
# the stop's details. Told to the user, it would show a miner which signals to avoid.
EXPLANATION = (
    "Runtime 'x/' at 2026-11-27T15:00:00Z: mining-like, score 1.40 (>= 1.00 to flag). "
    "Signals: pool_port (+0.60): connected to 203.0.113.7:14444; "
    "miner_process (+0.80): xmrig --donate-level 1"
)
DETAILS = {
    "verdict": "mining-like",
    "score": 1.4,
    "threshold": 1.0,
    "signals": [{"name": "pool_port", "weight": 0.6, "summary": "203.0.113.7:14444"}],
    "explanation": EXPLANATION,
    "stopped_by_hub": True,
}
MINING_STOP = "your runtime was stopped: it behaved like cryptocurrency mining"
# (not the port or score: a timestamp's microseconds may hold those digits)
SECRETS = ("pool_port", "203.0.113.7", "xmrig", "donate-level", "threshold", "signals", "score")
FLAGGED_AT = datetime(2026, 11, 27, 15, 0, 30, tzinfo=UTC)

# reader, where the summary is read, the events query, and whether the explanation shows
VIEWS = [
    ("user", "user", {}, False),
    ("user", "users/{name}", {"user": "{name}"}, False),
    ("admin", "users/{name}", {"user": "{name}"}, True),
]


@pytest.mark.parametrize(
    ("reader", "path", "query", "explained"), VIEWS, ids=[f"{v[0]}-{v[1]}" for v in VIEWS]
)
def test_only_admins_read_a_flags_explanation(
    quota_service: QuotaService,
    username: str,
    user_token: str,
    reader: str,
    path: str,
    query: dict[str, str],
    explained: bool,
) -> None:
    """A flagged user reads that they are flagged, since when, what it blocks and whom
    to contact; the flag's reason and the stop's details (signals, values, thresholds,
    pool addresses, process names) only an admin reads. The schema is the same."""
    store = quota_service.store
    store.record_event(username, "", "gpu", "stop", "mining-like", MINING_STOP, DETAILS)
    store.flag(username, EXPLANATION, block_gpu=True, at=FLAGGED_AT)
    token = user_token if reader == "user" else quota_service.admin_token
    with quota_service.api(token) as api:
        summary = api.get(path.format(name=username))
        events = api.get("events", params={k: v.format(name=username) for k, v in query.items()})
    assert summary.status_code == 200 and events.status_code == 200, summary.text + events.text

    flag, (event,) = summary.json()["flag"], events.json()["events"]
    if explained:
        assert flag["reason"] == EXPLANATION and event["details"] == DETAILS
    else:
        assert flag["reason"] is None and event["details"] is None
        for answer in (summary.text, events.text):
            assert not [s for s in SECRETS if s in answer], answer
    # the rest, and the schema, are the same for both
    assert set(flag) == {"user", "flagged_at", "block_gpu", "reason", "message", "contact"}
    assert (flag["user"], flag["block_gpu"]) == (username, True)
    assert flag["flagged_at"] == FLAGGED_AT.isoformat()
    assert flag["message"] == (
        "GPU runtimes are blocked for your account (flagged for review on 2026-11-27 15:00 UTC); "
        "an administrator will review it. CPU runtimes are not affected. "
        f"To ask about it, contact {quota_service.contact}."
    )
    assert flag["contact"] == quota_service.contact
    # a GPU spawn would be refused with the same words as the hub's spawn check uses
    assert summary.json()["gpu_refusal"]["message"] == flag["message"]
    assert set(event) == {
        "time", "user", "server", "runtime_type", "kind", "reason", "message", "details"
    }  # fmt: skip
    assert (event["kind"], event["reason"]) == ("stop", "mining-like")
    assert event["message"] == MINING_STOP  # what the user was told


def test_unknown_endpoint_and_method_are_json(quota_service: QuotaService) -> None:
    with quota_service.admin() as admin:
        assert_error(admin.get("nope"), 404, "no such endpoint")
        assert_error(admin.delete("rules"), 405)


def test_openapi_document_is_served(quota_service: QuotaService) -> None:
    with quota_service.api(None) as anonymous:
        doc = anonymous.get("openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/users/{name}" in doc["paths"] and "/rules/groups/{group}" in doc["paths"]


SCHEMATHESIS_EXAMPLES = 8  # per operation and mode: ~20 operations x 2 modes, well under 60 s


def test_schemathesis_finds_no_server_errors(quota_service: QuotaService) -> None:
    """Generated valid and invalid requests, as an admin: a 4xx with a message, never a 5xx."""
    schema = schemathesis.openapi.from_url(f"{quota_service.api_url}openapi.json")
    headers = {"Authorization": f"token {quota_service.admin_token}"}
    base_url = quota_service.api_url.rstrip("/")
    failures: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the OpenAPI document is invalid: {result}"
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=SCHEMATHESIS_EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                response = case.call(base_url=base_url, headers=headers)
                if response.status_code >= 500 or "Traceback" in response.text:
                    failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")
                case.validate_response(response, checks=[not_a_server_error])
                if response.status_code >= 400:
                    body = response.json()  # every error is JSON with a message
                    assert isinstance(body.get("message"), str) and body["message"], body

            check()
    assert not failures
    # generated rules and flags must not leak into the tests that follow
    for rule in quota_service.store.rules():
        quota_service.store.delete_rule(rule.scope, rule.subject)
    quota_service.store.unflag("admin")  # the document's example user
