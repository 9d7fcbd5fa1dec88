"""API replicas on one database: payment versions (one event per state change), webhook
delivery claims (leased), singleton-job leases

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 19:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('payments') as b:
        b.add_column(sa.Column('version', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('webhook_events') as b:
        b.add_column(sa.Column('seq', sa.Integer(), nullable=True))
    op.create_index('uq_webhook_events_payment_seq', 'webhook_events', ['payment_id', 'seq'], unique=True)
    with op.batch_alter_table('webhook_deliveries') as b:
        b.add_column(sa.Column('claimed_by', sa.String(length=128), nullable=True))
        b.add_column(sa.Column('claimed_until', sa.Float(precision=53), nullable=True))
    op.create_table(
        'leases',
        sa.Column('name', sa.String(length=64), primary_key=True),
        sa.Column('holder', sa.String(length=128), nullable=False),
        sa.Column('acquired_at', sa.Float(precision=53), nullable=False),
        sa.Column('expires_at', sa.Float(precision=53), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('leases')
    with op.batch_alter_table('webhook_deliveries') as b:
        b.drop_column('claimed_until')
        b.drop_column('claimed_by')
    op.drop_index('uq_webhook_events_payment_seq', table_name='webhook_events')
    with op.batch_alter_table('webhook_events') as b:
        b.drop_column('seq')
    with op.batch_alter_table('payments') as b:
        b.drop_column('version')
