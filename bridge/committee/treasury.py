"""A signer's treasury sweeper: authorizes one sweep per custody and epoch, of earned funds only.

Runs inside the signer node (started by ``SignerNode.run`` when the node has one). For every
custody chain with a treasury address in the committee's ``[treasury]`` config:

1. it tracks every deposit the node stored and decides it once with the deposit rule -- the
   same rule, terms (gateway-signed, checked with the pinned key) and late decisions the node
   attests by -- keeping only what ``bridge.payments.treasury`` needs (outcome, credits,
   counted, refundable, refund id); a deposit the node has not decided (new, governor-held) or
   rejected stays undecided or wholly held: never earned;
2. it reads the ``Credited`` records of the settlement contract up to its finality point
   (``Submitter.height()`` is the final height under the settlement chain's finality rule);
3. epoch ``k`` (cut-off ``B_k = k * epoch_blocks``) is considered once ``B_k`` is final and
   this node has decided every deposit whose credit is recorded at or below ``B_k``; its amount
   is ``E(B_k) - E(B_{k-1})`` (0: no sweep);
4. before signing it checks solvency against the custody at a block the node's deposit follower
   has fully processed: ``balance - sweep >= owed + reserve`` (``bridge.payments.treasury``);
   otherwise it refuses, logs both figures at ERROR, counts a metric and tries again later;
5. it signs the lock's ``Release(treasury, amount, releaseId)`` with ``releaseId =
   refunds.release_id(custody source, k, "sweep")`` -- the destination is only ever the
   configured treasury address -- and stores it with the node's refunds, so the aggregator's
   refund worker (``GET /v1/releases``) submits it like any refund, once; the lock refuses the
   id twice (EVM ``CreditLock``; the TON lock's ``CBR2`` release, exit 410, which pays its own
   fees out of the amount). On Asset Hub there is nothing to sign: the sweep is stored unsigned
   and the node's approval loop approves ``transfer_keep_alive(treasury, amount)`` + the remark
   of its release id on the committee multisig, like a refund (the approving members pay the
   fees). The sweep and the deposits it covers are kept as an audit trail (``GET /v1/sweeps``).

An epoch whose sweep would be below the chain's ``min_refund`` (TON: the lock's
``min_release``) is skipped and rolls into the next epoch that reaches it, which then covers
everything earned since the last swept epoch (``bridge.payments.treasury.span_items``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Protocol

from bridge.errors import BridgeError, VerificationError
from bridge.payments import refunds, rules
from bridge.payments import treasury as tr
from bridge.storage import attestations as att_repo
from bridge.storage import observations as obs_repo
from bridge.storage import releases as rel_repo
from bridge.storage import treasury as repo
from bridge.types import utcnow

log = logging.getLogger("creditbridge.treasury")

COMPONENT = "treasury"  # cursor of the settlement chain's Credited records
MAX_BACKOFF = 60.0  # seconds between retries of a failing chain or ledger, at most


class Custody(Protocol):
    """What a custody holds and has paid out at a final block (e.g. relayers/evm/custody.py)."""

    async def balance(self, height: int) -> int: ...

    async def released(self, height: int, candidates: set[bytes]) -> set[bytes]:
        """Which of ``candidates`` (release ids of refunds and sweeps) the custody paid in blocks
        up to ``height`` (custodies that cannot list their releases check each id, e.g. a TON
        lock's ``is_released`` get-method at that block)."""
        ...

    # Optional ability (a custody without it leaves a sweep's tx and time unknown):
    # async def payouts(self, ids: set[bytes]) -> dict[bytes, treasury.Payout]
    #     where the custody paid those of ``ids`` it has seen paid by ``released``.


class TreasuryMetrics:
    def __init__(self, registry) -> None:
        from prometheus_client import Counter, Gauge

        labels = ["chain", "token"]
        self.earned = Gauge("creditbridge_treasury_earned", "Earned base units at the final settlement block",
                            labels, registry=registry)
        self.swept = Gauge("creditbridge_treasury_swept", "Base units of sweeps paid by the custody", labels,
                           registry=registry)
        self.sweeps = Counter("creditbridge_treasury_sweeps_total", "Sweeps signed by this signer", labels,
                              registry=registry)
        self.refusals = Counter("creditbridge_treasury_solvency_refusals_total",
                                "Sweeps refused because the custody would hold less than it owes", labels,
                                registry=registry)


class Sweeper:
    def __init__(self, node, *, addresses: dict[str, bytes], epoch_blocks: int, custody: dict,
                 tokens: dict[str, str], reserve: dict[str, int] | None = None, poll_interval: float = 5.0,
                 settlement_start: int = 0, metrics: TreasuryMetrics | None = None) -> None:
        """``custody``: a reader per (chain, token symbol) -- one custody (a lock, the committee
        account) holds several tokens and is swept, and checked for solvency, per token; a plain
        chain key means the chain's native token. ``tokens``: chain -> its native token's symbol.
        ``reserve``: kept back per chain (native token) or per ``SYMBOL@chain``."""
        if epoch_blocks <= 0:
            raise ValueError("epoch_blocks must be positive")
        self.node = node
        self.addresses = addresses  # chain -> treasury in neutral form (20-byte EVM, 32-byte otherwise)
        self.epoch_blocks = epoch_blocks
        self.tokens = tokens
        self.custody: dict[tuple[str, str], Custody] = {}
        for key, reader in custody.items():
            chain, token = (key, tokens.get(key, "")) if isinstance(key, str) else key
            self.custody[(chain, token)] = reader
        self.reserve = reserve or {}
        self.poll_interval = poll_interval
        self.settlement_start = settlement_start
        self.metrics = metrics
        self.final = -1  # settlement height read so far (Credited records stored up to it)
        # (chain, token symbol) of every custody swept, native tokens first
        self.ledgers = sorted((k for k in self.custody if k[0] in addresses and k[0] in node.watchers),
                              key=lambda k: (k[0], not self.native(*k), k[1]))
        self.chains = sorted({c for c, _ in self.ledgers})
        # a failing part of a step -> (monotonic time of its next try, its backoff in seconds)
        self._failures: dict[tuple, tuple[float, float]] = {}

    def native(self, chain: str, token: str) -> bool:
        return not token or token == self.tokens.get(chain, token)

    def label(self, chain: str, token: str) -> str:
        """The key of a custody's figures: the chain for its native token, ``SYMBOL@chain`` otherwise."""
        return chain if self.native(chain, token) else f"{token}@{chain}"

    def _release_token(self, chain: str, token: str) -> str | None:
        return None if self.native(chain, token) else token

    def minimum(self, chain: str, token: str = "") -> int:
        """The smallest sweep of a token on ``chain``: its ``min_refund`` (a TON lock refuses releases
        below its ``min_release``; below it a release costs more than it moves). Smaller epochs roll
        over."""
        tok = self._release_token(chain, token)
        if tok is None:
            return int(self.node.min_refund.get(chain, 0) or 0)
        return int(self.node.min_refund.get(f"{tok}@{chain}", 0) or 0)

    # --- loop ------------------------------------------------------------------------------------
    async def run(self) -> None:
        delay = self.poll_interval
        while True:
            try:
                await self.step()
                delay = self.poll_interval
            except BridgeError as e:
                # a sweep waits; the signer's deposits must not: never let this stop the node
                (log.warning if e.retryable else log.error)("treasury sweeper of %s: %s", self.node.name, e)
                delay = min(delay * 2, MAX_BACKOFF)
            await asyncio.sleep(delay)

    async def step(self) -> int:
        """Read new credits, then sign every closed epoch's sweep that is due; how many were signed.

        Each custody chain and each ledger (chain, token) is a step of its own: one that fails (its
        RPC is down, its custody unreadable) is logged and backs off alone, and never holds up
        another chain's sweeps (a stale RPC connection to one chain once held a TON sweep back
        for minutes). A failure to read the settlement chain stops the whole step (nothing can be
        decided without it) and is raised, so ``run`` backs off."""
        await self._scan_credits()
        n = 0
        parts = [(("decide", chain), chain, self._decide_new, (chain,)) for chain in self.chains]
        parts += [(("sweep", chain, token), self.label(chain, token), self._chain_step, (chain, token))
                  for chain, token in self.ledgers]
        for key, label, fn, args in parts:
            failure = self._failures.get(key)
            if failure is not None and time.monotonic() < failure[0]:
                continue  # backing off
            try:
                got = await fn(*args)
            except BridgeError as e:
                delay = self.poll_interval if failure is None else min(failure[1] * 2, MAX_BACKOFF)
                self._failures[key] = (time.monotonic() + delay, delay)
                (log.warning if e.retryable else log.error)("treasury sweeper of %s: %s: %s (retried in %.0fs)",
                                                            self.node.name, label, e, delay)
                continue
            self._failures.pop(key, None)
            if key[0] == "sweep":
                n += got
        return n

    # --- facts -----------------------------------------------------------------------------------
    async def _scan_credits(self) -> None:
        st = self.node.settlement
        name = getattr(st, "chain", "settlement")
        height = await st.height()
        async with self.node.db.begin() as s:
            cur = await obs_repo.get_cursor(s, COMPONENT, name)
        start = cur[0] + 1 if cur is not None else self.settlement_start
        if start <= height:
            records = await st.credited(start, height)
            async with self.node.db.begin() as s:
                await repo.record_credits(s, records)
                await obs_repo.set_cursor(s, COMPONENT, name, height, None)
        self.final = height

    async def _decide_new(self, chain: str) -> None:
        async with self.node.db.begin() as s:
            await repo.track_new_deposits(s, chain)
            pending = await repo.undecided(s, chain)
        for row_id, status in pending:
            if status not in ("attested", "rejected"):
                continue  # not decided by the node yet (new, governor-held): stays undecided, owed whole
            async with self.node.db.begin() as s:
                stored = await repo.observation(s, row_id)
            if stored is None:
                continue
            decision = await self._decision(stored.observation, status)
            if decision is None:
                continue
            o = stored.observation
            # the refund that pays the held part, if one exists under a known id (a deposit the
            # node rejected for a reason of its own has none: its amount stays owed)
            purpose = {"unattributed": "unattributed", "rejected": None}.get(decision.outcome,
                                                                              decision.refund_purpose)
            rid = refunds.release_id(o.source, o.sequence, purpose) if purpose and decision.refundable else None
            async with self.node.db.begin() as s:
                await repo.set_decision(s, o.source, o.sequence, outcome=decision.outcome, credits=decision.credits,
                                        counted=decision.counted, refundable=decision.refundable, refund_id=rid)

    async def _decision(self, obs, status: str) -> rules.Decision | None:
        """The node's decision of a deposit it decided already (None: ask again later)."""
        from bridge.payments import late
        from bridge.pricing.quotes import verify_late_terms, verify_terms

        node = self.node
        held = rules.Decision("unattributed", 0, 0, obs.amount)
        terms = await node.gateway.terms(obs.reference)
        if terms is None:
            return held
        try:
            verify_terms(terms, node.gateway_public_key)
        except VerificationError:
            return held
        if terms.reference != obs.reference:
            return held
        async with node.db.begin() as s:
            others = await obs_repo.observations_by_reference(s, obs.reference)
        earlier = [_fact(o.observation) for o in others if o.observation.deposit_id != obs.deposit_id]
        rule_terms = rules.Terms(terms.chain, terms.token, terms.amount, terms.credits, terms.expires_at)
        d = rules.decide(rule_terms, _fact(obs), earlier, node.late_grace)
        if d.outcome == rules.LATE:
            lt = await node.gateway.late_terms(obs.reference, obs.source, obs.sequence)
            if lt is None:
                return None
            try:
                verify_late_terms(lt, node.gateway_public_key)
            except VerificationError:
                return d
            if (lt.deposit_id == (obs.source, obs.sequence) and lt.amount == obs.amount
                    and lt.reference == obs.reference and lt.payment_id == terms.payment_id
                    and lt.within_bounds(terms.credits) and lt.decision == late.CREDIT):
                d = rules.Decision(rules.LATE, lt.credits, lt.counted, lt.refundable)
        if status == "rejected" and d.credits > 0:
            # the node refused it for a reason of its own: never earned. Held whole for a refund
            # it authorized (outside its price bound: "unpriced"), or else (not found again, ...)
            # owed whole with no refund id
            async with node.db.begin() as s:
                purposes = await rel_repo.purposes_of_deposit(s, obs.source, obs.sequence)
            if rules.UNPRICED in purposes:
                return rules.Decision(rules.UNPRICED, 0, 0, obs.amount)
            return rules.Decision("rejected", 0, 0, obs.amount)
        if status == "attested":
            async with node.db.begin() as s:
                mine = await att_repo.attested_credit(s, obs.source, obs.sequence)
            if mine is None or mine.credits != d.credits:
                log.error("treasury: deposit %s/%d was attested with %s credits but decides to %d now; "
                          "it is kept out of sweeps", obs.chain, obs.sequence,
                          None if mine is None else mine.credits, d.credits)
                return None
        return d

    # --- sweeps ----------------------------------------------------------------------------------
    async def _source(self, chain: str) -> bytes:
        source = self.node.watchers[chain].source
        if callable(source):  # some watchers read it from the chain (TON: the lock's address)
            source = await source()
        return source

    async def _chain_step(self, chain: str, token: str | None = None) -> int:
        """Sweep one token of one custody: every closed epoch that is due, in order."""
        node = self.node
        token = self.tokens.get(chain, "") if token is None else token
        source = await self._source(chain)
        custody = self.custody[(chain, token)]
        label = self.label(chain, token)
        async with node.db.begin() as s:
            cur = await obs_repo.get_cursor(s, "signer", chain)
        if cur is None:
            return 0
        processed = cur[0]  # the deposit follower handled every block up to here
        async with node.db.begin() as s:
            facts = await repo.facts(s, chain, token)
            last = await repo.last_epoch(s, chain, token)
            blocks = await repo.credit_blocks(s, source)
            signed = await repo.sweeps(s, chain, token=token)
        top = self.final // self.epoch_blocks
        epochs = sorted(k for k in {-(-b // self.epoch_blocks) for b in blocks} if last < k <= top and k > 0)
        ids = {k: tr.sweep_release_id(source, k, self._release_token(chain, token)) for k in epochs}
        minimum = self.minimum(chain, token)
        # refunds below the chain's minimum are dust, never signed or paid: not asked about (a TON
        # custody asks the lock about each id at every step)
        candidates = ({f.refund_id for f in facts
                       if f.refund_id is not None and not rules.is_dust(f.refundable, minimum)}
                      | {w.release_id for w in signed} | set(ids.values()))
        paid = await custody.released(processed, candidates)
        await self._mark_paid(chain, token, paid, facts)
        done = 0
        base = last  # the last swept epoch: a sweep covers (B_base, B_k] (small epochs roll over)
        for k in epochs:
            at = tr.cutoff(k, self.epoch_blocks)
            async with node.db.begin() as s:
                waiting = await repo.credited_undecided(s, source, at)
            # ... and every earlier deposit of a payment with a credit recorded by then (a
            # below-one-credit deposit is earned with the credited deposit that completes it)
            last_credited: dict[bytes, tuple] = {}
            for f in facts:
                if f.credited_at is not None and f.credited_at <= at:
                    last_credited[f.payment] = max(last_credited.get(f.payment, f.key), f.key)
            waiting += [f.key[1] for f in facts
                        if f.outcome is None and f.payment in last_credited and f.key < last_credited[f.payment]]
            if waiting:
                log.info("treasury: epoch %d of %s waits for this signer to decide deposits %s", k, label,
                         waiting[:5])
                break
            items = tr.span_items(facts, base, k, self.epoch_blocks)
            amount = sum(items.values())
            if amount == 0:
                continue
            if amount < minimum:
                # the custody would refuse it or it would cost more than it moves: it rolls into the
                # next epoch that reaches the minimum (every signer skips the same epochs)
                log.info("treasury: epoch %d of %s: %d %s earned since epoch %d is below the minimum sweep %d; "
                         "it rolls into the next epoch", k, label, amount, token, base, minimum)
                continue
            if ids[k] in paid:
                # paid already (this node lost its records, or the others swept without it): kept
                # for the audit trail, nothing to sign
                async with node.db.begin() as s:
                    await repo.add_sweep(s, release_id=ids[k], chain=chain, token=token, epoch=k, cutoff=at,
                                         amount=amount, to=self.addresses[chain], items=items, now=utcnow(),
                                         state="paid")
                    signed = await repo.sweeps(s, chain, token=token)
                log.info("treasury: sweep of epoch %d of %s was paid already; recorded", k, label)
                base = k
                continue
            balance = await custody.balance(processed)
            unpaid = sum(w.amount for w in signed if w.epoch < k and w.release_id not in paid)
            owed = tr.owed(facts, paid, at, unpaid)
            reserve = self.reserve.get(label, 0)
            if not tr.solvent(balance, amount, owed, reserve):
                log.error("treasury: sweep of epoch %d of %s REFUSED: custody balance %d at block %d minus sweep %d "
                          "leaves %d, below what it owes %d (+ reserve %d)", k, label, balance, processed, amount,
                          balance - amount, owed, reserve)
                if self.metrics is not None:
                    self.metrics.refusals.labels(chain=chain, token=token).inc()
                break
            if not await self._sign(chain, token, source, k, at, amount, items):
                break
            base = k
            done += 1
            async with node.db.begin() as s:
                signed = await repo.sweeps(s, chain, token=token)
        return done

    async def _sign(self, chain: str, token: str, source: bytes, epoch: int, at: int, amount: int,
                    items: dict) -> bool:
        node = self.node
        treasury = self.addresses[chain]
        signer = node.refund_signers.get(chain)
        release_token = self._release_token(chain, token)
        rid = tr.sweep_release_id(source, epoch, release_token)
        sequence = epoch
        if signer is not None:  # a lock contract (EVM, TON): a signature the refund worker submits
            signed = (signer.sign(treasury.rjust(32, b"\x00"), amount, rid) if release_token is None
                      else signer.sign(treasury.rjust(32, b"\x00"), amount, rid, token=release_token))
            if signed is None:
                log.error("treasury: %s cannot sign a release of %d to the configured treasury 0x%s", chain, amount,
                          treasury.hex())
                return False
            to, sig = signed
        elif chain in node.approvers:
            # Asset Hub: approved on chain by this node's approval loop (relayers/substrate/refund.py):
            # transfer_keep_alive(treasury, amount) + remark(release id). Its execution scan starts at
            # the stored sequence's block, (block << 16) | index like a deposit's: the latest deposit
            # the sweep covers, below which no execution of it can lie (every signer stores the same)
            to, sig = treasury, b""
            sequence = max(q for _, q in items)
        else:
            log.warning("treasury: %s has no release signer on this node; its sweeps are not authorized", chain)
            return False
        if to.rjust(32, b"\x00") != treasury.rjust(32, b"\x00"):  # never anywhere else
            log.error("treasury: %s release signer named another destination; sweep not stored", chain)
            return False
        async with node.db.begin() as s:
            added = await repo.add_sweep(s, release_id=rid, chain=chain, token=token, epoch=epoch, cutoff=at,
                                         amount=amount, to=to, items=items, now=utcnow())
            if added:
                await rel_repo.add_release(s, source=source, sequence=sequence, chain=chain, purpose=tr.SWEEP, to=to,
                                           amount=amount, release_id=rid, signature=sig, payment_id="",
                                           now=utcnow(), token=release_token)
        if added:
            log.info("treasury: signed sweep 0x%s of epoch %d on %s: %d %s (cut-off settlement block %d, %d deposits) "
                     "to 0x%s", rid.hex()[:16], epoch, chain, amount, token, at, len(items), to.hex())
            if self.metrics is not None:
                self.metrics.sweeps.labels(chain=chain, token=token).inc()
        return True

    async def _mark_paid(self, chain: str, token: str, paid: set[bytes], facts) -> None:
        async with self.node.db.begin() as s:
            await repo.mark_paid(s, paid, utcnow())
            rows = await repo.sweeps(s, chain, token=token)
        swept = sum(w.amount for w in rows if w.state == "paid")
        payouts = getattr(self.custody[(chain, token)], "payouts", None)  # optional custody ability
        unknown = {w.release_id for w in rows if w.state == "paid" and w.paid_tx is None}
        if payouts is not None and unknown:
            found = await payouts(unknown)
            if found:
                async with self.node.db.begin() as s:
                    for rid, p in found.items():
                        at = None if p.time is None else datetime.fromtimestamp(p.time, timezone.utc)
                        await repo.set_payout(s, rid, p.tx, p.block, at)
        if self.metrics is not None:
            self.metrics.swept.labels(chain=chain, token=token).set(swept)
            self.metrics.earned.labels(chain=chain, token=token).set(tr.earned(facts, max(self.final, 0)))

    # --- what the HTTP side serves ---------------------------------------------------------------
    async def view(self) -> dict:
        """``GET /v1/sweeps``: per custody and token earned / swept / pending figures and every sweep
        with the deposits it covers (the audit trail). ``chains`` is keyed by the chain for its
        native token and by ``SYMBOL@chain`` for another token its custody holds."""
        out_chains, out_sweeps = {}, []
        async with self.node.db.begin() as s:
            for chain, token in self.ledgers:
                facts = await repo.facts(s, chain, token)
                rows = await repo.sweeps(s, chain, token=token)
                e = tr.earned(facts, max(self.final, 0))
                key = self.label(chain, token)
                out_chains[key] = {
                    "chain": chain, "token": token, "treasury": "0x" + self.addresses[chain].hex(),
                    "earned": str(e), "swept": str(sum(w.amount for w in rows if w.state == "paid")),
                    "signed_unpaid": str(sum(w.amount for w in rows if w.state != "paid")),
                    "stranded": str(tr.stranded(facts, max(self.final, 0))),
                    "settlement_final": self.final}
                for w in rows:
                    out_sweeps.append({
                        "release_id": "0x" + w.release_id.hex(), "chain": w.chain, "token": w.token, "ledger": key,
                        "epoch": w.epoch, "cutoff": w.cutoff, "amount": str(w.amount), "to": "0x" + w.to.hex(),
                        "state": w.state, "created_at": w.created_at.isoformat(),
                        "tx": None if w.paid_tx is None else "0x" + w.paid_tx.hex(), "block": w.paid_block,
                        "paid_at": None if w.paid_at is None else w.paid_at.isoformat(),
                        "deposits": [{"source": "0x" + src.hex(), "sequence": q, "earned": str(v)}
                                     for src, q, v in await repo.sweep_items(s, w.release_id)]})
        return {"epoch_blocks": self.epoch_blocks, "chains": out_chains, "sweeps": out_sweeps}


def _fact(o) -> rules.DepositFact:
    return rules.DepositFact(o.deposit_id, o.chain, o.token, o.amount, o.timestamp)
