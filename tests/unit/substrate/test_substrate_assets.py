"""pallet_assets payments (issue 15) in the decoder, the token mapping and the instructions,
on decoded values shaped as scalecodec gives them for the Asset Hub runtime (spec 900: call
``Assets.transfer_keep_alive {id, target, amount}``, event ``Assets.Transferred {asset_id, from,
to, amount}``). The chopsticks tests (tests/integration/substrate/test_substrate_stablecoins.py)
run the same paths against the real runtime."""

from __future__ import annotations

import pytest

from bridge.config import PayableToken, SubstrateChainConfig
from bridge.errors import ConfigError, InputError
from relayers.substrate.decode import ZERO_REFERENCE, confirmed_amount, find_collection, find_payment
from relayers.substrate.instructions import substrate_instructions
from relayers.substrate.multisig import committee_account_id, multisig_account_id
from relayers.substrate.watcher import asset_symbols

COMMITTEE = bytes([0xC0]) * 32
PAYER = bytes([0xAA]) * 32
REF = bytes([0x11]) * 32
USDT, USDC = 1984, 1337


def call(module: str, function: str, **args) -> dict:
    return {"call_module": module, "call_function": function,
            "call_args": [{"name": k, "value": v} for k, v in args.items()]}


def asset_transfer(asset_id: int, to: bytes, amount: int, function: str = "transfer_keep_alive") -> dict:
    return call("Assets", function, id=asset_id, target={"Id": "0x" + to.hex()}, amount=amount)


def remark(data: bytes) -> dict:
    return call("System", "remark_with_event", remark=data)


def signed(c: dict, signer: bytes = PAYER) -> dict:
    return {"address": "0x" + signer.hex(), "call": c}


def ev(module: str, name: str, **attrs) -> dict:
    return {"phase": "ApplyExtrinsic", "extrinsic_idx": 1, "module_id": module, "event_id": name, "attributes": attrs}


OK = ev("System", "ExtrinsicSuccess", dispatch_info={})


def moved(asset_id: int, amount: int, frm: bytes = PAYER, to: bytes = COMMITTEE) -> dict:
    return ev("Assets", "Transferred", asset_id=asset_id, **{"from": "0x" + frm.hex()}, to="0x" + to.hex(),
              amount=amount)


def test_a_call_based_asset_payment_is_in_that_asset_and_confirmed_only_by_its_own_events():
    p = find_payment(signed(call("Utility", "batch_all", calls=[asset_transfer(USDT, COMMITTEE, 5_000_000),
                                                                remark(REF)])), COMMITTEE)
    assert (p.reference, p.transfers, p.asset_id, p.payer) == (REF, (5_000_000,), USDT, PAYER)
    assert confirmed_amount(p, [moved(USDT, 5_000_000), OK], COMMITTEE) == 5_000_000
    # the same amount of another asset, or of the native token, confirms nothing
    assert confirmed_amount(p, [moved(USDC, 5_000_000), OK], COMMITTEE) == 0
    native = ev("Balances", "Transfer", **{"from": "0x" + PAYER.hex()}, to="0x" + COMMITTEE.hex(), amount=5_000_000)
    assert confirmed_amount(p, [native, OK], COMMITTEE) == 0
    # a failed extrinsic moved nothing, whatever its events say
    assert confirmed_amount(p, [moved(USDT, 5_000_000)], COMMITTEE) == 0
    # a native payment is not confirmed by an asset event either
    n = find_payment(signed(call("Balances", "transfer_keep_alive", dest="0x" + COMMITTEE.hex(), value=7)), COMMITTEE)
    assert n.asset_id is None and confirmed_amount(n, [moved(USDT, 7), OK], COMMITTEE) == 0


