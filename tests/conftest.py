"""Shared fixtures. ``db`` is parametrized over SQLite (embedded default) and PostgreSQL (the
server ``scripts/pg.sh`` starts; ``make test`` exports CREDITBRIDGE_TEST_PG_URL).

``make test`` runs the suite on two pytest-xdist workers (scripts/test.sh): each worker has a
PostgreSQL database of its own (``<name>_<worker>``, created here), and gets whole work units
(``work_unit``) so that a module's or a directory's chains are started once, and the end-to-end
devnets run one at a time on one worker while the other worker runs the rest."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bridge.storage.db import Database

TESTS = Path(__file__).resolve().parent


def _worker_pg_url(url: str | None) -> str | None:
    """Under pytest-xdist, this worker's own database on the test server: tests empty their
    database (DROP SCHEMA) at will, which two workers must not do to each other."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    u = make_url(url)
    return u.set(database=f"{u.database}_{worker}").render_as_string(hide_password=False)


PG_URL = _worker_pg_url(os.environ.get("CREDITBRIDGE_TEST_PG_URL"))


async def _create_worker_database(url: str) -> None:
    import asyncpg

    u = make_url(url)
    server = make_url(os.environ["CREDITBRIDGE_TEST_PG_URL"]).set(drivername="postgresql")
    conn = await asyncpg.connect(server.render_as_string(hide_password=False))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", u.database):
            await conn.execute(f'CREATE DATABASE "{u.database}"')
    finally:
        await conn.close()


def pytest_sessionstart(session):
    if PG_URL and PG_URL != os.environ.get("CREDITBRIDGE_TEST_PG_URL"):
        asyncio.run(_create_worker_database(PG_URL))


# --- xdist work units -----------------------------------------------------------------------
# scripts/test.sh runs two workers; each gets whole work units (xdist's loadscope scheduling
# with our own scopes). Directories whose tests share a session-scoped chain (one chopsticks,
# one TON chain) are one unit, so the chain starts once; other modules are a unit each
# (module-scoped anvils); every e2e test is in one unit: one devnet at a time (each is a dozen
# processes with timing-bound assertions: reorg depth, drain bounds) on one worker, while the
# other worker runs everything else. (xdist's own ``xdist_group`` marks do not work with
# pytest 9: xdist 3.8 renames ``item._nodeid``, which pytest 9 no longer reads.)
_SHARED_DIRS = ("tests/integration/substrate/", "tests/integration/ton/")


def work_unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    if path.startswith("tests/e2e/"):
        return "tests/e2e"
    for d in _SHARED_DIRS:
        if path.startswith(d):
            return d
    return path


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnitScheduling(config, log)


def _e2e_order(item) -> int:
    """The e2e tests on the shared devnet (tests/e2e/conftest.py) run consecutively, after the
    ones with devnets of their own, and those that change it for good (``mutates_devnet``) last."""
    if "devnet" not in getattr(item, "fixturenames", ()):
        return 0
    return 2 if item.get_closest_marker("mutates_devnet") else 1


def pytest_collection_modifyitems(config, items):
    e2e = [i for i, item in enumerate(items) if work_unit(item.nodeid) == "tests/e2e"]
    for i, item in zip(e2e, sorted((items[i] for i in e2e), key=_e2e_order)):  # stable: files keep their order
        items[i] = item


# --- migrated SQLite schema, once per worker -----------------------------------------------
# Hundreds of tests (gateways, components) open a new SQLite file and migrate it: 13 Alembic
# revisions each time (a good share of a short API test). The first migration in a worker
# keeps its result as a template; a new SQLite file is then a copy of it, and migrate() still
# runs (a no-op at head, checking the revision). Files that already exist (a test building an
# old schema on purpose) are migrated for real. CREDITBRIDGE_TEST_MIGRATE_EACH=1 turns it off.
_real_migrate = Database.migrate


def _sqlite_file(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" or u.query:
        return None
    return Path(u.database)


@pytest.fixture(scope="session", autouse=True)
def _sqlite_schema_template(tmp_path_factory):
    if os.environ.get("CREDITBRIDGE_TEST_MIGRATE_EACH"):
        yield
        return
    template = tmp_path_factory.mktemp("schema") / "migrated.sqlite"

    async def migrate(self: Database) -> None:
        target = None if self.is_postgres else _sqlite_file(self.url)
        if target is None or target.exists():
            return await _real_migrate(self)
        if not template.exists():
            # a file of its own per attempt: two gateways migrating at once both build one
            seed_file = f"{template}.{id(self)}.tmp"
            seed = Database(f"sqlite+aiosqlite:///{seed_file}")
            try:
                await _real_migrate(seed)
            finally:
                await seed.dispose()
            os.replace(seed_file, template)  # only a complete schema is ever copied
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, target)
        await _real_migrate(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Database, "migrate", migrate)
        yield


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
