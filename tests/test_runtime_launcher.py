"""images/common/kernelhub-runtime leaves out at start what a single-user server never runs.

Run in the small test image (`kernelhub images build test`): the launcher is loaded as
the server would load it, then the single-user server's modules are imported and its
request logger is called, as the server calls it for every request.
"""

from __future__ import annotations

import docker
import pytest
from harness import docker_engine

pytestmark = [pytest.mark.docker]

TEST_IMAGE = "kernelhub/runtime-test:latest"

LAUNCHER_CHECK = """
import runpy, sys
sys.argv = ["kernelhub-runtime"]
runpy.run_path("/usr/local/bin/kernelhub-runtime", run_name="launcher")
import jupyterhub.singleuser, jupyterhub.log
from jupyter_server.base.handlers import APIHandler
from tornado.web import StaticFileHandler

def loaded(name):
    return type(sys.modules.get(name)).__name__ == "module"

hub_handlers = loaded("jupyterhub.handlers.pages") or "jupyterhub.handlers.base" in sys.modules
print("hub handlers at start:", hub_handlers)
print("hub database at start:", loaded("jupyterhub.orm") or "alembic" in sys.modules)

class Request:
    method, uri, remote_ip, headers = "GET", "/user/u/api/status", "127.0.0.1", {}
    def request_time(self):
        return 0.001

class Handler:  # what log_request reads of a tornado handler
    request, current_user, _headers = Request(), None, {}
    def get_status(self):
        return 200

for kind in (APIHandler, StaticFileHandler):
    handler = Handler()
    handler.__class__ = type("H", (Handler, kind), {})
    jupyterhub.log.log_request(handler)  # must not need the hub's handlers or database
print("logged requests:", "ok")
print("hub database after requests:", loaded("jupyterhub.orm") or "alembic" in sys.modules)
from jupyterhub import orm
print("database models on first use:", hasattr(orm, "User") and loaded("jupyterhub.orm"))
"""


def test_the_launcher_leaves_the_hubs_own_handlers_and_database_unloaded() -> None:
    with docker_engine("khlauncher", TEST_IMAGE) as engine:
        try:
            output = engine.containers.run(
                TEST_IMAGE, ["python", "-c", LAUNCHER_CHECK], remove=True, stderr=True
            )
        except docker.errors.ContainerError as e:
            pytest.fail(f"the launcher check failed in {TEST_IMAGE}: {e}", pytrace=False)
    assert output.decode().splitlines() == [
        "hub handlers at start: False",
        "hub database at start: False",
        "logged requests: ok",
        "hub database after requests: False",
        "database models on first use: True",
    ]


def test_a_warm_launcher_never_activated_exits_by_itself_without_starting_a_server() -> None:
    # a warm runtime whose hub died: nothing removes it, so it must go on its own
    warm = {"KERNELHUB_WARM_SECRET": "s" * 64, "KERNELHUB_WARM_PORT": "8888"}
    with docker_engine("khlauncher", TEST_IMAGE) as engine:
        output = engine.containers.run(
            TEST_IMAGE,
            ["kernelhub-runtime"],
            environment={**warm, "KERNELHUB_WARM_TTL": "2"},
            remove=True,
            stdout=True,
            stderr=True,
        )
    assert output.decode().splitlines() == [
        "kernelhub-runtime: warm, waiting for the hub's activation",
        "kernelhub-runtime: warm runtime not activated; exiting",
    ]


ACTIVATE_WITH_ANOTHER_PREFIX = """
import json, subprocess, sys, time, urllib.error, urllib.request
launcher = subprocess.Popen(["kernelhub-runtime"], stderr=subprocess.PIPE, text=True)
print(launcher.stderr.readline().strip())
def activate(environment):
    body = json.dumps({"secret": "s" * 64, "environment": environment}).encode()
    try:
        return urllib.request.urlopen("http://127.0.0.1:8888/activate", body, 5).status
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["message"]
made_with = {"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"}
print(activate({**made_with, "JUPYTERHUB_SERVICE_PREFIX": "/"}))
print(activate({**made_with, "JUPYTERHUB_API_TOKEN": "t" * 32}))
"""


def test_a_warm_launcher_refuses_an_activation_that_changes_what_it_imported_with() -> None:
    # JupyterHub takes the server's URL prefix (its cookies' path) at import: only the
    # token and public URL, read at start, may come with the activation
    environment = {
        "KERNELHUB_WARM_SECRET": "s" * 64,
        "KERNELHUB_WARM_TTL": "30",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
    }
    with docker_engine("khlauncher", TEST_IMAGE) as engine:
        output = engine.containers.run(
            TEST_IMAGE, ["python", "-c", ACTIVATE_WITH_ANOTHER_PREFIX],
            environment=environment, remove=True,
        )  # fmt: skip
    assert output.decode().splitlines() == [
        "kernelhub-runtime: warm, waiting for the hub's activation",
        "(409, \"this warm runtime was made with other ['JUPYTERHUB_SERVICE_PREFIX']\")",
        "202",
    ]
