"""Payment decoding against the real, current Polkadot and Kusama runtime metadata.

The metadata is the V14 metadata that ``@polkadot/types-support`` (npm, pinned in
package.json) ships for Polkadot and Kusama (``metadata/v14/{polkadot,kusama}-hex.js``).
Calls, signed extrinsics and event records are *encoded* with scalecodec from that metadata
and then decoded by the watcher's own functions (``decode_extrinsic``, ``decode_events``,
``find_payment``, ``confirmed_amount``), so the round trip goes through the real type
registry of those runtimes (incl. the ``CheckMetadataHash`` extension, ``MultiAddress`` and
``Weight`` v2). No node is involved: signatures are real Sr25519 signatures of the keys used
but over the call bytes, not over a signing payload a runtime would check.

Asset Hub's own current metadata ships only as V15 there, which scalecodec 1.2.12 cannot
read; the Asset Hub runtime (spec 900, V14) is covered by the chopsticks integration tests and
the recorded-session replay.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from substrateinterface import Keypair

from scalecodec.base import ScaleBytes

from relayers.substrate.decode import (
    TOP_UP_REMARK,
    ZERO_REFERENCE,
    account_bytes,
    blake2_256,
    confirmed_amount,
    decode_events,
    decode_extrinsic,
    events_of,
    events_type_string,
    find_collection,
    find_payment,
    remark_bytes,
    runtime_from_metadata,
)

ROOT = Path(__file__).resolve().parents[3]
META_DIR = ROOT / "node_modules/@polkadot/types-support/metadata/v14"

ALICE = Keypair.create_from_uri("//Alice")
BOB = Keypair.create_from_uri("//Bob")
COMMITTEE = bytes.fromhex("6d6f646c" + "ab" * 28)  # any 32 bytes: decoding does not derive it
OTHER = bytes(range(32))
AMOUNT = 12_345_678_901


class Runtime:
    def __init__(self, name: str) -> None:
        hex_file = META_DIR / f"{name}-hex.js"
        if not hex_file.is_file():
            pytest.fail(f"{hex_file} missing: run `make setup` (npm @polkadot/types-support)")
        self.name = name
        self.metadata_hex = re.search(r"'(0x[0-9a-f]+)'", hex_file.read_text()).group(1)
        ver = (META_DIR / f"{name}-ver.js").read_text()
        self.spec_version = int(re.search(r'"specVersion":\s*(\d+)', ver).group(1))
        self.rc, self.md = runtime_from_metadata(self.metadata_hex)

    def has_call(self, module: str, function: str) -> bool:
        pallet = self.md.get_metadata_pallet(module)
        return pallet is not None and any(c.name == function for c in pallet.calls)

    def call(self, module: str, function: str, args: dict):
        c = self.rc.create_scale_object("Call", metadata=self.md)
        c.encode({"call_module": module, "call_function": function, "call_args": args})
        return c

    def transfer(self, dest: bytes, amount: int, function: str = "transfer_keep_alive"):
        return self.call("Balances", function, {"dest": {"Id": "0x" + dest.hex()}, "value": amount})

    def remark(self, data: bytes, function: str = "remark_with_event"):
        return self.call("System", function, {"remark": data})

    def batch(self, calls: list, function: str = "batch_all"):
        return self.call("Utility", function, {"calls": [c.value for c in calls]})

    def proxy(self, real: bytes, call):
        return self.call("Proxy", "proxy", {"real": {"Id": "0x" + real.hex()}, "force_proxy_type": None,
                                            "call": call.value})

    def signed(self, kp: Keypair, call, nonce: int = 7) -> bytes:
        xt = self.rc.create_scale_object("Extrinsic", metadata=self.md)
        data = xt.encode({
            "account_id": "0x" + kp.public_key.hex(), "signature_version": 1,
            "signature": "0x" + kp.sign(bytes(call.data.data)).hex(),
            "call_module": call.value["call_module"], "call_function": call.value["call_function"],
            "call_args": call.value["call_args"], "nonce": nonce, "era": "00", "tip": 0, "mode": "Disabled",
        })
        return bytes(data.data)

    def unsigned(self, call) -> bytes:
        xt = self.rc.create_scale_object("Extrinsic", metadata=self.md)
        data = xt.encode({"call_module": call.value["call_module"], "call_function": call.value["call_function"],
                          "call_args": call.value["call_args"]})
        return bytes(data.data)

    def events(self, records: list[tuple[int, str, str, dict | None]]) -> str:
        """Encode ``System.Events`` from (extrinsic index, pallet, event, fields)."""
        obj = self.rc.create_scale_object(events_type_string(self.md), metadata=self.md)
        value = [{"phase": {"ApplyExtrinsic": i}, "event": {m: {e: f} if f is not None else e}, "topics": []}
                 for i, m, e, f in records]
        return obj.encode(value).to_hex()

    def success(self, i: int) -> tuple:
        return (i, "System", "ExtrinsicSuccess",
                {"dispatch_info": {"weight": {"ref_time": 1, "proof_size": 1}, "class": "Normal", "pays_fee": "Yes"}})

    def failed(self, i: int) -> tuple:
        return (i, "System", "ExtrinsicFailed", {
            "dispatch_error": {"Module": {"index": 5, "error": "0x02000000"}},
            "dispatch_info": {"weight": {"ref_time": 1, "proof_size": 1}, "class": "Normal", "pays_fee": "Yes"}})

    def transferred(self, i: int, frm: bytes, to: bytes, amount: int) -> tuple:
        return (i, "Balances", "Transfer", {"from": "0x" + frm.hex(), "to": "0x" + to.hex(), "amount": amount})


@pytest.fixture(scope="module", params=["polkadot", "kusama"])
def rt(request) -> Runtime:
    return Runtime(request.param)


def decode(rt: Runtime, raw: bytes) -> dict:
    return decode_extrinsic(rt.rc, rt.md, "0x" + raw.hex())


def scalecodec_view(rt: Runtime, raw: bytes) -> dict:
    """What scalecodec alone shows (no exact re-split)."""
    obj = rt.rc.create_scale_object("Extrinsic", data=ScaleBytes(bytearray(raw)), metadata=rt.md)
    return obj.decode()


def test_nested_call_hashes_are_of_their_own_bytes(rt: Runtime):
    """scalecodec hashes a nested call over all bytes to the end of the extrinsic; the
    decoder re-splits them: each hash is blake2_256 of that call's own encoding."""
    t, r = rt.transfer(COMMITTEE, AMOUNT), rt.remark(os.urandom(32))
    call = rt.proxy(ALICE.public_key, rt.batch([r, t]))
    xt = decode(rt, rt.signed(BOB, call))
    batch = xt["call"]["call_args"][2]["value"]
    inner = batch["call_args"][0]["value"]
    assert xt["call"]["call_hash"] == "0x" + blake2_256(bytes(call.data.data)).hex()
    assert [c["call_hash"] for c in inner] == ["0x" + blake2_256(bytes(c.data.data)).hex() for c in (r, t)]
    assert scalecodec_view(rt, rt.signed(BOB, call))["call"]["call_args"][2]["value"]["call_args"][0]["value"][0][
        "call_hash"] != inner[0]["call_hash"]  # what the watcher must not rely on


