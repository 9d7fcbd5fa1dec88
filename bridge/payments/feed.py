"""Payment references to watch at per-payment addresses (issue 14: any wallet can pay).

A plain transfer carries no reference: the payer sends to an address made for the payment
(Ethereum: a CREATE2 forwarder address of the lock and the reference; Asset Hub: a multisig
account of the committee and a tag of the reference). The address is a pure function of the
reference, so whoever collects such funds (the relay on Ethereum, the signers on Asset Hub)
must know the references of the payments it watches: it reads them from the gateway's feed
(``GET /v1/payment-references``), oldest first by an opaque increasing cursor.

The gateway cannot redirect funds with this feed: a collector recomputes every address from
the reference itself. The gateway is trusted for liveness only (a payment it leaves out of
the feed is not collected until it is listed; its funds stay at the address, never lost).

``WatchedReferences`` keeps one chain's map address -> reference, pulled from a
``ReferenceFeed`` (the gateway client, or the API's own database) and pruned
``keep_seconds`` after each payment's expiry (late deposits are still collected until then).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

from bridge.errors import InputError

DEFAULT_KEEP_SECONDS = 30 * 86_400


@dataclass(frozen=True)
class FeedEntry:
    cursor: int  # increasing over the feed of one chain; opaque otherwise
    chain: str
    reference: bytes  # 32 bytes
    expires_at: int  # unix seconds

    def __post_init__(self) -> None:
        if not isinstance(self.reference, bytes) or len(self.reference) != 32:
            raise InputError("a payment reference is 32 bytes")


class ReferenceFeed(Protocol):
    async def references(self, chain: str, after: int, limit: int) -> list[FeedEntry]:
        """Entries of ``chain`` with ``cursor > after``, ascending, at most ``limit``; only
        payments whose expiry is less than the feed's retention ago (30 days) are listed."""
        ...


class WatchedReferences:
    """The per-payment addresses of one chain's payments, refreshed from a feed."""

    def __init__(self, chain: str, feed: ReferenceFeed, address_of: Callable[[bytes], bytes], *,
                 keep_seconds: int = DEFAULT_KEEP_SECONDS, page: int = 500,
                 clock: Callable[[], float] = time.time) -> None:
        self.chain = chain
        self.feed = feed
        self.address_of = address_of
        self.keep_seconds = keep_seconds
        self.page = page
        self.clock = clock
        self.cursor = 0
        self._by_address: dict[bytes, tuple[bytes, int]] = {}

    def add(self, reference: bytes, expires_at: int) -> bytes:
        """Watch ``reference`` (also used directly by the API process); returns its address."""
        address = self.address_of(reference)
        self._by_address[address] = (reference, expires_at)
        return address

    async def refresh(self) -> int:
        """Pull every new entry (raises the feed's errors: callers retry); returns how many."""
        n = 0
        while True:
            entries = await self.feed.references(self.chain, self.cursor, self.page)
            for e in entries:
                if e.chain == self.chain:
                    self.add(e.reference, e.expires_at)
                self.cursor = max(self.cursor, e.cursor)
            n += len(entries)
            if len(entries) < self.page:
                break
        horizon = self.clock() - self.keep_seconds
        for address in [a for a, (_, exp) in self._by_address.items() if exp < horizon]:
            del self._by_address[address]
        return n

    def lookup(self, address: bytes) -> bytes | None:
        hit = self._by_address.get(address)
        return hit[0] if hit else None

    def addresses(self) -> dict[bytes, bytes]:
        """address -> reference of every watched payment."""
        return {a: r for a, (r, _) in self._by_address.items()}

    def __len__(self) -> int:
        return len(self._by_address)
