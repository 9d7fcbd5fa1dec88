"""Recognising payments in decoded Asset Hub extrinsics and events (scalecodec values).

Deposits to the committee's multisig account come in three shapes (issue 14):

* **call-based payment**: a batch paying the committee with a 32-byte remark (below);
* **collection** (:func:`find_collection`): the executed ``Multisig.as_multi`` by which t
  committee members move a per-payment account (``multisig.payment_account``: the multisig of
  the members and a tag of the reference) into the committee account with
  ``Utility.batch_all([Balances.transfer_all(dest=committee, ..), System.remark_with_event(
  reference ++ payer)])``. The multisig account computed from the extrinsic's signer,
  ``other_signatories`` and ``threshold`` must equal the payment account of the remark's
  reference; the deposit's payer is the remark's payer (whoever funded the payment account
  first since its last collection), its amount what the ``Balances.Transfer`` events of the
  extrinsic moved from that account to the committee;
* **unattributed** (reference :data:`ZERO_REFERENCE`, which no payment has: the signers refund
  it to its payer after a delay): a plain ``transfer`` / ``transfer_keep_alive`` /
  ``transfer_allow_death`` to the committee, or a batch paying it with no 32-byte remark or two
  different ones (a 64-byte remark in a payer's batch is no collection either). The exception
  is an operator's **top-up** of the committee account (existential deposit, fee reserve): a
  batch whose only remarks are exactly :data:`TOP_UP_REMARK`: not a deposit at all.

A payment is one signed extrinsic whose call is (optionally wrapped in ``Proxy.proxy``) a
``Utility.batch_all`` / ``batch`` / ``force_batch`` holding

* one or more balances transfers (``transfer_keep_alive``, ``transfer_allow_death``,
  ``transfer``) whose ``dest`` is the committee's multisig account, and
* ``System.remark_with_event`` or ``System.remark`` calls carrying exactly the same 32 bytes
  (the payment reference).

It counts only if the extrinsic emitted ``System.ExtrinsicSuccess`` and, for each transfer
call, a distinct ``Balances.Transfer {from: payer, to: committee, amount}`` event of the same
extrinsic confirms it (the 32 bytes may appear in several remark calls). ``batch`` and ``force_batch`` (and ``Proxy.proxy``) succeed even when
an inner call fails, so the event -- not the call -- is the proof that money moved; the
deposit amount is the sum of the confirmed transfers. Everything else is ignored (logged at
debug level): unsigned extrinsics, other calls, transfers to other accounts, nested batches.

**Tokens** (issue 15): wherever a balances transfer pays the committee, a ``pallet_assets``
``Assets.transfer_keep_alive`` / ``Assets.transfer`` (``id``, ``target``, ``amount``) may pay it
instead; the deposit is then in that asset (``PaymentCall.asset_id``; None = the native token)
and is confirmed only by ``Assets.Transferred {asset_id, from, to, amount}`` events of the same
asset (an event of another asset or of ``Balances`` confirms nothing). A deposit is in one token:
a batch paying the committee in several takes its first transfer's token, the other transfers
are not part of it (logged; they stay in custody for an operator). A collection of an asset is
``Utility.batch_all([Assets.transfer(id, committee, balance), System.remark_with_event(reference
++ payer)])`` (spec 900's ``pallet_assets`` has no ``transfer_all``). Mapping the asset id to a
configured token is the watcher's (an unconfigured asset is no deposit).

Only *candidates* need decoding (:func:`is_candidate`): an extrinsic whose encoded bytes do
not contain the committee's 32-byte account id cannot be such a payment.

The payer is the extrinsic's signer, or the proxied ``real`` account for ``Proxy.proxy``.
Accounts are compared as 32-byte public keys, never as SS58 strings.

scalecodec renders ``Vec<u8>`` as text when the bytes happen to be valid UTF-8 and as
``0x``-hex otherwise, which is ambiguous (the 66 ASCII bytes ``"0x<64 hex digits>"`` and the
32 bytes they spell look the same), and the ``call_hash`` it gives nested calls is computed
over the wrong bytes (all bytes to the end of the extrinsic). :func:`decode_extrinsic`
therefore re-splits batch and proxy calls on their exact encoded bytes: every call in them
gets the hash of its own bytes and every remark argument becomes the exact ``bytes``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from scalecodec.base import RuntimeConfigurationObject, ScaleBytes
from scalecodec.type_registry import load_type_registry_preset
from scalecodec.types import WrapperKeepOpaque
from scalecodec.utils.ss58 import ss58_decode

from bridge.errors import BridgeError

log = logging.getLogger(__name__)

TRANSFER_CALLS = frozenset({"transfer_keep_alive", "transfer_allow_death", "transfer"})
ASSET_TRANSFER_CALLS = frozenset({"transfer_keep_alive", "transfer"})  # pallet_assets (issue 15)
BATCH_CALLS = frozenset({"batch_all", "batch", "force_batch"})
REMARK_CALLS = frozenset({"remark_with_event", "remark"})
NESTING_CALLS = frozenset({("Proxy", "proxy"), ("Multisig", "as_multi")})  # one boxed call, made exact
REFERENCE_LEN = 32
ZERO_REFERENCE = bytes(32)  # unattributed deposits: no payment has this reference
TOP_UP_REMARK = b"creditbridge:top-up"  # an operator funding the committee account: not a deposit
COLLECTION_REMARK_LEN = 64  # reference ++ payer

# twox128("System") ++ twox128("Events"): the storage key of a block's events
EVENTS_STORAGE_KEY = "0x26aa394eea5630e07c48ae0c9558cef780d41e5e16056765bc8461851072c9d7"


@dataclass(frozen=True)
class PaymentCall:
    """What a signed extrinsic asks for (not yet confirmed by its events)."""

    payer: bytes  # 32-byte account id
    reference: bytes  # 32 bytes
    transfers: tuple[int, ...]  # amounts of the transfer calls to the committee, call order
    kind: str  # "Utility.batch_all", "Proxy.proxy/Utility.batch", "Balances.transfer", ...
    # a collection: the payment account whose funds (any amount: transfer_all) move to the committee
    collected_from: bytes | None = None
    # the token: None = the chain's native token (Balances), else the pallet_assets asset id
    asset_id: int | None = None


def compact(n: int) -> bytes:
    """SCALE compact encoding of a non-negative integer."""
    if n < 0:
        raise ValueError("compact encodes non-negative integers")
    if n < 1 << 6:
        return bytes([n << 2])
    if n < 1 << 14:
        return ((n << 2) | 1).to_bytes(2, "little")
    if n < 1 << 30:
        return ((n << 2) | 2).to_bytes(4, "little")
    raw = n.to_bytes((n.bit_length() + 7) // 8, "little")
    return bytes([((len(raw) - 4) << 2) | 3]) + raw


def blake2_256(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def account_bytes(value: Any) -> bytes | None:
    """32-byte account id of a decoded ``AccountId32`` / ``MultiAddress::Id`` value (SS58 text,
    ``0x`` hex or ``{"Id": ...}``); ``None`` for anything else (indices, 20-byte addresses)."""
    if isinstance(value, dict):
        if len(value) == 1 and "Id" in value:
            return account_bytes(value["Id"])
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value) if len(value) == 32 else None
    if not isinstance(value, str) or not value:
        return None
    if value[:2] in ("0x", "0X"):
        try:
            b = bytes.fromhex(value[2:])
        except ValueError:
            return None
        return b if len(b) == 32 else None
    try:  # base58 has no '0', so SS58 text never looks like hex
        b = bytes.fromhex(ss58_decode(value))
    except (ValueError, TypeError, IndexError):
        return None
    return b if len(b) == 32 else None


def _args(call: dict) -> dict[str, Any]:
    return {a.get("name"): a.get("value") for a in call.get("call_args") or [] if isinstance(a, dict)}


def _name(call: dict) -> tuple[str, str]:
    return str(call.get("call_module", "")), str(call.get("call_function", ""))


def remark_bytes(call: dict) -> bytes | None:
    """The exact bytes of a remark call as :func:`decode_extrinsic` leaves them (``bytes``);
    ``None`` for scalecodec's ambiguous text/hex rendering (see module doc)."""
    value = _args(call).get("remark")
    return bytes(value) if isinstance(value, (bytes, bytearray)) else None


