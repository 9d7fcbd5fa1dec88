"""TON chain config and refund signing (issue 11): proofs checked by default, trust level 2 on a
real network only when explicitly allowed, refunds bound to the configured network and not
signed below the minimum. No network: TonLockReleaser connects lazily and verify() is local."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from bridge.config import TON_DEFAULT_MIN_REFUND, TON_REAL_NETWORKS, TonChainConfig
from bridge.errors import ConfigError, VerificationError
from relayers.ton import lock as L
from devnet.ton.localchain import LOCAL_GLOBAL_ID
from relayers.ton.release import TonLockReleaser, TonRefundSigner

LOCK = "0:" + "ab" * 32
LITE = {"liteservers": [], "validator": {}}  # never used: nothing here connects


def cfg(**kw) -> TonChainConfig:
    return TonChainConfig(**{"family": "ton", "name": "ton", "liteserver_config": LITE, "contracts": {"lock": LOCK},
                             **kw})


def test_proofs_are_checked_by_default():
    assert cfg().trust_level == 0
    assert cfg(global_id=L.MAINNET_GLOBAL_ID).trust_level == 0


@pytest.mark.parametrize("gid", [L.MAINNET_GLOBAL_ID, L.TESTNET_GLOBAL_ID])
def test_trust_level_2_on_a_real_network_needs_allow_unproven(gid):
    with pytest.raises(ValidationError, match="allow_unproven"):
        cfg(global_id=gid, trust_level=2)
    assert cfg(global_id=gid, trust_level=2, allow_unproven=True).trust_level == 2
    assert cfg(global_id=gid, trust_level=1).trust_level == 1
    # the local chain has no validator signatures to prove anything with: 2 is its normal
    assert cfg(global_id=LOCAL_GLOBAL_ID, trust_level=2).trust_level == 2


def test_constants_agree_with_the_lock():
    assert TON_DEFAULT_MIN_REFUND == L.DEFAULT_MIN_RELEASE == cfg().min_refund
    assert TON_REAL_NETWORKS == L.REAL_GLOBAL_IDS
    with pytest.raises(ValidationError):
        cfg(min_refund=0)
    with pytest.raises(ValidationError):
        cfg(global_id=2**31)


def test_refund_signer_needs_the_network_and_skips_dust():
    seed = os.urandom(32)
    with pytest.raises(ConfigError, match="global_id"):
        TonRefundSigner.from_config(cfg(), seed)
    s = TonRefundSigner.from_config(cfg(global_id=L.TESTNET_GLOBAL_ID, min_refund=2 * L.DEFAULT_MIN_RELEASE), seed)
    payer, rid = os.urandom(32), os.urandom(32)
    assert s.sign(payer, 2 * L.DEFAULT_MIN_RELEASE - 1, rid) is None  # dust: not signed
    assert s.sign(payer, 0, rid) is None
    to, sig = s.sign(payer, 2 * L.DEFAULT_MIN_RELEASE, rid)
    assert to == payer and len(sig) == 64


def test_a_testnet_refund_signature_does_not_verify_for_mainnet():
    """The signed payload carries the global id: what a member signed for testnet (public at
    GET /v1/releases) is not a mainnet signature, even for a lock at the same address."""
    seed = os.urandom(32)
    payer, rid, amount = os.urandom(32), os.urandom(32), 5 * L.DEFAULT_MIN_RELEASE
    testnet = TonRefundSigner(LOCK, seed, global_id=L.TESTNET_GLOBAL_ID)
    _, sig = testnet.sign(payer, amount, rid)
    TonLockReleaser(cfg(global_id=L.TESTNET_GLOBAL_ID)).verify(payer, amount, rid, testnet.signer_id, sig)
    with pytest.raises(VerificationError):
        TonLockReleaser(cfg(global_id=L.MAINNET_GLOBAL_ID)).verify(payer, amount, rid, testnet.signer_id, sig)
    with pytest.raises(ConfigError, match="global_id"):
        TonLockReleaser(cfg())
