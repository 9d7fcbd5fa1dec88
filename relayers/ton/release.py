"""Refunds on TON: committee-signed releases from the lock contract (contracts/ton/lock.fc).

Two halves, like the EVM lock's (``bridge.payments.refunds``):

* ``TonRefundSigner`` runs in a signer node: when the node decides that (part of) a TON deposit
  is held for refund, it signs ``Release(global_id, lock, payer's basechain address, amount,
  releaseId)`` with its Ed25519 committee key (``check_signature`` over the payload cell's hash).
  ``global_id`` is the configured network's (a testnet signature is no mainnet signature). The
  lock pays each release id once, so there is no seqno and no expiry to agree on: every member
  signs when it decides, in any order, and a signature stays valid until the refund is made.
  Refunds below the chain's ``min_refund`` are not signed (dust: the lock refuses releases below
  its ``min_release``, since a release pays its own fees out of its amount).
* ``TonLockReleaser`` runs in the (untrusted) aggregator's refund worker: it checks that the lock
  is bound to the configured network (which is the chain's), checks each signature against the
  lock's own committee (``get_committee``), and once ``threshold`` of them are in, sends the
  external message through a liteserver and waits for ``is_released``.

Deposits come only from basechain senders (lock.fc throws otherwise), so the 32-byte payer of an
observation names the refund's destination exactly.

Jettons (issue 15): ``sign(..., token=SYMBOL)`` and ``release(..., token=SYMBOL)`` make a jetton
release (``release_jetton#43425233``: the same fields plus the jetton's master), paid by the lock
as a TEP-74 ``transfer`` from its jetton wallet to the destination's, out of the same used-id
set. ``tokens`` (symbol -> ``PayableToken``, the chain's non-native tokens) names the masters;
a token it does not name is not signed (None) and not submitted (RefundRefused). The lock pays a
jetton release's TON (``lock.JETTON_RELEASE_VALUE``, the excess comes back) from its reserve,
and refuses one above what it holds of that jetton for logged deposits.
"""

from __future__ import annotations

import asyncio
import time

from pytoniq_core import Address

from bridge.config import PayableToken, TonChainConfig
from bridge.errors import ChainError, ConfigError, InputError, TransactionFailed, VerificationError
from bridge.payments.refunds import RefundRefused
from relayers.ton import lock as L
from relayers.ton.transport import LiteTransport


def jetton_masters(tokens: dict[str, PayableToken] | None) -> dict[str, Address]:
    """symbol -> master address of the chain's jettons."""
    out: dict[str, Address] = {}
    for symbol, t in (tokens or {}).items():
        if t.native or t.jetton_master is None:
            continue
        try:
            out[symbol] = Address(t.jetton_master)
        except Exception:  # pytoniq-core raises bare exceptions on bad addresses
            raise ConfigError(f"token {symbol} on {t.chain}: jetton_master is not a TON address") from None
    return out


class TonRefundSigner:
    """A committee member's refund signatures for one TON lock on one network (``global_id``).
    Refunds below ``min_release`` are not signed: they are dust (the lock would refuse them,
    and a release pays its own fees out of its amount)."""

    def __init__(self, lock: str | Address, seed: bytes, *, global_id: int,
                 min_release: int = L.DEFAULT_MIN_RELEASE, tokens: dict[str, PayableToken] | None = None) -> None:
        self.lock = lock if isinstance(lock, Address) else Address(lock)
        self.masters = jetton_masters(tokens)
        self.global_id = L.check_global_id(global_id)
        self.min_release = min_release
        self._seed = bytes(seed[:32])
        self.signer_id = L.ed25519_public(self._seed)

    @classmethod
    def from_config(cls, cfg: TonChainConfig, seed: bytes, *,
                    tokens: dict[str, PayableToken] | None = None) -> "TonRefundSigner":
        if cfg.global_id is None:
            raise ConfigError(f"chain {cfg.name}: global_id is required to sign TON refunds "
                              "(mainnet -239, testnet -3)")
        return cls(cfg.contracts["lock"], seed, global_id=cfg.global_id, min_release=cfg.min_refund, tokens=tokens)

    def sign(self, payer: bytes, amount: int, release_id: bytes, token: str | None = None) -> tuple[bytes, bytes] | None:
        """(destination account id, signature) for a refund of ``amount`` to ``payer`` in
        ``token`` (None: TON); None below the minimum TON refund (a jetton's minimum is the
        signer's ``min_refund_of``), or for a token this lock does not know."""
        if len(payer) != 32:
            return None
        if token is None:
            if amount < max(self.min_release, 1):
                return None
            payload = L.release_payload(global_id=self.global_id, lock=self.lock, destination=L.basechain(payer),
                                        amount=amount, release_id=release_id)
        else:
            master = self.masters.get(token)
            if master is None or amount <= 0:
                return None
            payload = L.jetton_release_payload(global_id=self.global_id, lock=self.lock,
                                               destination=L.basechain(payer), amount=amount,
                                               release_id=release_id, master=master)
        return payer, L.sign_release(payload, self._seed)


