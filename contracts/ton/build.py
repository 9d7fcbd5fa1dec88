#!/usr/bin/env python3
"""Compile contracts/ton/lock.fc (and the TEP-74 jetton contracts jetton_minter.fc,
jetton_wallet.fc) offline with tonpy (the FunC compiler and Fift assembler built into its native
library) and write the committed build:

    contracts/ton/build/<name>.boc        the code cell as a BOC
    contracts/ton/build/<name>.code-hash  its representation hash, hex (what addresses commit to)

``python contracts/ton/build.py`` rewrites both; ``--check`` only compiles and exits 1 if the
committed build differs from the source (tests/unit/ton/test_build.py runs the same check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DIR = Path(__file__).resolve().parent
SOURCE = DIR / "lock.fc"
BUILD = DIR / "build"
BOC = BUILD / "lock.boc"
HASH = BUILD / "lock.code-hash"
CONTRACTS = ("lock", "jetton_minter", "jetton_wallet")


def compile_lock() -> bytes:
    """The code cell of lock.fc as a BOC (same bytes as the committed build if unchanged)."""
    return compile_contract("lock")


def compile_contract(name: str) -> bytes:
    """The code cell of ``<name>.fc`` as a BOC."""
    from pytoniq_core import Cell
    from tonpy.fift.fift import convert_assembler
    from tonpy.libs.python_ton import func_to_asm

    source = DIR / f"{name}.fc"
    asm = func_to_asm([str(source)])
    if "PROGRAM{" not in asm:
        raise SystemExit(f"build.py: FunC compilation of {source} failed:\n{asm}")
    code = convert_assembler(asm)
    # re-encode with pytoniq-core so the BOC layout is the one the relayer reads
    return Cell.one_from_boc(code.to_boc()).to_boc()


def code_hash(boc: bytes) -> str:
    from pytoniq_core import Cell

    return Cell.one_from_boc(boc).hash.hex()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed build, write nothing")
    args = ap.parse_args(argv)
    status = 0
    for name in CONTRACTS:
        boc = compile_contract(name)
        h = code_hash(boc)
        boc_file, hash_file = BUILD / f"{name}.boc", BUILD / f"{name}.code-hash"
        if args.check:
            committed = hash_file.read_text().strip() if hash_file.exists() else "(missing)"
            if committed != h:
                print(f"build.py: committed code hash of {name} {committed} != compiled {h}; run contracts/ton/build.py")
                status = 1
            else:
                print(f"build.py: {name}.fc matches the committed build ({h})")
            continue
        BUILD.mkdir(exist_ok=True)
        boc_file.write_bytes(boc)
        hash_file.write_text(h + "\n")
        print(f"build.py: wrote {boc_file.relative_to(DIR.parent.parent)} (code hash {h})")
    return status


if __name__ == "__main__":
    sys.exit(main())
