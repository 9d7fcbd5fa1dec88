"""signer retries: per-deposit and per-refund attempt counts and next-attempt times

A deposit a signer could not decide yet (a chain or gateway that could not tell, a payment
reference the gateway does not know yet, a late deposit the gateway has not decided, an
unexpected error) stays ``new`` with its attempt count and the unix time before which it is not
tried again, so deposits not due yet leave the signer's 100-deposit window to the others.
Asset Hub refund approvals get the same two columns.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 16:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('next_attempt_at', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.create_index('ix_observations_due', ['status', 'next_attempt_at'], unique=False)
    with op.batch_alter_table('releases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('next_attempt_at', sa.BigInteger(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('releases', schema=None) as batch_op:
        batch_op.drop_column('next_attempt_at')
        batch_op.drop_column('attempts')
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.drop_index('ix_observations_due')
        batch_op.drop_column('next_attempt_at')
        batch_op.drop_column('attempts')
