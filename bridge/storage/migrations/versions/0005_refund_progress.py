"""refunds on TON and Asset Hub: 32-byte destinations, Asset Hub approval progress

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 14:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('releases', schema=None) as batch_op:
        batch_op.alter_column('to', existing_type=sa.LargeBinary(length=20), type_=sa.LargeBinary(length=32),
                              existing_nullable=False)
        batch_op.add_column(sa.Column('state', sa.String(length=16), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('progress', sa.Text(), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('releases', schema=None) as batch_op:
        batch_op.drop_column('progress')
        batch_op.drop_column('state')
        batch_op.alter_column('to', existing_type=sa.LargeBinary(length=32), type_=sa.LargeBinary(length=20),
                              existing_nullable=False)
