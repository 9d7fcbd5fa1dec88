"""payment lifecycle: refundable amounts, merchants' API keys, webhooks, governor, refunds

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:00:00
"""
from alembic import op
import sqlalchemy as sa
import bridge.storage.types


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('refundable', bridge.storage.types.U256(length=80), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('merchant_id', sa.String(length=16), nullable=True))
        batch_op.create_index('ix_payments_merchant_id', ['merchant_id'], unique=False)
    op.create_table('api_keys',
        sa.Column('id', sa.String(length=16), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('key_hash', sa.LargeBinary(length=32), nullable=False),
        sa.Column('created_at', bridge.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', bridge.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'))
    op.create_table('webhooks',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('merchant_id', sa.String(length=16), nullable=False),
        sa.Column('url', sa.String(length=2048), nullable=False),
        sa.Column('secret', sa.String(length=80), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', bridge.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_webhooks_merchant_id', 'webhooks', ['merchant_id'], unique=False)
    op.create_table('webhook_events',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('payment_id', sa.String(length=36), nullable=False),
        sa.Column('merchant_id', sa.String(length=16), nullable=True),
        sa.Column('type', sa.String(length=48), nullable=False),
        sa.Column('payload', sa.Text(), nullable=False),
        sa.Column('created_at', bridge.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_webhook_events_payment_id', 'webhook_events', ['payment_id'], unique=False)
    op.create_table('webhook_deliveries',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('webhook_id', sa.String(length=36), nullable=False),
        sa.Column('event_id', sa.String(length=36), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', bridge.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_status', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.String(length=200), nullable=False),
        sa.Column('redelivery_of', sa.String(length=36), nullable=True),
        sa.Column('created_at', bridge.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', bridge.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_webhook_deliveries_webhook_id', 'webhook_deliveries', ['webhook_id'], unique=False)
    op.create_index('ix_webhook_deliveries_due', 'webhook_deliveries', ['status', 'next_attempt_at'], unique=False)
    op.create_table('webhook_attempts',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('delivery_id', sa.String(length=36), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('at', bridge.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('error', sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_webhook_attempts_delivery_id', 'webhook_attempts', ['delivery_id'], unique=False)
    op.create_table('governor_items',
        sa.Column('source', sa.LargeBinary(length=32), nullable=False),
        sa.Column('sequence', sa.BigInteger(), nullable=False),
        sa.Column('chain', sa.String(length=32), nullable=False),
        sa.Column('block_time', sa.BigInteger(), nullable=False),
        sa.Column('credits', bridge.storage.types.U256(length=80), nullable=False),
        sa.Column('release_at', sa.BigInteger(), nullable=False),
        sa.Column('created_at', bridge.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('source', 'sequence'))
    op.create_index('ix_governor_chain_release', 'governor_items', ['chain', 'release_at'], unique=False)
    op.create_table('releases',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('source', sa.LargeBinary(length=32), nullable=False),
        sa.Column('sequence', sa.BigInteger(), nullable=False),
        sa.Column('chain', sa.String(length=32), nullable=False),
        sa.Column('purpose', sa.String(length=16), nullable=False),
        sa.Column('to', sa.LargeBinary(length=20), nullable=False),
        sa.Column('amount', bridge.storage.types.U256(length=80), nullable=False),
        sa.Column('release_id', sa.LargeBinary(length=32), nullable=False),
        sa.Column('signature', sa.LargeBinary(length=65), nullable=False),
        sa.Column('payment_id', sa.String(length=36), nullable=False),
        sa.Column('created_at', bridge.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('release_id', name='uq_release_id'))


def downgrade() -> None:
    op.drop_table('releases')
    op.drop_index('ix_governor_chain_release', table_name='governor_items')
    op.drop_table('governor_items')
    op.drop_index('ix_webhook_attempts_delivery_id', table_name='webhook_attempts')
    op.drop_table('webhook_attempts')
    op.drop_index('ix_webhook_deliveries_due', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_webhook_id', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_index('ix_webhook_events_payment_id', table_name='webhook_events')
    op.drop_table('webhook_events')
    op.drop_index('ix_webhooks_merchant_id', table_name='webhooks')
    op.drop_table('webhooks')
    op.drop_table('api_keys')
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index('ix_payments_merchant_id')
        batch_op.drop_column('merchant_id')
        batch_op.drop_column('refundable')
