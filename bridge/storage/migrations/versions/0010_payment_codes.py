"""payment codes (issue 14): payments.code, and the reference feed's cursor per payment

``payments.code`` is the short text a TON comment carries (``bridge/payments/codes.py``); NULL for
payments made before codes. ``payment_feed`` gives every payment a monotonically increasing
integer (``cursor``: an autoincrement primary key, never reused on SQLite either) that
``GET /v1/payment-references`` pages by; existing payments are numbered in creation order.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 19:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('payments') as b:
        b.add_column(sa.Column('code', sa.String(length=16), nullable=True))
        b.create_index('uq_payments_code', ['code'], unique=True)
    op.create_table(
        'payment_feed',
        sa.Column('cursor', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), primary_key=True, autoincrement=True),
        sa.Column('payment_id', sa.String(length=36), sa.ForeignKey('payments.id'), nullable=False),
        sa.UniqueConstraint('payment_id', name='uq_payment_feed_payment'),
        sqlite_autoincrement=True,
    )
    op.execute("INSERT INTO payment_feed (payment_id) SELECT id FROM payments ORDER BY created_at, id")


def downgrade() -> None:
    op.drop_table('payment_feed')
    with op.batch_alter_table('payments') as b:
        b.drop_index('uq_payments_code')
        b.drop_column('code')
