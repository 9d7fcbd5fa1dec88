"""Settlement gas per credited payment on a real anvil, against a same-run baseline.

    .venv/bin/python bench/gas.py            (or: make bench)

Deploys CreditLedger with a t=3 of n=4 committee and settles batches of 1..64 credits signed
with bridge.committee.digest. Every measurement starts from the same chain state
(evm_snapshot / evm_revert): the source's bitmap word already exists (a new word costs
22.1k gas once per 256 deposits of a source, ~86 gas a payment amortised).

- fresh:  every credit pays a beneficiary with no balance yet (zero -> non-zero slot)
- repeat: beneficiaries already hold credits; the batch cycles through 8 of them
- same:   the whole batch pays one beneficiary that already holds credits

Figures are receipt gasUsed (21k base, calldata and signatures included) divided by the
number of credits; "ratio" is per-payment gas over the single-credit fresh baseline.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_account import Account  # noqa: E402
from eth_utils import keccak, to_checksum_address  # noqa: E402
from web3 import AsyncHTTPProvider, AsyncWeb3  # noqa: E402

from bridge.committee import digest as dg  # noqa: E402
from bridge.hashing import source_id  # noqa: E402
from bridge.types import Credit, CreditMessage, SettlementDomain  # noqa: E402
from devnet.evm.anvil import DEV_PRIVATE_KEYS, AnvilNode  # noqa: E402
from relayers.evm.contracts import LEDGER, LOCK, deploy, load_artifact, send_transaction  # noqa: E402

CHAIN_ID = 31337
N, T = 4, 3
SIZES = (1, 2, 4, 8, 16, 32, 64)
DEPLOYER, PROVIDER, USER, SUBMITTER = DEV_PRIVATE_KEYS[:4]
SOURCE = source_id("evm", 1, bytes.fromhex("11" * 20))


def addr(i: int, tag: bytes) -> bytes:
    return keccak(tag + i.to_bytes(8, "big"))[:20]


class Bench:
    def __init__(self, node: AnvilNode, w3: AsyncWeb3) -> None:
        self.node, self.w3 = node, w3
        self.keys = sorted((keccak(b"bench-signer-%d" % i) for i in range(N)), key=dg.address_of)

    async def setup(self) -> None:
        signers = [to_checksum_address(dg.address_of(k)) for k in self.keys]
        provider = Account.from_key(PROVIDER).address
        self.ledger = self.w3.eth.contract(
            address=await deploy(self.w3, LEDGER, [signers, T, provider], DEPLOYER), abi=load_artifact(LEDGER)[0]
        )
        self.lock = self.w3.eth.contract(
            address=await deploy(self.w3, LOCK, [signers, T, 10**15], DEPLOYER), abi=load_artifact(LOCK)[0]
        )
        self.domain = SettlementDomain(CHAIN_ID, bytes.fromhex(self.ledger.address[2:]))
        # pre-state: the bitmap word of SOURCE exists and 8 "repeat" beneficiaries hold credits
        await self.settle([self.credit(0, addr(0, b"seed"))] + [self.credit(1 + i, addr(i, b"old")) for i in range(8)])
        self.next_seq = 9

    def credit(self, seq: int, beneficiary: bytes) -> Credit:
        return Credit(SOURCE, seq, beneficiary, 1000 + seq, keccak(b"q%d" % seq))

    async def settle(self, credits: list[Credit], signers: int = T) -> int:
        d = dg.credit_digest(self.domain, CreditMessage(0, tuple(credits)))
        sigs = dg.pack_signatures((dg.address_of(k), dg.sign_digest(k, d)) for k in self.keys[:signers])
        args = [(c.source, c.sequence, to_checksum_address(c.beneficiary), c.credits, c.quote_id) for c in credits]
        tx = await self.ledger.functions.settle(args, sigs).build_transaction(
            {"from": Account.from_key(SUBMITTER).address}
        )
        receipt = await send_transaction(self.w3, tx, SUBMITTER)
        return receipt["gasUsed"]

    async def measure(self, k: int, kind: str, signers: int = T) -> int:
        seqs = range(self.next_seq, self.next_seq + k)
        if kind == "fresh":
            credits = [self.credit(s, addr(s, b"new")) for s in seqs]
        elif kind == "repeat":
            credits = [self.credit(s, addr(j % 8, b"old")) for j, s in enumerate(seqs)]
        else:
            credits = [self.credit(s, addr(0, b"old")) for s in seqs]
        snap = await self.node.snapshot()
        try:
            return await self.settle(credits, signers)
        finally:
            await self.node.revert(snap)

    async def lock_gas(self) -> tuple[int, int]:
        snap = await self.node.snapshot()
        try:
            out = []
            for i in range(2):
                tx = await self.lock.functions.lock(keccak(b"ref%d" % i)).build_transaction(
                    {"from": Account.from_key(USER).address, "value": 10**16}
                )
                out.append((await send_transaction(self.w3, tx, USER))["gasUsed"])
            return out[0], out[1]
        finally:
            await self.node.revert(snap)


async def main() -> None:
    async with await AnvilNode.start(chain_id=CHAIN_ID) as node:
        w3 = AsyncWeb3(AsyncHTTPProvider(node.rpc_url))
        try:
            b = Bench(node, w3)
            await b.setup()
            rows = []
            for k in SIZES:
                rows.append((k, await b.measure(k, "fresh"), await b.measure(k, "repeat"), await b.measure(k, "same")))
            all_signers = await b.measure(1, "fresh", signers=N)
            first_lock, lock = await b.lock_gas()
        finally:
            await w3.provider.disconnect()

    base = rows[0][1]
    print(f"CreditLedger.settle, t={T} of n={N}, gas per credited payment (receipt gasUsed / batch size)")
    print(f"{'batch':>5} | {'fresh':>8} {'ratio':>6} | {'repeat':>8} {'ratio':>6} | {'same':>8} {'ratio':>6} | {'tx fresh':>9}")
    print("-" * 72)
    for k, fresh, repeat, same in rows:
        print(
            f"{k:>5} | {fresh // k:>8,} {fresh / k / base:>6.3f} | {repeat // k:>8,} {repeat / k / base:>6.3f} "
            f"| {same // k:>8,} {same / k / base:>6.3f} | {fresh:>9,}"
        )
    print(f"baseline: one fresh credit in its own batch = {base:,} gas")
    print(f"each signature beyond t: {all_signers - base:,} gas ({N} of {N} signatures: {all_signers:,})")
    print(f"CreditLock.lock: {lock:,} gas ({first_lock:,} for the contract's first lock, nonce slot 0 -> 1)")


if __name__ == "__main__":
    asyncio.run(main())
