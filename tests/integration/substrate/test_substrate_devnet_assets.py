"""The devnet's Asset Hub chains hold the stablecoins (issue 15): the substrate plug-in starts
its two chopsticks chains with real ``pallet_assets`` USDT 1984 and USDC 1337 (polkadot) and
USDT 1984 (kusama), 6 decimals, held by the dev accounts; ``devnet.json`` lists them per chain;
the devnet config's ``[[tokens]]`` entries come from that list. A dev account pays a payment in
USDT with ``relayers.substrate.wallet.pay_asset`` (the chaos harness's entry point) and
``asset_balance`` reads balances."""

from __future__ import annotations

import asyncio
import hashlib

from substrateinterface import Keypair, KeypairType

from bridge.config import SubstrateCommittee
from devnet.devchains import DevCommittee
from devnet.substrate.devchain import ASSET_BALANCE, ASSET_MIN_BALANCE, start_devchains
from relayers.substrate.multisig import committee_address, payment_address
from relayers.substrate.wallet import DEV_SEEDS, asset_balance, keypair, pay_asset


async def test_the_devnet_chains_hold_the_stablecoins_and_a_dev_account_pays_in_usdt(tmp_path):
    keys = [Keypair.create_from_seed(hashlib.sha256(f"devnet-assets/{i}".encode()).hexdigest(),
                                     crypto_type=KeypairType.ED25519) for i in range(3)]
    committee = DevCommittee(threshold=2, evm_addresses=(), ed25519_public=tuple(k.public_key.hex() for k in keys),
                             keystores=())
    chains = await start_devchains(tmp_path, committee)
    try:
        by_name = {c.name: c for c in chains}
        assert by_name["polkadot"].info["tokens"] == {
            "USDT": {"asset_id": 1984, "decimals": 6, "min_balance": ASSET_MIN_BALANCE},
            "USDC": {"asset_id": 1337, "decimals": 6, "min_balance": ASSET_MIN_BALANCE}}
        assert set(by_name["kusama"].info["tokens"]) == {"USDT"}
        assert by_name["polkadot"].min_amount["USDT@polkadot"] == 100_000
        entries = [e for c in chains for e in c.tokens]  # the devnet's [[tokens]]
        assert sorted((e["symbol"], e["chain"], e["asset_id"]) for e in entries) == [
            ("USDC", "polkadot", 1337), ("USDT", "kusama", 1984), ("USDT", "polkadot", 1984)]
        assert all(e["peg"] == "1.00" and e["decimals"] == 6 and e["min_refund"] >= ASSET_MIN_BALANCE
                   for e in entries)

        url = by_name["polkadot"].info["rpc"]
        members = SubstrateCommittee(members=["0x" + k.public_key.hex() for k in keys], threshold=2)
        account = by_name["polkadot"].info["committee_account"]
        assert account == committee_address(members, 0)
        for seed in DEV_SEEDS:
            for asset_id in (1984, 1337):
                assert await asyncio.to_thread(asset_balance, url, asset_id, keypair(seed).ss58_address) == \
                    ASSET_BALANCE
        assert await asyncio.to_thread(asset_balance, url, 1984, account) == ASSET_MIN_BALANCE
        assert await asyncio.to_thread(asset_balance, by_name["kusama"].info["rpc"], 1337,
                                       keypair("//Alice").ss58_address) == 0  # no USDC on kusama

        # a plain USDT payment to a payment account, waited for: the devnet's clock keeper builds blocks
        to = payment_address(members, bytes(range(32)), 0)
        receipt = await asyncio.to_thread(pay_asset, url, "//Bob", 1984, to, 2_500_000)
        assert receipt.success, receipt.error
        assert ("Assets", "Transferred") in {(e["module_id"], e["event_id"]) for e in receipt.events}
        assert await asyncio.to_thread(asset_balance, url, 1984, to) == 2_500_000
        assert await asyncio.to_thread(asset_balance, url, 1984, keypair("//Bob").ss58_address) == \
            ASSET_BALANCE - 2_500_000
    finally:
        await asyncio.gather(*(c.stop() for c in chains))