def test_metadata_is_the_current_v14_of_each_network(rt: Runtime):
    assert rt.md.value_object[1].index == 14  # MetadataVersioned: ("meta", V14)
    assert rt.spec_version >= 1_002_000
    for module, function in [("Utility", "batch_all"), ("Utility", "batch"), ("Utility", "force_batch"),
                             ("Balances", "transfer_keep_alive"), ("Balances", "transfer_allow_death"),
                             ("System", "remark_with_event"), ("System", "remark"), ("Proxy", "proxy")]:
        assert rt.has_call(module, function), (rt.name, module, function)


def test_batch_all_payment_round_trips(rt: Runtime):
    ref = os.urandom(32)
    call = rt.batch([rt.transfer(COMMITTEE, AMOUNT), rt.remark(ref)])
    xt = decode(rt, rt.signed(ALICE, call))
    p = find_payment(xt, COMMITTEE)
    assert p is not None
    assert (p.payer, p.reference, p.transfers, p.kind) == (ALICE.public_key, ref, (AMOUNT,), "Utility.batch_all")
    inner = xt["call"]["call_args"][0]["value"]
    assert account_bytes(inner[0]["call_args"][0]["value"]) == COMMITTEE  # dest
    raw_events = rt.events([rt.success(0), rt.transferred(1, ALICE.public_key, COMMITTEE, AMOUNT), rt.success(1)])
    evs = decode_events(rt.rc, rt.md, raw_events)
    assert confirmed_amount(p, events_of(evs, 1), COMMITTEE) == AMOUNT
    assert confirmed_amount(p, events_of(evs, 0), COMMITTEE) == 0  # another extrinsic's events


