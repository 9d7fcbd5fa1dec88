"""treasury sweeps: where the custody paid each sweep (tx hash, block, block time), when it can tell

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 17:00:00
"""
from alembic import op
import sqlalchemy as sa
import bridge.storage.types


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sweeps') as b:
        b.add_column(sa.Column('paid_tx', sa.LargeBinary(length=64), nullable=True))
        b.add_column(sa.Column('paid_block', sa.BigInteger(), nullable=True))
        b.add_column(sa.Column('paid_at', bridge.storage.types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sweeps') as b:
        b.drop_column('paid_at')
        b.drop_column('paid_block')
        b.drop_column('paid_tx')
