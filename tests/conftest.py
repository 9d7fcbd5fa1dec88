"""Shared fixtures. ``db`` is parametrized over SQLite (embedded default) and PostgreSQL (the
server ``scripts/pg.sh`` starts; ``make test`` exports CREDITBRIDGE_TEST_PG_URL)."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from bridge.storage.db import Database

PG_URL = os.environ.get("CREDITBRIDGE_TEST_PG_URL")


def require_pg() -> str:
    """The test server's URL; without one a skip on a developer's machine, a failure in CI."""
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CREDITBRIDGE_TEST_PG_URL is not set in CI: run the suite with `make test`")
        pytest.skip("no PostgreSQL: run through `make test` (scripts/pg.sh starts one)")
    return PG_URL


async def _fresh_pg(url: str) -> None:
    d = Database(url)
    async with d.engine.begin() as c:
        await c.execute(text("DROP SCHEMA public CASCADE"))
        await c.execute(text("CREATE SCHEMA public"))
    await d.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request, tmp_path):
    if request.param == "sqlite":
        d = Database(f"sqlite+aiosqlite:///{tmp_path}/test.sqlite")
    else:
        require_pg()
        await _fresh_pg(PG_URL)
        d = Database(PG_URL)
    await d.migrate()
    yield d
    await d.dispose()
