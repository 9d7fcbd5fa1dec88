"""Engines, sessions and migrations.

One ``AsyncEngine`` per process; one session per request or task, opened with
``async with db.begin() as session`` (commit on success, roll back on error).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bridge.errors import ConfigError, StorageError

MIGRATIONS = Path(__file__).parent / "migrations"


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

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(_upgrade)
        except SQLAlchemyError as e:
            raise StorageError(f"migration failed: {e.__class__.__name__}: {e.orig if hasattr(e, 'orig') else e}") from None

    async def dispose(self) -> None:
        await self.engine.dispose()


def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _upgrade(sync_conn) -> None:
    from alembic import command

    cfg = _alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


async def open_database(url: str) -> Database:
    db = Database(url)
    await db.migrate()
    return db


def run(coro):  # small helper for sync callers (CLI)
    return asyncio.run(coro)
