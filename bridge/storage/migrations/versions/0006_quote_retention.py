"""quote retention: indexes to find expired quotes and the late decisions that keep one

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 10:00:00
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('quotes', schema=None) as batch_op:
        batch_op.create_index('ix_quotes_expires_at', ['expires_at'], unique=False)
    with op.batch_alter_table('late_decisions', schema=None) as batch_op:
        batch_op.create_index('ix_late_decisions_fresh_quote', ['fresh_quote_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('late_decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_late_decisions_fresh_quote')
    with op.batch_alter_table('quotes', schema=None) as batch_op:
        batch_op.drop_index('ix_quotes_expires_at')
