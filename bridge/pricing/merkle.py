"""The Merkle tree of a batch of quotes (one Ed25519 signature over its root).

Exactly, with ``H`` = SHA-256 and ``||`` concatenation:

* **leaf** of a quote: ``H(0x00 || canonical_quote_bytes(q))`` (the canonical bytes start with the
  quote domain ``creditbridge/quote/v1\\n``, see ``bridge/pricing/quotes.py``);
* **node** over two hashes ``a``, ``b``: ``H(0x01 || min(a, b) || max(a, b))`` (a *sorted pair*:
  byte-wise order, so a proof needs no left/right flags);
* **tree**: level 0 is the batch's leaves in issue order; each next level pairs neighbours
  (0,1), (2,3), ...; the last node of an odd-sized level is carried up unchanged (not hashed,
  not duplicated); the root is the one node left. A batch of one: root = leaf, empty path;
* **proof** of a leaf: the siblings it is hashed with, bottom to top (levels where it was
  carried up add nothing); **verify**: ``h = leaf; for s in path: h = node(h, s)``, then
  ``h == root``;
* the **signed message** is ``"creditbridge/quote-batch/v1\\n" || root`` (the 32 raw bytes).

The 0x00 / 0x01 prefixes keep a leaf from being read as a node (a second preimage would
need a SHA-256 collision), and the batch domain differs from every single-signature domain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
BATCH_DOMAIN = b"creditbridge/quote-batch/v1\n"
HASH_LEN = 32
MAX_PATH = 64  # a proof longer than this cannot come from any batch the gateway makes

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(a: bytes, b: bytes) -> bytes:
    return _sha256(NODE_PREFIX + a + b if a <= b else NODE_PREFIX + b + a).digest()


def batch_message(root: bytes) -> bytes:
    """What the gateway's key signs for a batch."""
    return BATCH_DOMAIN + root


def build(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """``(root, paths)``: the root over ``leaves`` (leaf hashes, at least one) and each leaf's
    proof path, in order."""
    n = len(leaves)
    if n == 0:
        raise ValueError("a Merkle tree needs at least one leaf")
    paths: list[list[bytes]] = [[] for _ in range(n)]
    # members[j]: the leaf indexes under node j of the current level
    level = list(leaves)
    members: list[list[int]] = [[i] for i in range(n)]
    while len(level) > 1:
        nxt: list[bytes] = []
        nxt_members: list[list[int]] = []
        for j in range(0, len(level) - 1, 2):
            a, b = level[j], level[j + 1]
            for i in members[j]:
                paths[i].append(b)
            for i in members[j + 1]:
                paths[i].append(a)
            nxt.append(node_hash(a, b))
            nxt_members.append(members[j] + members[j + 1])
        if len(level) % 2:  # the odd one out is carried up as it is
            nxt.append(level[-1])
            nxt_members.append(members[-1])
        level, members = nxt, nxt_members
    return level[0], paths


def root_of(leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root a leaf and its proof path lead to."""
    h = leaf
    for s in path:
        h = node_hash(h, s)
    return h
