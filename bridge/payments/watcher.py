"""The API's payment watcher loop (BTCPay's InvoiceWatcher shape).

It keeps three views of the chains in the API's own database and feeds them, per open
payment, to the pure ``evaluate``:

* final deposits: one ``DepositFollower`` per source chain (component ``api``);
* credits the settlement contract recorded: a follower of its ``Credited`` events, cursor and
  rows saved in one transaction;
* deposits not stored as final yet (``watcher.pending_deposits`` from the stored cursor), kept in memory only
  (they are re-read every round, and may vanish in a reorg);
* and, from the API's own table, the gateway's signed decisions on late deposits
  (``bridge/payments/late.py``, stored when a signer first asks for one): a late deposit
  decided "credit" is due its credits, and its credit is looked up by deposit id (it may name
  the fresh quote rather than the payment's).

A payment is saved only when ``evaluate`` returns events (compare-and-set on the old state
and version, so two API processes cannot fight: the loser of a race stores nothing, even for
an ``updated`` change that keeps the state; each event is keyed by the payment's version, so
the same change is never stored as two events). The events are written to the webhook outbox
in the same transaction (``record``), and published (``publish``: wakes the delivery worker) after the
commit. Payments in final states are no longer looked at -- except expired, late or invalid
ones with a late deposit decided "credit", until that credit is recorded (``credited``).

Crash safety: final deposits and the follower's cursor are stored in one transaction before
any evaluation, and each evaluation reads them back from the database, so a process that dies
between observing a deposit and evaluating its payment evaluates it after the restart; a
process that dies after the payment's commit has its events in the outbox already.

The payment window closes on chain time: ``Facts.horizon`` is the block time of the newest
final block the follower stored (``Watcher.block_time``; watchers without it leave the wall
clock in charge), so ``expired`` is never declared while a deposit made before the deadline
may still be on its way to finality.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from bridge.chains import Submitter, Watcher
from bridge.errors import BridgeError
from bridge.payments.late import CREDIT, LateTerms
from bridge.payments.state import REOPENED_BY_LATE_CREDIT, Deposit, Event, Facts, PaymentView, Settled, evaluate
from bridge.storage import late as late_repo
from bridge.storage import observations as obs_repo
from bridge.storage import payments as pay_repo
from bridge.storage.db import Database
from bridge.types import utcnow
from bridge.watch import DepositFollower

log = logging.getLogger("creditbridge.payments")

Publish = Callable[[Event], Awaitable[None]]
# writes the event in the state change's transaction (the outbox)
# (session, payment, event, now, seq=the payment's version after this event)
Record = Callable[..., Awaitable[object]]
SETTLEMENT_COMPONENT = "api-settlement"


class _CursorMoved(Exception):
    """Rolls back a settlement step another process did first."""


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
        try:
            async with self.db.begin() as s:  # compare-and-set: one process advances it
                if not await obs_repo.advance_cursor(s, SETTLEMENT_COMPONENT, self.chain,
                                                     None if cur is None else height, end, None):
                    raise _CursorMoved()
                added = await pay_repo.record_credits(s, records)
        except _CursorMoved:
            log.warning("settlement follower %s: cursor moved under us; retrying", self.chain)
            return 0
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
        record: Record | None = None,
        late_grace_seconds: int = 0,
        clock: Callable[[], datetime] = utcnow,
        metrics=None,
    ) -> None:
        self.db = db
        self.watchers = watchers
        self.poll_interval = poll_interval
        self.publish = publish
        self.record = record
        self.grace = late_grace_seconds
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
        self._seen: dict[bytes, list] = {}
        self._horizons: dict[str, int | None] = {}
        self._block_times: dict[str, tuple[int, int]] = {}

    async def _on_new(self, _obs) -> None:
        self._wake.set()

    def wake(self) -> None:
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
        seen: dict[bytes, list] = {}
        for name, w in self.watchers.items():
            try:
                async with self.db.begin() as s:
                    cur = await obs_repo.get_cursor(s, "api", name)
                # from what the follower stored: a deposit just past finality but not stored yet
                # stays "seen" instead of dropping back to "new" for a moment
                for o in await w.pending_deposits(None if cur is None or cur[0] < 0 else cur[0]):
                    seen.setdefault(o.reference, []).append(o)
            except BridgeError as e:  # best effort: "seen" is a courtesy, "confirmed" is what counts
                log.info("payment watcher: pending deposits of %s unavailable: %s", name, e)
        self._seen = seen

    async def refresh_horizons(self) -> None:
        """Block time of each chain's last stored final block (None: unknown)."""
        for name, w in self.watchers.items():
            block_time = getattr(w, "block_time", None)
            if block_time is None:
                self._horizons[name] = None
                continue
            async with self.db.begin() as s:
                cur = await obs_repo.get_cursor(s, "api", name)
            if cur is None or cur[0] < 0:
                self._horizons[name] = None
                continue
            try:
                cached = self._block_times.get(name)
                if cached is None or cached[0] != cur[0]:
                    t = await block_time(cur[0])
                    cached = None if t is None else (cur[0], t)
                    if cached is not None:
                        self._block_times[name] = cached
                self._horizons[name] = None if cached is None else cached[1]
            except BridgeError as e:
                log.info("payment watcher: block time of %s unavailable: %s", name, e)
                self._horizons[name] = None

    async def step(self) -> int:
        """Evaluate every open payment once; return how many changed."""
        await self.refresh_pending()
        await self.refresh_horizons()
        changed = 0
        after = ""
        while True:
            async with self.db.begin() as s:
                batch = await pay_repo.list_open_payments(s, limit=200, after_id=after)
            if not batch:
                break
            after = batch[-1].id
            for p in batch:
                changed += await self._evaluate(p)
        after = ""
        while True:  # final payments a late deposit decided "credit" reopens, until credited
            async with self.db.begin() as s:
                ids = await late_repo.payments_with_late_credits(s, REOPENED_BY_LATE_CREDIT, limit=200,
                                                                 after_id=after)
                batch = [p for p in [await pay_repo.get_payment(s, i) for i in ids] if p is not None]
            if not ids:
                return changed
            after = ids[-1]
            for p in batch:
                changed += await self._evaluate(p)

    def facts_for(self, p: pay_repo.PaymentRecord, final, credits, late: list[LateTerms] | tuple = ()) -> Facts:
        settled = {c.credit.deposit_id: Settled(c.credit.credits, c.tx_hash) for c in credits}
        decided = {lt.deposit_id: lt.outcome() for lt in late}
        deposits = [Deposit(o.deposit_id, o.amount, o.timestamp, True, o.chain, o.token, settled.get(o.deposit_id),
                            decided.get(o.deposit_id))
                    for o in (f.observation for f in final)]
        final_ids = {d.key for d in deposits}
        deposits += [Deposit(o.deposit_id, o.amount, o.timestamp, False, o.chain, o.token)
                     for o in self._seen.get(p.reference, []) if o.deposit_id not in final_ids]
        return Facts(tuple(deposits), self._horizons.get(p.chain))

    def view(self, p: pay_repo.PaymentRecord) -> PaymentView:
        return PaymentView(p.id, p.state, p.amount, p.credits, p.expires_at, p.chain, p.token, self.grace,
                           p.paid_amount, p.credited, p.settlement_tx, p.refundable)

    async def _evaluate(self, p: pay_repo.PaymentRecord) -> int:
        async with self.db.begin() as s:
            final = await obs_repo.observations_by_reference(s, p.reference)
            credits = await pay_repo.credits_for_quote(s, p.quote_id)
            late = await late_repo.late_decisions_for_payment(s, p.id)
            late_credit_ids = [lt.deposit_id for lt in late if lt.decision == CREDIT]
            if late_credit_ids:  # recorded under the fresh quote's id, perhaps: look them up by deposit
                credits = [*credits, *await late_repo.credits_for_deposits(s, late_credit_ids)]
        state, events = evaluate(self.view(p), self.facts_for(p, final, credits, late), self.clock())
        if not events:
            return 0
        ev = events[-1]
        now = self.clock()
        async with self.db.begin() as s:
            ok = await pay_repo.update_payment(s, p.id, now=now, state=state, paid_amount=ev.paid_amount,
                                               credited=ev.credited, settlement_tx=ev.settlement_tx,
                                               refundable=ev.refundable, expected_state=p.state,
                                               expected_version=p.version, bump=len(events))
            if ok and self.record is not None:
                for i, e in enumerate(events):
                    await self.record(s, p, e, now, seq=p.version + i + 1)
        if not ok:
            return 0
        for e in events:
            log.info("payment %s: %s -> %s (paid %d, credited %d, refundable %d)", e.payment_id, e.previous,
                     e.state, e.paid_amount, e.credited, e.refundable)
            if self.publish is not None:
                try:
                    await self.publish(e)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("payment %s: publishing event failed", e.payment_id)
        return 1
