"""Storage: SQLAlchemy 2.x models, repositories and sessions. SQLite by default, PostgreSQL
supported; the schema is owned by Alembic migrations in ``migrations/``.

Queries live only in the repository modules of this package (design rule 11).
"""
