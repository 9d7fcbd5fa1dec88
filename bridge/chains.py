"""The small Protocols every chain family implements (Hyperlane's Indexer / Mailbox idea).

A *watcher* reads one source chain; a *submitter* writes to the settlement chain. Optional
abilities have defaults in the base classes instead of growing the Protocols.
Watchers only return Observations: they never touch storage, signing or pricing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bridge.types import Attestation, Credit, CreditMessage, Observation


@dataclass(frozen=True)
class BlockRef:
    number: int
    hash: bytes


@runtime_checkable
class Watcher(Protocol):
    """Reads deposits from one source chain."""

    chain: str

    async def finalized_height(self) -> int:
        """Highest block that is final under the chain's configured finality rule."""
        ...

    async def fetch_deposits(self, start: int, end: int) -> list[Observation]:
        """Deposits in blocks ``start..end`` inclusive (``end`` <= finalized height), each
        re-checked against its receipt and the canonical block hash."""
        ...

    async def reobserve(self, tx_id: bytes) -> list[Observation]:
        """Deposits of one transaction, if it is final and canonical.

        ``[]`` means the chain *proves* the deposit absent: e.g. the final block at that
        height has another hash, the receipt exists in the canonical final block with a
        failed status, or the transaction at that point is provably not the lock's or made
        no deposit. Whenever the endpoint cannot tell -- a timeout or RPC error, a receipt
        or header momentarily missing, a block not final *on this endpoint* yet, a node or
        liteserver lacking the history -- raise a retryable ``ChainError`` instead: a signer
        rejects a deposit for good on ``[]`` and retries it (with backoff) on ``ChainError``.
        """
        ...

    async def block_ref(self, number: int) -> BlockRef:
        """The canonical block at ``number`` (for the cursor's reorg check)."""
        ...


PENDING_LOOKBACK = 64  # blocks below the finality point pending_deposits covers for a lagging follower


class WatcherDefaults:
    """Defaults of optional watcher abilities."""

    async def pending_deposits(self, after: int | None = None) -> list[Observation]:
        """Deposits not stored as final yet (for a payment's ``seen`` state): those above the
        finality point, and -- when ``after`` (the caller's stored cursor) lags behind it -- the
        final ones after ``after`` that the follower has not stored yet (a bounded look back),
        so a deposit never drops out of view between "pending" and "stored"."""
        return []

    async def block_time(self, number: int) -> int | None:
        """Block time (unix seconds) of the canonical block ``number``; None if unknown (the
        payment watcher then closes payment windows on the wall clock)."""
        return None

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class CreditRecord:
    """A credit as recorded by the settlement contract."""

    credit: Credit
    tx_hash: bytes
    block_number: int


@runtime_checkable
class Submitter(Protocol):
    """Writes committee-signed credit batches to the settlement chain."""

    async def is_settled(self, source: bytes, sequence: int) -> bool: ...

    async def committee(self) -> tuple[int, list[bytes], int]:
        """(committee index, signer addresses, threshold) as the contract holds them."""
        ...

    async def submit(self, message: CreditMessage, signatures: list[Attestation]) -> bytes:
        """Send the batch; return the tx hash once mined. Already-credited items are
        skipped by the contract, so submitting twice is harmless."""
        ...

    async def credited(self, start: int, end: int) -> list[CreditRecord]:
        """Credits the contract recorded in blocks ``start..end``."""
        ...

    async def height(self) -> int: ...
