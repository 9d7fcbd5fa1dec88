"""One committee signer node.

It runs its own watchers (its own RPC endpoints), and for every final deposit:

1. re-observes the transaction on its own chain view (the deposit must still be there,
   successful and canonical);
2. fetches the payment terms for the deposit's reference from the gateway and verifies the
   gateway's Ed25519 signature over them with the public key pinned in its config, so a
   compromised API or network cannot redirect credits;
3. computes the credits deterministically (``credits_for_deposit``: pro-rata, floored, never
   more than quoted), so honest signers produce byte-identical messages;
4. signs the one-credit EIP-712 message and stores the attestation, in one transaction with
   the observation's status.

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
from bridge.errors import BridgeError, Conflict, InputError, VerificationError
from bridge.keystore import SecretKey
from bridge.pricing.credits import credits_for_deposit
from bridge.pricing.quotes import verify_terms
from bridge.storage import attestations as att_repo
from bridge.storage import observations as obs_repo
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
        max_block_range: dict[str, int] | None = None,
        start_block: dict[str, int] | None = None,
        poll_interval: float = 1.0,
        metrics=None,
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
        self.poll_interval = poll_interval
        self.metrics = metrics
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
            )
            for name_, w in watchers.items()
        ]
        self.ready = False

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
        """Handle observations waiting for a decision; return how many were decided."""
        async with self.db.begin() as s:
            pending = await obs_repo.observations_by_status(s, "new", limit)
        decided = 0
        for stored in pending:
            decided += await self._decide(stored.id, stored.observation)
        return decided

    async def _decide(self, row_id: int, obs: Observation) -> int:
        try:
            credit, payment_id = await self._check(obs)
        except VerificationError as e:
            async with self.db.begin() as s:
                await obs_repo.set_observation_status(s, row_id, "rejected", e.detail[:200])
            log.info("signer %s: deposit %s/%d rejected: %s", self.name, obs.chain, obs.sequence, e.detail)
            self._count("rejected")
            return 1
        index, _, _ = await self.committee()
        message = CreditMessage(index, (credit,))
        signature = digest.sign_digest(self._key.secret, digest.credit_digest(self.domain, message))
        async with self.db.begin() as s:
            await att_repo.add_attestation(s, credit, index, signature, payment_id, utcnow())
            await obs_repo.set_observation_status(s, row_id, "attested", "")
        log.info("signer %s: attested deposit %s seq %d: %d credits to 0x%s", self.name, obs.chain,
                 obs.sequence, credit.credits, credit.beneficiary.hex())
        self._count("attested")
        return 1

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.decisions.labels(outcome=outcome).inc()

    async def _check(self, obs: Observation) -> tuple[Credit, str]:
        """Verify a deposit against this node's own chain view and the signed terms."""
        watcher = self.watchers.get(obs.chain)
        if watcher is None:
            raise VerificationError(f"chain {obs.chain!r} is not watched by this node")
        again = [o for o in await watcher.reobserve(obs.tx_id) if o.event_index == obs.event_index]
        if not again or again[0] != obs:
            raise VerificationError("deposit not found again on this node's chain view")
        terms = await self.gateway.terms(obs.reference)
        if terms is None:
            raise VerificationError("unknown payment reference")
        verify_terms(terms, self.gateway_public_key)
        if terms.reference != obs.reference:
            raise VerificationError("gateway answered terms of another reference")
        if terms.chain != obs.chain or terms.token != obs.token:
            raise VerificationError("deposit chain or token does not match the payment")
        if obs.timestamp > int(terms.expires_at.timestamp()) + self.late_grace:
            raise VerificationError("deposit arrived after the payment expired (late)")
        credits = credits_for_deposit(obs.amount, terms.amount, terms.credits)
        if credits <= 0:
            raise VerificationError("deposit too small for one credit")
        credit = Credit(obs.source, obs.sequence, terms.beneficiary, credits, quote_id_bytes(terms.quote_id))
        return credit, terms.payment_id

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