def _batch_payment(batch: dict, committee: bytes) -> tuple[bytes, tuple[int, ...], int | None] | None:
    """(reference, transfer amounts, asset id) of a batch call paying ``committee``, else None
    (also for a top-up); the reference is :data:`ZERO_REFERENCE` when the remarks name no single
    one. A deposit is in one token: the token of the batch's first transfer to the committee
    (None = native); transfers of other tokens in the same batch are not part of it (logged)."""
    calls = _args(batch).get("calls")
    if not isinstance(calls, list):
        return None
    remarks: list[bytes | None] = []
    transfers: list[tuple[int | None, int]] = []
    for inner in calls:
        if not isinstance(inner, dict):
            continue
        module, function = _name(inner)
        if module == "System" and function in REMARK_CALLS:
            remarks.append(remark_bytes(inner))
        else:
            found = _token_transfer_to(inner, committee)
            if found is not None:
                transfers.append(found)
    if not transfers:
        return None
    asset_id = transfers[0][0]
    amounts = tuple(v for a, v in transfers if a == asset_id)
    if len(amounts) != len(transfers):
        log.warning("a batch pays the committee in several tokens: only its %s transfers are the deposit; "
                    "the others are not credited (they stay in custody for an operator)",
                    "native" if asset_id is None else f"asset {asset_id}")
    references = {r for r in remarks if r is not None and len(r) == REFERENCE_LEN}
    if len(references) == 1:
        return references.pop(), amounts, asset_id
    if remarks and all(r == TOP_UP_REMARK for r in remarks):
        log.debug("batch tops up the committee account: not a deposit")
        return None
    log.debug("batch pays the committee with %d remarks (%d distinct 32-byte ones): unattributed",
              len(remarks), len(references))
    return ZERO_REFERENCE, amounts, asset_id


