"""Batched quote signatures: the Merkle tree (every position of sizes 1..n, tampering), and
quote verification in the batch format and in the older one-signature-per-quote format."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from bridge.errors import VerificationError
from bridge.pricing import merkle
from bridge.pricing.quotes import (
    QUOTE_DOMAIN,
    QuoteSigner,
    canonical_quote_bytes,
    quote_from_json,
    quote_to_json,
    verify_quote,
)
from bridge.types import Quote

SIGNER = QuoteSigner.from_secret(bytes(range(1, 33)))
OTHER = QuoteSigner.from_secret(bytes(range(2, 34)))
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(b"leaf %d" % i) for i in range(n)]


def a_quote(i: int = 0, **kw) -> Quote:
    d = dict(id=str(uuid.UUID(int=i + 1, version=4)), token="ETH", chain="ethereum", amount=10**15 + i,
             credits=500, rate=Decimal("3000.5"), credit_price_usd=Decimal("0.01"), created_at=T0,
             expires_at=T0 + timedelta(minutes=15), sources=("a", "b"), key_id=SIGNER.key_id)
    d.update(kw)
    return Quote(**d)


# --- the tree -----------------------------------------------------------------------------------
def test_the_tree_is_what_the_docs_specify():
    h = lambda b: hashlib.sha256(b).digest()  # noqa: E731
    assert merkle.leaf_hash(b"x") == h(b"\x00x")
    a, b = h(b"a"), h(b"b")
    assert merkle.node_hash(a, b) == merkle.node_hash(b, a) == h(b"\x01" + min(a, b) + max(a, b))
    assert merkle.batch_message(a) == b"creditbridge/quote-batch/v1\n" + a
    # three leaves: (0,1) hashed, 2 carried up, then hashed with that node
    l0, l1, l2 = leaves(3)
    n01 = merkle.node_hash(l0, l1)
    root, paths = merkle.build([l0, l1, l2])
    assert root == merkle.node_hash(n01, l2)
    assert paths == [[l1, l2], [l0, l2], [n01]]
    # one leaf: root = leaf, empty path
    assert merkle.build([l0]) == (l0, [[]])
    with pytest.raises(ValueError):
        merkle.build([])


@pytest.mark.parametrize("n", [*range(1, 34), 64, 100, 511, 512])
def test_every_position_proves_and_nothing_else_does(n):
    ls = leaves(n)
    root, paths = merkle.build(ls)
    assert len(paths) == n
    depth = (n - 1).bit_length()  # ceil(log2 n)
    for i, (leaf, path) in enumerate(zip(ls, paths)):
        assert len(path) <= depth
        assert merkle.root_of(leaf, path) == root, i
        # the proof of another position does not prove this leaf (unless the paths coincide)
        j = (i + 1) % n
        if n > 1 and paths[j] != path:
            assert merkle.root_of(leaf, paths[j]) != root
        # a flipped bit anywhere in the path, a dropped or an extra hash: another root
        for k in range(len(path)):
            bad = list(path)
            bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
            assert merkle.root_of(leaf, bad) != root
        if path:
            assert merkle.root_of(leaf, path[:-1]) != root
        assert merkle.root_of(leaf, [*path, ls[0]]) != root
    # a leaf that is not in the batch proves with no path
    outsider = merkle.leaf_hash(b"not in the batch")
    assert all(merkle.root_of(outsider, p) != root for p in paths)
    # an inner node presented as a leaf's data does not verify (leaves and nodes are prefixed apart)
    if n >= 2:
        inner = merkle.node_hash(ls[0], ls[1])
        assert merkle.leaf_hash(inner) != inner


# --- quotes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 7, 16])
def test_a_batch_of_quotes_shares_one_signature_and_each_verifies(n):
    signed = SIGNER.sign_quotes([a_quote(i) for i in range(n)])
    assert len({q.signature for q in signed}) == 1 and len({q.merkle_root for q in signed}) == 1
    for q in signed:
        verify_quote(q, SIGNER.public_key)
        verify_quote(quote_from_json(json.loads(json.dumps(quote_to_json(q)))), SIGNER.public_key)
    if n == 1:
        q = signed[0]
        assert q.merkle_path == () and q.merkle_root == merkle.leaf_hash(canonical_quote_bytes(q))


def test_the_wire_form_of_a_batch_quote():
    q = SIGNER.sign_quotes([a_quote(0), a_quote(1)])[1]
    wire = quote_to_json(q)
    assert wire["signature"] == q.signature.hex() and len(wire["signature"]) == 128
    assert wire["proof"] == {"root": q.merkle_root.hex(), "path": [merkle.leaf_hash(canonical_quote_bytes(
        SIGNER.sign_quotes([a_quote(0)])[0])).hex()]}


def test_tampering_with_a_batch_quote_fails():
    batch = SIGNER.sign_quotes([a_quote(i) for i in range(5)])
    q = batch[2]
    for field, value in {"amount": q.amount + 1, "credits": 501, "rate": Decimal("3000.6"), "token": "DOT",
                         "expires_at": q.expires_at + timedelta(seconds=1), "sources": ("evil",)}.items():
        with pytest.raises(VerificationError):
            verify_quote(replace(q, **{field: value}), SIGNER.public_key)
    bad = [
        replace(q, merkle_path=batch[3].merkle_path),               # another quote's proof
        replace(q, merkle_path=q.merkle_path[:-1]),                 # a hash dropped
        replace(q, merkle_path=(*q.merkle_path, q.merkle_root)),    # a hash added
        replace(q, merkle_path=tuple(bytes(32) for _ in q.merkle_path)),
        replace(q, merkle_path=(q.merkle_path[0][:31],)),           # not 32 bytes
        replace(q, merkle_root=bytes(32)),                          # another root
        replace(q, merkle_root=q.merkle_root[:31]),
        replace(q, merkle_root=b"", merkle_path=q.merkle_path),     # a path but no root
        replace(q, merkle_root=b"", merkle_path=()),                # stripped to the old format
        replace(q, signature=bytes(64)),
        replace(q, signature=SIGNER.sign_bytes(canonical_quote_bytes(q))),  # an old-format signature
        replace(q, merkle_path=tuple([q.merkle_path[0]] * (merkle.MAX_PATH + 1))),
    ]
    for b in bad:
        with pytest.raises(VerificationError):
            verify_quote(b, SIGNER.public_key)
    with pytest.raises(VerificationError):  # another key
        verify_quote(q, OTHER.public_key)
    with pytest.raises(VerificationError):  # relabelled to another key
        verify_quote(replace(q, key_id=OTHER.key_id), OTHER.public_key)
    # a batch signed by another key, whose root is grafted on: fails under the gateway's key
    forged = OTHER.sign_quotes([a_quote(9, key_id=SIGNER.key_id)])[0]
    with pytest.raises(VerificationError):
        verify_quote(replace(forged, key_id=SIGNER.key_id), SIGNER.public_key)


def test_quotes_signed_one_by_one_still_verify():
    """Quotes stored before batching carry a signature over their own canonical bytes and no
    root; they verify as before, and only with their own fields."""
    q = a_quote(3)
    old = replace(q, signature=SIGNER.sign_bytes(canonical_quote_bytes(q)))
    assert canonical_quote_bytes(q).startswith(QUOTE_DOMAIN)
    verify_quote(old, SIGNER.public_key)
    wire = json.loads(json.dumps(quote_to_json(old)))
    assert "proof" not in wire
    verify_quote(quote_from_json(wire), SIGNER.public_key)
    with pytest.raises(VerificationError):
        verify_quote(replace(old, amount=q.amount + 1), SIGNER.public_key)
    # the old signature does not verify when presented as a batch of one (another message)
    leaf = merkle.leaf_hash(canonical_quote_bytes(q))
    with pytest.raises(VerificationError):
        verify_quote(replace(old, merkle_root=leaf), SIGNER.public_key)


def test_malformed_proofs_on_the_wire_are_refused():
    wire = quote_to_json(SIGNER.sign_quotes([a_quote(0), a_quote(1)])[0])
    for proof in ({"root": "zz" * 32, "path": []}, {"root": "00" * 31, "path": []}, {"path": []},
                  {"root": wire["proof"]["root"], "path": "00" * 32},
                  {"root": wire["proof"]["root"], "path": ["00" * 33]}, "x"):
        with pytest.raises(VerificationError):
            quote_from_json({**wire, "proof": proof})
