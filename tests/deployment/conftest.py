"""One compose deployment for every test of this package, torn down after the last."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from compose_deployment import deployed


@pytest.fixture(scope="package")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with deployed(tmp_path_factory.mktemp("secrets")) as running:
        yield running
