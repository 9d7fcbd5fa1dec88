"""TON address forms of a committee member's Ed25519 key: the raw public key, and the address of
the standard wallet v4r2 it would control (subwallet id 698983191 + workchain), raw and
user-friendly, bounceable and not, for mainnet and testnet (the testnet flag)."""

from __future__ import annotations

from pytoniq.contract.wallets.wallet import WALLET_V4_R2_CODE, WalletV4
from pytoniq_core import Address
from pytoniq_core.tlb.account import StateInit

from bridge.errors import InputError


def wallet_v4r2_address(public_key: bytes, workchain: int = 0) -> Address:
    if len(public_key) != 32:
        raise InputError("an Ed25519 public key is 32 bytes")
    data = WalletV4.create_data_cell(public_key, None, workchain)
    state_init = StateInit(code=WALLET_V4_R2_CODE, data=data)
    return Address((workchain, state_init.serialize().hash))


def ton_forms(public_key: bytes, workchain: int = 0) -> dict:
    a = wallet_v4r2_address(public_key, workchain)
    return {
        "public_key": public_key.hex(),
        "wallet_v4r2": {
            "raw": a.to_str(is_user_friendly=False),
            "bounceable": a.to_str(is_user_friendly=True, is_bounceable=True, is_url_safe=True),
            "non_bounceable": a.to_str(is_user_friendly=True, is_bounceable=False, is_url_safe=True),
            "testnet_bounceable": a.to_str(is_user_friendly=True, is_bounceable=True, is_url_safe=True,
                                           is_test_only=True),
            "testnet_non_bounceable": a.to_str(is_user_friendly=True, is_bounceable=False, is_url_safe=True,
                                               is_test_only=True),
        },
    }
