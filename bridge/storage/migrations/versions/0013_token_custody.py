"""Custody per (chain, token): releases and treasury facts carry the token; sweeps are unique per
(chain, token, epoch)

A chain's custody holds several tokens (ETH and ERC-20s in one lock, DOT and pallet_assets on one
committee account, TON and jettons on one lock). ``releases.token`` is NULL for the chain's native
token (every row written before this revision) and the token's symbol otherwise.
``treasury_deposits.token`` is copied from the deposit's observation.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 22:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('releases') as b:
        b.add_column(sa.Column('token', sa.String(length=16), nullable=True))
    with op.batch_alter_table('treasury_deposits') as b:
        b.add_column(sa.Column('token', sa.String(length=16), nullable=True))
    op.execute("UPDATE treasury_deposits SET token = (SELECT o.token FROM observations o "
               "WHERE o.source = treasury_deposits.source AND o.sequence = treasury_deposits.sequence "
               "ORDER BY o.id LIMIT 1)")
    with op.batch_alter_table('sweeps') as b:
        b.drop_constraint('uq_sweep_epoch', type_='unique')
        b.create_unique_constraint('uq_sweep_epoch', ['chain', 'token', 'epoch'])


def downgrade() -> None:
    with op.batch_alter_table('sweeps') as b:
        b.drop_constraint('uq_sweep_epoch', type_='unique')
        b.create_unique_constraint('uq_sweep_epoch', ['chain', 'epoch'])
    with op.batch_alter_table('treasury_deposits') as b:
        b.drop_column('token')
    with op.batch_alter_table('releases') as b:
        b.drop_column('token')
