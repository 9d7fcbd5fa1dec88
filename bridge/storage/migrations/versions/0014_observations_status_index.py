"""observations: drop ``ix_observations_status`` (``ix_observations_due`` covers it)

``ix_observations_due`` is ``(status, next_attempt_at)``: its leading column serves every lookup
by status alone (``observations_by_status``, ``observations_due``) as well as the one-column
index did, on SQLite and PostgreSQL alike (checked with EXPLAIN; see
tests/integration/storage/test_observation_indexes.py). The duplicate was one more b-tree to
update for every stored deposit: a sixth of the insert work of a catch-up scan
(bench/relayer_scan.py). The downgrade recreates it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 01:30:00
"""
from alembic import op


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.drop_index('ix_observations_status')


def downgrade() -> None:
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.create_index('ix_observations_status', ['status'], unique=False)
