"""Tables. Every component (API, each signer node, the aggregator) has its own database with
this one schema; each uses the tables of its role.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bridge.storage.types import U256, UTCDateTime


class Base(DeclarativeBase):
    pass


class QuoteRow(Base):
    __tablename__ = "quotes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token: Mapped[str] = mapped_column(String(16))
    chain: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(U256)
    credits: Mapped[int] = mapped_column(U256)
    rate: Mapped[str] = mapped_column(String(80))  # Decimal as text, USD per whole token
    credit_price_usd: Mapped[str] = mapped_column(String(80))
    sources: Mapped[str] = mapped_column(String(400), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))


class PaymentRow(Base):
    __tablename__ = "payments"
    # one payment per quote: credits name their quote, which then names one payment (0002)
    __table_args__ = (Index("uq_payments_quote_id", "quote_id", unique=True),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reference: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    quote_id: Mapped[str] = mapped_column(String(36), ForeignKey("quotes.id"))
    beneficiary: Mapped[bytes] = mapped_column(LargeBinary(20))
    chain: Mapped[str] = mapped_column(String(32))
    token: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(U256)
    credits: Mapped[int] = mapped_column(U256)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), index=True)
    key_id: Mapped[str] = mapped_column(String(64))
    terms_signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    paid_amount: Mapped[int] = mapped_column(U256, default=0)
    credited: Mapped[int] = mapped_column(U256, default=0)
    settlement_tx: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ObservationRow(Base):
    """A finalized deposit as this node's watcher saw it."""

    __tablename__ = "observations"
    __table_args__ = (
        UniqueConstraint("chain", "tx_id", "event_index", name="uq_observation_event"),
        UniqueConstraint("source", "sequence", name="uq_observation_deposit"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(32))
    source: Mapped[bytes] = mapped_column(LargeBinary(32))
    sequence: Mapped[int] = mapped_column(BigInteger)
    tx_id: Mapped[bytes] = mapped_column(LargeBinary(64))
    event_index: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[bytes] = mapped_column(LargeBinary(64))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    token: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(U256)
    payer: Mapped[bytes] = mapped_column(LargeBinary(32))
    reference: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    # signer nodes: new -> attested | rejected | waiting (terms not yet available)
    status: Mapped[str] = mapped_column(String(16), default="new", index=True)
    status_detail: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CursorRow(Base):
    """How far a component has processed a chain: the last fully handled block."""

    __tablename__ = "cursors"
    component: Mapped[str] = mapped_column(String(64), primary_key=True)
    chain: Mapped[str] = mapped_column(String(32), primary_key=True)
    height: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AttestationRow(Base):
    """A signer node's own signature over a one-credit message; ``id`` is its feed cursor."""

    __tablename__ = "attestations"
    __table_args__ = (UniqueConstraint("source", "sequence", name="uq_attestation_deposit"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[bytes] = mapped_column(LargeBinary(32))
    sequence: Mapped[int] = mapped_column(BigInteger)
    beneficiary: Mapped[bytes] = mapped_column(LargeBinary(20))
    credits: Mapped[int] = mapped_column(U256)
    quote_id: Mapped[bytes] = mapped_column(LargeBinary(32))
    committee_index: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[bytes] = mapped_column(LargeBinary(65))
    payment_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SettlementRow(Base):
    """The aggregator's record of one deposit's way to the settlement contract."""

    __tablename__ = "settlements"
    source: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    beneficiary: Mapped[bytes] = mapped_column(LargeBinary(20))
    credits: Mapped[int] = mapped_column(U256)
    quote_id: Mapped[bytes] = mapped_column(LargeBinary(32))
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | settled
    tx_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CreditRow(Base):
    """A credit the settlement contract recorded, as the API's settlement watcher read it."""

    __tablename__ = "credits"
    __table_args__ = (Index("ix_credits_quote", "quote_id"),)
    source: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    beneficiary: Mapped[bytes] = mapped_column(LargeBinary(20))
    credits: Mapped[int] = mapped_column(U256)
    quote_id: Mapped[bytes] = mapped_column(LargeBinary(32))
    tx_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    block_number: Mapped[int] = mapped_column(BigInteger)
    observed: Mapped[bool] = mapped_column(Boolean, default=False)
