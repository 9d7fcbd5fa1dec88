"""The gateway's OpenAPI 3.1 document (hand-written) and its human-readable HTML rendering.

``build_spec(tokens)`` returns the document served at ``GET /openapi.json``; ``render_docs``
turns it into the plain HTML page at ``GET /docs`` (server-side, no JavaScript, no CDN).
The schemas say exactly what the handlers accept and answer, problems included:
``tests/integration/api/test_schemathesis.py`` runs schemathesis against a live server to
keep them honest.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Any

from bridge.pricing.quotes import MAX_AMOUNT, MAX_CREDITS

PROBLEM = "application/problem+json"
JSON = "application/json"

_UINT_STR = r"^0*[1-9][0-9]*$"  # a positive integer as decimal digits (base units, credits)
_UINT_OUT = r"^(0|[1-9][0-9]*)$"  # how the API writes integers: canonical decimal digits
_DECIMAL_OUT = r"^(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$"  # plain positional decimals, no trailing zeros
_HEX32 = r"^0x[0-9a-f]{64}$"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _problem(description: str) -> dict:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}}


def _json(description: str, schema: dict, headers: dict | None = None, links: dict | None = None) -> dict:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    if links:
        out["links"] = links
    return out


# How a client follows the API from one answer to the next (OpenAPI links).
_QUOTE_LINKS = {
    "GetQuote": {"operationId": "getQuote", "parameters": {"id": "$response.body#/id"},
                 "description": "The stored quote."},
    "PayQuote": {"operationId": "createPayment",
                 "requestBody": {"quote_id": "$response.body#/id",
                                 "beneficiary": "0x00000000000000000000000000000000000000b1"},
                 "description": "Open a payment for this quote."},
}
_PAYMENT_LINKS = {
    "GetPayment": {"operationId": "getPayment", "parameters": {"id": "$response.body#/id"},
                   "description": "The payment and its state."},
    "GetTerms": {"operationId": "getTermsByReference", "parameters": {"reference": "$response.body#/reference"},
                 "description": "The signed terms, as signer nodes fetch them."},
}


_RATE_LIMITED = {
    "description": "Too many requests from this client (problem `rate-limited`); retry after `Retry-After` seconds.",
    "headers": {"Retry-After": {"description": "Seconds until a request is allowed again.",
                                "schema": {"type": "integer", "minimum": 1}}},
    "content": {PROBLEM: {"schema": _ref("Problem")}},
}
_LOCATION = {"Location": {"description": "Path of the created object.", "schema": {"type": "string"}}}
_TOO_LARGE = _problem("The request body is larger than 64 KiB (problem `http-413`).")
_UNAVAILABLE_DB = _problem("The database is unavailable (problem `storage-error`); retry later.")


def _uint_schema(maximum: int, what: str) -> dict:
    return {
        "description": f"{what}: a positive integer, as a decimal string (preferred) or a JSON integer.",
        "oneOf": [
            {"type": "string", "pattern": _UINT_STR, "maxLength": 78},
            {"type": "integer", "minimum": 1, "maximum": maximum},
        ],
    }


def _schemas(tokens: list[str]) -> dict[str, Any]:
    token = {"type": "string", "pattern": "^[A-Z]{2,10}$", "description": "Token symbol."}
    if tokens:
        token = {**token, "enum": tokens}
    uint_out = {"type": "string", "pattern": _UINT_OUT}
    dec_out = {"type": "string", "pattern": _DECIMAL_OUT}
    ts = {"type": "string", "format": "date-time"}
    nullable_ts = {"type": ["string", "null"], "format": "date-time"}
    health = {
        "type": "object",
        "required": ["name", "last_success_at", "last_error", "last_error_code", "last_error_at",
                     "consecutive_failures", "failures"],
        "properties": {
            "name": {"type": "string"},
            "last_success_at": nullable_ts,
            "last_error": {"type": ["string", "null"]},
            "last_error_code": {"type": ["string", "null"]},
            "last_error_at": nullable_ts,
            "consecutive_failures": {"type": "integer", "minimum": 0},
            "failures": {"type": "integer", "minimum": 0},
        },
    }
    nullable_uint = {"type": ["string", "null"], "pattern": _UINT_OUT}
    treasury_chain = {
        "type": "object",
        "required": ["quorum", "agreeing", "token", "treasury", "earned", "swept", "pending", "signed_unpaid",
                     "stranded", "last_sweep", "disagreeing_signers", "missing_signers"],
        "properties": {
            "quorum": {"type": "boolean", "description": "At least `threshold` signers agree; if not, every "
                                                         "figure is null."},
            "agreeing": {"type": "integer", "minimum": 0},
            "token": {"type": ["string", "null"]},
            "treasury": {"type": ["string", "null"], "description": "The committee's treasury address."},
            "earned": {**nullable_uint, "description": "Earned at the final settlement block."},
            "swept": {**nullable_uint, "description": "Paid to the treasury by the custody."},
            "pending": {**nullable_uint, "description": "Earned, not paid to the treasury yet."},
            "signed_unpaid": {**nullable_uint, "description": "Sweeps signed, waiting for payment."},
            "stranded": {**nullable_uint, "description": "Below-one-credit remainders kept in custody."},
            "last_sweep": {"oneOf": [{"type": "null"}, {
                "type": "object",
                "properties": {
                    "release_id": {"type": "string"}, "epoch": {"type": "integer"},
                    "cutoff": {"type": "integer"}, "amount": uint_out,
                    "state": {"type": "string", "enum": ["signed", "paid"]},
                    "tx": {"type": ["string", "null"], "description": "The custody's payout transaction."},
                    "block": {"type": ["integer", "null"]}, "paid_at": nullable_ts}}]},
            "disagreeing_signers": {"type": "array", "items": {"type": "string"}},
            "missing_signers": {"type": "array", "items": {"type": "string"}},
        },
    }
    return {
        "TreasuryView": {
            "type": "object",
            "description": "The committee's treasury sweeps as `threshold` signers report them.",
            "required": ["time", "threshold", "signers", "unreachable", "chains"],
            "properties": {
                "time": ts,
                "threshold": {"type": "integer", "minimum": 1},
                "signers": {"type": "integer", "minimum": 0},
                "unreachable": {"type": "array", "items": {"type": "string"}},
                "chains": {"type": "object", "additionalProperties": treasury_chain},
            },
        },
        "Problem": {
            "type": "object",
            "description": "An RFC 9457 problem document. `type` ends with the stable error code.",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string", "format": "uri",
                         "examples": ["https://creditbridge.dev/problems/price-unavailable"]},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
            },
        },
        "QuoteRequest": {
            "type": "object",
            "description": "Give the token and exactly one of `credits` (credits to buy) and `amount` "
                           "(base units to pay). `chain` names the chain the token is paid on; it may be "
                           "omitted when the token is payable on one chain only (`GET /v1/tokens`).",
            "required": ["token"],
            "properties": {
                "token": token,
                "chain": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$",
                          "description": "Chain name (e.g. polkadot); needed when the token is payable on "
                                         "several chains."},
                "credits": _uint_schema(MAX_CREDITS, "Credits to buy"),
                "amount": _uint_schema(MAX_AMOUNT, "Base units of the token to pay"),
            },
            "additionalProperties": False,
            "oneOf": [{"required": ["credits"]}, {"required": ["amount"]}],
            "examples": [{"token": "ETH", "credits": "500"}, {"token": "DOT", "amount": "10000000000"},
                         {"token": "USDT", "chain": "polkadot", "credits": "300"}],
        },
        "Quote": {
            "type": "object",
            "description": "A quote signed by the gateway's Ed25519 key: `amount` base units of `token` "
                           "buy `credits` until `expires_at`. The amount is rounded up, credits down.",
            "required": ["id", "token", "chain", "amount", "credits", "rate", "credit_price_usd",
                         "created_at", "expires_at", "key_id", "sources", "signature"],
            "properties": {
                "id": {"type": "string", "format": "uuid",
                       "description": "A UUID of version 7 (time-ordered, 74 random bits); treat it as opaque"},
                "token": {"type": "string"},
                "chain": {"type": "string", "description": "Name of the chain the token is paid on."},
                "amount": {**uint_out, "description": "Base units to pay."},
                "credits": {**uint_out, "description": "Credits bought."},
                "rate": {**dec_out, "description": "USD per whole token (the aggregated price)."},
                "credit_price_usd": {**dec_out, "description": "USD per credit, spread included."},
                "created_at": ts,
                "expires_at": ts,
                "key_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "sources": {"type": "array", "items": {"type": "string"},
                            "description": "The price sources behind `rate`."},
                "signature": {"type": "string", "pattern": "^[0-9a-f]{128}$",
                              "description": "Ed25519 signature (hex): with `proof`, of "
                                             "`creditbridge/quote-batch/v1\\n` + the 32 root bytes; without "
                                             "(quotes issued before batched signing), of the canonical quote "
                                             "bytes. See docs/quotes.md."},
                "proof": {
                    "type": "object",
                    "description": "The quote's place in the signed batch: `root` of the batch's Merkle "
                                   "tree (SHA-256, sorted pairs) and the sibling hashes from the quote's "
                                   "leaf up to it. Verify: leaf = sha256(0x00 + canonical quote bytes); for "
                                   "each hash s in `path`: h = sha256(0x01 + min(h, s) + max(h, s)); h must "
                                   "equal `root`.",
                    "required": ["root", "path"],
                    "properties": {
                        "root": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        "path": {"type": "array", "maxItems": 64,
                                 "items": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
                    },
                },
            },
        },
        "PaymentRequest": {
            "type": "object",
            "required": ["quote_id", "beneficiary"],
            "properties": {
                "quote_id": {"type": "string", "format": "uuid"},
                "beneficiary": {
                    "description": "Settlement-chain address credited: all lower case, all upper case, or "
                                   "mixed case with a valid EIP-55 checksum; not the zero address.",
                    "anyOf": [{"type": "string", "pattern": "^0x[0-9a-f]{40}$"},
                              {"type": "string", "pattern": "^0x[0-9A-F]{40}$"},
                              {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}],
                },
            },
            "additionalProperties": False,
        },
        "PaymentTerms": {
            "type": "object",
            "description": "The gateway-signed terms of a payment (what committee signers verify).",
            "required": ["payment_id", "reference", "beneficiary", "quote_id", "chain", "token", "amount",
                         "credits", "expires_at", "key_id", "signature"],
            "properties": {
                "payment_id": {"type": "string", "format": "uuid"},
                "reference": {"type": "string", "pattern": _HEX32},
                "beneficiary": {"type": "string", "pattern": "^0x[0-9a-f]{40}$"},
                "quote_id": {"type": "string", "format": "uuid"},
                "chain": {"type": "string"},
                "token": {"type": "string"},
                "amount": uint_out,
                "credits": uint_out,
                "expires_at": ts,
                "key_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "signature": {"type": "string", "pattern": "^[0-9a-f]{128}$"},
            },
        },
        "LateTerms": {
            "type": "object",
            "description": "The gateway-signed decision on one late deposit (block time after `expires_at` "
                           "+ grace) of a payment: `credit` it at a fresh quote (the price of the quoted "
                           "credits moved at most `tolerance_bps`, and it is the payment's only deposit) or "
                           "`hold` it for refund. Signed like the terms (domain `creditbridge/late-terms/v1`); "
                           "`counted` + `refundable` = `amount`.",
            "required": ["payment_id", "reference", "source", "sequence", "amount", "block_time", "decision",
                         "credits", "counted", "refundable", "fresh_quote_id", "fresh_amount", "tolerance_bps",
                         "reason", "created_at", "key_id", "signature"],
            "properties": {
                "payment_id": {"type": "string", "format": "uuid"},
                "reference": {"type": "string", "pattern": _HEX32},
                "source": {"type": "string", "pattern": _HEX32},
                "sequence": uint_out,
                "amount": {**uint_out, "description": "The deposit's amount, base units."},
                "block_time": {**uint_out, "description": "The deposit's block time, unix seconds."},
                "decision": {"type": "string", "enum": ["credit", "hold"]},
                "credits": {**uint_out, "description": "Credits for the deposit (0 when held)."},
                "counted": {**uint_out, "description": "Base units counted at the fresh quote."},
                "refundable": {**uint_out, "description": "Base units held for refund."},
                "fresh_quote_id": {"type": "string", "description": "The stored fresh quote (a UUID), or "
                                                                    "empty when none was made."},
                "fresh_amount": {"type": "string", "pattern": r"^(|0|[1-9][0-9]*)$",
                                 "description": "What the quoted credits cost at the fresh quote; empty "
                                                "when there was no fresh price."},
                "tolerance_bps": uint_out,
                "reason": {"type": "string"},
                "created_at": ts,
                "key_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "signature": {"type": "string", "pattern": "^[0-9a-f]{128}$"},
            },
        },
        "Instructions": {
            "type": "object",
            "description": "What the payer's wallet must do; the fields depend on the chain family. "
                           "evm: `chain_id`, `contract`, `method` (`lock(bytes32)`), `reference`, `value`; "
                           "substrate: `to`, `amount`, `remark`; ton: `contract`, `amount`, `body`, `link`. "
                           "Every family also gives `transfer`: a plain transfer any wallet can send that pays "
                           "the payment (send exactly `amount` base units of the payment's token to `to`, with "
                           "the text comment `comment` when it is not null: TON), and `uri`, the wallet link "
                           "of that transfer (EIP-681 `ethereum:<to>@<chainId>?value=<wei>`, "
                           "`ton://transfer/<lock>?amount=<n>&text=<code>`, or the Asset Hub payment address) "
                           "that the checkout page's QR code carries. The call-based fields stay for wallets "
                           "that can make the call.",
            "required": ["chain"],
            "properties": {
                "chain": {"type": "string"},
                "transfer": {
                    "type": "object",
                    "required": ["to", "amount", "comment"],
                    "properties": {
                        "to": {"type": "string", "description": "The address to send to: the payment's own "
                                                                "deposit address (Ethereum, Asset Hub) or the "
                                                                "lock (TON)."},
                        "amount": uint_out,
                        "comment": {"type": ["string", "null"], "description": "The text comment the "
                                                                              "transfer must carry (TON: the "
                                                                              "payment code), or null."},
                        "payload": {"type": "string", "description": "TON only: base64 BOC of the message "
                                                                     "body to attach (the comment cell), as "
                                                                     "TON Connect's `payload`."},
                    },
                },
                "uri": {"type": "string", "description": "The wallet link (QR code) of the plain transfer."},
                "chain_id": {"type": "integer"},
                "contract": {"type": "string"},
                "method": {"type": "string"},
                "reference": {"type": "string"},
                "value": uint_out,
                "amount": uint_out,
            },
        },
        "ReferenceFeed": {
            "type": "object",
            "required": ["entries", "next"],
            "properties": {
                "entries": {"type": "array", "items": {
                    "type": "object",
                    "required": ["cursor", "reference", "expires_at"],
                    "properties": {
                        "cursor": {"type": "integer", "minimum": 1},
                        "reference": {"type": "string", "pattern": _HEX32},
                        "expires_at": {"type": "integer", "description": "The payment's expiry, unix seconds."},
                    },
                }},
                "next": {"type": "integer", "minimum": 0, "description": "The `after` of the next page: the "
                                                                        "last entry's cursor, or `after` "
                                                                        "when the page is empty."},
            },
        },
        "Payment": {
            "type": "object",
            "required": ["id", "reference", "state", "quote_id", "chain", "token", "amount", "credits",
                         "beneficiary", "expires_at", "created_at", "paid_amount", "instructions", "terms"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "reference": {"type": "string", "pattern": _HEX32},
                "code": {"type": ["string", "null"], "pattern": "^CB[0-9A-HJKMNP-TV-Z]{12}$",
                         "description": "The payment code: the text comment of a TON plain transfer; "
                                        "`reference` is `sha256(code)`. Null for payments made before codes."},
                "state": {"type": "string", "description": "new, seen, confirmed, credited, expired, "
                                                           "underpaid, overpaid, late or invalid"},
                "quote_id": {"type": "string", "format": "uuid"},
                "chain": {"type": "string"},
                "token": {"type": "string"},
                "amount": uint_out,
                "credits": uint_out,
                "beneficiary": {"type": "string", "pattern": "^0x[0-9a-f]{40}$"},
                "expires_at": ts,
                "created_at": ts,
                "paid_amount": uint_out,
                "refundable_amount": {**uint_out, "description": "Base units held for refund (overpaid part, "
                                                                 "late or invalid deposits)."},
                "instructions": _ref("Instructions"),
                "terms": _ref("PaymentTerms"),
                "late_deposits": {
                    "type": "array",
                    "description": "The gateway's decision for each deposit made after the expiry: "
                                   "`credit` at a fresh quote (`credits`, `refundable` remainder) or `hold` "
                                   "(all refundable), with the reason.",
                    "items": {
                        "type": "object",
                        "required": ["source", "sequence", "amount", "decision", "credits", "refundable", "reason",
                                     "fresh_quote_id"],
                        "properties": {
                            "source": {"type": "string", "pattern": _HEX32}, "sequence": uint_out,
                            "amount": uint_out, "decision": {"type": "string", "enum": ["credit", "hold"]},
                            "credits": uint_out, "refundable": uint_out, "reason": {"type": "string"},
                            "fresh_quote_id": {"type": "string"},
                        },
                    },
                },
                "settlement": {
                    "type": "object",
                    "required": ["tx_hash", "credits"],
                    "properties": {"tx_hash": {"type": "string", "pattern": _HEX32}, "credits": uint_out},
                },
            },
        },
        "Token": {
            "type": "object",
            "description": "A payable token: the pair (`symbol`, `chain`). A native token (ETH, DOT, KSM, TON) "
                           "has none of `contract`, `asset_id`, `jetton_master`; a non-native one has exactly "
                           "the one its chain's family uses.",
            "required": ["symbol", "chain", "decimals", "native", "min_amount"],
            "properties": {
                "symbol": {"type": "string"},
                "chain": {"type": "string"},
                "decimals": {"type": "integer", "minimum": 0},
                "native": {"type": "boolean", "description": "The chain's own currency."},
                "contract": {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$",
                             "description": "ERC-20 contract (EVM chains)."},
                "asset_id": {"type": "integer", "minimum": 0,
                             "description": "`pallet_assets` asset id (Polkadot Hub, Kusama Asset Hub)."},
                "jetton_master": {"type": "string", "description": "TEP-74 jetton master address (TON)."},
                "peg_usd": {**dec_out, "description": "A stablecoin's peg in USD (quotes still use its measured "
                                                      "price; outside its band they are refused)."},
                "min_amount": {**uint_out, "description": "Smallest quotable amount, in base units."},
            },
            "additionalProperties": False,
        },
        "SourceHealth": health,
        "Prices": {
            "type": "object",
            "description": "Aggregated USD prices (median of the fresh sources, after the quorum and "
                           "deviation guards) and the health of every source.",
            "required": ["as_of", "last_refresh_at", "min_sources", "max_deviation", "prices", "sources"],
            "properties": {
                "as_of": ts,
                "last_refresh_at": nullable_ts,
                "min_sources": {"type": "integer", "minimum": 1},
                "max_deviation": {"type": "string"},
                "prices": {"type": "object", "additionalProperties": _ref("Price")},
                "sources": {"type": "array", "items": {
                    "allOf": [_ref("SourceHealth")],
                    "type": "object",
                    "required": ["max_age_seconds"],
                    "properties": {
                        "max_age_seconds": {"type": "integer", "minimum": 0},
                        "inner": {"type": "array", "items": _ref("SourceHealth")},
                    },
                }},
            },
        },
        "Price": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["available", "price_usd", "as_of", "sources"],
                    "properties": {
                        "available": {"const": True},
                        "price_usd": {"type": "string"},
                        "as_of": ts,
                        "sources": {"type": "array", "items": {
                            "type": "object",
                            "required": ["name", "price_usd", "age_seconds"],
                            "properties": {
                                "name": {"type": "string"},
                                "price_usd": {"type": "string"},
                                "age_seconds": {"type": "integer", "minimum": 0},
                                "max_age_seconds": {"type": "integer", "minimum": 0},
                            },
                        }},
                    },
                },
                {
                    "type": "object",
                    "required": ["available", "code", "reason"],
                    "properties": {
                        "available": {"const": False},
                        "code": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
            ],
        },
        "Gateway": {
            "type": "object",
            "required": ["key_id", "public_key"],
            "properties": {
                "key_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "public_key": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            },
        },
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    }


def build_spec(tokens: Iterable[str] = ()) -> dict[str, Any]:
    """The OpenAPI 3.1 document; ``tokens`` (the payable ones) become the token enum."""
    tokens = list(tokens)
    quote_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    payment_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    reference = {"name": "reference", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}}
    paths: dict[str, Any] = {
        "/v1/tokens": {"get": {
            "operationId": "listTokens",
            "summary": "The payable tokens",
            "description": "Each token the gateway accepts, the chain it is paid on, its decimals, what "
                           "names it on that chain (`contract`, `asset_id` or `jetton_master`; none for a "
                           "native token) and the minimum amount of a quote (base units). A symbol may be "
                           "listed once per chain that offers it (USDT).",
            "responses": {"200": _json("The tokens.", {"type": "array", "items": _ref("Token")}),
                          "429": _RATE_LIMITED},
        }},
        "/v1/prices": {"get": {
            "operationId": "getPrices",
            "summary": "Current aggregated prices",
            "description": "The price each quote would use now, with the sources behind it and their age; "
                           "or why there is none (too few fresh sources, sources disagreeing).",
            "responses": {"200": _json("Prices and source health.", _ref("Prices")), "429": _RATE_LIMITED},
        }},
        "/v1/quotes": {"post": {
            "operationId": "createQuote",
            "summary": "Get a signed quote",
            "description": "A quote for buying `credits` (the token amount is rounded up) or for paying "
                           "`amount` base units (credits are rounded down). Refused with 503 "
                           "`price-unavailable` when no trustworthy price exists.",
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("QuoteRequest")}}},
            "responses": {
                "201": _json("The signed quote (stored before it is returned).", _ref("Quote"), _LOCATION,
                             _QUOTE_LINKS),
                "400": _problem("Invalid input (problem `invalid-input`): malformed JSON, unknown or missing "
                                "fields, an unknown token, an amount below the minimum; `token-ambiguous`: the "
                                "token is payable on several chains and `chain` is missing (the detail lists "
                                "them); `token-not-offered`: the chain does not offer the token."),
                "413": _TOO_LARGE,
                "429": _RATE_LIMITED,
                "503": _problem("No trustworthy price (problem `price-unavailable`: sources stale, too few or "
                                "disagreeing), a stablecoin outside its peg band (`token-depegged`) or the "
                                "database is unavailable (`storage-error`)."),
            },
        }},
        "/v1/quotes/{id}": {"get": {
            "operationId": "getQuote",
            "summary": "A stored quote",
            "parameters": [quote_id],
            "responses": {"200": _json("The quote.", _ref("Quote")),
                          "404": _problem("No such quote (problem `not-found`). A quote no payment used is "
                                          "deleted once expired for the retention period "
                                          "(`api.quote_retention_seconds`, default 7 days)."),
                          "429": _RATE_LIMITED, "503": _UNAVAILABLE_DB},
        }},
        "/v1/payments": {"post": {
            "operationId": "createPayment",
            "summary": "Open a payment for a quote",
            "description": "Idempotent per quote and caller: the same caller (the same merchant key, or "
                           "anonymous again) asking again with the same beneficiary gets the existing payment "
                           "(200); a quote another caller already used is a 409 `quote-used`.",
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("PaymentRequest")}}},
            "responses": {
                "201": _json("The new payment with its instructions.", _ref("Payment"), _LOCATION, _PAYMENT_LINKS),
                "200": _json("The payment already opened for this quote.", _ref("Payment"), _LOCATION,
                             _PAYMENT_LINKS),
                "400": _problem("Invalid input (problem `invalid-input`)."),
                "404": _problem("No such quote (problem `not-found`)."),
                "409": _problem("The quote expired (`quote-expired`), pays another beneficiary (`conflict`) "
                                "or is used by another caller's payment (`quote-used`: another merchant key, "
                                "or anonymous vs. a key)."),
                "413": _TOO_LARGE,
                "429": _RATE_LIMITED,
                "503": _UNAVAILABLE_DB,
            },
        }},
        "/v1/payments/{id}": {"get": {
            "operationId": "getPayment",
            "summary": "A payment and its state",
            "parameters": [payment_id],
            "responses": {"200": _json("The payment.", _ref("Payment")),
                          "404": _problem("No such payment (problem `not-found`)."),
                          "429": _RATE_LIMITED, "503": _UNAVAILABLE_DB},
        }},
        "/v1/payments/by-code/{code}": {"get": {
            "operationId": "getPaymentByCode",
            "summary": "A payment by its payment code",
            "description": "The payment whose code (e.g. a TON transfer's comment) is `code`; case-insensitive.",
            "parameters": [{"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json("The payment.", _ref("Payment")),
                          "404": _problem("No payment has this code (problem `not-found`)."),
                          "429": _RATE_LIMITED, "503": _UNAVAILABLE_DB},
        }},
        "/v1/payment-references": {"get": {
            "operationId": "listPaymentReferences",
            "summary": "The reference feed of one chain's payments",
            "description": "For the collectors of per-payment deposit addresses (the relay on Ethereum, the "
                           "signers on Asset Hub): the references of `chain`'s payments whose expiry is less "
                           "than 30 days ago, ascending by `cursor` (an integer that increases with every new "
                           "payment; opaque otherwise). Page with `after` = the last answer's `next`. A "
                           "collector derives each deposit address from the reference itself, so this feed "
                           "cannot redirect funds.",
            "parameters": [
                {"name": "chain", "in": "query", "required": True, "schema": {"type": "string"},
                 "description": "A configured source chain's name."},
                {"name": "after", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0, "default": 0}},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 500}},
            ],
            "responses": {"200": _json("One page of the feed.", _ref("ReferenceFeed")),
                          "400": _problem("A missing or unknown `chain`, or a malformed `after` or `limit` "
                                          "(problem `invalid-input`)."),
                          "429": _RATE_LIMITED, "503": _UNAVAILABLE_DB},
        }},
        "/v1/payments/by-reference/{reference}": {"get": {
            "operationId": "getTermsByReference",
            "summary": "Signed payment terms by reference",
            "description": "What committee signer nodes verify with the gateway key. Not rate limited.",
            "parameters": [reference],
            "responses": {"200": _json("The signed terms.", _ref("PaymentTerms")),
                          "400": _problem("The reference is not 0x + 64 hex digits."),
                          "404": _problem("No payment has this reference."),
                          "503": _UNAVAILABLE_DB},
        }},
        "/v1/payments/by-reference/{reference}/late/{source}/{sequence}": {"get": {
            "operationId": "getLateTerms",
            "summary": "Signed decision on a late deposit",
            "description": "For signer nodes: whether the late deposit `(source, sequence)` of the payment is "
                           "credited at a fresh quote or held for refund, signed with the gateway key. Decided "
                           "once, on the first request, and stored: every later request gets the same "
                           "decision. Not rate limited.",
            "parameters": [reference,
                           {"name": "source", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}},
                           {"name": "sequence", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^(0|[1-9][0-9]{0,19})$"}}],
            "responses": {"200": _json("The signed decision.", _ref("LateTerms")),
                          "400": _problem("A malformed reference or source (0x + 64 hex digits) or "
                                          "sequence (a decimal integer below 2**64)."),
                          "404": _problem("No payment has this reference (problem `not-found`), or the gateway "
                                          "has not observed the deposit as final yet (problem "
                                          "`deposit-not-seen`: ask again later)."),
                          "409": _problem("The deposit is not late for this payment (problem `conflict`): in "
                                          "time, another reference, or another chain or token."),
                          "503": _UNAVAILABLE_DB},
        }},
        "/v1/gateway": {"get": {
            "operationId": "getGateway",
            "summary": "The gateway's quote key",
            "description": "The Ed25519 public key that signs quotes, payment terms and late deposits' decisions.",
            "responses": {"200": _json("The key.", _ref("Gateway")), "429": _RATE_LIMITED},
        }},
        "/v1/admin/treasury": {"get": {
            "operationId": "adminTreasury",
            "summary": "Treasury sweeps per token: earned, swept, pending, the last sweep (admin key)",
            "description": "Read from the committee signers listed in `[api] treasury_signers` (their "
                           "`GET /v1/sweeps`): per chain the figures at least `threshold` signers report "
                           "identically (`quorum`), and the signers that report something else. Amounts are "
                           "the chain token's base units. Needs `Authorization: Bearer <admin API key>`.",
            "security": [{"apiKey": []}],
            "responses": {"200": _json("The committee's treasury view.", _ref("TreasuryView")),
                          "401": _problem("No or an invalid API key (problem `unauthorized`)."),
                          "403": _problem("The API key is not an admin key (problem `forbidden`)."),
                          "503": _UNAVAILABLE_DB},
        }},
        "/v1/health": {"get": {
            "operationId": "health",
            "summary": "Liveness (after a database round trip)",
            "responses": {"200": _json("Alive.", _ref("Health")), "503": _UNAVAILABLE_DB},
        }},
        "/metrics": {"get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (`creditbridge_*`)",
            "responses": {"200": {"description": "Prometheus text format.",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"}), "429": _RATE_LIMITED},
        }},
        "/docs": {"get": {
            "operationId": "docs",
            "summary": "This API as a readable HTML page",
            "responses": {"200": {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}},
                          "429": _RATE_LIMITED},
        }},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "creditbridge gateway API",
            "version": "1",
            "description": "Pay for compute credits in DOT, KSM, ETH or TON. Amounts are integer base units "
                           "as decimal strings; rates are decimal strings; times are RFC 3339. Errors are "
                           "RFC 9457 problem documents (`application/problem+json`). Public endpoints are "
                           "rate limited per client (429 with `Retry-After`).",
        },
        "paths": paths,
        "components": {"schemas": _schemas(tokens),
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                                      "description": "An API key: `cbk_<id>_<secret>`."}}},
    }


# --- the human page -------------------------------------------------------------------------------
_CSS = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}
.op{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.m{display:inline-block;min-width:3.5rem;font-weight:700;font-family:monospace}
.get{color:#1565c0}.post{color:#2e7d32} code,pre{font-family:ui-monospace,monospace;font-size:13px}
pre{background:#f6f8fa;padding:.6rem;overflow:auto;border-radius:4px}
table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}
nav a{margin-right:.8rem}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _text(v: Any) -> str:
    """Escaped prose, with the spec's `code` spans shown as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(v))