@pytest.mark.parametrize("batch", ["batch_all", "batch", "force_batch"])
@pytest.mark.parametrize("transfer", ["transfer_keep_alive", "transfer_allow_death"])
@pytest.mark.parametrize("remark", ["remark_with_event", "remark"])
def test_every_accepted_call_shape(rt: Runtime, batch, transfer, remark):
    ref = os.urandom(32)
    call = rt.batch([rt.remark(ref, remark), rt.transfer(COMMITTEE, AMOUNT, transfer)], batch)
    p = find_payment(decode(rt, rt.signed(BOB, call)), COMMITTEE)
    assert p is not None and (p.payer, p.reference, p.transfers) == (BOB.public_key, ref, (AMOUNT,))
    assert p.kind == f"Utility.{batch}"


def test_proxy_payment_is_paid_by_the_real_account(rt: Runtime):
    ref = os.urandom(32)
    call = rt.proxy(ALICE.public_key, rt.batch([rt.transfer(COMMITTEE, AMOUNT), rt.remark(ref)]))
    p = find_payment(decode(rt, rt.signed(BOB, call)), COMMITTEE)  # Bob signs for Alice
    assert p is not None and (p.payer, p.reference, p.kind) == (ALICE.public_key, ref, "Proxy.proxy/Utility.batch_all")
    evs = decode_events(rt.rc, rt.md, rt.events([rt.transferred(0, ALICE.public_key, COMMITTEE, AMOUNT),
                                                 rt.success(0)]))
    assert confirmed_amount(p, events_of(evs, 0), COMMITTEE) == AMOUNT
    # a transfer by the proxy itself (Bob) does not confirm Alice's payment
    evs = decode_events(rt.rc, rt.md, rt.events([rt.transferred(0, BOB.public_key, COMMITTEE, AMOUNT),
                                                 rt.success(0)]))
    assert confirmed_amount(p, events_of(evs, 0), COMMITTEE) == 0


@pytest.mark.parametrize("ref", [b"A" * 32, b"0x" + b"a" * 30, bytes(32), "é".encode() * 16],
                         ids=["ascii", "ascii-0x", "zeros", "utf8"])
def test_references_that_scalecodec_shows_as_text_are_read_exactly(rt: Runtime, ref: bytes):
    call = rt.batch([rt.transfer(COMMITTEE, AMOUNT), rt.remark(ref)])
    raw = rt.signed(ALICE, call)
    assert isinstance(scalecodec_view(rt, raw)["call"]["call_args"][0]["value"][1]["call_args"][0]["value"], str)
    xt = decode(rt, raw)
    assert remark_bytes(xt["call"]["call_args"][0]["value"][1]) == ref
    p = find_payment(xt, COMMITTEE)
    assert p is not None and p.reference == ref


def test_a_hex_text_remark_is_not_the_reference_it_spells(rt: Runtime):
    """66 ASCII bytes "0x<64 hex digits>" decode to the same text scalecodec shows for 32 raw
    bytes; the remark is not those 32 bytes and must not count."""
    ref = os.urandom(32)
    spelled = ("0x" + ref.hex()).encode()
    call = rt.batch([rt.transfer(COMMITTEE, AMOUNT), rt.remark(spelled)])
    raw = rt.signed(ALICE, call)
    # the ambiguity: scalecodec shows the text exactly as it would show the 32 bytes
    shown = scalecodec_view(rt, raw)["call"]["call_args"][0]["value"][1]["call_args"][0]["value"]
    assert shown == "0x" + ref.hex()
    xt = decode(rt, raw)
    assert remark_bytes(xt["call"]["call_args"][0]["value"][1]) == spelled
    p = find_payment(xt, COMMITTEE)  # names no payment: unattributed (refunded), not the spelled one
    assert p is not None and p.reference == ZERO_REFERENCE != ref


