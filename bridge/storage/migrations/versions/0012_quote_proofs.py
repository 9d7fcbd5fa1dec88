"""Batched quote signatures: a quote's Merkle root and proof path (NULL for quotes signed one by one)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 19:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('quotes') as b:
        b.add_column(sa.Column('proof', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('quotes') as b:
        b.drop_column('proof')
