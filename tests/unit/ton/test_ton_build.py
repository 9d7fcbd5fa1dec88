"""The committed TON lock build (contracts/ton/build) is what lock.fc compiles to: FunC and Fift
run in-process through tonpy's native library, offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pytoniq_core import Cell

ROOT = Path(__file__).resolve().parents[3]


def _build_module():
    spec = importlib.util.spec_from_file_location("ton_build", ROOT / "contracts" / "ton" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recompiling_lock_fc_gives_the_committed_code():
    build = _build_module()
    boc = build.compile_lock()
    committed_hash = (ROOT / "contracts" / "ton" / "build" / "lock.code-hash").read_text().strip()
    assert build.code_hash(boc) == committed_hash
    committed = Cell.one_from_boc((ROOT / "contracts" / "ton" / "build" / "lock.boc").read_bytes())
    assert committed.hash.hex() == committed_hash
    assert build.main(["--check"]) == 0


def test_relayer_uses_the_committed_code():
    from relayers.ton.lock import lock_code

    assert lock_code().hash.hex() == (ROOT / "contracts" / "ton" / "build" / "lock.code-hash").read_text().strip()


def test_relayer_uses_the_committed_jetton_code():
    from relayers.ton.jetton import minter_code, wallet_code

    build = ROOT / "contracts" / "ton" / "build"
    assert minter_code().hash.hex() == (build / "jetton_minter.code-hash").read_text().strip()
    assert wallet_code().hash.hex() == (build / "jetton_wallet.code-hash").read_text().strip()
