"""The API's payment watcher loop (BTCPay's InvoiceWatcher shape).

It keeps three views of the chains in the API's own database and feeds them, per open
payment, to the pure ``evaluate``:

* final deposits: one ``DepositFollower`` per source chain (component ``api``);
* credits the settlement contract recorded: a follower of its ``Credited`` events, cursor and
  rows saved in one transaction;
* deposits seen above the finality point (``watcher.pending_deposits``), kept in memory only
  (they are re-read every round, and may vanish in a reorg).

A payment is saved only when ``evaluate`` returns events (compare-and-set on the old state,
so two API processes cannot fight), and events are published after the commit. Payments in
final states are no longer looked at.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Awaitable, Callable

from bridge.chains import Submitter, Watcher
from bridge.errors import BridgeError
from bridge.payments.state import Event, Facts, PaymentView, Settled, evaluate
from bridge.storage import observations as obs_repo
from bridge.storage import payments as pay_repo
from bridge.storage.db import Database
from bridge.types import utcnow
from bridge.watch import DepositFollower

log = logging.getLogger("creditbridge.payments")

Publish = Callable[[Event], Awaitable[None]]
SETTLEMENT_COMPONENT = "api-settlement"


class SettlementFollower:
    """Stores the settlement contract's Credited events with a gap-free cursor."""

    def __init__(self, submitter: Submitter, db: Database, chain: str, *, max_range: int = 1000,
                 start_block: int = 0, poll_interval: float = 1.0) -> None:
        self.submitter = submitter
        self.db = db
        self.chain = chain
        self.max_range = max_range
        self.start_block = start_block
        self.poll_interval = poll_interval
        self.caught_up = False

    async def step(self) -> int:
        async with self.db.begin() as s:
            cur = await obs_repo.get_cursor(s, SETTLEMENT_COMPONENT, self.chain)
        height = cur[0] if cur is not None else self.start_block - 1
        final = await self.submitter.height()
        end = min(final, height + self.max_range)
        if end <= height:
            self.caught_up = True
            return 0
        records = await self.submitter.credited(height + 1, end)
        async with self.db.begin() as s:
            added = await pay_repo.record_credits(s, records)
            await obs_repo.set_cursor(s, SETTLEMENT_COMPONENT, self.chain, end, None)
        self.caught_up = end >= final
        return added


class PaymentWatcher:
    def __init__(
        self,
        *,
        db: Database,
        watchers: dict[str, Watcher],
        settlement: Submitter,
        settlement_chain: str,
        max_block_range: dict[str, int] | None = None,
        start_block: dict[str, int] | None = None,
        poll_interval: float = 1.0,
        publish: Publish | None = None,
        clock: Callable[[], datetime] = utcnow,
        metrics=None,
    ) -> None:
        self.db = db
        self.watchers = watchers
        self.poll_interval = poll_interval
        self.publish = publish
        self.clock = clock
        self.metrics = metrics
        self._wake = asyncio.Event()
        self.followers = [
            DepositFollower(w, db, "api", max_range=(max_block_range or {}).get(n, 1000),
                            start_block=(start_block or {}).get(n, 0), poll_interval=poll_interval,
                            on_new=self._on_new)
            for n, w in watchers.items()
        ]
        self.settlement = SettlementFollower(settlement, db, settlement_chain, poll_interval=poll_interval)
        self._seen: dict[bytes, list[tuple[tuple[bytes, int], int]]] = {}

    async def _on_new(self, _obs) -> None:
        self._wake.set()

    # --- loops --------------------------------------------------------------------------------------
    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for f in self.followers:
                tg.create_task(f.run())
            tg.create_task(self._loop("settlement", self.settlement.step))
            tg.create_task(self._loop("payments", self.step))

    async def _loop(self, what: str, step) -> None:
        delay = self.poll_interval
        while True:
            try:
                await step()
                delay = self.poll_interval
            except BridgeError as e:
                log.warning("payment watcher (%s): %s", what, e)
                delay = min(delay * 2, 30.0)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def refresh_pending(self) -> None:
        seen: dict[bytes, list[tuple[tuple[bytes, int], int]]] = {}
        for name, w in self.watchers.items():
            try:
                for o in await w.pending_deposits():
                    seen.setdefault(o.reference, []).append((o.deposit_id, o.amount))
            except BridgeError as e:  # best effort: "seen" is a courtesy, "confirmed" is what counts
                log.info("payment watcher: pending deposits of %s unavailable: %s", name, e)
        self._seen = seen

    async def step(self) -> int:
        """Evaluate every open payment once; return how many changed."""
        await self.refresh_pending()
        changed = 0
        after = ""
        while True:
            async with self.db.begin() as s:
                batch = await pay_repo.list_open_payments(s, limit=200, after_id=after)
            if not batch:
                return changed
            after = batch[-1].id
            for p in batch:
                changed += await self._evaluate(p)

    async def _evaluate(self, p: pay_repo.PaymentRecord) -> int:
        async with self.db.begin() as s:
            final = await obs_repo.observations_by_reference(s, p.reference)
            credits = await pay_repo.credits_for_quote(s, p.quote_id)
        final = [f for f in final if f.observation.chain == p.chain]
        final_ids = {f.observation.deposit_id for f in final}
        seen = tuple(a for dep, a in self._seen.get(p.reference, []) if dep not in final_ids)
        facts = Facts(
            seen=seen,
            confirmed=tuple(f.observation.amount for f in final),
            settled=tuple(Settled(c.credit.credits, c.tx_hash) for c in credits
                          if c.credit.deposit_id in final_ids or not final_ids),
        )
        view = PaymentView(p.id, p.state, p.amount, p.credits, p.expires_at, p.paid_amount, p.credited,
                           p.settlement_tx)
        state, events = evaluate(view, facts, self.clock())
        if not events:
            return 0
        ev = events[-1]
        async with self.db.begin() as s:
            ok = await pay_repo.update_payment(s, p.id, now=self.clock(), state=state, paid_amount=ev.paid_amount,
                                               credited=ev.credited, settlement_tx=ev.settlement_tx,
                                               expected_state=p.state)
        if not ok:
            return 0
        for e in events:
            log.info("payment %s: %s -> %s (paid %d, credited %d)", e.payment_id, e.previous, e.state,
                     e.paid_amount, e.credited)
            if self.publish is not None:
                try:
                    await self.publish(e)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("payment %s: publishing event failed", e.payment_id)
        return 1
