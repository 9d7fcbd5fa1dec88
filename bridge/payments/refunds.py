"""Refunds of held funds: committee-signed releases on the source chain.

Held funds are what ``bridge.payments.rules.decide`` does not count: the overpaid part of a
deposit (``excess``), a deposit after the deadline (``late``), a deposit naming a payment of
another chain or token (``invalid``). Each signer, when it decides a deposit, authorizes the
refund of the held part to the payer -- only for the amount its *own* records justify, from
the same rule it credits with:

* **Ethereum** (lock contract): ``Release(to, amount, releaseId)`` signed under the lock's
  EIP-712 domain ("CreditBridge Lock", version 1, chain id, lock address) with the signer's
  secp256k1 key (``EvmRefundSigner`` here, ``relayers/evm/release.py`` submits);
* **TON** (lock contract): the same release as a cell signed with the member's Ed25519 key
  (``relayers/ton/release.py``);
* **Asset Hub** (pallet_multisig account): no signature to collect; each signer approves the
  refund call on chain itself (``relayers/substrate/refund.py``, driven by the signer node).

``releaseId = keccak256("creditbridge/refund/v1" | source | sequence (8 bytes) | purpose)``:
one refund per deposit and purpose; both lock contracts refuse a release id twice, and the
Asset Hub refund call carries it in a remark (one multisig operation per release id).

The refund worker (run by the aggregator, untrusted like it) collects t matching signatures
from the signers' ``GET /v1/releases`` feeds, checks each with the chain's ``Releaser``
against the committee the lock contract itself stores, and submits. Running two workers is
harmless: the second submission of a release id fails with ``ReleaseUsed``, which counts as
done.

A mined release is not yet a final one: a reorg below the chain's finality can drop it. A
releaser that can tell (``Releaser.confirmed``, e.g. the EVM lock's) keeps the release
*submitted* with its tx hash until the chain says it is final (done) or gone (sent again; a
release id already used on the canonical chain then answers ``ReleaseUsed``, which is done
too). A releaser without ``confirmed`` returns only once its release is final (TON: the
masterchain block that shows it is final once served), so its send counts as done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from bridge.committee import digest
from bridge.errors import BridgeError, TransactionFailed, VerificationError
from bridge.hashing import keccak256
from bridge.types import SettlementDomain

log = logging.getLogger("creditbridge.refunds")

LOCK_NAME = "CreditBridge Lock"


def release_id(source: bytes, sequence: int, purpose: str) -> bytes:
    return keccak256(b"creditbridge/refund/v1|" + source + sequence.to_bytes(8, "big") + b"|" + purpose.encode())


def payer_address(payer: bytes) -> bytes | None:
    """The 20-byte EVM address of a left-padded 32-byte payer, or None if it is not one."""
    if len(payer) == 32 and payer[:12] == bytes(12):
        return payer[12:]
    return None


def lock_domain(chain_id: int, lock: bytes) -> SettlementDomain:
    return SettlementDomain(chain_id=chain_id, contract=lock, name=LOCK_NAME, version="1")


class RefundSigner(Protocol):
    """A signer node's refund authorizations for one source chain's lock."""

    signer_id: bytes  # what the lock knows the member by (EVM address, Ed25519 public key)

    def sign(self, payer: bytes, amount: int, release_id: bytes) -> tuple[bytes, bytes] | None:
        """(destination as the chain names it, signature), or None if ``payer`` cannot be paid
        back on this chain. A release of a non-native token is asked for with ``token=SYMBOL``
        (issue 15); a signer that does not hold that token answers None."""
        ...


class EvmRefundSigner:
    """EIP-712 ``Release`` signatures for an EVM lock contract; ``TokenRelease(token, to, amount,
    releaseId)`` for the ERC-20s it holds (``tokens``: symbol -> 20-byte contract)."""

    def __init__(self, domain: SettlementDomain, secret: bytes, address: bytes,
                 tokens: dict[str, bytes] | None = None) -> None:
        self.domain = domain
        self._secret = secret
        self.signer_id = address
        self.tokens = dict(tokens or {})

    def sign(self, payer: bytes, amount: int, release_id: bytes,
             token: str | None = None) -> tuple[bytes, bytes] | None:
        to = payer_address(payer)
        if to is None or amount <= 0:
            return None
        if token is None:
            return to, digest.sign_digest(self._secret, digest.release_digest(self.domain, to, amount, release_id))
        contract = self.tokens.get(token)
        if contract is None:
            log.error("refunds: no ERC-20 contract configured for %s on this lock; release not signed", token)
            return None
        return to, digest.sign_digest(self._secret, digest.token_release_digest(self.domain, contract, to, amount,
                                                                                release_id))


class RefundRefused(TransactionFailed):
    """A release that can never go through as signed: the payout itself reverts (the payer is
    a contract that refuses the refund) or needs more gas than the configured cap. Not
    retryable: the refund worker parks it as failed for an operator."""

    code = "refund-refused"
    retryable = False


class ReleaseReverted(TransactionFailed):
    """A release transaction was mined and reverted (its gas is spent); why is unknown."""

    retryable = False


class Releaser(Protocol):
    """Submits committee-signed releases on one source chain's lock contract."""

    chain: str

    async def committee(self) -> tuple[int, list[bytes], int]:
        """(committee index, members' signer ids in the lock's order, threshold)."""
        ...

    def verify(self, to: bytes, amount: int, release_id: bytes, signer: bytes, signature: bytes) -> None:
        """Raise VerificationError unless ``signature`` is ``signer``'s over this release. A release
        of a non-native token is verified and sent with ``token=SYMBOL`` (issue 15)."""
        ...

    async def release(self, to: bytes, amount: int, release_id: bytes,
                      signatures: list[tuple[bytes, bytes]]) -> bytes:
        """Send the release with ``(signer id, signature)`` pairs (threshold of them); the tx
        hash once made. Raises TransactionFailed (not retryable, "ReleaseUsed" in its detail)
        when the release id was used already, RefundRefused when it can never be made."""
        ...

    # Optional (looked up with getattr): a releaser whose ``release`` returns before the tx is
    # final implements
    #
    #   async def confirmed(self, tx_hash: bytes) -> bool | None
    #
    # True: the tx's receipt is in the canonical block at its height, that block is final under
    # the chain's finality rule, and the tx succeeded (status 1). False: provably gone -- no
    # receipt while the block range it was mined in is final, the block at its height now has
    # another hash, or it reverted (status 0); the worker sends the release again. None: not
    # final yet, or it could not tell (RPC error); the worker asks again at its next step. It
    # never raises for an RPC failure.