def _schema_name(schema: dict | None) -> str:
    if not schema:
        return ""
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return f'<a href="#schema-{_e(name)}"><code>{_e(name)}</code></a>'
    if schema.get("type") == "array" and "items" in schema:
        return "array of " + _schema_name(schema["items"])
    return f"<code>{_e(json.dumps(schema))}</code>"


def render_docs(spec: dict[str, Any]) -> str:
    """A self-contained HTML page describing every operation and schema of ``spec``."""
    info = spec["info"]
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_e(info['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(info['title'])}</h1><p>version {_e(info['version'])} · "
        '<a href="/openapi.json">openapi.json</a></p>',
        f"<p>{_text(info.get('description', ''))}</p>",
        "<nav>" + "".join(f'<a href="#{_e(op["operationId"])}">{_e(m.upper())} {_e(p)}</a>'
                          for p, item in spec["paths"].items() for m, op in item.items()) + "</nav>",
        "<h2>Endpoints</h2>",
    ]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            out.append(f'<div class=op id="{_e(op["operationId"])}">'
                       f'<h3><span class="m {_e(method)}">{_e(method.upper())}</span> <code>{_e(path)}</code>'
                       f" — {_e(op.get('summary', ''))}</h3>")
            if op.get("description"):
                out.append(f"<p>{_text(op['description'])}</p>")
            params = op.get("parameters") or []
            if params:
                out.append("<p><b>Parameters</b></p><table><tr><th>name</th><th>in</th><th>schema</th></tr>")
                for prm in params:
                    out.append(f"<tr><td><code>{_e(prm['name'])}</code></td><td>{_e(prm['in'])}</td>"
                               f"<td>{_schema_name(prm.get('schema'))}</td></tr>")
                out.append("</table>")
            body = op.get("requestBody")
            if body:
                for media, content in body["content"].items():
                    out.append(f"<p><b>Request body</b> ({_e(media)}): {_schema_name(content.get('schema'))}</p>")
            out.append("<p><b>Responses</b></p><table><tr><th>status</th><th>description</th><th>body</th></tr>")
            for status, resp in op["responses"].items():
                bodies = "<br>".join(f"{_e(media)}: {_schema_name(c.get('schema'))}"
                                     for media, c in (resp.get("content") or {}).items())
                out.append(f"<tr><td>{_e(status)}</td><td>{_text(resp.get('description', ''))}</td>"
                           f"<td>{bodies}</td></tr>")
            out.append("</table></div>")
    out.append("<h2>Schemas</h2>")
    for name, schema in spec["components"]["schemas"].items():
        out.append(f'<h3 id="schema-{_e(name)}">{_e(name)}</h3>')
        if schema.get("description"):
            out.append(f"<p>{_text(schema['description'])}</p>")
        out.append(f"<pre>{_e(json.dumps(schema, indent=2))}</pre>")
    out.append("</body></html>")
    return "\n".join(out)
