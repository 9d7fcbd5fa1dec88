"""The aggregator ("relay"): collects t matching attestations and settles them.

It is untrusted: it holds no committee key, only a gas-paying account. Everything it submits
is checked by the settlement contract, and it checks signatures itself first so it does not
waste gas on junk. Running two aggregators, or one that restarts mid-submission, is harmless:
the contract skips deposits it has credited and reverts a batch with nothing new, which the
submitter reports as "nothing to do".

Batching: each signer attests deposits one by one (a batch of one). When several deposits are
ready, the aggregator asks the signers that attested all of them to sign the whole batch,
which they do only for credits they attested byte for byte; one signature set then covers
the batch (``bench/gas.py`` measures what that saves).

Several relays (``relay_count`` > 1, each with its own gas key, so their nonces never collide):
relay ``relay_index`` settles at once the deposits whose id hashes to its index
(:func:`relay_of`), and another relay's only once they have been ready for
``takeover_after`` seconds without being settled (that relay is down or stuck). Each deposit is
checked on chain before it is sent, so a relay that finds it settled by another marks it done
and moves on; the contract refuses a settled deposit anyway. Without the split both relays
would send every batch, and one transaction of each pair would revert (gas burnt for nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import aiohttp

from bridge.chains import Submitter
from bridge.committee import digest
from bridge.errors import BridgeError, SignerUnavailable, TransactionFailed, VerificationError
from bridge.hashing import keccak256
from bridge.storage import attestations as repo
from bridge.storage.db import Database
from bridge.types import Attestation, Credit, CreditMessage, SettlementDomain, utcnow

log = logging.getLogger("creditbridge.aggregator")


class SignerClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _json(self, method: str, path: str, **kw):
        try:
            async with self.session.request(method, self.base_url + path, timeout=self.timeout, **kw) as r:
                body = await r.json(content_type=None)
                if r.status != 200:
                    detail = body.get("detail") if isinstance(body, dict) else None
                    raise SignerUnavailable(f"signer {self.base_url} answered {r.status}: {detail}")
                return body
        except (aiohttp.ClientError, TimeoutError) as e:
            raise SignerUnavailable(f"signer {self.base_url} unreachable ({e.__class__.__name__})") from None
        except ValueError:
            raise SignerUnavailable(f"signer {self.base_url} answered malformed JSON") from None

    async def attestations(self, after: int, limit: int = 500) -> list[dict]:
        body = await self._json("GET", f"/v1/attestations?after={after}&limit={limit}")
        if not isinstance(body, dict) or not isinstance(body.get("attestations"), list):
            raise SignerUnavailable(f"signer {self.base_url} answered an unexpected shape")
        return body["attestations"]

    async def sign_batch(self, committee_index: int, credits: list[Credit]) -> tuple[bytes, bytes]:
        body = await self._json("POST", "/v1/batches", json={
            "committee_index": committee_index, "credits": [c.to_json() for c in credits]})
        try:
            return bytes.fromhex(body["signer"][2:]), bytes.fromhex(body["signature"][2:])
        except (KeyError, TypeError, ValueError):
            raise SignerUnavailable(f"signer {self.base_url} answered an unexpected shape") from None


@dataclass
class _Candidate:
    credit: Credit
    first_seen: float
    # signer address -> (committee index, one-credit signature)
    sigs: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    ready_since: float | None = None  # when this relay first had t signatures for it


def relay_of(deposit_id: tuple[bytes, int], relay_count: int) -> int:
    """The index of the relay that settles ``deposit_id`` first (the others take it over
    after a delay): a hash of the deposit id modulo the number of relays."""
    source, sequence = deposit_id
    return int.from_bytes(keccak256(source + sequence.to_bytes(8, "big"))[:8], "big") % relay_count


class Aggregator:
    def __init__(
        self,
        *,
        signers: list[SignerClient],
        settlement: Submitter,
        domain: SettlementDomain,
        db: Database,
        batch_size: int = 32,
        poll_interval: float = 1.0,
        max_batch_wait: float = 2.0,
        metrics=None,
        relay_index: int = 0,
        relay_count: int = 1,
        takeover_after: float = 30.0,
    ) -> None:
        if not 0 <= relay_index < relay_count:
            raise ValueError(f"relay_index {relay_index} must be in [0, {relay_count})")
        self.signers = signers
        self.settlement = settlement
        self.domain = domain
        self.db = db
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_batch_wait = max_batch_wait
        self.metrics = metrics
        self.relay_index = relay_index
        self.relay_count = relay_count
        self.takeover_after = takeover_after
        self._cursor = {s.base_url: 0 for s in signers}
        self._signer_of_url: dict[str, bytes] = {}
        # deposit id -> credit content -> candidate (several contents = signers disagree)
        self._pending: dict[tuple[bytes, int], dict[Credit, _Candidate]] = {}
        self._done: set[tuple[bytes, int]] = set()
        self._warned: set[tuple[bytes, int]] = set()
        self.ready = False

    async def run(self) -> None:
        self.ready = True
        backoff = self.poll_interval
        while True:
            try:
                await self.step()
                backoff = self.poll_interval
            except BridgeError as e:
                if not e.retryable:
                    log.error("aggregator: %s", e)
                else:
                    log.warning("aggregator: %s (retrying in %.1fs)", e, backoff)
                backoff = min(backoff * 2, 30.0)
            await asyncio.sleep(backoff)

    # --- collection -----------------------------------------------------------------------------
    async def poll(self) -> int:
        results = await asyncio.gather(*(self._poll_one(s) for s in self.signers), return_exceptions=True)
        n = 0
        for s, r in zip(self.signers, results):
            if isinstance(r, BaseException):
                if isinstance(r, asyncio.CancelledError):
                    raise r
                if isinstance(r, BridgeError):
                    log.warning("aggregator: %s", r)
                    continue
                raise r
            n += r
        return n

    async def _poll_one(self, client: SignerClient) -> int:
        n = 0
        while True:
            items = await client.attestations(self._cursor[client.base_url])
            if not items:
                return n
            for item in items:
                self._cursor[client.base_url] = max(self._cursor[client.base_url], int(item["id"]))
                try:
                    self._ingest(item)
                    n += 1
                except (BridgeError, KeyError, TypeError, ValueError) as e:
                    log.warning("aggregator: dropped a bad attestation from %s: %s", client.base_url, e)

    def _ingest(self, item: dict) -> None:
        credit = Credit.from_json(item["credit"])
        if credit.deposit_id in self._done:
            return
        index = int(item["committee_index"])
        sig = bytes.fromhex(item["signature"][2:])
        claimed = bytes.fromhex(item["signer"][2:])
        signer = digest.recover(digest.credit_digest(self.domain, CreditMessage(index, (credit,))), sig)
        if signer != claimed:
            raise VerificationError("attestation signature does not match its signer")
        variants = self._pending.setdefault(credit.deposit_id, {})
        cand = variants.setdefault(credit, _Candidate(credit, time.monotonic()))
        cand.sigs[signer] = (index, sig)
        if len(variants) > 1 and credit.deposit_id not in self._warned:
            self._warned.add(credit.deposit_id)
            log.error("aggregator: signers disagree on deposit seq %d of source 0x%s", credit.sequence,
                      credit.source.hex()[:16])

    # --- settlement -------------------------------------------------------------------------------
    async def step(self) -> int:
        """Poll the signers, then settle what is ready; return the number of credits settled."""
        await self.poll()
        index, members, threshold = await self.settlement.committee()
        member_set = set(members)
        ready: list[_Candidate] = []
        now = time.monotonic()
        for dep_id, variants in list(self._pending.items()):
            for cand in variants.values():
                if sum(1 for a in cand.sigs if a in member_set) >= threshold:
                    if cand.ready_since is None:
                        cand.ready_since = now
                    if self._mine(dep_id) or now - cand.ready_since >= self.takeover_after:
                        ready.append(cand)
                    break
        if not ready:
            return 0
        ready = await self._drop_settled(ready)
        if not ready:
            return 0
        oldest = min(c.first_seen for c in ready)
        if len(ready) < self.batch_size and time.monotonic() - oldest < self.max_batch_wait:
            return 0
        ready.sort(key=lambda c: (c.credit.source, c.credit.sequence))
        settled = 0
        for i in range(0, len(ready), self.batch_size):
            settled += await self._settle(ready[i:i + self.batch_size], index, member_set, threshold)
        return settled

    async def _drop_settled(self, cands: list[_Candidate]) -> list[_Candidate]:
        ids = [c.credit.deposit_id for c in cands]
        async with self.db.begin() as s:
            known = await repo.settled_ids(s, ids)
        out = []
        for c in cands:
            dep = c.credit.deposit_id
            if dep in known or await self.settlement.is_settled(*dep):
                self._finish(dep)
                if dep not in known:
                    async with self.db.begin() as s:
                        await repo.mark_settled(s, [c.credit], None, utcnow())
            else:
                out.append(c)
        return out

    def _mine(self, dep: tuple[bytes, int]) -> bool:
        return self.relay_count == 1 or relay_of(dep, self.relay_count) == self.relay_index

    def _finish(self, dep: tuple[bytes, int]) -> None:
        self._done.add(dep)
        self._pending.pop(dep, None)

    async def _signatures(self, batch: list[_Candidate], index: int, members: set[bytes],
                          threshold: int) -> list[Attestation] | None:
        message = CreditMessage(index, tuple(c.credit for c in batch))
        if len(batch) == 1:
            sigs = [(a, s) for a, (ci, s) in batch[0].sigs.items() if ci == index and a in members]
            if len(sigs) >= threshold:
                return [Attestation(a, message, s) for a, s in sorted(sigs)[:threshold]]
        # ask the signers that attested every item to sign the batch as a whole
        common = set.intersection(*(set(c.sigs) for c in batch)) & members
        clients = [s for s in self.signers if self._signer_of_url.get(s.base_url, b"?") in common
                   or s.base_url not in self._signer_of_url]
        results = await asyncio.gather(*(s.sign_batch(index, list(message.credits)) for s in clients),
                                       return_exceptions=True)
        want = digest.credit_digest(self.domain, message)
        got: dict[bytes, bytes] = {}
        for client, r in zip(clients, results):
            if isinstance(r, asyncio.CancelledError):
                raise r
            if isinstance(r, BaseException):
                if not isinstance(r, BridgeError):
                    raise r
                log.info("aggregator: batch signature from %s: %s", client.base_url, r)
                continue
            signer, sig = r
            try:
                if digest.recover(want, sig) != signer or signer not in members:
                    continue
            except VerificationError:
                continue
            self._signer_of_url[client.base_url] = signer
            got[signer] = sig
        if len(got) < threshold:
            return None
        return [Attestation(a, message, s) for a, s in sorted(got.items())[:threshold]]

    async def _settle(self, batch: list[_Candidate], index: int, members: set[bytes], threshold: int) -> int:
        atts = await self._signatures(batch, index, members, threshold)
        if atts is None:
            if len(batch) == 1:
                return 0
            half = len(batch) // 2  # not enough signers for the whole batch: split it
            return (await self._settle(batch[:half], index, members, threshold)
                    + await self._settle(batch[half:], index, members, threshold))
        credits = [c.credit for c in batch]
        async with self.db.begin() as s:
            await repo.note_attempt(s, credits, utcnow())
        try:
            tx = await self.settlement.submit(atts[0].message, atts)
        except TransactionFailed as e:
            if e.retryable or len(batch) == 1:
                raise
            # one bad item must not block the others: settle the halves on their own
            log.warning("aggregator: batch of %d failed (%s); splitting it", len(batch), e)
            half = len(batch) // 2
            return (await self._settle(batch[:half], index, members, threshold)
                    + await self._settle(batch[half:], index, members, threshold))
        async with self.db.begin() as s:
            await repo.mark_settled(s, credits, tx or None, utcnow())
        for c in credits:
            self._finish(c.deposit_id)
        if self.metrics is not None and tx:
            self.metrics.settled.inc(len(credits))
            self.metrics.batches.inc()
            others = sum(1 for c in credits if not self._mine(c.deposit_id))
            if others and getattr(self.metrics, "taken_over", None) is not None:
                self.metrics.taken_over.inc(others)
        log.info("aggregator: settled %d credit(s) in tx 0x%s", len(credits), (tx or b"").hex() or "(already)")
        return len(credits)
