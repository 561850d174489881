"""The socket guard's decisions as pure functions: every rule, no engine needed.

tests/security/test_socket_guard.py performs the same attacks on the real engine
through the real guard process.
"""

from __future__ import annotations

import json

import pytest
from socket_guard_cases import (
    CONFIG,
    CREATE_ATTACKS,
    DRIVE,
    PREFIX,
    REFUSED_CALLS,
    RUNTIME,
    SNIPPETS,
    USER,
    VOLUME_ATTACKS,
    Body,
    drive,
    host,
    runtime,
    volume,
)

from kernelhub.spawner.socketguard.__main__ import parse_args
from kernelhub.spawner.socketguard.bodies import check_container_create, check_volume_create
from kernelhub.spawner.socketguard.decode import Refused, decode_body
from kernelhub.spawner.socketguard.policy import GuardConfig, drive_name, filter_list, match


@pytest.mark.parametrize(
    ("case", "body", "says"), CREATE_ATTACKS, ids=[c[0] for c in CREATE_ATTACKS]
)
def test_a_container_create_that_leaves_the_runtime_is_refused(
    case: str, body: Body, says: str
) -> None:
    with pytest.raises(Refused) as refused:
        check_container_create(CONFIG, body().replace(b"DECOY", b"0123abcd"))
    assert says in refused.value.message
    assert refused.value.status == 403


@pytest.mark.parametrize(
    ("case", "body", "says"), VOLUME_ATTACKS, ids=[c[0] for c in VOLUME_ATTACKS]
)
def test_a_volume_create_that_is_not_a_plain_drive_is_refused(
    case: str, body: Body, says: str
) -> None:
    with pytest.raises(Refused) as refused:
        check_volume_create(CONFIG, body())
    assert says in refused.value.message


