"""The dApp verification examples (docs/examples/verify_quote.py and verify_quote.mjs) run on
real quotes from a real API server: batched quotes (a batch of several and of one) and a quote
stored in the older one-signature format all verify; tampered quotes, foreign keys and
forged proofs do not."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bridge.api.keys import QUOTE_WRITER, QUOTES
from bridge.pricing.quotes import canonical_quote_bytes
from bridge.storage import quotes as quotes_repo
from tests.integration.api.test_api import Gateway
from tests.integration.api.test_api import start  # noqa: F401 - the gateway fixture

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "docs" / "examples"
NODE = shutil.which("node")


def verifiers() -> list[list[str]]:
    v = [[sys.executable, str(EXAMPLES / "verify_quote.py")]]
    if NODE is None:  # pragma: no cover - node is installed with the project's tools
        pytest.fail("node is needed for the JavaScript example (scripts/setup.sh installs it)")
    return [*v, [NODE, str(EXAMPLES / "verify_quote.mjs")]]


async def run(cmd: list[str], quote: dict, public_key: str, tmp_path: Path) -> tuple[int, str]:
    f = tmp_path / f"quote-{abs(hash(json.dumps(quote, sort_keys=True)))}.json"
    f.write_text(json.dumps(quote))
    p = await asyncio.create_subprocess_exec(*cmd, str(f), "--public-key", public_key,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await p.communicate()
    assert not err, err.decode()
    return p.returncode, out.decode().strip()


async def served(gw: Gateway, quote_id: str) -> dict:
    status, q, _ = await gw.get(f"/v1/quotes/{quote_id}")
    assert status == 200, q
    return q


async def test_the_examples_verify_real_quotes_and_refuse_forgeries(start, tmp_path):  # noqa: F811
    gw: Gateway = await start()
    status, key, _ = await gw.get("/v1/gateway")
    assert status == 200
    public_key = key["public_key"]

    # quotes as dApps get them: POST /v1/quotes, many at once (they share batches as they come)
    posted = await asyncio.gather(*(gw.quote(credits=str(100 + i)) for i in range(12)))
    # a batch of five, deterministically: the app's quote service and writer, served by GET
    unsigned = [await gw.app[QUOTES].make_quote("ETH", credits=700 + i, now=gw.clock(), sign=False)
                for i in range(5)]
    batch = await asyncio.gather(*(gw.app[QUOTE_WRITER].add(q) for q in unsigned))
    assert len({q.merkle_root for q in batch}) == 1 and all(q.merkle_path for q in batch)
    # a quote stored before batched signing: one signature over its own canonical bytes
    old = await gw.app[QUOTES].make_quote("ETH", credits=900, now=gw.clock(), sign=False)
    old = replace(old, signature=gw.signer.sign_bytes(canonical_quote_bytes(old)))
    async with gw.db.begin() as s:
        await quotes_repo.add_quote(s, old)

    quotes = [*posted, *[await served(gw, q.id) for q in batch], await served(gw, old.id)]
    assert "proof" not in quotes[-1] and all("proof" in q for q in quotes[:-1])
    assert any(q["proof"]["path"] for q in quotes[:-1]) and any(q["proof"]["path"] == [] for q in posted[:1])

    other_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"  # RFC 8032 test 1
    in_batch = quotes[len(posted) + 2]
    forged = [
        {**in_batch, "amount": str(int(in_batch["amount"]) - 1)},
        {**in_batch, "sources": ["evil"]},
        {**in_batch, "proof": {**in_batch["proof"], "path": in_batch["proof"]["path"][:-1]}},
        {**in_batch, "proof": quotes[len(posted) + 3]["proof"]},  # a neighbour's proof
        {k: v for k, v in in_batch.items() if k != "proof"},     # stripped to the old format
        {**quotes[-1], "credits": "901"},
        {**quotes[-1], "proof": {"root": "00" * 32, "path": []}},
    ]
    for cmd in verifiers():
        for q in quotes:
            assert await run(cmd, q, public_key, tmp_path) == (0, "valid"), (cmd[-1], q)
        for q in forged:
            rc, out = await run(cmd, q, public_key, tmp_path)
            assert rc == 1 and out.startswith("invalid: "), (cmd[-1], q, out)
        rc, out = await run(cmd, quotes[0], other_key, tmp_path)
        assert rc == 1 and "signed by key" in out
