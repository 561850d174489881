"""The REST endpoint under `{base_url}kernelhub-snippets/`, authenticated like the
server's own API (token or the hub's cookie) and authorized on the resource
`kernelhub-snippets` (GET: read, POST and DELETE: write).

    GET    snippets        {"snippets": [...], "problems": [{source, path, reason}]}
    GET    snippets/{id}   one snippet (the winning source's)
    POST   snippets        save the cells in the body as a user snippet -> 201
    DELETE snippets/{id}   remove a user snippet -> 204; 403 for built-in and site ones

Errors are JSON {"status": code, "message": text}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from traitlets import Unicode, default
from traitlets.config import Configurable

from kernelhub_snippets.errors import error_json
from kernelhub_snippets.fileformat import MAX_FILE_BYTES, SnippetError
from kernelhub_snippets.library import Library, snippet_from_request

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp

AUTH_RESOURCE = "kernelhub-snippets"
URL_PREFIX = "kernelhub-snippets"
SETTINGS_KEY = "kernelhub_snippets_library"
SITE_DIR_ENV = "KERNELHUB_SITE_SNIPPETS"


class KernelhubSnippets(Configurable):
    """Where the site-wide and the user's snippets live (`c.KernelhubSnippets.site_dir`)."""

    site_dir = Unicode(
        help=f"""Site-wide snippets the hub admin manages: a folder the deployment mounts
        read-only into every runtime. Default: ${SITE_DIR_ENV}, else /etc/kernelhub/snippets.""",
    ).tag(config=True)

    user_dir = Unicode(
        help="""The user's own snippets: on the persistent drive, which is the home
        directory in kernelhub runtimes. Default: ~/.kernelhub/snippets.""",
    ).tag(config=True)

    @default("site_dir")
    def _site_dir_default(self) -> str:
        return os.environ.get(SITE_DIR_ENV) or "/etc/kernelhub/snippets"

    @default("user_dir")
    def _user_dir_default(self) -> str:
        return str(Path.home() / ".kernelhub" / "snippets")

    def library(self) -> Library:
        return Library(Path(self.site_dir).expanduser(), Path(self.user_dir).expanduser())


class SnippetsHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def library(self) -> Library:
        library: Library = self.settings[SETTINGS_KEY]
        return library

    def fail(self, status: int, message: str) -> web.HTTPError:
        # "%s": tornado formats log_message with args, and a user's title may hold a %
        return web.HTTPError(status, "%s", message)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """{"status", "message"}, so that the panel can show why without parsing."""
        self.set_header("Content-Type", "application/json")
        self.finish(error_json(status_code, kwargs.get("exc_info"), "Unhandled error"))

    @web.authenticated
    @authorized
    def get(self, snippet_id: str | None = None) -> None:
        if snippet_id is None:
            listing = self.library.listing()
            for problem in listing.problems:
                self.log.warning("snippet skipped: %s: %s", problem.path, problem.reason)
            self.finish(json.dumps(listing.to_json()))
            return
        snippet = self.library.get(snippet_id)
        if snippet is None:
            raise self.fail(404, f"no snippet {snippet_id!r}")
        self.finish(json.dumps(snippet.to_json()))

    @web.authenticated
    @authorized
    def post(self, snippet_id: str | None = None) -> None:
        if snippet_id is not None:
            raise self.fail(405, "POST to snippets, with the id in the body")
        if len(self.request.body) > MAX_FILE_BYTES:
            raise self.fail(413, f"a snippet is limited to {MAX_FILE_BYTES // 1024} KiB")
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError as e:
            raise self.fail(400, f"the body is not JSON: {e}") from None
        try:
            snippet = self.library.save(snippet_from_request(body, self.library))
        except SnippetError as e:
            raise self.fail(400, str(e)) from None
        except OSError as e:
            self.log.error("cannot save snippet: %s", e)
            raise self.fail(500, f"cannot save the snippet on your drive: {e.strerror}") from None
        self.set_status(201)
        self.set_header("Location", url_path_join(self.request.path, snippet.id))
        self.finish(json.dumps(snippet.to_json()))

    @web.authenticated
    @authorized
    def delete(self, snippet_id: str | None = None) -> None:
        if snippet_id is None:
            raise self.fail(405, "DELETE one snippet: snippets/{id}")
        try:
            deleted = self.library.delete(snippet_id)
        except SnippetError as e:
            raise self.fail(404, str(e)) from None
        except OSError as e:
            raise self.fail(500, f"cannot delete the snippet: {e.strerror}") from None
        if deleted:
            self.set_status(204)
            self.finish()
            return
        owner = self.library.owner(snippet_id)
        if owner == "builtin":
            raise self.fail(403, f"{snippet_id!r} is built in; save your own to replace it")
        if owner == "site":
            raise self.fail(403, f"{snippet_id!r} is a site snippet; the hub admin manages it")
        raise self.fail(404, f"no snippet {snippet_id!r}")


def load_extension(serverapp: ServerApp) -> None:
    config = KernelhubSnippets(parent=serverapp)
    library = config.library()
    web_app = serverapp.web_app
    web_app.settings[SETTINGS_KEY] = library
    base = url_path_join(web_app.settings["base_url"], URL_PREFIX)
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "snippets"), SnippetsHandler),
            (url_path_join(base, r"snippets/([^/]+)"), SnippetsHandler),
        ],
    )
    serverapp.log.info(
        "kernelhub-snippets: site snippets from %s, user snippets in %s",
        library.dirs["site"],
        library.dirs["user"],
    )
