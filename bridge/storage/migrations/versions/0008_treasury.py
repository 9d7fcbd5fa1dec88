"""treasury sweeps: per-deposit facts for the earned figure, sweeps and their audit trail

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 16:00:00
"""
from alembic import op
import sqlalchemy as sa
import bridge.storage.types


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('treasury_deposits',
        sa.Column('source', sa.LargeBinary(length=32), nullable=False),
        sa.Column('sequence', sa.BigInteger(), nullable=False),
        sa.Column('chain', sa.String(length=32), nullable=False),
        sa.Column('reference', sa.LargeBinary(length=32), nullable=False),
        sa.Column('amount', bridge.storage.types.U256(length=80), nullable=False),
        sa.Column('outcome', sa.String(length=24), nullable=True),
        sa.Column('credits', bridge.storage.types.U256(length=80), nullable=False),
        sa.Column('counted', bridge.storage.types.U256(length=80), nullable=False),
        sa.Column('refundable', bridge.storage.types.U256(length=80), nullable=False),
        sa.Column('refund_id', sa.LargeBinary(length=32), nullable=True),
        sa.Column('credited_at', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('source', 'sequence', name='pk_treasury_deposits'))
    op.create_index('ix_treasury_deposits_chain', 'treasury_deposits', ['chain'], unique=False)
    op.create_table('sweeps',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('release_id', sa.LargeBinary(length=32), nullable=False),
        sa.Column('chain', sa.String(length=32), nullable=False),
        sa.Column('token', sa.String(length=16), nullable=False),
        sa.Column('epoch', sa.BigInteger(), nullable=False),
        sa.Column('cutoff', sa.BigInteger(), nullable=False),
        sa.Column('amount', bridge.storage.types.U256(length=80), nullable=False),
        sa.Column('to', sa.LargeBinary(length=32), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('created_at', bridge.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', bridge.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('release_id', name='uq_sweep_release_id'),
        sa.UniqueConstraint('chain', 'epoch', name='uq_sweep_epoch'))
    op.create_table('sweep_items',
        sa.Column('release_id', sa.LargeBinary(length=32), nullable=False),
        sa.Column('source', sa.LargeBinary(length=32), nullable=False),
        sa.Column('sequence', sa.BigInteger(), nullable=False),
        sa.Column('amount', bridge.storage.types.U256(length=80), nullable=False),
        sa.PrimaryKeyConstraint('release_id', 'source', 'sequence', name='pk_sweep_items'))


def downgrade() -> None:
    op.drop_table('sweep_items')
    op.drop_table('sweeps')
    op.drop_index('ix_treasury_deposits_chain', table_name='treasury_deposits')
    op.drop_table('treasury_deposits')
