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
