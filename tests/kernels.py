"""Drive a runtime the way a notebook does: run code in a kernel, type in a terminal.

Over the server's own REST API and websockets, through the hub's proxy, with the
user's API token (the header, never the URL).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import websocket  # websocket-client

KERNEL_TIMEOUT = 60.0
DEATH = ("restarting", "dead", "autorestarting")  # states the server reports for a dead kernel


@dataclass
class Execution:
    stdout: str = ""
    stderr: str = ""
    error: str | None = None  # "ename: evalue" when the cell raised
    status: str = ""

    def ok(self) -> str:
        """stdout, after checking that the cell ran without an error."""
        assert self.error is None, f"cell failed: {self.error}\n{self.stderr}"
        return self.stdout


@dataclass
class RuntimeClient:
    """A user's runtime at ``base`` (e.g. http://127.0.0.1:8000/user/alice/)."""

    base: str
    token: str = field(repr=False)  # never in an assertion message
    _kernel: str | None = field(default=None, init=False)

    @classmethod
    def of(cls, hub_url: str, user: str, server: str, token: str) -> RuntimeClient:
        path = f"/user/{user}/{server}/" if server else f"/user/{user}/"
        return cls(hub_url.rstrip("/") + path, token)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.base + path, headers=self.headers, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.base + path, headers=self.headers, timeout=30, **kwargs)

    def kernel(self) -> str:
        if self._kernel is None:
            response = self.post("api/kernels", json={"name": "python3"})
            assert response.status_code == 201, response.text
            self._kernel = response.json()["id"]
        return self._kernel

    def _ws(self, path: str) -> websocket.WebSocket:
        url = self.base.replace("http://", "ws://", 1) + path
        return websocket.create_connection(
            url, header=[f"Authorization: token {self.token}"], timeout=KERNEL_TIMEOUT
        )

    def run(self, code: str, timeout: float = KERNEL_TIMEOUT) -> Execution:
        """Execute ``code`` in this runtime's kernel (started on first use)."""
        kernel = self.kernel()
        ws = self._ws(f"api/kernels/{kernel}/channels")
        try:
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps(_execute_request(msg_id, code)))
            result = Execution()
            deadline = time.monotonic() + timeout
            reply_seen = idle_seen = False
            while not (reply_seen and idle_seen):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply from the kernel after {timeout:.0f} s")
                ws.settimeout(left)
                message = json.loads(ws.recv())
                kind, content = message["msg_type"], message["content"]
                if kind == "status" and content["execution_state"] in DEATH:
                    result.error = f"kernel {content['execution_state']}"  # killed mid-cell
                    return result
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if kind == "stream":
                    if content["name"] == "stdout":
                        result.stdout += content["text"]
                    else:
                        result.stderr += content["text"]
                elif kind == "error":
                    result.error = f"{content['ename']}: {content['evalue']}"
                elif kind == "execute_reply":
                    reply_seen, result.status = True, content["status"]
                elif kind == "status" and content["execution_state"] == "idle":
                    idle_seen = True
            return result
        finally:
            ws.close()

    def terminal(self, commands: str, wait_for: str, timeout: float = 30.0) -> str:
        """Type ``commands`` into a new terminal; its output once ``wait_for`` shows."""
        response = self.post("api/terminals")
        assert response.status_code == 200, response.text
        name = response.json()["name"]
        ws = self._ws(f"terminals/websocket/{name}")
        output = ""
        try:
            ws.send(json.dumps(["stdin", commands + "\r"]))
            deadline = time.monotonic() + timeout
            while wait_for not in output:
                left = deadline - time.monotonic()
                assert left > 0, f"terminal never printed {wait_for!r}:\n{output}"
                ws.settimeout(left)
                kind, *rest = json.loads(ws.recv())
                if kind == "stdout":
                    output += rest[0]
            return output
        finally:
            ws.close()


def _execute_request(msg_id: str, code: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": msg_id,
            "username": "test",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
        },
        "channel": "shell",
    }


# ---- a user's attempts to change their own server -------------------------------------------

REWRITTEN_HEADER = "X-Kernelhub-Rewritten"
PLANT_SERVER_REWRITES = f"""
import os, site
os.makedirs(os.path.expanduser("~/.jupyter"), exist_ok=True)
with open(os.path.expanduser("~/.jupyter/jupyter_server_config.py"), "w") as f:
    f.write("c.ServerApp.tornado_settings = {{'headers': {{'{REWRITTEN_HEADER}': '1'}}}}\\n")
os.makedirs(site.getusersitepackages(), exist_ok=True)
with open(os.path.join(site.getusersitepackages(), "kernelhub_probe.pth"), "w") as f:
    f.write("import os, sys; open(os.path.expanduser('~/pth-ran-%d' % os.getpid()), 'w')"
            ".write(' '.join(sys.orig_argv))\\n")
print("planted")
"""


def plant_server_rewrites(client: RuntimeClient) -> None:
    """From the runtime's kernel, onto the drive: a user Jupyter config that adds
    ``REWRITTEN_HEADER`` to every answer, and a user-site ``.pth`` file that records
    the command line of every process that runs it."""
    assert client.run(PLANT_SERVER_REWRITES).ok().strip() == "planted"


def assert_server_not_rewritten(client: RuntimeClient) -> None:
    """The restarted server ignored both: no header, and no server process ran the
    ``.pth`` file, while the user's kernels did (their site-packages are theirs)."""
    response = client.get("api/status")
    assert response.status_code == 200
    assert REWRITTEN_HEADER.lower() not in {k.lower() for k in response.headers}
    ran = client.run(
        "import glob, os\n"
        "for path in glob.glob(os.path.expanduser('~/pth-ran-*')):\n"
        "    print(open(path).read())"
    ).ok()
    assert "singleuser" not in ran and "kernelhub-runtime" not in ran, ran
    assert "ipykernel" in ran
