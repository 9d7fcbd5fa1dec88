"""The checkout page in a real headless Chromium against the running devnet: open the page,
pay on the chain, and watch the page turn to credited without reloading."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Devnet
from tests.e2e.test_devnet import balance, open_payment, pay
from tests.integration.api.test_api import start  # noqa: F401 - a gateway without a devnet (page checks)

SCRIPT = Path(__file__).with_name("checkout_browser.mjs")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module", autouse=True)
def browser_tools():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: scripts/test.sh installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} missing: run through `make test` (scripts/test.sh installs it)")
    if not (ROOT / "node_modules" / "playwright-core").is_dir() or shutil.which("node") is None:
        pytest.fail("node_modules/playwright-core missing: run `make setup`")


async def test_checkout_page_turns_to_credited(devnet: Devnet, tmp_path):
    before = await balance(devnet, 1)
    p = await open_payment(devnet, 1)
    proc = await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), f"{devnet.api}/pay/{p['id']}", str(tmp_path / "checkout.png"),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []
    try:
        ready = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        lines.append(ready)
        assert ready.startswith("READY new") and "qr=true" in ready and f"amount={p['amount']}" in ready, ready
        await pay(devnet, p, 1)  # the payer's wallet, on the chain
        out = (await asyncio.wait_for(proc.stdout.read(), 170)).decode()
        lines += out.splitlines()
        assert await asyncio.wait_for(proc.wait(), 10) == 0, "\n".join(lines)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    states = [ln.split()[1] for ln in lines if ln.startswith("STATE ")]
    assert states[0] == "new" and states[-1] == "credited", lines
    assert any(ln.startswith("SETTLEMENT Credited 500 credits in transaction 0x") for ln in lines), lines
    assert (tmp_path / "checkout.png").stat().st_size > 0
    if os.environ.get("CREDITBRIDGE_SCREENSHOT"):
        shutil.copy(tmp_path / "checkout.png", os.environ["CREDITBRIDGE_SCREENSHOT"])
    assert await balance(devnet, 1) - before == 500


async def test_checkout_pays_with_an_injected_browser_wallet(devnet: Devnet, tmp_path):
    """A wallet announced by EIP-6963 (an EIP-1193 provider backed by an anvil dev account) pays
    from the page: the click sends the payment's ``instructions.transfer`` -- a plain transfer
    with empty calldata to the payment's deposit address, mined on anvil with the right recipient
    and value -- the devnet's relay collects it into the lock, and the page turns to credited."""
    before = await balance(devnet, 1)
    p = await open_payment(devnet, 1)
    rpc = devnet.info["chains"]["ethereum"]["rpc"]
    payer = devnet.info["accounts"]["ethereum"][2]["address"]
    args = ["node", str(SCRIPT), f"{devnet.api}/pay/{p['id']}", str(tmp_path / "wallet.png"), "--wallet", rpc, payer]
    proc = await asyncio.create_subprocess_exec(*args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out = (await asyncio.wait_for(proc.stdout.read(), 200)).decode()
        rc = await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = out.splitlines()
    assert rc == 0, out
    assert lines[0].startswith("READY new") and "qr=true" in lines[0], out
    tx_hash = next(ln.split()[1] for ln in lines if ln.startswith("TX "))
    rpcs = next(ln.split()[1] for ln in lines if ln.startswith("RPC ")).split(",")
    assert rpcs[0] == "eth_requestAccounts" and "eth_chainId" in rpcs and rpcs[-1] == "eth_sendTransaction", rpcs
    assert "wallet_switchEthereumChain" not in rpcs  # the devnet's chain id is the payment's
    tx = await devnet.rpc("ethereum", "eth_getTransactionByHash", tx_hash)
    receipt = await devnet.rpc("ethereum", "eth_getTransactionReceipt", tx_hash)
    assert receipt is not None and int(receipt["status"], 16) == 1, receipt
    ins = p["instructions"]
    assert tx["from"].lower() == payer.lower()
    # issue 14: the plain transfer to the payment's deposit address, not the lock call
    assert tx["to"].lower() == ins["transfer"]["to"].lower() and int(tx["value"], 16) == int(ins["transfer"]["amount"])
    assert tx["input"] in ("0x", "")
    states = [ln.split()[1] for ln in lines if ln.startswith("STATE ")]
    assert states[-1] == "credited", out
    assert await balance(devnet, 1) - before == 500


def _substrate_chain() -> dict:
    return {"family": "substrate", "name": "polkadot", "rpc": ["ws://127.0.0.1:1"], "token": "DOT", "ss58_prefix": 0,
            "committee": {"members": ["0x" + f"{i:02x}" * 32 for i in (1, 2, 3)], "threshold": 2}}


async def _inspect(url: str, shot: Path) -> dict:
    import json

    proc = await asyncio.create_subprocess_exec("node", str(SCRIPT), url, str(shot), "--inspect", cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = (await asyncio.wait_for(proc.communicate(), 90))[0].decode()
    assert proc.returncode == 0, out
    return json.loads(next(ln for ln in out.splitlines() if ln.startswith("INSPECT "))[len("INSPECT "):])


async def test_checkout_pages_on_a_phone_no_csp_errors_nothing_past_the_card(start, tmp_path):  # noqa: F811
    """No devnet: a gateway with Ethereum, Asset Hub and TON payments; each page in Chromium at
    360 px: no page error (CSP violations included: TON Connect loads under its page's policy),
    the wallet button where there is a wallet standard, no line running past the card's edge."""
    from bridge.payments.instructions import Instructions
    from relayers.substrate.instructions import substrate_instructions
    from relayers.ton.instructions import ton_instructions

    gw = await start(pricing={"fixed_usd": {"ETH": "3000", "TON": "5", "DOT": "7"},
                              "min_amount": {"ETH": 1000, "TON": 1000, "DOT": 1000}},
                     chains=[{"family": "ton", "name": "ton", "toncenter": ["http://127.0.0.1:1"],
                              "contracts": {"lock": "0:" + "33" * 32}}, _substrate_chain()],
                     instructions=Instructions({"ton": ton_instructions, "substrate": substrate_instructions}))
    facts = {}
    for token in ("ETH", "DOT", "TON"):
        p = await gw.payment((await gw.quote(token=token, credits="500"))["id"])
        facts[token] = await _inspect(f"{gw.url}/pay/{p['id']}", tmp_path / f"{token}.png")
    assert {t: f["wide"] for t, f in facts.items()} == {"ETH": [], "DOT": [], "TON": []}
    assert facts["ETH"]["wallet"] and facts["ETH"]["family"] == "evm"
    assert not facts["DOT"]["wallet"] and facts["DOT"]["family"] == "substrate"
    assert facts["TON"]["tonconnect"] and facts["TON"]["wallet"] and facts["TON"]["tonButton"], facts["TON"]