def _asset_id(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _token_transfer_to(call: dict, committee: bytes) -> tuple[int | None, int] | None:
    """(asset id or None for native, amount) of a balances or ``pallet_assets`` transfer call
    to ``committee`` (amount > 0), else None."""
    module, function = _name(call)
    if module == "Balances" and function in TRANSFER_CALLS:
        value = _transfer_to(call, committee)
        return None if value is None else (None, value)
    if module == "Assets" and function in ASSET_TRANSFER_CALLS:
        a = _args(call)
        asset_id, amount = _asset_id(a.get("id")), a.get("amount")
        if asset_id is not None and account_bytes(a.get("target")) == committee and isinstance(amount, int) \
                and not isinstance(amount, bool) and amount > 0:
            return asset_id, amount
    return None


def _transfer_to(call: dict, committee: bytes) -> int | None:
    """The amount of a balances transfer call to ``committee`` (> 0), else None."""
    a = _args(call)
    value = a.get("value")
    if account_bytes(a.get("dest")) == committee and isinstance(value, int) and not isinstance(value, bool) \
            and value > 0:
        return value
    return None


def find_payment(extrinsic: dict, committee: bytes) -> PaymentCall | None:
    """The payment a decoded extrinsic (``GenericExtrinsic.value``) asks for, if any."""
    call = extrinsic.get("call")
    signer = account_bytes(extrinsic.get("address")) if "address" in extrinsic else None
    if signer is None or not isinstance(call, dict):
        return None  # unsigned (inherents) or signed by a non-Id address
    payer, kind = signer, ""
    module, function = _name(call)
    if (module, function) == ("Proxy", "proxy"):
        a = _args(call)
        real = account_bytes(a.get("real"))
        inner = a.get("call")
        if real is None or not isinstance(inner, dict):
            return None
        payer, call, kind = real, inner, "Proxy.proxy/"
        module, function = _name(call)
    if module in ("Balances", "Assets"):  # a plain transfer: unattributed
        found = _token_transfer_to(call, committee)
        if found is None:
            return None
        return PaymentCall(payer=payer, reference=ZERO_REFERENCE, transfers=(found[1],),
                           kind=f"{kind}{module}.{function}", asset_id=found[0])
    if module != "Utility" or function not in BATCH_CALLS:
        return None
    batch = _batch_payment(call, committee)
    if batch is None:
        return None
    reference, transfers, asset_id = batch
    return PaymentCall(payer=payer, reference=reference, transfers=transfers, kind=f"{kind}Utility.{function}",
                       asset_id=asset_id)


def find_collection(extrinsic: dict, committee: bytes,
                    payment_account_of: Callable[[bytes], bytes]) -> PaymentCall | None:
    """The collection of a per-payment account a decoded extrinsic asks for (see module doc),
    if any; ``payment_account_of(reference)`` is ``multisig.payment_account`` of the committee.
    Whether it executed and how much it moved is for its events to tell (:func:`confirmed_amount`)."""
    from relayers.substrate.multisig import multisig_account_id  # multisig.py imports this module

    call = extrinsic.get("call")
    signer = account_bytes(extrinsic.get("address")) if "address" in extrinsic else None
    if signer is None or not isinstance(call, dict) or _name(call) != ("Multisig", "as_multi"):
        return None
    a = _args(call)
    inner, threshold, others = a.get("call"), a.get("threshold"), a.get("other_signatories")
    if not isinstance(inner, dict) or _name(inner) != ("Utility", "batch_all") or not isinstance(others, list) \
            or not isinstance(threshold, int) or isinstance(threshold, bool):
        return None
    calls = _args(inner).get("calls")
    if not isinstance(calls, list) or len(calls) != 2 or not all(isinstance(c, dict) for c in calls):
        return None
    sweep, note = calls
    if _name(sweep) == ("Balances", "transfer_all") and account_bytes(_args(sweep).get("dest")) == committee:
        asset_id = None
    else:  # an asset collection: Assets.transfer(id, committee, what the account holds)
        found = _token_transfer_to(sweep, committee) if _name(sweep)[0] == "Assets" else None
        if found is None:
            return None
        asset_id = found[0]
    remark = remark_bytes(note) if _name(note)[0] == "System" and _name(note)[1] in REMARK_CALLS else None
    if remark is None or len(remark) != COLLECTION_REMARK_LEN:
        return None
    reference, payer = remark[:REFERENCE_LEN], remark[REFERENCE_LEN:]
    signatories = [account_bytes(o) for o in others]
    if any(o is None for o in signatories):
        return None
    try:
        multisig = multisig_account_id([signer, *signatories], threshold)  # type: ignore[list-item]
    except BridgeError:
        return None
    if multisig != payment_account_of(reference):
        log.debug("as_multi sweeping into the committee from an account that is not the payment account of its "
                  "remark's reference: not a collection")
        return None
    return PaymentCall(payer=payer, reference=reference, transfers=(), kind="Multisig.as_multi/Utility.batch_all",
                       collected_from=multisig, asset_id=asset_id)


def raw_extrinsic(data: str | bytes) -> bytes:
    """The bytes of one extrinsic as ``chain_getBlock`` lists it (``0x`` hex)."""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    return bytes.fromhex(data[2:] if data[:2] == "0x" else data)


def is_candidate(raw: bytes, committee: bytes) -> bool:
    """Whether an encoded extrinsic may pay ``committee``: every payment :func:`find_payment`
    accepts names the committee as a ``MultiAddress::Id`` transfer ``dest``, which SCALE
    encodes as the 32 raw bytes of the account id, so an extrinsic without those bytes is
    not a payment and need not be decoded at all."""
    return len(committee) == 32 and committee in raw


def is_signed(raw: bytes) -> bool:
    """Whether an encoded extrinsic is signed (its version byte has the top bit set)."""
    try:
        _, k = read_compact(raw, 0)
    except ValueError:
        return False
    return k < len(raw) and bool(raw[k] & 0x80)


def transfers_to(events: list[dict], account: bytes) -> list[tuple[bytes | None, int]]:
    """``(from, amount)`` of the ``Balances.Transfer`` and ``Assets.Transferred`` events to
    ``account`` among one extrinsic's events (see :func:`events_of`); empty if the extrinsic
    failed (amounts of different tokens: for reports only)."""
    if not any(_event_name(e) == ("System", "ExtrinsicSuccess") for e in events):
        return []
    out = []
    for e in events:
        attrs = e.get("attributes")
        if _event_name(e) not in (("Balances", "Transfer"), ("Assets", "Transferred")) or not isinstance(attrs, dict):
            continue
        amount = attrs.get("amount")
        if account_bytes(attrs.get("to")) == account and isinstance(amount, int) and not isinstance(amount, bool):
            out.append((account_bytes(attrs.get("from")), amount))
    return out


def _event_name(ev: dict) -> tuple[str, str]:
    return str(ev.get("module_id", "")), str(ev.get("event_id", ""))


def events_of(events: Iterable[dict], extrinsic_index: int) -> list[dict]:
    """Events emitted while applying extrinsic ``extrinsic_index`` (phase ApplyExtrinsic)."""
    return [e for e in events if e.get("phase") == "ApplyExtrinsic" and e.get("extrinsic_idx") == extrinsic_index]


def confirmed_amount(payment: PaymentCall, events: list[dict], committee: bytes) -> int:
    """Sum of the payment's transfers that its extrinsic's events confirm; 0 if the extrinsic
    failed. ``events`` are the events of this extrinsic only (see :func:`events_of`). For a
    collection: everything its events moved from the payment account to the committee."""
    if not any(_event_name(e) == ("System", "ExtrinsicSuccess") for e in events):
        return 0
    source = payment.collected_from or payment.payer
    moved: list[int] = []
    for e in events:
        attrs = e.get("attributes")
        if not isinstance(attrs, dict):
            continue
        if payment.asset_id is None:
            if _event_name(e) != ("Balances", "Transfer"):
                continue
        elif _event_name(e) != ("Assets", "Transferred") or _asset_id(attrs.get("asset_id")) != payment.asset_id:
            continue
        if account_bytes(attrs.get("from")) == source and account_bytes(attrs.get("to")) == committee:
            amount = attrs.get("amount")
            if isinstance(amount, int) and not isinstance(amount, bool):
                moved.append(amount)
    if payment.collected_from is not None:
        return sum(moved)
    total = 0
    for want in payment.transfers:
        if want in moved:
            moved.remove(want)  # each event confirms one transfer call only
            total += want
    return total


# --- scalecodec decoding of raw chain data (shared by the watcher and the metadata tests) -----
def runtime_from_metadata(metadata_hex: str) -> tuple[RuntimeConfigurationObject, Any]:
    """A scalecodec runtime configuration and decoded metadata from ``state_getMetadata``'s
    answer (V14; scalecodec 1.2.12 does not read V15), for decoding offline."""
    rc = RuntimeConfigurationObject()
    rc.update_type_registry(load_type_registry_preset("core"))
    metadata = rc.create_scale_object("MetadataVersioned", data=ScaleBytes(metadata_hex))
    metadata.decode()
    rc.add_portable_registry(metadata)
    return rc, metadata


def signer_of(raw: bytes) -> bytes | None:
    """The 32-byte account of a signed extrinsic whose address is a ``MultiAddress::Id`` (its
    version byte, then the address), or None."""
    try:
        _, k = read_compact(raw, 0)
    except ValueError:
        return None
    if len(raw) < k + 34 or not raw[k] & 0x80 or raw[k + 1] != 0:
        return None
    return raw[k + 2:k + 34]


def read_compact(data: bytes, pos: int) -> tuple[int, int]:
    """(value, encoded length) of the SCALE compact integer at ``data[pos:]``."""
    if pos >= len(data):
        raise ValueError("compact integer out of range")
    mode = data[pos] & 3
    if mode == 0:
        return data[pos] >> 2, 1
    if mode == 1:
        return int.from_bytes(data[pos:pos + 2], "little") >> 2, 2
    if mode == 2:
        return int.from_bytes(data[pos:pos + 4], "little") >> 2, 4
    n = (data[pos] >> 2) + 4
    return int.from_bytes(data[pos + 1:pos + 1 + n], "little"), 1 + n


def _decode_call_at(rc: RuntimeConfigurationObject, metadata: Any, raw: bytes, pos: int) -> tuple[dict, int]:
    obj = rc.create_scale_object("Call", data=ScaleBytes(bytearray(raw[pos:])), metadata=metadata)
    value = obj.decode(check_remaining=False)
    return value, obj.data.offset


def _call_fields(metadata: Any, module: str, function: str) -> list[tuple[str, str]]:
    pallet = metadata.get_metadata_pallet(module)
    for c in pallet.calls if pallet is not None else ():
        if c.name == function:
            return [(a.name, a.type) for a in c.args]
    raise ValueError(f"no call {module}.{function} in metadata")


def _exact(rc: RuntimeConfigurationObject, metadata: Any, call: dict, raw: bytes) -> dict:
    """``call`` (decoded from exactly ``raw``) with its true hash; batch and proxy calls
    re-split on their bytes, remark arguments as exact ``bytes`` (see module doc)."""
    v = dict(call)
    v["call_hash"] = "0x" + blake2_256(raw).hex()
    module, function = _name(v)
    if module == "System" and function in REMARK_CALLS:
        n, k = read_compact(raw, 2)
        if 2 + k + n != len(raw):
            raise ValueError("remark call length mismatch")
        data = bytes(raw[2 + k:])
        v["call_args"] = [{**a, "value": data} if a.get("name") == "remark" else a for a in v.get("call_args") or []]
    elif (module == "Utility" and function in BATCH_CALLS) or (module, function) in NESTING_CALLS:
        pos, args = 2, []
        for a, (name, type_string) in zip(v.get("call_args") or [], _call_fields(metadata, module, function)):
            if name == "calls":  # Vec<RuntimeCall>
                n, k = read_compact(raw, pos)
                pos += k
                inner = []
                for _ in range(n):
                    value, used = _decode_call_at(rc, metadata, raw, pos)
                    inner.append(_exact(rc, metadata, value, raw[pos:pos + used]))
                    pos += used
                args.append({**a, "value": inner})
            elif name == "call":  # Box<RuntimeCall>, or WrapperKeepOpaque<RuntimeCall> (older as_multi)
                opaque = isinstance(rc.create_scale_object(type_string, metadata=metadata), WrapperKeepOpaque)
                if opaque:
                    n, k = read_compact(raw, pos)
                    pos += k
                value, used = _decode_call_at(rc, metadata, raw, pos)
                if opaque and used != n:
                    raise ValueError(f"{module}.{function}: opaque call length mismatch")
                args.append({**a, "value": _exact(rc, metadata, value, raw[pos:pos + used])})
                pos += used
            else:
                obj = rc.create_scale_object(type_string, data=ScaleBytes(bytearray(raw[pos:])), metadata=metadata)
                obj.decode(check_remaining=False)
                pos += obj.data.offset
                args.append(a)
        if pos != len(raw):
            raise ValueError(f"{module}.{function}: {len(raw) - pos} call bytes left over")
        v["call_args"] = args
    return v


def decode_extrinsic(runtime_config: RuntimeConfigurationObject, metadata: Any, data: str | bytes) -> dict:
    """Decode one extrinsic (hex or bytes, as in ``chain_getBlock``) into its value dict, plus
    ``extrinsic_hash``; batch and proxy calls are made exact (see module doc). Raises
    scalecodec's exceptions (or ValueError) on malformed input."""
    raw = raw_extrinsic(data)
    obj = runtime_config.create_scale_object("Extrinsic", data=ScaleBytes(bytearray(raw)), metadata=metadata)
    value = dict(obj.decode(check_remaining=True))
    value["extrinsic_hash"] = "0x" + blake2_256(bytes(raw)).hex()
    call_obj = obj.value_object.get("call") if isinstance(obj.value_object, dict) else None
    if isinstance(value.get("call"), dict) and call_obj is not None:
        module, function = _name(value["call"])
        if (module == "Utility" and function in BATCH_CALLS) or module in ("Proxy", "System", "Multisig"):
            value["call"] = _exact(runtime_config, metadata, value["call"], bytes(call_obj.get_used_bytes()))
    return value


def events_type_string(metadata: Any) -> str:
    pallet = metadata.get_metadata_pallet("System")
    item = pallet.get_storage_function("Events") if pallet else None
    if item is None:
        raise ValueError("runtime has no System.Events storage")
    return item.get_value_type_string()


def decode_events(runtime_config: RuntimeConfigurationObject, metadata: Any, data: str | None) -> list[dict]:
    """Decode the raw ``System.Events`` storage value of a block into event record dicts."""
    if data is None:
        return []
    obj = runtime_config.create_scale_object(events_type_string(metadata), data=ScaleBytes(data), metadata=metadata)
    return list(obj.decode(check_remaining=True) or [])


def timestamp_ms(extrinsics: Iterable[dict]) -> int | None:
    """``now`` of the block's ``Timestamp.set`` inherent (milliseconds)."""
    for x in extrinsics:
        call = x.get("call") or {}
        if _name(call) == ("Timestamp", "set"):
            now = _args(call).get("now")
            if isinstance(now, int):
                return now
    return None
