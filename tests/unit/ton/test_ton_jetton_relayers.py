"""TON jettons (issue 15) at the relayer edge, without a chain: the payment instructions of a
jetton payment, the refund signer's jetton releases (token=SYMBOL) and the watcher's mapping of
jetton masters to the chain's configured tokens."""

from __future__ import annotations

import base64
import os
from urllib.parse import parse_qs, urlparse

import pytest
from nacl.signing import VerifyKey
from pytoniq_core import Address, Cell

from bridge.config import PayableToken
from bridge.errors import ConfigError, InputError
from bridge.payments.codes import new_code, reference_for_code
from relayers.ton import jetton as J
from relayers.ton import lock as L
from relayers.ton.instructions import ton_instructions
from relayers.ton.release import TonRefundSigner
from relayers.ton.watcher import jetton_symbols
from tests.unit.ton.test_ton_instructions import LOCK_RAW, chain

MASTER = Address((0, b"\x5a" * 32))


def usdt(master: Address = MASTER, symbol: str = "USDT") -> PayableToken:
    return PayableToken(symbol=symbol, chain="ton", family="ton", decimals=6, price_symbol="USDT", native=False,
                        jetton_master=L.bounceable(master))


def test_a_jetton_payment_names_the_lock_the_master_and_the_code_as_forward_payload():
    code = new_code()
    ins = ton_instructions(chain(), reference_for_code(code), 12_500_000, code=code, token=usdt())
    lock, master = L.bounceable(Address(LOCK_RAW)), L.bounceable(MASTER)
    payload = Cell.one_from_boc(base64.b64decode(ins["transfer"].pop("forward_payload")))
    assert ins["transfer"] == {"to": lock, "amount": "12500000", "comment": code, "jetton_master": master,
                               "forward_ton_amount": str(J.PAYMENT_FORWARD_TON), "ton_amount": str(J.TRANSFER_VALUE)}
    assert (ins["token"], ins["jetton_master"], ins["contract"], ins["amount"]) == ("USDT", master, lock, "12500000")
    assert L.payload_reference(payload) == reference_for_code(code)  # what the lock will log for it
    uri = urlparse(ins["uri"])
    assert (uri.scheme, uri.netloc, uri.path) == ("ton", "transfer", "/" + lock)
    assert parse_qs(uri.query) == {"jetton": [master], "amount": ["12500000"], "text": [code]}
    # without a code: the binary deposit body as forward payload, no text
    ref = os.urandom(32)
    ins = ton_instructions(chain(), ref, 1, token=usdt())
    assert L.payload_reference(Cell.one_from_boc(base64.b64decode(ins["transfer"]["forward_payload"]))) == ref
    assert "text" not in parse_qs(urlparse(ins["uri"]).query)
    with pytest.raises(InputError):
        ton_instructions(chain(), os.urandom(32), 1, code=code, token=usdt())  # another payment's code
    with pytest.raises(InputError):
        ton_instructions(chain(), ref, 0, token=usdt())
    # the native token keeps its TON instructions
    assert "jetton_master" not in ton_instructions(chain(), ref, 10**9)["transfer"]


def test_the_refund_signer_signs_jetton_releases_only_for_configured_jettons():
    seed = os.urandom(32)
    lock = Address(LOCK_RAW)
    s = TonRefundSigner(lock, seed, global_id=-217, tokens={"USDT": usdt()})
    payer, rid = os.urandom(32), os.urandom(32)
    to, sig = s.sign(payer, 1, rid, token="USDT")  # no TON minimum for a jetton (the core's min_refund_of)
    payload = L.jetton_release_payload(global_id=-217, lock=lock, destination=L.basechain(payer), amount=1,
                                       release_id=rid, master=MASTER)
    assert to == payer
    VerifyKey(s.signer_id).verify(payload.hash, sig)
    assert s.sign(payer, 10**6, rid, token="USDC") is None  # not a jetton of this lock
    assert s.sign(payer, 0, rid, token="USDT") is None
    # TON refunds as before: the lock's min_release applies, and the payload differs
    assert s.sign(payer, L.DEFAULT_MIN_RELEASE - 1, rid) is None
    _, ton_sig = s.sign(payer, L.DEFAULT_MIN_RELEASE, rid)
    assert ton_sig != s.sign(payer, L.DEFAULT_MIN_RELEASE, rid, token="USDT")[1]


def test_the_watcher_maps_masters_to_symbols_and_refuses_ambiguous_config():
    assert jetton_symbols("ton", {"USDT": usdt()}) == {MASTER.hash_part: "USDT"}
    assert jetton_symbols("ton", {}) == {}
    with pytest.raises(ConfigError, match="same jetton master"):
        jetton_symbols("ton", {"USDT": usdt(), "USDX": usdt(symbol="USDX")})
    with pytest.raises(ConfigError, match="basechain"):
        jetton_symbols("ton", {"USDT": usdt(Address((-1, b"\x5a" * 32)))})


def test_lock_builder_refuses_bad_jetton_lists():
    pub = [os.urandom(32)]
    with pytest.raises(InputError, match="distinct"):
        L.initial_data(pub, 1, 10**7, global_id=-217, jetton_masters=[MASTER, MASTER])
    with pytest.raises(InputError, match="basechain"):
        L.initial_data(pub, 1, 10**7, global_id=-217, jetton_masters=[Address((-1, b"\x01" * 32))])
    with pytest.raises(InputError, match="at most"):
        L.initial_data(pub, 1, 10**7, global_id=-217,
                       jetton_masters=[Address((0, bytes([i]) * 32)) for i in range(L.MAX_JETTONS + 1)])
    # the masters are part of the lock's address
    assert L.lock_address(pub, 1, 10**7, global_id=-217) != L.lock_address(pub, 1, 10**7, global_id=-217,
                                                                           jetton_masters=[MASTER])


def test_the_api_instructions_of_a_jetton_payment_name_the_jetton():
    """What the API serves (``bridge.payments.instructions.Instructions``, the builders the
    composition root registers): a USDT@ton payment's instructions are a jetton transfer, not a
    TON one; a chain family whose builder takes no token refuses instead of showing the native
    form for a token payment."""
    from bridge.errors import ConfigError
    from bridge.node import payment_instructions
    from bridge.payments.instructions import Instructions

    code = new_code()
    ins = payment_instructions()(chain(), reference_for_code(code), 12_500_000, code=code, token=usdt())
    assert ins["transfer"]["jetton_master"] == usdt().jetton_master
    assert "jetton=" in ins["uri"]
    native = payment_instructions()(chain(), reference_for_code(code), 12_500_000, code=code, token=None)
    assert "jetton_master" not in native["transfer"]
    with pytest.raises(ConfigError, match="no payment instructions for USDT"):
        Instructions({"ton": lambda c, r, a, code=None: {}})(chain(), reference_for_code(code), 1, token=usdt())