@dataclass
class _Pending:
    chain: str
    to: bytes
    amount: int
    release_id: bytes
    purpose: str
    payment_id: str
    token: str | None = None  # None: the chain's native token; else the symbol of the token paid
    sigs: dict[bytes, bytes] = field(default_factory=dict)
    failures: int = 0
    retry_at: float = 0.0  # monotonic time before which a failed release is not tried again
    reverts: int = 0  # transactions of this release mined and reverted (they cost gas)
    tx: bytes = b""  # submitted: the tx hash sent, awaiting finality (releasers with ``confirmed``)
    sends: int = 0  # transactions of this release sent and mined
    ready_since: float | None = None  # first seen with t signatures (another relay's: taken over later)


def _token_kw(token: str | None) -> dict:
    """``token=SYMBOL`` for a release of a non-native token; nothing for the native one (releasers
    of chains without tokens keep their narrower signature)."""
    return {} if token is None else {"token": token}


class RefundWorker:
    """Collects signed releases from the signers and submits those with t signatures."""

    def __init__(self, *, signers: list, releasers: dict[str, Releaser], poll_interval: float = 1.0,
                 max_reverts: int = 3, failed_metric=None, relay_index: int = 0, relay_count: int = 1,
                 takeover_after: float = 30.0) -> None:
        self.signers = signers  # SignerClient-like: .base_url, .releases(after)
        self.releasers = releasers
        self.poll_interval = poll_interval
        # a release whose transactions were mined and reverted this many times is parked: each
        # such attempt burns gas, and one that keeps reverting is not a passing fault
        self.max_reverts = max_reverts
        self.failed_metric = failed_metric  # Counter creditbridge_relay_refunds_failed_total ["chain"]
        # several relays: this one submits at once the releases whose id hashes to its index, the
        # others once they have waited takeover_after s (their relay is down); the custody pays
        # a release id once whoever submits it, the split only saves the loser's gas
        if not 0 <= relay_index < relay_count:
            raise ValueError(f"relay_index {relay_index} must be in [0, {relay_count})")
        self.relay_index = relay_index
        self.relay_count = relay_count
        self.takeover_after = takeover_after
        self._cursor = {s.base_url: 0 for s in signers}
        # (release id, to, amount, token) -> pending; several contents for one id = signers disagree
        self._pending: dict[tuple, _Pending] = {}
        self._done: set[bytes] = set()
        self.submitted: list[tuple[bytes, bytes]] = []  # (release id, tx hash)
        # releases parked as failed (never retried by this worker), by release id
        self.failed: dict[bytes, dict] = {}

    async def run(self) -> None:
        delay = self.poll_interval
        while True:
            try:
                await self.step()
                delay = self.poll_interval
            except BridgeError as e:
                log.warning("refund worker: %s", e)
                delay = min(delay * 2, 30.0)
            await asyncio.sleep(delay)

    async def poll(self) -> int:
        n = 0
        for client in self.signers:
            try:
                while True:
                    items = await client.releases(self._cursor[client.base_url])
                    if not items:
                        break
                    for item in items:
                        self._cursor[client.base_url] = max(self._cursor[client.base_url], int(item["id"]))
                        try:
                            n += self._ingest(item)
                        except (BridgeError, KeyError, TypeError, ValueError) as e:
                            log.warning("refund worker: dropped a bad release from %s: %s", client.base_url, e)
            except BridgeError as e:
                log.warning("refund worker: %s", e)
        return n

    def _ingest(self, item: dict) -> int:
        chain = item["chain"]
        releaser = self.releasers.get(chain)
        if releaser is None:
            return 0
        rid = bytes.fromhex(item["release_id"][2:])
        if rid in self._done or rid in self.failed:
            return 0
        to = bytes.fromhex(item["to"][2:])
        amount = int(item["amount"])
        sig = bytes.fromhex(item["signature"][2:])
        claimed = bytes.fromhex(item["signer"][2:])
        token = item.get("token") or None
        if token is not None and not isinstance(token, str):
            raise ValueError("token must be a symbol")
        releaser.verify(to, amount, rid, claimed, sig, **_token_kw(token))
        p = self._pending.setdefault((rid, to, amount, token),
                                     _Pending(chain, to, amount, rid, item.get("purpose", ""),
                                              item.get("payment_id", ""), token))
        p.sigs[claimed] = sig
        return 1

    async def step(self) -> int:
        """Poll, then submit every release with enough signatures and follow the submitted ones
        to finality; how many releases became done (final, or made already) in this step."""
        await self.poll()
        done = 0
        committees: dict[str, tuple[int, list[bytes], int]] = {}
        now = time.monotonic()
        for key, p in list(self._pending.items()):
            if p.release_id in self._done:
                self._pending.pop(key, None)
                continue
            if p.retry_at > now:
                continue
            releaser = self.releasers[p.chain]
            if p.tx:  # submitted: final, gone, or not yet?
                verdict = await self._confirmed(releaser, p)
                if verdict is None:
                    continue
                if verdict:
                    self._finish(key, p, p.tx)
                    done += 1
                    continue
                log.warning("refund worker: release tx 0x%s was dropped (reorg?); sending again (release 0x%s "
                            "on %s, %s, payment %s)", p.tx.hex(), p.release_id.hex()[:16], p.chain, p.purpose,
                            p.payment_id)
                p.tx = b""
            try:
                if p.chain not in committees:
                    committees[p.chain] = await releaser.committee()
                _, members, threshold = committees[p.chain]
                sigs = [(a, s) for a, s in p.sigs.items() if a in set(members)]
                if len(sigs) < threshold:
                    continue
                if not self._mine(p.release_id):
                    if p.ready_since is None:
                        p.ready_since = now
                    if now - p.ready_since < self.takeover_after:
                        continue
                tx = await releaser.release(p.to, p.amount, p.release_id, sorted(sigs)[:threshold],
                                            **_token_kw(p.token))
            except RefundRefused as e:
                self._park(key, p, e.detail)
                continue
            except TransactionFailed as e:
                if e.retryable or "ReleaseUsed" not in e.detail:
                    if isinstance(e, ReleaseReverted):
                        p.reverts += 1
                        if p.reverts >= self.max_reverts:
                            self._park(key, p, f"reverted on chain {p.reverts} times: {e.detail}")
                            continue
                    self._failed(p, e)
                    continue
                log.info("refund worker: release 0x%s was made already", p.release_id.hex()[:16])
                self._finish(key, p, b"")
                done += 1
                continue
            except BridgeError as e:
                # one release that cannot go through now (lock short of funds, a chain down) must
                # not hold up the others: it is tried again after a growing pause
                self._failed(p, e)
                continue
            p.sends += 1
            if tx and getattr(releaser, "confirmed", None) is not None:
                p.tx = tx
                log.info("refund worker: sent release 0x%s (%d, %s, payment %s) to 0x%s in tx 0x%s; "
                         "waiting for finality", p.release_id.hex()[:16], p.amount, p.purpose, p.payment_id,
                         p.to.hex(), tx.hex())
                if await self._confirmed(releaser, p):  # a chain final at its head (0 confirmations)
                    self._finish(key, p, tx)
                    done += 1
                continue
            self._finish(key, p, tx)
            done += 1
        return done

    def _mine(self, release_id: bytes) -> bool:
        if self.relay_count == 1:
            return True
        return int.from_bytes(keccak256(release_id)[:8], "big") % self.relay_count == self.relay_index

    async def _confirmed(self, releaser: Releaser, p: _Pending) -> bool | None:
        try:
            return await releaser.confirmed(p.tx)  # type: ignore[attr-defined]
        except BridgeError as e:  # a releaser should answer None itself; be safe all the same
            log.warning("refund worker: could not tell whether tx 0x%s is final: %s", p.tx.hex(), e)
            return None

    def _finish(self, key: tuple, p: _Pending, tx: bytes) -> None:
        """A release that is done: final on chain (``tx``), or made already (``b""``)."""
        self._done.add(p.release_id)
        self._pending.pop(key, None)
        self.submitted.append((p.release_id, tx))
        if tx:
            final = " final" if p.tx else ""
            log.info("refund worker: refunded %d%s (%s, payment %s) to 0x%s in tx 0x%s%s", p.amount,
                     f" {p.token}" if p.token else "", p.purpose, p.payment_id, p.to.hex(), tx.hex(), final)

    def _park(self, key: tuple, p: _Pending, reason: str) -> None:
        """Give up on a release that can never go through: it stays visible (``failed``, the
        log, the metric) for an operator, and is not tried again."""
        self._pending.pop(key, None)
        self.failed[p.release_id] = {"chain": p.chain, "release_id": "0x" + p.release_id.hex(),
                                     "to": "0x" + p.to.hex(), "amount": str(p.amount), "purpose": p.purpose,
                                     "payment_id": p.payment_id, "token": p.token, "reason": reason}
        if self.failed_metric is not None:
            self.failed_metric.labels(p.chain).inc()
        log.error("refund worker: release 0x%s on %s (%s, payment %s, %d to 0x%s) parked as failed: %s",
                  p.release_id.hex()[:16], p.chain, p.purpose, p.payment_id, p.amount, p.to.hex(), reason)

    def _failed(self, p: _Pending, e: BridgeError) -> None:
        p.failures += 1
        pause = min(2.0 ** p.failures, 300.0)
        p.retry_at = time.monotonic() + pause
        log.warning("refund worker: release 0x%s on %s (%s, payment %s) failed (%s); retrying in %.0fs",
                    p.release_id.hex()[:16], p.chain, p.purpose, p.payment_id, e, pause)


class ReleasesClient:
    """Reads one signer node's ``GET /v1/releases`` feed."""

    def __init__(self, base_url: str, session, timeout: float = 10.0) -> None:
        import aiohttp

        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def releases(self, after: int, limit: int = 500) -> list[dict]:
        import aiohttp

        from bridge.errors import SignerUnavailable

        url = f"{self.base_url}/v1/releases?after={after}&limit={limit}"
        try:
            async with self.session.get(url, timeout=self.timeout) as r:
                body = await r.json(content_type=None)
                if r.status != 200 or not isinstance(body, dict) or not isinstance(body.get("releases"), list):
                    raise SignerUnavailable(f"signer {self.base_url} answered {r.status} to /v1/releases")
                return body["releases"]
        except (aiohttp.ClientError, TimeoutError) as e:
            raise SignerUnavailable(f"signer {self.base_url} unreachable ({e.__class__.__name__})") from None
        except ValueError:
            raise SignerUnavailable(f"signer {self.base_url} answered malformed JSON") from None
