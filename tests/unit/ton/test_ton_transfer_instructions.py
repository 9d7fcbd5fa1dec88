"""TON instructions for a plain wallet transfer (issue 14): the payment code as the text
comment, a TON Connect payload, and a ``ton://transfer`` link with ``text=``; payments without a
code keep today's binary-body link."""

from __future__ import annotations

import base64
import os
from urllib.parse import parse_qs, urlparse

import pytest
from pytoniq_core import Address, Cell

from bridge.errors import InputError
from bridge.payments.codes import new_code, reference_for_code
from relayers.ton import lock as L
from relayers.ton.instructions import ton_instructions
from tests.unit.ton.test_ton_instructions import LOCK_RAW, chain


def test_a_payment_with_a_code_is_paid_by_a_text_comment_transfer():
    code = new_code()
    ref = reference_for_code(code)
    ins = ton_instructions(chain(), ref, 2_500_000_000, code=code)
    contract = L.bounceable(Address(LOCK_RAW))
    payload_b64 = ins["transfer"].pop("payload")
    assert ins["transfer"] == {"to": contract, "amount": "2500000000", "comment": code}
    assert Address(ins["transfer"]["to"]).is_bounceable  # a refused transfer comes back
    payload = Cell.one_from_boc(base64.b64decode(payload_b64))
    s = payload.begin_parse()
    assert s.load_uint(32) == 0 and s.load_bytes(len(code)) == code.encode() and s.remaining_bits == 0
    assert L.comment_reference(payload) == ref  # what the lock will log for it
    uri = urlparse(ins["uri"])
    assert (uri.scheme, uri.netloc, uri.path) == ("ton", "transfer", "/" + contract)
    assert parse_qs(uri.query) == {"amount": ["2500000000"], "text": [code]}
    # today's keys stay: the binary deposit body and its link pay the same payment
    body = Cell.one_from_boc(base64.b64decode(ins["body"])).begin_parse()
    assert (body.load_uint(32), body.load_uint(64), body.load_bytes(32)) == (L.OP_DEPOSIT, 0, ref)
    assert ins["contract"] == contract and ins["amount"] == "2500000000" and "bin=" in ins["link"]


def test_a_payment_without_a_code_keeps_the_binary_link():
    ref = os.urandom(32)
    ins = ton_instructions(chain(), ref, 10**9)
    assert ins["transfer"] == {"to": ins["contract"], "amount": "1000000000", "comment": None,
                               "payload": ins["body"]}
    assert ins["uri"] == ins["link"] and "bin=" in ins["uri"]


def test_a_code_must_be_the_payments():
    code = new_code()
    with pytest.raises(InputError, match="does not match"):
        ton_instructions(chain(), os.urandom(32), 10**9, code=code)
    with pytest.raises(InputError, match="Crockford"):
        ton_instructions(chain(), reference_for_code("cb" + code[2:]), 10**9, code="cb" + code[2:])
