"""late deposits credited at a fresh quote: the gateway's signed decision per late deposit

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 13:00:00
"""
from alembic import op
import sqlalchemy as sa
import bridge.storage.types


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('late_decisions',
        sa.Column('source', sa.LargeBinary(length=32), nullable=False),
        sa.Column('sequence', sa.BigInteger(), nullable=False),
        sa.Column('reference', sa.LargeBinary(length=32), nullable=False),
        sa.Column('payment_id', sa.String(length=36), nullable=False),
        sa.Column('amount', bridge.storage.types.U256(length=80), nullable=False),
        sa.Column('block_time', sa.BigInteger(), nullable=False),
        sa.Column('decision', sa.String(length=8), nullable=False),
        sa.Column('credits', bridge.storage.types.U256(length=80), nullable=False),
        sa.Column('counted', bridge.storage.types.U256(length=80), nullable=False),
        sa.Column('refundable', bridge.storage.types.U256(length=80), nullable=False),
        sa.Column('fresh_quote_id', sa.String(length=36), nullable=False),
        sa.Column('fresh_amount', bridge.storage.types.U256(length=80), nullable=True),
        sa.Column('tolerance_bps', sa.Integer(), nullable=False),
        sa.Column('reason', sa.String(length=200), nullable=False),
        sa.Column('key_id', sa.String(length=64), nullable=False),
        sa.Column('signature', sa.LargeBinary(length=64), nullable=False),
        sa.Column('created_at', bridge.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('source', 'sequence', name='pk_late_decisions'))
    op.create_index('ix_late_decisions_payment_id', 'late_decisions', ['payment_id'], unique=False)
    op.create_index('ix_late_decisions_decision', 'late_decisions', ['decision'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_late_decisions_decision', table_name='late_decisions')
    op.drop_index('ix_late_decisions_payment_id', table_name='late_decisions')
    op.drop_table('late_decisions')
