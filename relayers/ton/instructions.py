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

Jetton payments (issue 15, ``token`` = the payment's ``PayableToken`` with ``jetton_master``):
the payer's wallet sends a TEP-74 ``transfer`` to the payer's own jetton wallet naming the lock
as ``destination``, ``forward_ton_amount`` > 0 (the lock only hears of a transfer through the
``transfer_notification`` its wallet sends, and only with a forward amount) and the code as a
text comment in ``forward_payload``:

    {"chain", "contract" (the lock), "amount" (jetton base units), "token", "jetton_master",
     "transfer": {"to": <lock>, "amount", "comment": <code> | None, "jetton_master",
                  "forward_ton_amount", "ton_amount" (TON to attach to the wallet message),
                  "forward_payload": base64 BOC (comment cell, or the binary deposit body)},
     "uri": "ton://transfer/<lock>?jetton=<master>&amount=<n>&text=<code>"}

The ``jetton=`` parameter (amount in the jetton's base units) is the form Tonkeeper's app opens
(seen in its own deep-link tests; not in docs.ton.org's deep-link page): wallets that do not
know it would read ``amount`` as nanotons, so the checkout page should prefer TON Connect with
``transfer.payload`` built by ``relayers.ton.jetton.transfer_body``.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

from bridge.errors import InputError
from bridge.payments.codes import is_code, reference_for_code
from relayers.ton import lock as lockc
from relayers.ton.watcher import parse_address


def ton_instructions(chain, reference: bytes, amount: int, code: str | None = None, token=None) -> dict:
    if token is not None and not getattr(token, "native", True):
        return jetton_instructions(chain, reference, amount, code, token)
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


def jetton_instructions(chain, reference: bytes, amount: int, code: str | None, token) -> dict:
    """Instructions to pay ``amount`` base units of the jetton ``token`` (a ``PayableToken``)."""
    from relayers.ton import jetton as J

    if amount <= 0:
        raise InputError("amount must be positive")
    if token.jetton_master is None:
        raise InputError(f"token {token.symbol} has no jetton_master")
    if code is not None:
        if not is_code(code):
            raise InputError("a payment code is CB + 12 Crockford base32 characters")
        if reference_for_code(code) != bytes(reference):
            raise InputError("the payment code does not match the payment's reference")
    contract = lockc.bounceable(parse_address(chain.contracts["lock"]))
    master = lockc.bounceable(parse_address(token.jetton_master))
    payload = lockc.comment_body(code) if code is not None else lockc.deposit_body(reference)
    uri = f"ton://transfer/{contract}?jetton={master}&amount={amount}"
    if code is not None:
        uri += f"&text={quote(code, safe='')}"
    return {
        "chain": chain.name,
        "contract": contract,
        "amount": str(amount),
        "token": token.symbol,
        "jetton_master": master,
        "transfer": {"to": contract, "amount": str(amount), "comment": code, "jetton_master": master,
                     "forward_ton_amount": str(J.PAYMENT_FORWARD_TON), "ton_amount": str(J.TRANSFER_VALUE),
                     "forward_payload": base64.b64encode(payload.to_boc()).decode()},
        "uri": uri,
    }
