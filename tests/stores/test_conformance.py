"""The conformance suite against every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ogmem_memory.stores import SessionStore
from ogmem_memory.testing import StoreConformance
from tests.conftest import make_store


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    with make_store(request.param, tmp_path, request) as s:
        yield s


class TestAllBackends(StoreConformance):
    """``store`` is parametrised over memory and sqlite (and postgres in test_postgres.py)."""
