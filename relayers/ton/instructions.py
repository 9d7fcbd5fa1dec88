"""Payment instructions for TON: send ``amount`` nanotons to the lock contract with the deposit
body (op, query id, payment reference) as a bounceable message, so that a rejected payment (too
small, malformed) comes back to the payer.

    {"chain", "contract" (user-friendly, bounceable), "amount" (nanotons, string),
     "body" (base64 BOC), "link": "ton://transfer/<contract>?amount=<n>&bin=<base64url BOC>"}

The ``ton://transfer`` deep link with ``bin`` (a base64url BOC body) is understood by TON
wallets (Tonkeeper, MyTonWallet); TON Connect clients take ``body`` as the message payload.
"""

from __future__ import annotations

import base64

from bridge.errors import InputError
from relayers.ton import lock as lockc
from relayers.ton.watcher import parse_address


def ton_instructions(chain, reference: bytes, amount: int) -> dict:
    if amount <= 0:
        raise InputError("amount must be positive")
    contract = lockc.bounceable(parse_address(chain.contracts["lock"]))
    boc = lockc.deposit_body(reference).to_boc()
    return {
        "chain": chain.name,
        "contract": contract,
        "amount": str(amount),
        "body": base64.b64encode(boc).decode(),
        "link": f"ton://transfer/{contract}?amount={amount}&bin={base64.urlsafe_b64encode(boc).decode().rstrip('=')}",
    }