ALLOWED_CREATES: list[tuple[str, Body]] = [
    ("the spawner's body", runtime()),
    (
        "keys in any case, as the engine reads them",
        lambda: runtime()().replace(b"CapDrop", b"capdrop"),
    ),
    (
        "the drive as a volume mount",
        host(
            Binds=None, Mounts=[{"Type": "volume", "Source": drive(USER), "Target": "/home/jovyan"}]
        ),
    ),
    (
        "the site snippets as a read-only mount",
        host(Mounts=[{"Type": "volume", "Source": SNIPPETS, "Target": "/s", "ReadOnly": True}]),
    ),
    (
        "GPUs by device ID",
        host(
            DeviceRequests=[
                # as docker-py writes the spawner's DeviceRequest
                {
                    "Driver": "nvidia",
                    "Count": 0,
                    "DeviceIDs": ["0", "1"],
                    "Capabilities": [["gpu"]],
                    "Options": {},
                }
            ]
        ),
    ),
    (
        "a port on loopback",
        host(PortBindings={"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}),
    ),
    ("no-new-privileges written with a value", host(SecurityOpt=["no-new-privileges:true"])),
    (
        "escapes that decode to the drive's name",
        lambda: runtime()().replace(b"drive-mallory:", b"drive-\\u006dallory:"),
    ),
]


@pytest.mark.parametrize(("case", "body"), ALLOWED_CREATES, ids=[c[0] for c in ALLOWED_CREATES])
def test_the_spawners_container_creates_pass(case: str, body: Body) -> None:
    create = check_container_create(CONFIG, body())
    assert (create.image, create.user) == (RUNTIME["Image"], USER)
    # what is forwarded is the checked, normalised body: canonical keys, escapes decoded
    assert "CapDrop" in create.body["HostConfig"]


def test_a_runtime_is_named_as_the_spawner_names_it() -> None:
    assert check_container_create(CONFIG, runtime()(), f"{PREFIX}-{USER}")
    with pytest.raises(Refused, match="name starts with"):
        check_container_create(CONFIG, runtime()(), "hub")


def test_the_spawners_drive_create_passes() -> None:
    assert check_volume_create(CONFIG, volume()())["Name"] == DRIVE["Name"]
    assert check_volume_create(CONFIG, volume(Driver="local", DriverOpts={})())


def test_the_lockdown_can_be_left_to_an_older_hub_only_by_the_operator() -> None:
    lax = GuardConfig(**{**CONFIG.__dict__, "require_lockdown": False})
    bare = runtime(lambda b: [b["HostConfig"].pop(k) for k in ("CapDrop", "SecurityOpt")])
    assert check_container_create(lax, bare())
    with pytest.raises(Refused):
        check_container_create(CONFIG, bare())
    with pytest.raises(Refused, match="PidsLimit"):
        check_container_create(CONFIG, host(PidsLimit=CONFIG.max_pids + 1)())


def test_the_drive_name_is_the_spawners_for_names_it_escapes() -> None:
    # DockerSpawner escapes user names into container and volume names
    assert drive_name(CONFIG, "Alice.B") == f"{PREFIX}-drive--41lice-2e-42"
    with pytest.raises(ValueError, match="servername"):
        GuardConfig(drive_name_template="drive-{username}-{servername}")


@pytest.mark.parametrize(
    "raw",
    [b'{"a": NaN}', b'{"a": 1} x', b'{"a": "\\ud800"}', b"\xef\xbb\xbf{}", b'{"k": 1, "K": 2}'],
)
def test_bodies_two_json_parsers_could_read_differently_are_refused(raw: bytes) -> None:
    with pytest.raises(Refused):
        decode_body(raw)


ALLOWED_CALLS = [
    ("GET", "/_ping", ""),
    ("HEAD", "/_ping", ""),
    ("GET", "/version", ""),
    ("GET", "/v1.41/images/kernelhub/runtime-test:latest/json", ""),
    ("GET", "/v1.41/networks/bridge", ""),
    ("GET", f"/v1.41/volumes/{drive(USER)}", ""),
    ("POST", "/v1.41/volumes/create", ""),
    ("GET", "/v1.41/containers/json", "all=1&filters=%7B%22label%22%3A+%5B%22a%22%5D%7D"),
    ("POST", "/v1.41/containers/create", f"name={PREFIX}-{USER}"),
    ("GET", "/v1.41/containers/abc/json", ""),
    ("POST", "/v1.41/containers/abc/start", ""),
    ("POST", "/v1.41/containers/abc/stop", "t=10"),
    ("POST", "/v1.41/containers/abc/wait", "condition=removed"),
    ("GET", "/v1.41/containers/abc/logs", "stdout=1&stderr=1&tail=100"),
    ("DELETE", "/v1.41/containers/abc", "v=True&link=False&force=False"),
]


@pytest.mark.parametrize(("method", "path", "query"), ALLOWED_CALLS)
def test_the_spawners_calls_are_routed(method: str, path: str, query: str) -> None:
    assert match(method, path, query).path == path.removeprefix("/v1.41")


@pytest.mark.parametrize(
    ("case", "method", "path"), REFUSED_CALLS, ids=[c[0] for c in REFUSED_CALLS]
)
def test_other_calls_are_refused_or_left_to_the_engines_labels(
    case: str, method: str, path: str
) -> None:
    raw_path, _, query = path.partition("?")
    try:
        matched = match(method, raw_path, query)
    except Refused as refused:
        assert refused.status == 403
        return
    # allowed by shape: the guard then looks the container or image up, and refuses
    # anything not labelled as a runtime (the real-engine table shows it)
    assert matched.kind in ("container", "container-inspect", "image-inspect")
    assert "DECOY" in path or "/images/" in path


def test_a_container_list_shows_runtimes_only() -> None:
    listed = [
        {"Id": "a", "Labels": {"org.kernelhub.user": "u", "org.kernelhub.runtime-type": "cpu"}},
        {"Id": "guard", "Labels": {"com.docker.compose.service": "docker-proxy"}},
        {"Id": "bare", "Labels": None},
    ]
    assert [c["Id"] for c in filter_list(json.loads(json.dumps(listed)))] == ["a"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--listen", "2375"], "is not HOST:PORT"),
        (["--listen", "0.0.0.0:99999"], "is not HOST:PORT"),
        (["--drive-name-template", "d-{servername}"], "may use"),
        (["--max-pids", "0"], "at least 1"),
    ],
)
def test_the_guards_options_are_checked_with_a_clear_error(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(args)
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_the_guards_options_become_its_config() -> None:
    args, config = parse_args(
        ["--listen", "0.0.0.0:2375", "--network", "a", "--network", "b", "--image", "x:1"]
    )
    assert (args.host, args.port) == ("0.0.0.0", 2375)
    assert (config.networks, config.images, config.require_lockdown) == (("a", "b"), ("x:1",), True)
