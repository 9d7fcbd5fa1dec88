"""TON payment instructions (what the API shows a payer) and the watcher's tx id format."""

from __future__ import annotations

import base64
import os
from urllib.parse import parse_qs, urlparse

import pytest
from pytoniq_core import Address, Cell

from bridge.config import TonChainConfig
from bridge.errors import InputError
from bridge.node import payment_instructions
from relayers.ton import lock as L
from relayers.ton.instructions import ton_instructions
from relayers.ton.watcher import split_tx_id, tx_id

LOCK_RAW = "0:" + "ab" * 32


def chain() -> TonChainConfig:
    return TonChainConfig(family="ton", name="ton", toncenter=["http://127.0.0.1:1/api/v2"], contracts={"lock": LOCK_RAW})


def test_instructions_carry_the_deposit_body_and_a_ton_link():
    ref = os.urandom(32)
    ins = ton_instructions(chain(), ref, 1_500_000_000)
    assert ins["chain"] == "ton" and ins["amount"] == "1500000000"
    addr = Address(ins["contract"])
    assert addr.to_str(False) == LOCK_RAW and addr.is_bounceable  # bounceable: a rejected payment comes back
    body = Cell.one_from_boc(base64.b64decode(ins["body"])).begin_parse()
    assert (body.load_uint(32), body.load_uint(64), body.load_bytes(32)) == (L.OP_DEPOSIT, 0, ref)
    link = urlparse(ins["link"])
    assert (link.scheme, link.netloc, link.path) == ("ton", "transfer", "/" + ins["contract"])
    q = parse_qs(link.query)
    assert q["amount"] == ["1500000000"]
    b64 = q["bin"][0]
    assert base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)) == base64.b64decode(ins["body"])
    with pytest.raises(InputError):
        ton_instructions(chain(), ref, 0)


def test_the_api_wires_ton_instructions():
    ins = payment_instructions()(chain(), b"\x01" * 32, 10)
    assert ins["contract"] == L.bounceable(Address(LOCK_RAW))


def test_tx_id_is_hash_then_lt():
    h = os.urandom(32)
    assert split_tx_id(tx_id(h, 123456789)) == (h, 123456789)
    with pytest.raises(InputError):
        split_tx_id(h)