def test_a_plain_asset_transfer_to_the_committee_is_unattributed_in_that_asset():
    p = find_payment(signed(asset_transfer(USDC, COMMITTEE, 9, "transfer")), COMMITTEE)
    assert (p.reference, p.asset_id, p.kind) == (ZERO_REFERENCE, USDC, "Assets.transfer")
    assert find_payment(signed(asset_transfer(USDC, PAYER, 9)), COMMITTEE) is None  # not to the committee
    assert find_payment(signed(call("Assets", "transfer_approved", id=USDC, owner="0x" + PAYER.hex(),
                                    destination="0x" + COMMITTEE.hex(), amount=9)), COMMITTEE) is None


def test_a_batch_paying_in_two_tokens_is_a_deposit_of_its_first_token_only():
    p = find_payment(signed(call("Utility", "batch", calls=[
        asset_transfer(USDT, COMMITTEE, 3), call("Balances", "transfer_keep_alive", dest="0x" + COMMITTEE.hex(),
                                                 value=4), asset_transfer(USDT, COMMITTEE, 5), remark(REF)])), COMMITTEE)
    assert (p.asset_id, p.transfers) == (USDT, (3, 5))


def test_an_asset_collection_is_recognised_with_its_asset():
    members = sorted(bytes([i]) * 32 for i in (1, 2, 3))
    account = multisig_account_id(members, 2)
    inner = call("Utility", "batch_all", calls=[asset_transfer(USDT, COMMITTEE, 2_000_000, "transfer"),
                                                remark(REF + PAYER)])
    x = signed(call("Multisig", "as_multi", threshold=2, other_signatories=["0x" + m.hex() for m in members[1:]],
                    maybe_timepoint=None, call=inner, max_weight={}), signer=members[0])
    p = find_collection(x, COMMITTEE, lambda r: account if r == REF else b"")
    assert (p.collected_from, p.payer, p.reference, p.asset_id) == (account, PAYER, REF, USDT)
    assert confirmed_amount(p, [moved(USDT, 2_000_000, frm=account), OK], COMMITTEE) == 2_000_000
    assert confirmed_amount(p, [moved(USDC, 2_000_000, frm=account), OK], COMMITTEE) == 0


def token(symbol: str, asset_id: int | None, chain: str = "polkadot") -> PayableToken:
    return PayableToken(symbol=symbol, chain=chain, family="substrate", decimals=6, price_symbol=symbol,
                        native=asset_id is None, asset_id=asset_id)


def test_asset_ids_map_to_the_chains_configured_symbols():
    tokens = {"USDT": token("USDT", USDT), "USDC": token("USDC", USDC), "X": token("X", 5, chain="kusama")}
    assert asset_symbols("polkadot", tokens) == {USDT: "USDT", USDC: "USDC"}
    with pytest.raises(ConfigError):
        asset_symbols("polkadot", {"USDT": token("USDT", USDT), "USDX": token("USDX", USDT)})


CFG = SubstrateChainConfig(family="substrate", name="polkadot", rpc=["ws://127.0.0.1:1"], token="DOT", ss58_prefix=0,
                           committee={"members": ["0x" + (bytes([i]) * 32).hex() for i in (1, 2, 3)],
                                      "threshold": 2})


def test_instructions_of_an_asset_payment_name_the_asset():
    native = substrate_instructions(CFG, REF, 10**10)
    assert "asset_id" not in native and "asset_id" not in native["transfer"]
    usdt = substrate_instructions(CFG, REF, 5_000_000, token=token("USDT", USDT))
    assert usdt["transfer"] == {"to": native["transfer"]["to"], "amount": "5000000", "comment": None, "asset_id": USDT}
    assert usdt["asset_id"] == USDT and usdt["uri"] == native["uri"] and usdt["remark"] == "0x" + REF.hex()
    assert committee_account_id(CFG.committee).hex() not in usdt["transfer"]["to"]  # SS58, the payment account
    with pytest.raises(InputError):
        substrate_instructions(CFG, REF, 1, token=token("USDT", USDT, chain="kusama"))
