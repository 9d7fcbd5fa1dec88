"""Cell helpers pytoniq-core lacks: multi-root BOCs, pruned branches, Merkle proof / update
cells, and the augmented dictionary (``HashmapAugE``) serializer used for shard states."""

from __future__ import annotations

from typing import Callable, Sequence

from pytoniq_core import Builder, Cell
from pytoniq_core.boc.exotic import CellTypes
from pytoniq_core.boc.hashmap.utils import build_tree, write_label

PRUNED, MERKLE_PROOF, MERKLE_UPDATE = CellTypes.pruned_branch, CellTypes.merkle_proof, CellTypes.merkle_update


def _exotic(b: Builder, refs: list[Cell], kind: int) -> Cell:
    return Cell(b.end_cell().bits, refs, kind)


def pruned(original_hash: bytes, depth: int = 0) -> Cell:
    """A level-1 pruned branch standing for a subtree with representation hash
    ``original_hash`` (its level-0 hash is that hash)."""
    b = Builder().store_uint(PRUNED, 8).store_uint(1, 8).store_bytes(original_hash).store_uint(depth, 16)
    return _exotic(b, [], PRUNED)


def pruned_of(cell: Cell) -> Cell:
    return pruned(cell.get_hash(0), cell.get_depth(0))


def merkle_proof(root: Cell) -> Cell:
    b = Builder().store_uint(MERKLE_PROOF, 8).store_bytes(root.get_hash(0)).store_uint(root.get_depth(0), 16)
    return _exotic(b, [root], MERKLE_PROOF)


def merkle_update(old: Cell, new: Cell) -> Cell:
    b = (Builder().store_uint(MERKLE_UPDATE, 8).store_bytes(old.get_hash(0)).store_bytes(new.get_hash(0))
         .store_uint(old.get_depth(0), 16).store_uint(new.get_depth(0), 16))
    return _exotic(b, [old, new], MERKLE_UPDATE)


def boc(roots: Sequence[Cell]) -> bytes:
    """Standard BOC of several roots (cells in topological order, roots listed in order)."""
    if len(roots) == 1:
        return roots[0].to_boc()
    if not roots:
        raise ValueError("a BOC needs at least one root")
    order: list[Cell] = []
    seen: set[bytes] = set()

    def visit(c: Cell) -> None:  # post-order; reversed it puts parents before children
        key = (c.type_, c.hash)
        if key in seen:
            return
        seen.add(key)
        for r in c.refs:
            visit(r)
        order.append(c)

    for r in reversed(roots):
        visit(r)
    order.reverse()
    index = {(c.type_, c.hash): i for i, c in enumerate(order)}
    n = len(order)
    size = max(1, (n.bit_length() + 7) // 8)

    class _Idx(dict):
        def __getitem__(self, cell):
            return index[(cell.type_, cell.hash)]

    payload = b"".join(c.serialize(_Idx(), size) for c in order)
    off = max(1, (len(payload).bit_length() + 7) // 8)
    head = (b"\xb5\xee\x9c\x72" + bytes([size]) + bytes([off]) + n.to_bytes(size, "big")
            + len(roots).to_bytes(size, "big") + (0).to_bytes(size, "big") + len(payload).to_bytes(off, "big"))
    head += b"".join(index[(r.type_, r.hash)].to_bytes(size, "big") for r in roots)
    return head + payload


def aug_dict(items: dict[int, object], key_len: int, store_value: Callable[[object, Builder], None],
             extra_of: Callable[[object], object], add: Callable[[object, object], object],
             store_extra: Callable[[object, Builder], None], empty_extra: object) -> Builder:
    """``HashmapAugE key_len X Y`` of ``items`` into a builder (ahme_empty / ahme_root)."""
    b = Builder()
    if not items:
        b.store_bit(0)
        store_extra(empty_extra, b)
        return b
    tree = build_tree(items, key_len)

    def edge(e: dict, n: int) -> tuple[Cell, object]:
        out = Builder()
        write_label(e["label"], n, out)
        node = e["node"]
        m = n - len(e["label"])
        if node["type"] == "leaf":
            v = node["value"]
            ex = extra_of(v)
            store_extra(ex, out)
            store_value(v, out)
        else:
            left, lx = edge(node["left"], m - 1)
            right, rx = edge(node["right"], m - 1)
            out.store_ref(left).store_ref(right)
            ex = add(lx, rx)
            store_extra(ex, out)
        return out.end_cell(), ex

    root, total = edge(tree, key_len)
    b.store_bit(1).store_ref(root)
    store_extra(total, b)
    return b

