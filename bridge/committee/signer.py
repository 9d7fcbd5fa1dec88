"""One committee signer node.

It runs its own watchers (its own RPC endpoints), and for every final deposit:

1. re-observes the transaction on its own chain view (the deposit must still be there,
   successful and canonical);
2. fetches the payment terms for the deposit's reference from the gateway and verifies the
   gateway's Ed25519 signature over them with the public key pinned in its config, so a
   compromised API or network cannot redirect credits;
3. decides the deposit with ``bridge.payments.rules.decide`` -- the rule the API's payment
   state machine applies too: invalid (wrong chain or token), late (block time after expiry +
   grace), or counted towards the quote, whose credits are the cumulative pro-rata share
   (``credits_for_deposit``, floored, never more than quoted in total) -- so honest signers
   produce byte-identical messages. A late deposit follows the gateway's signed late decision
   (``bridge.payments.late``: credited at a fresh quote if the price moved less than the
   tolerance, else held), checked with the pinned key and against the deposit's own facts;
   until the gateway has decided, the deposit waits (others are not held up);
4. if part of the deposit is held (overpayment, late, invalid) and is not dust (below the
   chain's ``min_refund``: kept in custody, recorded and counted instead), authorizes its refund to the
   payer (release id = hash of the deposit id and the purpose, so each refund happens once):
   on chains with a lock contract (Ethereum, TON) it signs ``Release(payer, held, releaseId)``
   and serves it to the aggregator's refund worker; on Asset Hub it approves the refund call of
   the committee's multisig account on chain itself (``_approval_loop``);
5. asks the governor (``bridge.governor``) when the credit may be attested: a deposit held
   by it is ``queued`` and decided again once its release time has passed;
6. signs the one-credit EIP-712 message and stores the attestation, in one transaction with
   the observation's status.

Only proved-bad facts reject a deposit (the chain shows it absent or failed; it names a chain
this node does not watch). Everything else leaves it undecided and tries it again with an
exponential backoff (2 s doubling to 5 min, for ever; ``creditbridge_signer_retries_total
{chain,reason}`` and a log line per retry): a chain endpoint or gateway that could not tell
(timeouts, missing history, an answer that does not verify), a late deposit the gateway has not
decided, a bug or malformed data. A payment reference the gateway does not know is asked about
again the same way (a database failover must not lose a payment) until
``unknown_reference_refund_after_seconds`` after the deposit's block time, when the whole
deposit is refunded to its payer (purpose ``unattributed``). The attempt count and next attempt
time are stored with the deposit, and each pass takes only due deposits, the longest waiting
first, each on its own: no deposit can hold up the others (likewise the Asset Hub approvals).

It serves its attestations over HTTP and signs *batches* of credits it has attested already
(the aggregator's request): signing a subset again is safe because the settlement contract
credits each deposit once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bridge.chains import Submitter, Watcher
from bridge.committee import digest
from bridge.committee.gateway import GatewayClient
from bridge import governor as gov
from bridge.errors import BridgeError, Conflict, InputError, VerificationError
from bridge.keystore import SecretKey
from bridge.payments import refunds, rules
from bridge.pricing.quotes import verify_terms
from bridge.storage import attestations as att_repo
from bridge.storage import governor as gov_repo
from bridge.storage import observations as obs_repo
from bridge.storage import releases as rel_repo
from bridge.storage.db import Database
from bridge.types import Credit, CreditMessage, Observation, SettlementDomain, quote_id_bytes, utcnow
from bridge.watch import DepositFollower

log = logging.getLogger("creditbridge.signer")


class SignerNode:
    def __init__(
        self,
        *,
        name: str,
        key: SecretKey,
        db: Database,
        watchers: dict[str, Watcher],
        settlement: Submitter,
        domain: SettlementDomain,
        gateway: GatewayClient,
        gateway_public_key: str,
        late_grace_seconds: int = 0,
        lock_domains: dict[str, SettlementDomain] | None = None,
        refund_signers: dict[str, refunds.RefundSigner] | None = None,
        approvers: dict | None = None,
        governor: dict[str, gov.Limits] | None = None,
        credit_price_usd=None,
        wall_clock=time.time,
        max_block_range: dict[str, int] | None = None,
        start_block: dict[str, int] | None = None,
        poll_interval: float = 1.0,
        metrics=None,
        price_bound=None,
        min_refund: dict[str, int] | None = None,
        unknown_reference_refund_after_seconds: int = 86_400,
        native_tokens: dict[str, str] | None = None,
        lock_tokens: dict[str, dict[str, bytes]] | None = None,
        read_concurrency: int = 8,
    ) -> None:
        if key.kind != "secp256k1":
            raise InputError("a signer key must be secp256k1")
        self.name = name
        self._key = key
        self.address = bytes.fromhex(key.public[2:])
        self.db = db
        self.watchers = watchers
        self.settlement = settlement
        self.domain = domain
        self.gateway = gateway
        self.gateway_public_key = gateway_public_key
        self.late_grace = late_grace_seconds
        # source chain -> how this node authorizes refunds there: a signature the refund worker
        # collects (EVM locks by their EIP-712 domain, TON locks) or its own on-chain approval
        # (Asset Hub multisig: ``approvers[chain].step(...)``, see relayers/substrate/refund.py)
        self.refund_signers: dict[str, refunds.RefundSigner] = {
            chain: refunds.EvmRefundSigner(d, key.secret, self.address, (lock_tokens or {}).get(chain))
            for chain, d in (lock_domains or {}).items()}
        self.refund_signers.update(refund_signers or {})
        self.approvers = approvers or {}
        # smallest refunded amount (below: dust), keyed by source chain for its native token and by
        # SYMBOL@chain for the other tokens it holds (min_refund_of)
        self.min_refund = min_refund or {}
        # source chain -> its native token's symbol: a deposit in any other token is refunded in it
        # (releases carry the token); a chain not listed here has only its native token
        self.native_tokens = native_tokens or {}
        self.governor = governor or {}
        self.credit_price_usd = credit_price_usd
        self.wall_clock = wall_clock
        self.poll_interval = poll_interval
        self.metrics = metrics
        # bridge.committee.pricebound.PriceBound: this node's own bound on the terms' rate
        self.price_bound = price_bound
        self.unknown_reference_refund_after = unknown_reference_refund_after_seconds
        if read_concurrency < 1:
            raise InputError("read_concurrency must be at least 1")
        # deposits of a window whose reads (chain view, terms, price bound) run at once
        self.read_concurrency = read_concurrency
        self._wake = asyncio.Event()
        self._committee: tuple[int, list[bytes], int] | None = None
        self._committee_at = 0.0
        self.followers = [
            DepositFollower(
                w,
                db,
                component="signer",
                max_range=(max_block_range or {}).get(name_, 1000),
                start_block=(start_block or {}).get(name_, 0),
                poll_interval=poll_interval,
                on_new=self._on_new,
                clock=wall_clock,  # a deposit is due from when it is seen: see process_once
            )
            for name_, w in watchers.items()
        ]
        self.ready = False
        self.sweeper = None  # bridge.committee.treasury.Sweeper, set by the composition root (issue 12)

    # --- committee view -----------------------------------------------------------------
    async def committee(self, *, refresh: bool = False) -> tuple[int, list[bytes], int]:
        if refresh or self._committee is None or time.monotonic() - self._committee_at > 30:
            self._committee = await self.settlement.committee()
            self._committee_at = time.monotonic()
        return self._committee

    # --- loops ------------------------------------------------------------------------------
    async def _on_new(self, observations: list[Observation]) -> None:
        self._wake.set()

    async def run(self) -> None:
        index, members, threshold = await self.committee(refresh=True)
        if self.address not in members:
            log.warning("signer %s (0x%s) is not in committee %d; its attestations will not count",
                        self.name, self.address.hex(), index)
        self.ready = True
        async with asyncio.TaskGroup() as tg:
            for f in self.followers:
                tg.create_task(f.run())
            tg.create_task(self._process_loop())
            if self.approvers:
                tg.create_task(self._approval_loop())
            if self.sweeper is not None:
                tg.create_task(self.sweeper.run())

    async def _process_loop(self) -> None:
        backoff = self.poll_interval
        while True:
            try:
                n = await self.process_once()
                backoff = self.poll_interval
            except BridgeError as e:
                if not e.retryable:
                    raise
                log.warning("signer %s: %s (retrying in %.1fs)", self.name, e, backoff)
                n = 0
                backoff = min(backoff * 2, 30.0)
            if n == 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=backoff)
                except TimeoutError:
                    pass

    async def process_once(self, limit: int = 100) -> int:
        """Handle observations waiting for a decision (and queued ones whose governor release
        time has passed); return how many were decided.

        Only deposits whose next attempt time has come are taken, in the order they became due
        (a new deposit is due from when this node saw it, one backing off from its retry time),
        and each is decided on its own (``_attempt``): one that cannot be decided now gets a
        backoff and leaves the window to the others.

        What a decision reads -- the deposit again on this node's chain view, its terms from the
        gateway, the late decision, the price bound's reference -- is read for up to
        ``read_concurrency`` deposits of the window at once (each read is a round trip to a
        chain node or the gateway, which under load take most of a deposit's time); the
        decisions and their writes (refunds, governor, attestation) stay one at a time, in due
        order, exactly as before."""
        now = int(self.wall_clock())
        async with self.db.begin() as s:
            pending = await obs_repo.observations_due(s, "new", now, limit)
            queued = await obs_repo.observations_due(s, "queued", now, 1000)
        decided = 0
        gate = asyncio.Semaphore(self.read_concurrency)

        async def read(obs: Observation):
            async with gate:
                return await self._evaluate(obs)

        reads = [asyncio.ensure_future(read(stored.observation)) for stored in pending]
        try:
            for stored, evaluation in zip(pending, reads):
                decided += await self._attempt(stored, evaluation)
        finally:
            for t in reads:  # only when cancelled or a write failed: drop the reads not used
                t.cancel()
            await asyncio.gather(*reads, return_exceptions=True)
        for stored in queued:
            o = stored.observation
            async with self.db.begin() as s:
                item = await gov_repo.get_item(s, o.source, o.sequence)
            if item is None or item.release_at <= now:
                decided += await self._attempt(stored)
        return decided

    async def _attempt(self, stored: obs_repo.StoredObservation, evaluation: asyncio.Future | None = None) -> int:
        """Decide one deposit (``evaluation``: its reads, already started). What goes wrong with
        it stays with it: anything that is not a
        proved-bad fact (a chain or gateway that could not tell, an unknown reference before
        its refund time, a late deposit not decided yet, a bug or malformed data) leaves it
        undecided with a backoff -- retried for ever, counted and logged -- never stopping the
        others."""
        obs = stored.observation
        try:
            return await self._decide(stored.id, obs, evaluation)
        except _Retry as e:
            reason, detail, not_after = e.reason, e.detail, e.not_after
        except BridgeError as e:  # retryable or not: the chain or gateway could not tell now
            reason, detail, not_after = e.code, str(e), None
        except Exception as e:  # a bug or malformed data: this deposit only
            log.exception("signer %s: deposit %s/%d (observation %d): unexpected error; retried later",
                          self.name, obs.chain, obs.sequence, stored.id)
            reason, detail, not_after = "internal", f"{e.__class__.__name__}: {e}", None
        await self._retry_later(stored, reason, detail, not_after)
        return 0

    async def _retry_later(self, stored: obs_repo.StoredObservation, reason: str, detail: str,
                           not_after: int | None = None) -> None:
        obs = stored.observation
        attempts = stored.attempts + 1
        now = int(self.wall_clock())
        at = now + retry_delay(attempts)
        if not_after is not None:
            at = max(now + 1, min(at, not_after))
        async with self.db.begin() as s:
            await obs_repo.set_retry(s, stored.id, attempts, at, f"retrying ({reason}): {detail}")
        if self.metrics is not None and hasattr(self.metrics, "retries"):
            self.metrics.retries.labels(chain=obs.chain, reason=reason).inc()
        level = logging.INFO if reason in (_NotYet.reason, _UnknownReference.reason) else logging.WARNING
        log.log(level, "signer %s: deposit %s/%d not decided yet (%s: %s); attempt %d, next in %ds",
                self.name, obs.chain, obs.sequence, reason, detail, attempts, at - now)

    async def _evaluate(self, obs: Observation) -> tuple:
        """What deciding ``obs`` reads, and nothing it writes: ``(terms, decision, fresh quote
        id or None)``. It depends only on facts (the chain, the signed terms, the deposits of
        the same reference as observed), so it may run ahead of the decisions before it."""
        quote_id = None
        terms, decision = await self._check(obs)
        if decision.outcome == rules.LATE:
            decision, quote_id = await self._late(obs, terms, decision)
        if self.price_bound is not None:  # outside it: held for refund ("unpriced")
            decision = await self.price_bound.apply(obs, terms, decision)
        return terms, decision, quote_id

    async def _decide(self, row_id: int, obs: Observation, evaluation: asyncio.Future | None = None) -> int:
        try:
            terms, decision, quote_id = await (evaluation if evaluation is not None else self._evaluate(obs))
        except _UnknownReference as e:
            refund_at = obs.timestamp + self.unknown_reference_refund_after
            if int(self.wall_clock()) < refund_at:
                e.not_after = refund_at
                raise
            return await self._refund_unattributed(row_id, obs)
        except VerificationError as e:
            async with self.db.begin() as s:
                await obs_repo.set_observation_status(s, row_id, "rejected", e.detail[:200])
            log.info("signer %s: deposit %s/%d rejected: %s", self.name, obs.chain, obs.sequence, e.detail)
            self._count("rejected")
            return 1
        await self._sign_release(obs, terms, decision)
        if decision.credits <= 0:
            detail = {rules.LATE: "deposit arrived after the payment expired (late); held for refund",
                      rules.INVALID: "deposit chain or token does not match the payment; held for refund",
                      rules.EXCESS: "the payment was fully paid already; deposit held for refund",
                      rules.UNPRICED: "the terms' rate is outside this signer's price bound; held for refund",
                      rules.BELOW_ONE_CREDIT: "deposit too small for one more credit; counted towards the payment",
                      }[decision.outcome]
            async with self.db.begin() as s:
                await obs_repo.set_observation_status(s, row_id, "rejected", detail)
            log.info("signer %s: deposit %s/%d not attested: %s", self.name, obs.chain, obs.sequence, detail)
            self._count(decision.outcome)
            return 1
        credit = Credit(obs.source, obs.sequence, terms.beneficiary, decision.credits,
                        quote_id_bytes(quote_id or terms.quote_id))
        release_at = await self._govern(obs, decision.credits)
        # held only when the governor delays it past its block time (clock skew cannot hold others)
        if release_at is not None and release_at > obs.timestamp and release_at > int(self.wall_clock()):
            async with self.db.begin() as s:
                await obs_repo.set_observation_status(s, row_id, "queued", f"governor: held until {release_at}")
            log.info("signer %s: deposit %s/%d held by the governor until %d", self.name, obs.chain, obs.sequence,
                     release_at)
            self._count("queued")
            return 0
        index, _, _ = await self.committee()
        message = CreditMessage(index, (credit,))
        signature = digest.sign_digest(self._key.secret, digest.credit_digest(self.domain, message))
        async with self.db.begin() as s:
            await att_repo.add_attestation(s, credit, index, signature, terms.payment_id, utcnow())
            await obs_repo.set_observation_status(s, row_id, "attested", "")
        log.info("signer %s: attested deposit %s seq %d: %d credits to 0x%s", self.name, obs.chain,
                 obs.sequence, credit.credits, credit.beneficiary.hex())
        self._count("attested")
        return 1

    async def _refund_unattributed(self, row_id: int, obs: Observation) -> int:
        """The gateway still knows no payment for the deposit's reference, the configured delay
        after its block time: refund the whole deposit to its payer, like an invalid one."""
        await self._sign_release(obs, None, rules.Decision(rules.UNATTRIBUTED, 0, 0, obs.amount))
        detail = (f"unknown payment reference {self.unknown_reference_refund_after}s after the deposit; "
                  "held for refund (unattributed)")
        async with self.db.begin() as s:
            await obs_repo.set_observation_status(s, row_id, "rejected", detail)
        log.info("signer %s: deposit %s/%d not attested: %s", self.name, obs.chain, obs.sequence, detail)
        self._count(rules.UNATTRIBUTED)
        return 1

    async def _govern(self, obs: Observation, credits: int) -> int | None:
        """The deposit's governor release time (unix seconds), fixed at its first decision."""
        limits = self.governor.get(obs.chain)
        if limits is None or self.credit_price_usd is None:
            return None
        async with self.db.begin() as s:
            item = await gov_repo.get_item(s, obs.source, obs.sequence)
            if item is not None:
                return item.release_at
            usd = gov.usd_value(credits, self.credit_price_usd)
            base_floor = obs.timestamp - gov.DAY
            earlier = await gov_repo.items_released_after(s, obs.chain, base_floor)
            release = gov.release_time(limits, obs.timestamp, usd,
                                       [(e.release_at, gov.usd_value(e.credits, self.credit_price_usd))
                                        for e in earlier])
            await gov_repo.add_item(s, gov_repo.GovernorItem(obs.source, obs.sequence, obs.chain, obs.timestamp,
                                                             credits, release), utcnow())
        return release

    def token_of(self, obs: Observation) -> str | None:
        """None for a deposit in its chain's native token, else the deposit's token symbol."""
        native = self.native_tokens.get(obs.chain)
        return None if native is None or obs.token == native else obs.token

    def min_refund_of(self, chain: str, token: str | None) -> int:
        """The smallest refund of ``token`` (None: native) on ``chain``; smaller held amounts are dust."""
        return int(self.min_refund.get(chain if token is None else f"{token}@{chain}", 0) or 0)

    async def _sign_release(self, obs: Observation, terms, decision: rules.Decision) -> None:
        """Authorize the refund of the held part of a deposit, if its chain can refund. A deposit
        in a non-native token is refunded in that token."""
        purpose = decision.refund_purpose
        if purpose is None:
            return
        rid = refunds.release_id(obs.source, obs.sequence, purpose)
        token = self.token_of(obs)
        if rules.is_dust(decision.refundable, self.min_refund_of(obs.chain, token)):
            await self._keep_dust(obs, terms, purpose, decision.refundable, rid)
            return
        if obs.payer == bytes(32):  # no provable payer (issue 14: an unverifiable plain-transfer funding)
            await self._keep_dust(obs, terms, purpose, decision.refundable, rid, reason="the deposit has no known payer")
            return
        signer = self.refund_signers.get(obs.chain)
        if signer is not None:
            signed = (signer.sign(obs.payer, decision.refundable, rid) if token is None
                      else signer.sign(obs.payer, decision.refundable, rid, token=token))
            if signed is None:
                return
            to, sig = signed
        elif obs.chain in self.approvers:
            to, sig = obs.payer, b""  # approved on chain by _approval_loop
        else:
            return
        async with self.db.begin() as s:
            added = await rel_repo.add_release(s, source=obs.source, sequence=obs.sequence, chain=obs.chain,
                                               purpose=purpose, to=to, amount=decision.refundable, release_id=rid,
                                               signature=sig, payment_id=terms.payment_id if terms else "",
                                               now=utcnow(), token=token)
        if added:
            log.info("signer %s: %s refund of %d %s (%s) for deposit %s seq %d to 0x%s", self.name,
                     "signed" if sig else "queued the approval of", decision.refundable, obs.token, purpose,
                     obs.chain, obs.sequence, to.hex())

    async def _keep_dust(self, obs: Observation, terms, purpose: str, amount: int, rid: bytes,
                         reason: str | None = None) -> None:
        """A held amount below the chain's ``min_refund`` (or, with ``reason``, one that cannot be
        refunded, e.g. to no known payer) stays in custody as dust: recorded (``GET /v1/refunds``),
        logged and counted, never signed or approved."""
        async with self.db.begin() as s:
            added = await rel_repo.add_dust(s, source=obs.source, sequence=obs.sequence, chain=obs.chain,
                                            purpose=purpose, to=obs.payer, amount=amount, release_id=rid,
                                            payment_id=terms.payment_id if terms else "", now=utcnow(),
                                            token=self.token_of(obs))
        if added:
            why = reason or f"is below the refund minimum {self.min_refund_of(obs.chain, self.token_of(obs))}"
            log_at = log.warning if reason else log.info
            log_at("signer %s: %s amount %d of deposit %s seq %d (payment %s) %s: kept as dust, not refunded",
                   self.name, purpose, amount, obs.chain, obs.sequence, terms.payment_id if terms else "-",
                   why if reason is None else f"cannot be refunded: {reason}")
            if self.metrics is not None and hasattr(self.metrics, "dust"):
                self.metrics.dust.labels(chain=obs.chain).inc()

    async def _approval_loop(self, interval: float = 3.0) -> None:
        """Drive this node's own approvals of Asset Hub refunds until each is done (or failed,
        which needs an operator); progress is kept in the node's database, so a restart resumes
        where it stopped without approving anything twice."""
        while True:
            now = int(self.wall_clock())
            async with self.db.begin() as s:
                rows = await rel_repo.open_approvals(s, list(self.approvers), now=now)
            for r in rows:
                await self._approve(r, now, interval)
            await asyncio.sleep(interval)

    async def _approve(self, r: rel_repo.StoredRelease, now: int, interval: float) -> None:
        """One step of one refund's approval. Each step moves the refund's next attempt time on
        (to now after progress, a backoff after a failure), and the window is read oldest time
        first: refunds rotate, so one that keeps failing or waiting starves none of the others."""
        import json

        try:
            last = json.loads(r.progress) if r.progress else {"state": "none"}
            # a release in a non-native token (r.token: its symbol) pays that token (Asset Hub: pallet_assets)
            new = await self.approvers[r.chain].step(release_id=r.release_id, payer=r.to, amount=r.amount,
                                                     sequence=r.sequence, progress=last,
                                                     **({"token": r.token} if r.token is not None else {}))
        except BridgeError as e:
            if e.retryable:
                await self._approval_later(r, now, e.code, str(e))
                return
            # this refund cannot be made as stored (e.g. a payer that is the committee
            # itself): park it for an operator rather than stop every other one
            new = {**(last if isinstance(last, dict) else {}), "state": "failed", "detail": str(e)[:300]}
        except Exception as e:  # a bug or malformed progress: this refund only
            log.exception("signer %s: refund 0x%s on %s: unexpected error; retried later", self.name,
                          r.release_id.hex()[:16], r.chain)
            await self._approval_later(r, now, "internal", f"{e.__class__.__name__}: {e}")
            return
        async with self.db.begin() as s:
            if new != last:
                await rel_repo.set_progress(s, r.release_id, new["state"], json.dumps(new, sort_keys=True))
            await rel_repo.set_next_attempt(s, r.release_id, 0, max(now, r.next_attempt_at + 1))
        if new != last:
            log.info("signer %s: refund 0x%s of %d on %s: %s %s", self.name, r.release_id.hex()[:16],
                     r.amount, r.chain, new["state"], new.get("detail", ""))
            self._count(f"refund-{new['state']}")

    async def _approval_later(self, r: rel_repo.StoredRelease, now: int, reason: str, detail: str) -> None:
        attempts = r.attempts + 1
        delay = retry_delay(attempts)
        async with self.db.begin() as s:
            await rel_repo.set_next_attempt(s, r.release_id, attempts, now + delay)
        if self.metrics is not None and hasattr(self.metrics, "retries"):
            self.metrics.retries.labels(chain=r.chain, reason=reason).inc()
        log.warning("signer %s: refund 0x%s on %s: %s (attempt %d, next in %ds)", self.name,
                    r.release_id.hex()[:16], r.chain, detail, attempts, delay)

    async def _late(self, obs: Observation, terms, held: rules.Decision) -> tuple[rules.Decision, str | None]:
        """Follow the gateway's signed decision on a late deposit: (decision, fresh quote id)."""
        from bridge.payments import late
        from bridge.pricing.quotes import verify_late_terms

        try:
            lt = await self.gateway.late_terms(obs.reference, obs.source, obs.sequence)
            if lt is None:
                raise _NotYet("the gateway has not decided this late deposit yet")
            verify_late_terms(lt, self.gateway_public_key)
        except VerificationError as e:  # a bad gateway answer proves nothing about the deposit
            raise _Retry(f"the gateway's late decision does not verify: {e.detail}", "gateway-invalid") from None
        if (lt.deposit_id != (obs.source, obs.sequence) or lt.amount != obs.amount or lt.reference != obs.reference
                or lt.payment_id != terms.payment_id or not lt.within_bounds(terms.credits)):
            log.warning("signer %s: late decision for deposit %s/%d does not match the deposit or its bounds; "
                        "holding it for refund", self.name, obs.chain, obs.sequence)
            return held, None
        if lt.decision != late.CREDIT:
            return held, None
        # still a late deposit (its refund purpose stays "late"), credited at the fresh quote
        return rules.Decision(rules.LATE, lt.credits, lt.counted, lt.refundable), lt.fresh_quote_id

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.decisions.labels(outcome=outcome).inc()

    async def _check(self, obs: Observation):
        """Verify a deposit against this node's own chain view and the signed terms, and
        decide it (``bridge.payments.rules``) against the payment's earlier deposits."""
        watcher = self.watchers.get(obs.chain)
        if watcher is None:
            raise VerificationError(f"chain {obs.chain!r} is not watched by this node")
        # reobserve returns nothing only when the chain proves the deposit absent; when it
        # cannot tell (timeouts, missing history) it raises ChainError: retried (``_attempt``)
        again = [o for o in await watcher.reobserve(obs.tx_id) if o.event_index == obs.event_index]
        if not again or again[0] != obs:
            raise VerificationError("deposit not found again on this node's chain view")
        try:
            terms = await self.gateway.terms(obs.reference)
            if terms is None:
                raise _UnknownReference("the gateway knows no payment with this reference (yet)")
            verify_terms(terms, self.gateway_public_key)
            if terms.reference != obs.reference:
                raise VerificationError("gateway answered terms of another reference")
        except VerificationError as e:  # a bad gateway answer proves nothing about the deposit
            raise _Retry(f"the gateway's terms do not verify: {e.detail}", "gateway-invalid") from None
        async with self.db.begin() as s:
            others = await obs_repo.observations_by_reference(s, obs.reference)
        earlier = [_fact(o.observation) for o in others if o.observation.deposit_id != obs.deposit_id]
        rule_terms = rules.Terms(terms.chain, terms.token, terms.amount, terms.credits, terms.expires_at)
        return terms, rules.decide(rule_terms, _fact(obs), earlier, self.late_grace)

    # --- what the HTTP side serves ---------------------------------------------------------------
    async def attestations_after(self, after: int, limit: int) -> list[dict]:
        async with self.db.begin() as s:
            rows = await att_repo.attestations_after(s, after, limit)
        signer = "0x" + self.address.hex()
        return [
            {
                "id": r.id,
                "signer": signer,
                "committee_index": r.committee_index,
                "credit": r.credit.to_json(),
                "signature": "0x" + r.signature.hex(),
            }
            for r in rows
        ]

    async def releases_after(self, after: int, limit: int) -> list[dict]:
        async with self.db.begin() as s:
            rows = await rel_repo.releases_after(s, after, limit)
        def signer(chain: str) -> str:
            s = self.refund_signers.get(chain)
            return "0x" + (s.signer_id if s is not None else self.address).hex()

        return [{"id": r.id, "signer": signer(r.chain), "chain": r.chain, "source": "0x" + r.source.hex(),
                 "sequence": r.sequence, "purpose": r.purpose, "to": "0x" + r.to.hex(), "amount": str(r.amount),
                 "release_id": "0x" + r.release_id.hex(), "payment_id": r.payment_id, "token": r.token,
                 "signature": "0x" + r.signature.hex()} for r in rows]

    async def refunds(self) -> dict:
        """The operator's view of this node's refunds (``GET /v1/refunds``)."""
        import json

        async with self.db.begin() as s:
            by_chain, failed = await rel_repo.refund_summary(s)
            dust, dust_rows = await rel_repo.dust_summary(s)
        return {"by_chain": by_chain,
                # held amounts below a chain's min_refund: kept in custody, not refunded
                # keyed by chain (native token) or SYMBOL@chain (another token the chain's custody holds)
                "dust": {key: {"count": d["count"], "amount": str(d["amount"]),
                               "min_refund": str(self.min_refund.get(key, 0))} for key, d in dust.items()},
                "dust_latest": [{"chain": r.chain, "token": r.token, "payment_id": r.payment_id, "purpose": r.purpose,
                                 "amount": str(r.amount), "to": "0x" + r.to.hex(), "sequence": r.sequence,
                                 "release_id": "0x" + r.release_id.hex()} for r in dust_rows],
                "failed": [{"chain": r.chain, "token": r.token, "release_id": "0x" + r.release_id.hex(),
                            "payment_id": r.payment_id,
                            "purpose": r.purpose, "amount": str(r.amount), "to": "0x" + r.to.hex(),
                            "detail": json.loads(r.progress).get("detail", "") if r.progress else ""}
                           for r in failed]}

    async def sign_batch(self, committee_index: int, credits: list[Credit]) -> bytes:
        """Sign a batch made only of credits this node attested, byte for byte."""
        index, _, _ = await self.committee()
        if committee_index != index:
            index, _, _ = await self.committee(refresh=True)
            if committee_index != index:
                raise Conflict(f"committee index {committee_index} is not the current one ({index})")
        message = CreditMessage(committee_index, tuple(credits))
        async with self.db.begin() as s:
            for c in credits:
                mine = await att_repo.attested_credit(s, c.source, c.sequence)
                if mine != c:
                    raise VerificationError(f"credit for sequence {c.sequence} was not attested as given")
        return digest.sign_digest(self._key.secret, digest.credit_digest(self.domain, message))


RETRY_BASE_SECONDS = 2
# capped at 30 s: a deposit that waited out an outage (gateway restart, RPC cut) is tried again at
# most 30 s after the cause cleared; a 5-minute cap made the full chaos run's credits wait minutes
# after each API restart. A retry of a still-failing read is cheap (the pass reads at most 100).
RETRY_MAX_SECONDS = 30


def retry_delay(attempts: int) -> int:
    """Seconds before attempt ``attempts + 1``: 2, 4, 8, 16, then every 30 s."""
    return min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS << min(max(attempts - 1, 0), 16))


class _Retry(Exception):
    """This deposit cannot be decided now; try it again later (``not_after``: unix seconds
    by which to try again at the latest)."""

    reason = "retry"

    def __init__(self, detail: str, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason
        self.not_after: int | None = None


class _NotYet(_Retry):
    """A deposit cannot be decided yet (the gateway has not decided a late deposit)."""

    reason = "late-pending"


class _UnknownReference(_Retry):
    """The gateway knows no payment with the deposit's reference (yet: a failover may hide it)."""

    reason = "unknown-reference"


def _fact(o: Observation) -> rules.DepositFact:
    return rules.DepositFact(o.deposit_id, o.chain, o.token, o.amount, o.timestamp)
