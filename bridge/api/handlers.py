"""HTTP handlers of the gateway API.

Every input is validated explicitly and every failure is a typed ``BridgeError`` that the
problem middleware turns into an RFC 9457 response. Money crosses the wire as decimal
strings of base units (JSON integers are accepted on input, floats never are).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from decimal import Decimal

from aiohttp import web
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.api.keys import CLOCK, DB, DOCS, INSTRUCTIONS, METRICS, QUOTE_WRITER, QUOTES, SETTINGS, SIGNER
from bridge.config import Settings
from bridge.errors import ConfigError, Conflict, DepositNotSeen, InputError, NotFound, PriceUnavailable, StorageError
from bridge.hashing import keccak256
from bridge.payments import codes, rules
from bridge.payments.feed import DEFAULT_KEEP_SECONDS
from bridge.payments.late import LateTerms, decide_late
from bridge.pricing.quotes import (
    MAX_AMOUNT,
    MAX_CREDITS,
    ensure_not_expired,
    late_terms_to_json,
    quote_body,
    quote_fields,
    quote_to_json,
    rfc3339,
    terms_to_json,
)
from bridge.storage import late as late_repo
from bridge.storage import observations as obs_repo
from bridge.storage import payments as payments_repo
from bridge.storage import quotes as quotes_repo
from bridge.storage.db import Database
from bridge.storage.payments import PaymentRecord
from bridge.payments.instructions import Instructions
from bridge.types import UINT64_MAX, PaymentTerms, Quote, hex_to_bytes

evm_default = Instructions()


class QuoteUsed(Conflict):
    """The quote belongs to a payment another caller (merchant key or anonymous) opened."""

    code = "quote-used"


class ConcurrentChange(Conflict):
    """A uniqueness race with a concurrent request (same problem type as any conflict)."""

log = logging.getLogger("creditbridge.api")

_DIGITS = re.compile(r"^[0-9]{1,78}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_TOKEN = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")
_CHAIN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_REFERENCE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SEQUENCE = re.compile(r"^(0|[1-9][0-9]{0,19})$")
MAX_STORED_SEQUENCE = 2**63 - 1  # deposit sequences are BIGINT columns: none beyond is ever stored


# --- request parsing ------------------------------------------------------------------------
def _reject_float(s: str):
    raise InputError("numbers must be integers; send amounts as decimal strings of base units")


def _reject_constant(s: str):
    raise InputError(f"{s} is not allowed in JSON")


def _parse_int(s: str) -> int:
    if len(s.lstrip("-")) > 78:
        raise InputError("number too large")
    return int(s)


def _object(pairs: list[tuple[str, object]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise InputError("duplicate keys in JSON object")
    return d


_JSON_TYPE = "application/json; charset=utf-8"  # what web.json_response sends
# built once: ``json.loads`` with hooks builds a new decoder (and scanner) on every call
_DECODER = json.JSONDecoder(parse_float=_reject_float, parse_constant=_reject_constant, parse_int=_parse_int,
                            object_pairs_hook=_object)


async def json_body(request: web.Request) -> dict:
    """The request's JSON object (the app's ``client_max_size`` bounds it: 413 beyond)."""
    return _decode_json(await request.read())


def _decode_json(raw: bytes) -> dict:
    try:  # what json.loads does with bytes: detect UTF-8/16/32, then decode
        data = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InputError("the request body must be a JSON object")
    return data


def _names(names: set[str]) -> str:
    """Field names for an error detail: a few, shortened (they are the client's input)."""
    shown = [n if len(n) <= 32 else n[:32] + "..." for n in sorted(names)[:5]]
    return ", ".join(shown) + (", ..." if len(names) > 5 else "")


def _fields(d: dict, required: set[str], optional: set[str] = frozenset()) -> None:
    extra = set(d) - required - optional
    if extra:
        raise InputError(f"unknown field(s): {_names(extra)}")
    missing = required - set(d)
    if missing:
        raise InputError(f"missing field(s): {', '.join(sorted(missing))}")


def parse_uint(value: object, name: str, maximum: int) -> int:
    """A positive integer from a JSON integer or a decimal string of digits."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be a decimal string or an integer")
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value):
            raise InputError(f"{name} must be a decimal string of base units (digits only)")
        value = int(value)
    if not isinstance(value, int):
        raise InputError(f"{name} must be a decimal string or an integer")
    if value <= 0:
        raise InputError(f"{name} must be positive")
    if value > maximum:
        raise InputError(f"{name} is too large")
    return value


def parse_address(value: object, name: str = "beneficiary") -> bytes:
    """A 20-byte EVM address; mixed case must carry a valid EIP-55 checksum; zero refused."""
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise InputError(f"{name} must be 0x followed by 40 hex digits")
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper():
        h = keccak256(digits.lower().encode()).hex()
        expected = "".join(c.upper() if c.isalpha() and int(h[i], 16) >= 8 else c.lower()
                           for i, c in enumerate(digits.lower()))
        if digits != expected:
            raise InputError(f"{name} has an invalid EIP-55 checksum")
    b = bytes.fromhex(digits)
    if b == bytes(20):
        raise InputError(f"{name} must not be the zero address")
    return b


def _uuid(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) != 36:
        raise InputError(f"{name} must be a UUID")
    try:
        u = uuid.UUID(value)
    except ValueError:
        raise InputError(f"{name} must be a UUID") from None
    return str(u)


def _path_id(request: web.Request, what: str) -> str:
    try:
        return _uuid(request.match_info["id"], "id")
    except InputError:
        raise NotFound(f"no such {what}") from None


# --- storage --------------------------------------------------------------------------------
@asynccontextmanager
async def transaction(db: Database) -> AsyncIterator[AsyncSession]:
    """One transaction; database failures become typed errors (a uniqueness race -> 409)."""
    try:
        async with db.begin() as s:
            yield s
    except IntegrityError:
        raise ConcurrentChange("a concurrent request changed the same object; retry") from None
    except SQLAlchemyError as e:
        log.warning("database error: %s", e.__class__.__name__)
        raise StorageError("the database is unavailable") from None


# --- responses ------------------------------------------------------------------------------
def _now(request: web.Request) -> datetime:
    return request.app[CLOCK]()


def _payable(settings: Settings, symbol: str, chain: str):
    """The non-native token (symbol, chain) a payment is quoted in, or None (the chain's own)."""
    for t in settings.payable_tokens():
        if t.symbol == symbol and t.chain == chain and not t.native:
            return t
    return None


def payment_json(rec: PaymentRecord, settings: Settings, instructions=evm_default,
                 late: list[LateTerms] | None = None) -> dict:
    try:
        chain = settings.chain(rec.chain)
    except ValueError:
        raise ConfigError(f"chain {rec.chain!r} of a payment is no longer configured") from None
    terms = terms_to_json(rec.terms())
    d = {
        "id": rec.id,
        "reference": terms["reference"],
        "state": rec.state,
        "quote_id": rec.quote_id,
        "chain": rec.chain,
        "token": rec.token,
        "amount": str(rec.amount),
        "credits": str(rec.credits),
        "beneficiary": terms["beneficiary"],
        "expires_at": rfc3339(rec.expires_at),
        "created_at": rfc3339(rec.created_at),
        "paid_amount": str(rec.paid_amount),
        "refundable_amount": str(rec.refundable),
        "code": rec.code,
        "instructions": instructions(chain, rec.reference, rec.amount, code=rec.code,
                                     token=_payable(settings, rec.token, rec.chain)),
        "terms": terms,
    }
    if rec.settlement_tx is not None:
        d["settlement"] = {"tx_hash": "0x" + rec.settlement_tx.hex(), "credits": str(rec.credited)}
    if late:
        # what the gateway decided for deposits made after the expiry (see "Late deposits")
        d["late_deposits"] = [{"source": "0x" + lt.source.hex(), "sequence": str(lt.sequence),
                               "amount": str(lt.amount), "decision": lt.decision, "credits": str(lt.credits),
                               "refundable": str(lt.refundable), "reason": lt.reason,
                               "fresh_quote_id": lt.fresh_quote_id} for lt in late]
    return d


async def payment_view(s, payment_id: str) -> tuple[PaymentRecord | None, list[LateTerms]]:
    """A stored payment and the late-deposit decisions made for it (one transaction)."""
    rec = await payments_repo.get_payment(s, payment_id)
    if rec is None:
        return None, []
    return rec, await late_repo.late_decisions_for_payment(s, payment_id)


# --- handlers -------------------------------------------------------------------------------
# The body nearly every quote request sends, {"token": "ETH", "credits": "500"} (or "amount"),
# in either order, any JSON whitespace: matched on the raw bytes instead of decoding JSON.
# Anything else -- "chain", escapes, integers, other keys, a BOM -- goes through json_body, and
# both paths then run the same checks (the regex takes only what those checks would accept
# anyway: a token symbol, decimal digits), so answers and errors are the same either way.
_W = rb"[ \t\n\r]*"
_TOKEN_MEMBER = rb'"token"' + _W + rb":" + _W + rb'"([A-Z][A-Z0-9]{1,9})"'
_NUMBER_MEMBER = rb'"(credits|amount)"' + _W + rb":" + _W + rb'"([0-9]{1,78})"'
_QUOTE_BODIES = (
    re.compile(_W + rb"\{" + _W + _TOKEN_MEMBER + _W + rb"," + _W + _NUMBER_MEMBER + _W + rb"\}" + _W),
    re.compile(_W + rb"\{" + _W + _NUMBER_MEMBER + _W + rb"," + _W + _TOKEN_MEMBER + _W + rb"\}" + _W),
)


def _quote_request(raw: bytes) -> tuple[str, str | None, int | None, int | None]:
    """``(token, chain, credits, amount)`` of a ``POST /v1/quotes`` body, or InputError."""
    m = _QUOTE_BODIES[0].fullmatch(raw)
    if m is not None:
        token, field, number = m.group(1, 2, 3)
    elif (m := _QUOTE_BODIES[1].fullmatch(raw)) is not None:
        field, number, token = m.group(1, 2, 3)
    else:
        return _quote_request_generic(_decode_json(raw))
    if field == b"credits":
        return token.decode("ascii"), None, parse_uint(number.decode("ascii"), "credits", MAX_CREDITS), None
    return token.decode("ascii"), None, None, parse_uint(number.decode("ascii"), "amount", MAX_AMOUNT)


def _quote_request_generic(body: dict) -> tuple[str, str | None, int | None, int | None]:
    if "credits" in body and "amount" in body:
        raise InputError("give exactly one of credits and amount")
    _fields(body, {"token"}, {"credits", "amount", "chain"})
    token = body["token"]
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise InputError("token must be a token symbol such as ETH")
    chain = body.get("chain")
    if "chain" in body and (not isinstance(chain, str) or not _CHAIN.fullmatch(chain)):
        raise InputError("chain must be a chain name such as ethereum")
    credits = amount = None
    if "credits" in body:
        credits = parse_uint(body["credits"], "credits", MAX_CREDITS)
    elif "amount" in body:
        amount = parse_uint(body["amount"], "amount", MAX_AMOUNT)
    else:
        raise InputError("give one of credits and amount")
    return token, chain, credits, amount


async def create_quote(request: web.Request) -> web.Response:
    token, chain, credits, amount = _quote_request(await request.read())
    app = request.app
    parts = app[QUOTES].quote_parts(token, credits=credits, amount=amount, now=app[CLOCK](), chain=chain)
    if parts is None:  # a plain price source: the quote is made by awaiting it
        quote = await issue_quote(app, token, credits=credits, amount=amount, now=app[CLOCK](), chain=chain)
        quote_id, body = quote.id, quote_body(quote)
    else:  # the busiest endpoint: the writer signs, stores and serializes the quote by batch
        template, quote_id = parts[0], parts[1]
        try:  # inline, not through _stored: one coroutine less on the busiest path
            body = await app[QUOTE_WRITER].add_parts(parts)
        except SQLAlchemyError as e:
            raise _storage_error(e) from None
        app[METRICS].quote_issued(template.token, template.chain)
    return web.Response(body=body, status=201,
                        headers={"Location": f"/v1/quotes/{quote_id}", "Content-Type": _JSON_TYPE})


async def _stored(stored: Awaitable):
    """The quote writer's answer, its database errors as the API's."""
    try:
        return await stored
    except SQLAlchemyError as e:
        raise _storage_error(e) from None


def _storage_error(e: SQLAlchemyError) -> Exception:
    if isinstance(e, IntegrityError):
        return ConcurrentChange("a concurrent request changed the same object; retry")
    log.warning("database error: %s", e.__class__.__name__)
    return StorageError("the database is unavailable")


async def issue_quote(app: web.Application, token: str, *, credits: int | None = None, amount: int | None = None,
                      now: datetime, chain: str | None = None) -> Quote:
    """Make a quote, sign and store it (durable before it is returned: the group-commit
    writer signs each batch with one signature over its Merkle root and answers after the
    commit). ``POST /v1/quotes`` and the late deposits' fresh quotes. ``chain`` may be omitted
    when ``token`` is payable on one chain only."""
    quote = await app[QUOTES].make_quote(token, credits=credits, amount=amount, now=now, chain=chain, sign=False)
    quote = await _stored(app[QUOTE_WRITER].add(quote))
    app[METRICS].quote_issued(quote.token, quote.chain)
    return quote


async def get_quote(request: web.Request) -> web.Response:
    quote_id = _path_id(request, "quote")
    async with transaction(request.app[DB]) as s:
        quote = await quotes_repo.get_quote(s, quote_id)
    if quote is None:
        raise NotFound("no such quote")
    return web.json_response(quote_to_json(quote))


async def create_payment(request: web.Request) -> web.Response:
    """Create the payment (invoice) for a quote. Idempotent per quote: the same caller (the
    same merchant key, or anonymous again) asking again with the same beneficiary gets the
    existing payment (200), another beneficiary a 409 ``conflict``; any other caller a 409
    ``quote-used`` (a quote id is public: it must not reveal or hand over someone's payment)."""
    from bridge.api.auth import authenticate

    # a merchant's key (optional) makes the payment the merchant's: its webhooks get the events
    merchant = await authenticate(request, request.app[DB], role="merchant", optional=True)
    body = await json_body(request)
    _fields(body, {"quote_id", "beneficiary"})
    quote_id = _uuid(body["quote_id"], "quote_id")
    beneficiary = parse_address(body["beneficiary"])
    try:
        return await _create_payment(request, quote_id, beneficiary, merchant)
    except ConcurrentChange:
        # two requests for one quote at once (a dApp retrying a request whose answer it did not
        # get): the loser of the unique quote index asks again, and is answered like any repeat
        # (the existing payment, or quote-used / conflict) instead of a bare "retry"
        return await _create_payment(request, quote_id, beneficiary, merchant)


async def _create_payment(request: web.Request, quote_id: str, beneficiary: bytes, merchant) -> web.Response:
    app = request.app
    now = _now(request)
    async with transaction(app[DB]) as s:
        quote = await quotes_repo.get_quote(s, quote_id)
        if quote is None:
            raise NotFound("no such quote")
        existing = await payments_repo.get_payment_by_quote(s, quote_id)
        if existing is not None:
            if existing.merchant_id != (merchant.key_id if merchant else None):
                # another merchant's (or an anonymous) payment: never answer it to this caller
                raise QuoteUsed("the quote is used by another payment already; ask for a new quote")
            if existing.beneficiary != beneficiary:
                raise Conflict("the quote is used by another payment already")
            return web.json_response(payment_json(existing, app[SETTINGS], app[INSTRUCTIONS]), status=200,
                                     headers={"Location": f"/v1/payments/{existing.id}"})
        ensure_not_expired(quote, now)
        code, reference = await _new_code(s)
        terms = app[SIGNER].sign_terms(PaymentTerms(
            payment_id=str(uuid.uuid4()),
            reference=reference,
            beneficiary=beneficiary,
            quote_id=quote.id,
            chain=quote.chain,
            token=quote.token,
            amount=quote.amount,
            credits=quote.credits,
            expires_at=quote.expires_at,
        ))
        rec = await payments_repo.add_payment(s, terms, now=now, code=code,
                                              merchant_id=merchant.key_id if merchant else None)
    app[METRICS].payments_created.labels(rec.token, rec.chain).inc()
    return web.json_response(payment_json(rec, app[SETTINGS], app[INSTRUCTIONS]), status=201,
                             headers={"Location": f"/v1/payments/{rec.id}"})


async def _new_code(s: AsyncSession, attempts: int = 5) -> tuple[str, bytes]:
    """A fresh payment code and its reference (``sha256(code)``); drawn again on the unlikely
    collision with a stored code or reference (60 random bits: a concurrent duplicate is refused
    by the unique indexes and answered 409, and the client retries)."""
    for _ in range(attempts):
        code = codes.new_code()
        reference = codes.reference_for_code(code)
        if not await payments_repo.code_or_reference_taken(s, code, reference):
            return code, reference
    raise Conflict("could not draw an unused payment code; retry")


async def get_payment(request: web.Request) -> web.Response:
    payment_id = _path_id(request, "payment")
    async with transaction(request.app[DB]) as s:
        rec, late = await payment_view(s, payment_id)
    if rec is None:
        raise NotFound("no such payment")
    return web.json_response(payment_json(rec, request.app[SETTINGS], request.app[INSTRUCTIONS], late))


FEED_DEFAULT_LIMIT = 500
FEED_MAX_LIMIT = 1000
_QUERY_INT = re.compile(r"^(0|[1-9][0-9]{0,17})$")


def _query_int(request: web.Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _QUERY_INT.fullmatch(raw):
        raise InputError(f"{name} must be a non-negative decimal integer")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise InputError(f"{name} must be between {minimum} and {maximum}")
    return value


async def get_payment_references(request: web.Request) -> web.Response:
    """The reference feed (``bridge/payments/feed.py``): the references of one source chain's
    payments whose expiry is less than 30 days ago, ascending by an increasing cursor. Collectors
    of per-payment addresses page through it with ``after`` = the last ``next``."""
    settings = request.app[SETTINGS]
    chain = request.query.get("chain")
    names = {c.name for c in settings.source_chains()}
    if not chain:
        raise InputError("chain is required (a source chain's name)")
    if chain not in names:
        raise InputError("chain must be a configured source chain: " + _names(names))
    after = _query_int(request, "after", 0, 0, UINT64_MAX)
    limit = _query_int(request, "limit", FEED_DEFAULT_LIMIT, 1, FEED_MAX_LIMIT)
    since = _now(request) - timedelta(seconds=DEFAULT_KEEP_SECONDS)
    async with transaction(request.app[DB]) as s:
        rows = await payments_repo.references_after(s, chain, after, limit, expired_since=since)
    return web.json_response({
        "entries": [{"cursor": r.cursor, "reference": "0x" + r.reference.hex(),
                     "expires_at": int(r.expires_at.timestamp())} for r in rows],
        "next": rows[-1].cursor if rows else after,
    })


async def get_payment_by_code(request: web.Request) -> web.Response:
    """A payment by its code (what a payer quotes from a TON comment or a support request)."""
    code = request.match_info["code"].upper()
    if not codes.is_code(code):
        raise NotFound("no such payment")
    async with transaction(request.app[DB]) as s:
        rec = await payments_repo.get_payment_by_code(s, code)
        late = [] if rec is None else await late_repo.late_decisions_for_payment(s, rec.id)
    if rec is None:
        raise NotFound("no such payment")
    return web.json_response(payment_json(rec, request.app[SETTINGS], request.app[INSTRUCTIONS], late))


def _path_bytes32(request: web.Request, name: str) -> bytes:
    raw = request.match_info[name]
    if not _REFERENCE.fullmatch(raw):
        raise InputError(f"{name} must be 0x followed by 64 hex digits")
    return hex_to_bytes(raw, 32, what=name)


async def get_terms_by_reference(request: web.Request) -> web.Response:
    """The gateway-signed terms of a payment reference (what signer nodes verify)."""
    reference = _path_bytes32(request, "reference")
    async with transaction(request.app[DB]) as s:
        rec = await payments_repo.get_payment_by_reference(s, reference)
    if rec is None:
        raise NotFound("no payment has this reference")
    return web.json_response(terms_to_json(rec.terms()))


async def get_late_terms(request: web.Request) -> web.Response:
    """The gateway-signed decision on a late deposit of a payment (``bridge/payments/late.py``):
    credit it at a fresh quote or hold it for refund. Signer nodes ask for it when a deposit is
    late; the first decision for a deposit is stored and answered to everyone after."""
    reference = _path_bytes32(request, "reference")
    source = _path_bytes32(request, "source")
    raw = request.match_info["sequence"]
    if not _SEQUENCE.fullmatch(raw) or int(raw) > UINT64_MAX:
        raise InputError("sequence must be a decimal integer below 2**64")
    sequence = int(raw)
    app = request.app
    grace = app[SETTINGS].payments.late_grace_seconds
    async with transaction(app[DB]) as s:
        rec = await payments_repo.get_payment_by_reference(s, reference)
        if rec is None:
            raise NotFound("no payment has this reference")
        stored = None
        if sequence <= MAX_STORED_SEQUENCE:
            stored = await obs_repo.observation_by_deposit(s, source, sequence)
        if stored is None:
            raise DepositNotSeen("the gateway has not observed this deposit as final (yet); ask again later")
        obs = stored.observation
        if obs.reference != rec.reference:
            raise Conflict("the deposit carries another payment reference")
        if obs.chain != rec.chain or obs.token != rec.token:
            raise Conflict("the deposit is not on the payment's chain and token (invalid, not late)")
        if obs.timestamp <= rules.deadline(rec.expires_at, grace):
            raise Conflict("the deposit is not late: its block time is not after the payment's deadline")
        decided = await late_repo.get_late_decision(s, source, sequence)
        others = sum(1 for o in await obs_repo.observations_by_reference(s, reference)
                     if o.observation.deposit_id != (source, sequence))
    if decided is None:
        decided = await _decide_late(app, rec, obs.source, obs.sequence, obs.amount, obs.timestamp, others,
                                     _now(request))
    return web.json_response(late_terms_to_json(decided))


async def _decide_late(app: web.Application, rec: PaymentRecord, source: bytes, sequence: int, amount: int,
                       block_time: int, others: int, now: datetime) -> LateTerms:
    """Decide a late deposit now, sign and store the decision; the stored one (first write wins)."""
    tolerance = app[SETTINGS].payments.late_tolerance_bps
    fresh: Quote | None = None
    no_quote = ""
    if tolerance > 0 and others == 0:  # a fresh quote could change the outcome: make a real one
        try:
            fresh = await issue_quote(app, rec.token, credits=rec.credits, now=now, chain=rec.chain)
        except PriceUnavailable as e:
            log.info("late deposit of payment %s: no fresh quote: %s", rec.id, e.detail)
        except InputError as e:  # e.g. the token is no longer payable, or below its minimum now
            no_quote = f"no fresh quote ({e.detail})"[:200]
    d = decide_late(terms_amount=rec.amount, terms_credits=rec.credits, deposit_amount=amount,
                    other_deposits=others, fresh_amount=None if fresh is None else fresh.amount,
                    tolerance_bps=tolerance)
    lt = app[SIGNER].sign_late_terms(LateTerms(
        payment_id=rec.id, reference=rec.reference, source=source, sequence=sequence, amount=amount,
        block_time=block_time, decision=d.decision, credits=d.credits, counted=d.counted, refundable=d.refundable,
        fresh_quote_id="" if fresh is None else fresh.id, fresh_amount=None if fresh is None else fresh.amount,
        tolerance_bps=tolerance, reason=no_quote or d.reason,  # no_quote: only when d held for want of a price
        created_at=now.replace(microsecond=0),
    ))
    async with transaction(app[DB]) as s:
        stored = await late_repo.add_late_decision(s, lt)
    log.info("late deposit %s/%d of payment %s: %s (%s; credits %d, refundable %d)", source.hex()[:16], sequence,
             rec.id, stored.decision, stored.reason, stored.credits, stored.refundable)
    return stored


async def gateway(request: web.Request) -> web.Response:
    signer = request.app[SIGNER]
    return web.json_response({"key_id": signer.key_id, "public_key": signer.public_key})


async def health(request: web.Request) -> web.Response:
    async with transaction(request.app[DB]) as s:
        await quotes_repo.ping(s)
    manifest = getattr(request.app[SETTINGS], "manifest_data", None)
    return web.json_response({"status": "ok", **({"manifest": manifest.hash} if manifest is not None else {})})


async def metrics(request: web.Request) -> web.Response:
    return request.app[METRICS].render()


async def tokens(request: web.Request) -> web.Response:
    return web.json_response(request.app[QUOTES].token_list())


async def prices(request: web.Request) -> web.Response:
    return web.json_response(await request.app[QUOTES].prices(_now(request)))


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[DOCS].spec_json, content_type="application/json")


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=request.app[DOCS].html, content_type="text/html")
