"""Column types that keep money exact and time in UTC on every backend."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import DateTime, String
from sqlalchemy.types import TypeDecorator


class U256(TypeDecorator):
    """A non-negative integer up to 2**256-1, stored as a decimal string.

    SQLite integers stop at 2**63 and its NUMERIC is a float: 10 ETH in wei does not fit
    either, so amounts are text. Equality look-ups work; do not sort or sum in SQL.
    """

    impl = String(80)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 2**256:
            raise ValueError("U256 column takes an int in [0, 2**256)")
        return str(value)

    def process_result_value(self, value, dialect):
        return None if value is None else int(value)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both SQLite (which drops tzinfo) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