def test_several_transfers_to_the_committee_add_up_when_each_is_confirmed(rt: Runtime):
    ref = os.urandom(32)
    call = rt.batch([rt.transfer(COMMITTEE, 5), rt.transfer(OTHER, 100), rt.remark(ref),
                     rt.transfer(COMMITTEE, 7)], "force_batch")
    p = find_payment(decode(rt, rt.signed(ALICE, call)), COMMITTEE)
    assert p is not None and p.transfers == (5, 7)
    a = ALICE.public_key
    both = rt.events([rt.transferred(0, a, COMMITTEE, 5), rt.transferred(0, a, OTHER, 100),
                      rt.transferred(0, a, COMMITTEE, 7), rt.success(0)])
    assert confirmed_amount(p, events_of(decode_events(rt.rc, rt.md, both), 0), COMMITTEE) == 12
    # force_batch: the second transfer failed (no event) -> only the first counts
    one = rt.events([rt.transferred(0, a, COMMITTEE, 5), rt.success(0)])
    assert confirmed_amount(p, events_of(decode_events(rt.rc, rt.md, one), 0), COMMITTEE) == 5
    # one event cannot confirm two equal transfers
    p2 = find_payment(decode(rt, rt.signed(ALICE, rt.batch([rt.transfer(COMMITTEE, 5), rt.transfer(COMMITTEE, 5),
                                                            rt.remark(ref)]))), COMMITTEE)
    assert p2 is not None and p2.transfers == (5, 5)
    assert confirmed_amount(p2, events_of(decode_events(rt.rc, rt.md, one), 0), COMMITTEE) == 5


def test_events_that_do_not_confirm(rt: Runtime):
    ref = os.urandom(32)
    p = find_payment(decode(rt, rt.signed(ALICE, rt.batch([rt.transfer(COMMITTEE, AMOUNT), rt.remark(ref)]))),
                     COMMITTEE)
    assert p is not None
    a = ALICE.public_key
    cases = {
        "failed": [rt.transferred(0, a, COMMITTEE, AMOUNT), rt.failed(0)],
        "no success event": [rt.transferred(0, a, COMMITTEE, AMOUNT)],
        "no transfer (batch interrupted)": [(0, "Utility", "BatchInterrupted",
                                             {"index": 0, "error": {"Module": {"index": 5, "error": "0x02000000"}}}),
                                            rt.success(0)],
        "other amount": [rt.transferred(0, a, COMMITTEE, AMOUNT - 1), rt.success(0)],
        "other payer": [rt.transferred(0, BOB.public_key, COMMITTEE, AMOUNT), rt.success(0)],
        "other destination": [rt.transferred(0, a, OTHER, AMOUNT), rt.success(0)],
    }
    for what, records in cases.items():
        evs = events_of(decode_events(rt.rc, rt.md, rt.events(records)), 0)
        assert confirmed_amount(p, evs, COMMITTEE) == 0, what


def test_calls_that_are_not_payments(rt: Runtime):
    ref = os.urandom(32)
    t, r = rt.transfer(COMMITTEE, AMOUNT), rt.remark(ref)
    cases = {
        "transfer to another account": rt.batch([rt.transfer(OTHER, AMOUNT), r]),
        "remark only": rt.batch([r]),
        "nested batch": rt.batch([rt.batch([t, r])]),
        "zero amount": rt.batch([rt.transfer(COMMITTEE, 0), r]),
        "top-up": rt.batch([t, rt.remark(TOP_UP_REMARK)]),
        "top-up, remark first, twice": rt.batch([rt.remark(TOP_UP_REMARK, "remark"), t, rt.remark(TOP_UP_REMARK)]),
    }
    for what, call in cases.items():
        assert find_payment(decode(rt, rt.signed(ALICE, call)), COMMITTEE) is None, what
    # transfers to the committee naming no single payment: unattributed (reference 32 zero bytes)
    unattributed = {
        "no remark": rt.batch([t]),
        "remark of 31 bytes": rt.batch([t, rt.remark(ref[:31])]),
        "remark of 33 bytes": rt.batch([t, rt.remark(ref + b"\x00")]),
        "64-byte remark (no collection)": rt.batch([t, rt.remark(ref + ALICE.public_key)]),
        "two different references": rt.batch([t, r, rt.remark(os.urandom(32))]),
        "plain transfer, no batch": t,
        "proxied plain transfer": rt.proxy(BOB.public_key, t),
        "top-up remark and another": rt.batch([t, rt.remark(TOP_UP_REMARK), rt.remark(b"hello")]),
    }
    if rt.has_call("Balances", "transfer_allow_death"):
        unattributed["plain transfer_allow_death"] = rt.transfer(COMMITTEE, AMOUNT, "transfer_allow_death")
    for what, call in unattributed.items():
        p = find_payment(decode(rt, rt.signed(ALICE, call)), COMMITTEE)
        assert p is not None and (p.reference, p.transfers) == (ZERO_REFERENCE, (AMOUNT,)), what
        assert p.payer == (BOB.public_key if what.startswith("proxied") else ALICE.public_key), what
    # index addresses are not account ids
    by_index = rt.call("Balances", "transfer_keep_alive", {"dest": {"Index": 3}, "value": AMOUNT})
    assert find_payment(decode(rt, rt.signed(ALICE, rt.batch([by_index, r]))), COMMITTEE) is None
    # the same remark twice is one reference
    p = find_payment(decode(rt, rt.signed(ALICE, rt.batch([t, r, r]))), COMMITTEE)
    assert p is not None and p.reference == ref


