"""The devnet's TON USDT (issue 15) on the local TON chain: ``devnet.ton.devchain.deploy_dev_usdt``
deploys the minter from a funded wallet and mints to the dev wallets, ``relayers.ton.deploy.
deploy_ton(jetton_masters=...)`` through ``creditbridge deploy ton --jetton-master`` deploys a lock bound to that
master and sets up its jetton wallet (TEP-89), and ``relayers.ton.jetton.pay_jettons`` /
``jetton_balance`` (what the chaos harness calls) pay it with a code and read balances."""

from __future__ import annotations

import os

from pytoniq_core import Address

from bridge.deploy_cli import init_committee
from bridge.payments.codes import new_code, reference_for_code
from devnet.ton.devchain import deploy_dev_usdt
from relayers.ton import jetton as J
from relayers.ton import lock as L
from relayers.ton.watcher import TonWatcher
from bridge.config import PayableToken
from tests.integration.ton.conftest import TON, TonEnv


async def test_devnet_usdt_deploys_mints_sets_up_the_lock_and_pays(ton: TonEnv, tmp_path, monkeypatch, capsys):
    deployer, words = await ton.new_wallet(100 * TON)
    holders = [ton.wallets[1].address, ton.wallets[2].address]
    cfg = ton.server.global_config()
    master = await deploy_dev_usdt(cfg, " ".join(words), holders, amount=7_000_000)
    for h in holders:
        assert await J.jetton_balance(ton.lb, master, h) == 7_000_000
    manifest = tmp_path / "manifest.json"
    seeds = [os.urandom(32) for _ in range(3)]
    init_committee(manifest, network="devnet", threshold=2, members=[
        {"name": f"s{i}", "address": "0x" + os.urandom(20).hex(), "ed25519": "0x" + L.ed25519_public(s).hex()}
        for i, s in enumerate(seeds)])
    # what an operator runs: `creditbridge deploy ton ... --jetton-master <USDT master>`
    import asyncio
    import json

    from bridge.cli import main

    (tmp_path / "global.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("CREDITBRIDGE_TON_MNEMONIC", " ".join(words))
    argv = ["deploy", "ton", "--manifest", str(manifest), "--network", "devnet", "--liteserver-config",
            str(tmp_path / "global.json"), "--min-amount", str(10**7), "--trust-level", "2"]
    assert await asyncio.to_thread(main, argv + ["--jetton-master", "not-an-address"]) == 1
    assert "--jetton-master 'not-an-address'" in capsys.readouterr().err
    assert await asyncio.to_thread(main, argv + ["--jetton-master", master]) == 0
    dep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lock = Address(dep["bounceable"])
    wallet, held = await ton.lb.run_get_method(lock, "get_jetton", [int.from_bytes(Address(master).hash_part, "big")])
    assert wallet == int.from_bytes(J.wallet_address(lock, Address(master)).hash_part, "big") and held == 0

    tokens = {"USDT": PayableToken(symbol="USDT", chain="ton", family="ton", decimals=6, price_symbol="USDT",
                                   native=False, jetton_master=master)}
    watcher = TonWatcher(ton.config(contracts={"lock": dep["bounceable"]}), tokens=tokens)
    try:
        start = await watcher.finalized_height() + 1
        code = new_code()
        await J.pay_jettons(ton.wallets[1], master, dep["bounceable"], 2_500_000, code=code)
        got = []
        for _ in range(100):
            final = await watcher.finalized_height()
            got = await watcher.fetch_deposits(start, final) if final >= start else []
            if got:
                break
            await ton.wait_block()
        (o,) = got
        assert (o.token, o.amount, o.reference, o.payer) == (
            "USDT", 2_500_000, reference_for_code(code), ton.wallets[1].address.hash_part)
        assert await J.jetton_balance(ton.lb, master, ton.wallets[1].address) == 4_500_000
        assert await J.jetton_balance(ton.lb, master, lock) == 2_500_000
    finally:
        await watcher.aclose()
