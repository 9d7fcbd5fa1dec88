"""Engines, sessions and migrations.

One ``AsyncEngine`` per process; one session per request or task, opened with
``async with db.begin() as session`` (commit on success, roll back on error).

Migrations are an explicit step on PostgreSQL: ``creditbridge db upgrade`` (``migrate``)
runs Alembic once, under a transaction-scoped advisory lock, so two upgrades started at
once run one after the other (the second finds nothing to do). ``open_database``, which the
components use at start-up, only *checks* a PostgreSQL schema and refuses an unmigrated or
behind one (one line: run ``creditbridge db upgrade``): N replicas starting together never
race to migrate. SQLite is the one-process embedded default: ``open_database`` migrates it
(nothing else can be using the file's schema at that moment).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bridge.errors import ConfigError, StorageError

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x63726D69  # pg advisory lock key of `creditbridge db upgrade` ("crmi")


def _check_url(url: str) -> None:
    if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError("storage.url must start with sqlite+aiosqlite:// or postgresql+asyncpg://")


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        _check_url(url)
        self.url = url
        kwargs: dict = {"echo": echo, "pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if url.startswith("sqlite"):

            @event.listens_for(self.engine.sync_engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, class_=AsyncSession)

    def begin(self):
        """``async with db.begin() as s:`` -- one transaction."""
        return self.sessionmaker.begin()

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith("postgresql")

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (on PostgreSQL under an advisory
        lock held until the migration's transaction ends)."""
        try:
            async with self.engine.begin() as conn:
                if self.is_postgres:
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
                await conn.run_sync(_upgrade)
        except SQLAlchemyError as e:
            raise StorageError(f"migration failed: {e.__class__.__name__}: {e.orig if hasattr(e, 'orig') else e}") from None

    async def revisions(self) -> tuple[str | None, str]:
        """``(the database's Alembic revision or None, the code's head revision)``."""
        try:
            async with self.engine.connect() as conn:
                current = await conn.run_sync(_current_revision)
        except SQLAlchemyError as e:
            raise StorageError(f"database unavailable: {e.__class__.__name__}") from None
        return current, _head_revision()

    async def check_schema(self) -> None:
        """Raise ConfigError (one line, naming the fix) unless the schema is at the code's head."""
        current, head = await self.revisions()
        if current == head:
            return
        if current is None:
            state = "is not migrated"
        elif current in _known_revisions():
            state = f"is at revision {current}, behind {head}"
        else:
            state = f"is at revision {current}, which this creditbridge does not know (newer code migrated it?)"
        raise ConfigError(f"the database {state}: run `creditbridge db upgrade --config <this config>` first")

    async def dispose(self) -> None:
        await self.engine.dispose()


def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config())


def _head_revision() -> str:
    return _script().get_current_head()


def _known_revisions() -> set[str]:
    return {r.revision for r in _script().walk_revisions()}


def _current_revision(sync_conn) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_conn).get_current_revision()


def _upgrade(sync_conn) -> None:
    from alembic import command

    cfg = _alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


async def open_database(url: str) -> Database:
    """The database a component runs on: SQLite is migrated here (embedded, one process);
    PostgreSQL must have been upgraded by ``creditbridge db upgrade`` (ConfigError otherwise)."""
    db = Database(url)
    try:
        if db.is_postgres:
            await db.check_schema()
        else:
            await db.migrate()
    except BaseException:
        await db.dispose()
        raise
    return db


def run(coro):  # small helper for sync callers (CLI)
    return asyncio.run(coro)