def _as_multi(rt: Runtime, signer: Keypair, others: list[bytes], threshold: int, inner):
    args = {"threshold": threshold, "other_signatories": ["0x" + o.hex() for o in sorted(others)],
            "maybe_timepoint": {"height": 10, "index": 2}, "call": inner.value,
            "max_weight": {"ref_time": 10**10, "proof_size": 10**5}}
    return rt.signed(signer, rt.call("Multisig", "as_multi", args))


def test_a_collection_of_a_payment_account_is_recognised_and_confirmed_by_its_transfer(rt: Runtime):
    """The current Polkadot / Kusama ``as_multi`` (a boxed call; chopsticks' spec 900 has the
    older opaque one, covered in tests/integration/substrate/test_substrate_payment_accounts.py)."""
    from bridge.config import SubstrateCommittee
    from relayers.substrate.multisig import payment_account, payment_tag

    members = sorted([ALICE.public_key, BOB.public_key, OTHER])
    committee = SubstrateCommittee(members=["0x" + m.hex() for m in members], threshold=2)
    ref, payer = os.urandom(32), os.urandom(32)
    account = payment_account(committee, ref)

    def account_of(r: bytes) -> bytes:
        return payment_account(committee, r)

    others = [m for m in members if m != ALICE.public_key] + [payment_tag(ref)]
    sweep = rt.call("Balances", "transfer_all", {"dest": {"Id": "0x" + COMMITTEE.hex()}, "keep_alive": False})
    good = rt.batch([sweep, rt.remark(ref + payer)])
    xt = decode(rt, _as_multi(rt, ALICE, others, 2, good))
    assert find_payment(xt, COMMITTEE) is None
    p = find_collection(xt, COMMITTEE, account_of)
    assert p is not None and (p.reference, p.payer, p.collected_from) == (ref, payer, account)
    moved = rt.events([rt.transferred(0, account, COMMITTEE, AMOUNT), rt.transferred(0, account, OTHER, 5),
                       rt.success(0)])
    assert confirmed_amount(p, events_of(decode_events(rt.rc, rt.md, moved), 0), COMMITTEE) == AMOUNT
    created_only = rt.events([rt.success(0)])  # the first approval: nothing moved yet
    assert confirmed_amount(p, events_of(decode_events(rt.rc, rt.md, created_only), 0), COMMITTEE) == 0
    # not collections: another multisig (the tag of another reference, or no tag), another threshold,
    # another destination, a 32-byte remark, extra calls
    not_ones = {
        "tag of another reference": _as_multi(rt, ALICE, others[:-1] + [payment_tag(os.urandom(32))], 2, good),
        "the committee's own multisig": _as_multi(rt, ALICE, others[:-1], 2, good),
        "threshold 3": _as_multi(rt, ALICE, others, 3, good),
        "to another account": _as_multi(rt, ALICE, others, 2, rt.batch([rt.call(
            "Balances", "transfer_all", {"dest": {"Id": "0x" + OTHER.hex()}, "keep_alive": False}),
            rt.remark(ref + payer)])),
        "32-byte remark": _as_multi(rt, ALICE, others, 2, rt.batch([sweep, rt.remark(ref)])),
        "three calls": _as_multi(rt, ALICE, others, 2, rt.batch([sweep, rt.remark(ref + payer), rt.remark(b"x")])),
    }
    for what, raw in not_ones.items():
        assert find_collection(decode(rt, raw), COMMITTEE, account_of) is None, what


def test_unsigned_extrinsics_are_never_payments(rt: Runtime):
    xt = decode(rt, rt.unsigned(rt.call("Timestamp", "set", {"now": 1_700_000_000_000})))
    assert "address" not in xt and find_payment(xt, COMMITTEE) is None


def test_largest_balance_round_trips(rt: Runtime):
    big = 2**128 - 1
    ref = os.urandom(32)
    p = find_payment(decode(rt, rt.signed(ALICE, rt.batch([rt.transfer(COMMITTEE, big), rt.remark(ref)]))), COMMITTEE)
    assert p is not None and p.transfers == (big,)
