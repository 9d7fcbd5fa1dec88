"""Shared fixtures. ``db`` is parametrized over SQLite (embedded default) and PostgreSQL (the
server ``scripts/pg.sh`` starts; ``make test`` exports CREDITBRIDGE_TEST_PG_URL).

Under pytest-xdist (``scripts/test.sh`` runs two workers) every worker has a database of its
own on that server, ``<name>_<worker id>``, created when the worker starts: tests drop and
recreate the ``public`` schema, which two workers must never do to each other."""

from __future__ import annotations

import asyncio
import os

import pytest
from sqlalchemy import text

from bridge.storage.db import Database

WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... under xdist; None in one process
BASE_PG_URL = os.environ.get("CREDITBRIDGE_TEST_PG_URL")
PG_URL = f"{BASE_PG_URL}_{WORKER}" if BASE_PG_URL and WORKER else BASE_PG_URL


async def _create_worker_db() -> None:
    import asyncpg

    dsn = BASE_PG_URL.replace("postgresql+asyncpg://", "postgresql://", 1)
    name = PG_URL.rsplit("/", 1)[1]
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def pytest_configure(config) -> None:
    if BASE_PG_URL and WORKER:
        asyncio.run(_create_worker_db())


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


# Under xdist a group of tests runs on one worker, in order, and groups go out in collection
# order (``scripts/test.sh``: two workers). The end-to-end tests are one group: each module starts
# a whole devnet (11 processes), and two at once on a 2-core machine starve each other's chains.
# The substrate and TON tests share one session chain each (chopsticks, the TVM liteserver) that
# a second worker would start again. Every other module is a group of its own, so its
# module-scoped chains start once and its tests keep their order. (A scheduler of our own, not
# ``--dist loadgroup``: xdist 3.8 tags grouped tests by rewriting ``item._nodeid``, which pytest 9
# no longer reads, so its groups silently fell apart into single tests.)
SHARED_GROUPS = {"e2e": "tests/e2e/", "substrate": "tests/integration/substrate/", "ton": "tests/integration/ton/"}


def xdist_group_of(nodeid: str) -> str:
    """The group of a test: a shared group by directory, else its module."""
    for group, prefix in SHARED_GROUPS.items():
        if nodeid.startswith(prefix):
            return group
    return nodeid.split("::", 1)[0]


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid)

    return GroupScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
async def _leftover_tasks():
    """At the end of a session, what the tests left running on the session loop is cancelled
    and given 30 s; a task that does not finish, and a default-executor thread still busy (the
    loop's close waits for both, without a bound), is printed with its stack to stderr. A worker
    once hung for more than 10 minutes in that close with nothing to say what it waited for."""
    yield
    import sys
    import threading
    import traceback

    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for t in left:
        t.cancel()
    pending = set()
    if left:
        _, pending = await asyncio.wait(left, timeout=30)
    out = sys.__stderr__
    for t in pending:
        print(f"\nleftover task did not finish 30 s after cancel: {t!r}", file=out)
        t.print_stack(file=out)
    frames = sys._current_frames()
    for th in threading.enumerate():
        frame = frames.get(th.ident)
        if frame is None or not th.name.startswith("asyncio_"):
            continue
        stack = traceback.extract_stack(frame)
        if any(f.name == "_worker" and f.filename.endswith("thread.py") for f in stack[-2:]):
            continue  # idle, waiting for work
        print(f"\ndefault-executor thread {th.name} still busy at session end:", file=out)
        traceback.print_list(stack, file=out)