class TonLockReleaser:
    """Submits committee-signed releases on a TON lock (``bridge.payments.refunds.Releaser``)."""

    def __init__(self, cfg: TonChainConfig, *, timeout: float = 60.0,
                 tokens: dict[str, PayableToken] | None = None) -> None:
        if cfg.liteserver_config is None:
            raise ConfigError(f"chain {cfg.name}: refunds are sent through a liteserver: liteserver_config is required")
        if cfg.global_id is None:
            raise ConfigError(f"chain {cfg.name}: global_id is required to submit TON refunds "
                              "(mainnet -239, testnet -3)")
        self.chain = cfg.name
        self.global_id = cfg.global_id
        self.lock = Address(cfg.contracts["lock"])
        self.timeout = timeout
        self.masters = jetton_masters(tokens)
        self.transport = LiteTransport(cfg.liteserver_config, cfg.trust_level, cfg.request_timeout)
        self._checked = False

    def _payload(self, to: bytes, amount: int, release_id: bytes, token: str | None = None):
        try:
            if token is None:
                return L.release_payload(global_id=self.global_id, lock=self.lock, destination=L.basechain(to),
                                         amount=amount, release_id=release_id)
            master = self.masters.get(token)
            if master is None:
                raise RefundRefused(f"chain {self.chain}: no jetton_master configured for token {token}")
            return L.jetton_release_payload(global_id=self.global_id, lock=self.lock, destination=L.basechain(to),
                                            amount=amount, release_id=release_id, master=master)
        except InputError as e:
            raise VerificationError(f"release cannot be built: {e.detail}") from None

    async def check_lock(self) -> None:
        """The lock must be bound to the configured network, which must be the chain's: else no
        release signed under this config can ever be paid (ConfigError)."""
        if self._checked:
            return
        (stored,) = await self.transport.run_get_method(self.lock, "get_global_id", [])
        chain = await self.transport.global_id()
        if int(stored) != self.global_id or chain != self.global_id:
            raise ConfigError(f"chain {self.chain}: global_id {self.global_id} configured, the lock is bound to "
                              f"{int(stored)}, the chain's is {chain}")
        self._checked = True

    async def committee(self) -> tuple[int, list[bytes], int]:
        await self.check_lock()
        threshold, keys = await self.transport.run_get_method(self.lock, "get_committee", [])
        threshold, members = L.parse_committee(int(threshold), keys)
        (index,) = await self.transport.run_get_method(self.lock, "get_committee_index", [])
        return int(index), members, threshold

    def verify(self, to: bytes, amount: int, release_id: bytes, signer: bytes, signature: bytes,
               token: str | None = None) -> None:
        from nacl.exceptions import BadSignatureError
        from nacl.signing import VerifyKey

        if len(signer) != 32 or len(signature) != 64:
            raise VerificationError("a TON release signature is 64 bytes by a 32-byte Ed25519 key")
        try:
            VerifyKey(signer).verify(self._payload(to, amount, release_id, token).hash, signature)
        except BadSignatureError:
            raise VerificationError("release signature does not match its signer") from None

    async def released(self, release_id: bytes) -> bool:
        (used,) = await self.transport.run_get_method(self.lock, "is_released", [int.from_bytes(release_id, "big")])
        return int(used) != 0

    async def release(self, to: bytes, amount: int, release_id: bytes, signatures: list[tuple[bytes, bytes]],
                      token: str | None = None) -> bytes:
        """Send the release; the external message's hash once the lock has paid it."""
        if await self.released(release_id):
            raise TransactionFailed("ReleaseUsed: the lock paid this release id already", retryable=False)
        _, members, _ = await self.committee()
        sigs = {k: s for k, s in signatures if k in members}
        payload = self._payload(to, amount, release_id, token)
        message = L.release_message(self.lock, L.release_body(payload, sigs))
        try:
            await self.transport.send_message(message.to_boc())
        except ChainError:
            if await self.released(release_id):  # another worker was first
                raise TransactionFailed("ReleaseUsed: the lock paid this release id already", retryable=False) from None
            raise
        deadline = time.monotonic() + self.timeout
        while not await self.released(release_id):
            if time.monotonic() > deadline:
                raise ChainError(f"chain {self.chain}: release 0x{release_id.hex()[:16]} not seen on the lock "
                                 f"within {self.timeout:.0f}s")
            await asyncio.sleep(0.5)
        return message.hash

    async def aclose(self) -> None:
        await self.transport.aclose()
