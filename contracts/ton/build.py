#!/usr/bin/env python3
"""Compile contracts/ton/lock.fc offline with tonpy (the FunC compiler and Fift assembler built
into its native library) and write the committed build:

    contracts/ton/build/lock.boc        the code cell as a BOC
    contracts/ton/build/lock.code-hash  its representation hash, hex (what addresses commit to)

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


def compile_lock() -> bytes:
    """The code cell of lock.fc as a BOC (same bytes as the committed build if unchanged)."""
    from pytoniq_core import Cell
    from tonpy.fift.fift import convert_assembler
    from tonpy.libs.python_ton import func_to_asm

    asm = func_to_asm([str(SOURCE)])
    if "PROGRAM{" not in asm:
        raise SystemExit(f"build.py: FunC compilation of {SOURCE} failed:\n{asm}")
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
    boc = compile_lock()
    h = code_hash(boc)
    if args.check:
        committed = HASH.read_text().strip() if HASH.exists() else "(missing)"
        if committed != h:
            print(f"build.py: committed code hash {committed} != compiled {h}; run contracts/ton/build.py")
            return 1
        print(f"build.py: lock.fc matches the committed build ({h})")
        return 0
    BUILD.mkdir(exist_ok=True)
    BOC.write_bytes(boc)
    HASH.write_text(h + "\n")
    print(f"build.py: wrote {BOC.relative_to(DIR.parent.parent)} (code hash {h})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
