"""Quota notices inside the notebook: `GET {base_url}kernelhub/notices`.

kernelhub's quota daemon warns before it stops a runtime (idle, session length) and
records why it stopped one. The hub shows that on its home page; this endpoint lets
the notebook show it where the user is working. The runtime asks the hub with its
own token (``JUPYTERHUB_API_TOKEN``, which kernelhub gives ``read:users:activity``
for its user), so the browser needs no hub credentials.

    GET kernelhub/notices   {"notices": [{id, kind, title, time, message, server,
                            runtime_type, reason, this_server}], "hub": true|false}

Outside a hub, or with a hub that cannot be asked right now, the list is empty and
``hub`` says whether one was asked: a poller in the page must never break the page.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp

AUTH_RESOURCE = "kernelhub-snippets"  # reading notices is reading this extension's data
HUB_TIMEOUT_SECONDS = 10.0


class NoticesHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        api_url = os.environ.get("JUPYTERHUB_API_URL", "")
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        user = os.environ.get("JUPYTERHUB_USER", "")
        if not (api_url and token and user):
            self.finish(json.dumps({"notices": [], "hub": False}))
            return
        server = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
        notices = await self._ask_hub(api_url, token, user)
        for notice in notices:
            notice["this_server"] = notice.get("server", "") == server
        self.finish(json.dumps({"notices": notices, "hub": True}))

    async def _ask_hub(self, api_url: str, token: str, user: str) -> list[dict[str, Any]]:
        url = url_path_join(api_url, "kernelhub/notices", quote(user, safe=""))
        try:
            response = await AsyncHTTPClient().fetch(
                url,
                headers={"Authorization": f"token {token}"},
                request_timeout=HUB_TIMEOUT_SECONDS,
            )
            notices = json.loads(response.body)["notices"]
        except HTTPClientError as e:
            # 404: a hub without quota notices; 403: a token without the scope
            self.log.debug("kernelhub notices: the hub answered %s", e.code)
            return []
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.log.warning("kernelhub notices: cannot ask the hub: %s", type(e).__name__)
            return []
        return [n for n in notices if isinstance(n, dict)]


def load_notices(serverapp: ServerApp) -> None:
    web_app = serverapp.web_app
    path = url_path_join(web_app.settings["base_url"], "kernelhub", "notices")
    web_app.add_handlers(".*$", [(path, NoticesHandler)])
