"""A Jupyter server extension for tests: logs what every request's headers carry.

tests/security/test_quota_token.py loads it into every runtime through the operator's
config. For each request it appends to ``.kernelhub-headers.jsonl`` on the user's
drive the SHA-256 of every word of every header and query value, and of every
``Authorization`` credential, never a token in clear, with the digest of the server's
own token beside them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

LOG_NAME = ".kernelhub-headers.jsonl"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "kh_header_log"}]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _load_jupyter_server_extension(serverapp: Any) -> None:
    log = Path(serverapp.root_dir) / LOG_NAME
    own = _digest(os.environ.get("JUPYTERHUB_API_TOKEN", ""))
    app = serverapp.web_app
    find = app.find_handler  # tornado asks the application this for every request

    def logging_find(request: Any, **kwargs: Any) -> Any:
        words: set[str] = set()
        auth: list[str] = []
        for name, value in request.headers.get_all():
            words.update(w for w in re.split(r"[\s;,=]+", value) if w)
            if name.lower() == "authorization":
                auth.append(_digest(value.split(None, 1)[-1]))
        for values in request.query_arguments.values():
            words.update(v.decode(errors="replace") for v in values)
        record = {"path": request.path, "own": own, "auth": auth}
        record["words"] = sorted(_digest(w) for w in words)
        with log.open("a") as out:
            out.write(json.dumps(record) + "\n")
        return find(request, **kwargs)

    app.find_handler = logging_find
