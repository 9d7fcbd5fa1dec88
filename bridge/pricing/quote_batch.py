"""A batch of quotes signed, serialized and turned into rows from their pieces: the one
implementation the API process and the quote store process (``quote_store_worker.py``) share.

The quotes issued at one price in one second differ only in ``id``, ``amount`` and
``credits``. Everything else is formatted once (``bridge.pricing.quotes.quote_pieces``) into a
``Template``: the canonical bytes cut around those three fields, the response JSON cut around
them, and the stored row's constant columns. A batch is a list of *items*
``(template number, id, id as JSON or None, amount, credits)``; ``sign_batch`` hashes each
item's canonical bytes into a leaf, builds the Merkle tree (``merkle.py``), signs its root and
returns, per item, the response body (items with an id JSON) or the proof path (the others),
plus the rows to store. The bytes are those of ``canonical_quote_bytes``, ``quote_body`` and
the writer's ``_rows`` for the same quote: ``canonical_quote_bytes`` and ``quote_body`` call
the functions below, and tests/unit/test_quote_fastpaths.py compares the rows.

Standard library only (the caller passes the Ed25519 signing function), so that the store
process imports it without the gateway.
"""

from __future__ import annotations

from binascii import hexlify
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring_ascii as _escape
from typing import NamedTuple

from bridge.pricing import merkle


class Template(NamedTuple):
    """What the quotes of one price and second share (see the module docstring)."""

    canonical: tuple[bytes, bytes, bytes, bytes]  # a + "amount" + b + "credits" + c + "id" + d
    body: tuple[bytes, bytes, bytes]  # '{"id":' id + a + "amount" + b + "credits" + c + signature hex ...
    row: tuple  # (token, chain, rate, credit_price_usd, sources, created_at, expires_at, key_id) as stored


def canonical(pieces: tuple[bytes, bytes, bytes, bytes], quote_id: str, amount: int, credits: int) -> bytes:
    """The quote's canonical bytes (what its Merkle leaf hashes) from its template's pieces."""
    a, b, c, d = pieces
    return b"".join((a, b'"%d"' % amount, b, b'"%d"' % credits, c, _escape(quote_id).encode("ascii"), d))


def proof_tail(root: bytes, path: Sequence[bytes]) -> bytes:
    """The end of a batch-signed quote's JSON after its signature's hex digits."""
    return b"".join((b'","proof":{"root":"', hexlify(root), b'","path":[',
                     (b'"' + b'","'.join(map(hexlify, path)) + b'"') if path else b"", b"]}}"))


def body(pieces: tuple[bytes, bytes, bytes], id_json: bytes, amount: int, credits: int, signature_hex: bytes,
         tail: bytes) -> bytes:
    """The quote's JSON (``POST /v1/quotes``'s answer) from its template's pieces."""
    a, b, c = pieces
    return b"".join((b'{"id":', id_json, a, b'"%d"' % amount, b, b'"%d"' % credits, c, signature_hex, tail))


Item = tuple  # (template number, id, id JSON or None, amount, credits)


def sign_batch(templates: Mapping[int, Template], items: Sequence[Item], sign: Callable[[bytes], bytes],
               ) -> tuple[bytes, bytes, list, list[tuple]]:
    """``(signature, root, out, rows)`` for a batch of at least one item: ``out[i]`` is item
    i's response body when it has an id JSON, else its proof path (a list of hashes); ``rows``
    are the rows to store, in the quote writer's column order (``_SqliteBatch._FAST_COLUMNS``)."""
    leaf = merkle.leaf_hash
    root, paths = merkle.build([leaf(canonical(templates[t][0], i, a, c)) for t, i, _, a, c in items])
    signature = sign(merkle.batch_message(root))
    signature_hex = hexlify(signature)
    blob = bytearray(signature)  # sqlite3 binds a bytearray as a BLOB without an adapter look-up
    out: list = []
    rows: list[tuple] = []
    for (t, quote_id, id_json, amount, credits), path in zip(items, paths):
        _, body_pieces, row = templates[t]  # a Template or the plain tuple the store process gets
        token, chain, rate, price, sources, created, expires, key_id = row
        rows.append((quote_id, token, chain, str(amount), str(credits), rate, price, sources, created, expires,
                     key_id, blob, bytearray().join((root, *path))))
        out.append(path if id_json is None else body(body_pieces, id_json, amount, credits, signature_hex,
                                                     proof_tail(root, path)))
    return signature, root, out, rows
