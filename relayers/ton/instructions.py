"""Payment instructions for TON: what the API shows a payer.

A payment with a code (issue 14: ``CB`` + 12 characters, reference = sha256(code)) is paid by
the plain wallet transfer every TON wallet and most exchanges can make: send ``amount``
nanotons to the lock with the code as the text comment. The lock hashes the comment on chain,
so the deposit carries the payment's reference; a wrong or missing comment is a deposit naming
no payment, refunded to its sender after the signers' delay. The binary deposit body (op
``CBD1`` + reference) still works for every payment.

    {"chain", "contract" (user-friendly, bounceable), "amount" (nanotons, string),
     "body" (base64 BOC of the binary deposit body),
     "link": "ton://transfer/<contract>?amount=<n>&bin=<base64url BOC of body>",
     "transfer": {"to": <contract>, "amount": "<n>", "comment": <code> | None,
                  "payload": base64 BOC of what to attach: the comment cell (op 0 + code) with
                             a code, else the binary deposit body (TON Connect's
                             ``messages[].payload``; the checkout page sends it)},
     "uri": "ton://transfer/<contract>?amount=<n>&text=<code>" with a code, else ``link``}

Both deep links are understood by TON wallets (Tonkeeper, MyTonWallet, Tonhub); ``text=`` is the
one a plain QR scanner and exchanges (a "memo"/"comment" field) reproduce. The contract address
is the bounceable form, so a transfer the lock refuses (below its minimum) comes back.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

from bridge.errors import InputError
from bridge.payments.codes import is_code, reference_for_code
from relayers.ton import lock as lockc
from relayers.ton.watcher import parse_address


def ton_instructions(chain, reference: bytes, amount: int, code: str | None = None) -> dict:
    if amount <= 0:
        raise InputError("amount must be positive")
    if code is not None:
        if not is_code(code):
            raise InputError("a payment code is CB + 12 Crockford base32 characters")
        if reference_for_code(code) != bytes(reference):
            raise InputError("the payment code does not match the payment's reference")
    contract = lockc.bounceable(parse_address(chain.contracts["lock"]))
    boc = lockc.deposit_body(reference).to_boc()
    link = f"ton://transfer/{contract}?amount={amount}&bin={base64.urlsafe_b64encode(boc).decode().rstrip('=')}"
    if code is None:
        payload, uri = boc, link
    else:
        payload = lockc.comment_body(code).to_boc()
        uri = f"ton://transfer/{contract}?amount={amount}&text={quote(code, safe='')}"
    return {
        "chain": chain.name,
        "contract": contract,
        "amount": str(amount),
        "body": base64.b64encode(boc).decode(),
        "link": link,
        "transfer": {"to": contract, "amount": str(amount), "comment": code,
                     "payload": base64.b64encode(payload).decode()},
        "uri": uri,
    }
