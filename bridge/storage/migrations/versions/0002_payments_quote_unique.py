"""one payment per quote

Credits recorded by the settlement contract name their quote id; with at most one payment
per quote the API maps them back to their payment without ambiguity.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 12:00:00
"""
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.create_index('uq_payments_quote_id', ['quote_id'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index('uq_payments_quote_id')
