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
