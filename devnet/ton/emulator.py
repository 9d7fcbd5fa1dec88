"""The real TVM / transaction emulator (pytvm's bundled ``libemulator``) and a realistic
blockchain config.

* The library is loaded by path: ``EmulatorEngineC.default()`` needs ``pkg_resources``, which
  current setuptools no longer ships.
* pytvm declares ``transaction_emulator_set_lt`` with a 32-bit argument; logical times pass 2**32
  quickly, so the argument type is widened to 64 bits here.
* The config is the one ``@ton/sandbox`` uses (a recent mainnet config; npm package pinned in
  package.json, read from node_modules at run time). With pytvm's tiny default config small
  messages run out of gas before a contract's own checks. Param 19 (global id) is replaced by
  the local chain's own id.
"""

from __future__ import annotations

import base64
import ctypes
import functools
import re
import threading
from pathlib import Path

from pytoniq_core import Builder, Cell, HashMap

from bridge.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_CONFIG_JS = REPO_ROOT / "node_modules" / "@ton" / "sandbox" / "dist" / "config" / "defaultConfig.js"

_lock = threading.Lock()


@functools.cache
def engine():
    """The pytvm engine over the bundled C++ emulator library (loaded once per process)."""
    import pytvm.engine as pe
    from pytvm.engine import EmulatorEngineC

    path = Path(pe.__file__).parent / "libemulator-linux-x86_64.so"
    if not path.exists():
        raise ConfigError(f"TVM emulator library not found at {path} (is pytvm installed?)")
    eng = EmulatorEngineC(str(path))
    eng.lib.transaction_emulator_set_lt.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    eng.emulator_set_verbosity_level(0)
    return eng


@functools.cache
def sandbox_config_boc() -> bytes:
    """The blockchain config of ``@ton/sandbox`` (its ``defaultConfig``), as a BOC."""
    try:
        text = SANDBOX_CONFIG_JS.read_text()
    except OSError:
        raise ConfigError(f"{SANDBOX_CONFIG_JS} is missing: run `make setup` (npm package @ton/sandbox)") from None
    m = re.search(r"exports\.defaultConfig\s*=\s*`([A-Za-z0-9+/=\s]+)`", text)
    if not m:
        raise ConfigError(f"no defaultConfig BOC found in {SANDBOX_CONFIG_JS}")
    return base64.b64decode("".join(m.group(1).split()))


def config_params(config: Cell) -> dict[int, Cell]:
    """``HashmapE 32 ^Cell`` of config params -> {index: param cell}."""
    parsed = HashMap.parse(config.begin_parse(), 32)
    return {k: v.load_ref() for k, v in parsed.items()}


@functools.cache
def chain_config(global_id: int) -> Cell:
    """The sandbox config with param 19 (global id) set to ``global_id``; the root cell of the
    params dict (what the emulators take and ``getConfigAll`` would serve)."""
    params = config_params(Cell.one_from_boc(sandbox_config_boc()))
    params[19] = Builder().store_int(global_id, 32).end_cell()
    hm = HashMap(32, value_serializer=lambda src, dest: dest.store_ref(src))
    hm.map = dict(params)
    return hm.serialize()


class TxEmulator:
    """One transaction emulator (not thread-safe: use it from one thread at a time)."""

    def __init__(self, config: Cell) -> None:
        eng = engine()
        self._eng = eng
        self._ptr = eng.transaction_emulator_create(base64.b64encode(config.to_boc()), 0)
        if not self._ptr:
            raise ConfigError("the transaction emulator rejected the blockchain config")
        eng.transaction_emulator_set_ignore_chksig(self._ptr, False)

    def emulate(self, shard_account: Cell, message: Cell, *, unixtime: int, lt: int, rand_seed: bytes) -> dict:
        """Run one transaction. Returns the emulator's JSON answer; on success
        ``transaction`` and ``shard_account`` are base64 BOCs exactly as the emulator made them."""
        e, p = self._eng, self._ptr
        e.transaction_emulator_set_unixtime(p, unixtime)
        e.transaction_emulator_set_lt(p, lt)
        e.transaction_emulator_set_rand_seed(p, rand_seed.hex().encode())
        return e.transaction_emulator_emulate_transaction(
            p, base64.b64encode(shard_account.to_boc()), base64.b64encode(message.to_boc()))

    def close(self) -> None:
        if self._ptr:
            self._eng.transaction_emulator_destroy(self._ptr)
            self._ptr = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def run_get_method(code: Cell, data: Cell, *, address: str, method_id: int, stack: Cell, unixtime: int,
                   balance: int, config: Cell, rand_seed: bytes, gas_limit: int = 1_000_000) -> dict:
    """Run a get-method on the real TVM. Returns ``{"vm_exit_code", "stack" (base64 BOC of a
    VmStack), "gas_used", ...}`` as the emulator answers."""
    e = engine()
    ptr = e.tvm_emulator_create(base64.b64encode(code.to_boc()), base64.b64encode(data.to_boc()), 0)
    try:
        e.tvm_emulator_set_c7(ptr, address.encode(), unixtime, balance, rand_seed.hex().encode(),
                              base64.b64encode(config.to_boc()))
        e.tvm_emulator_set_gas_limit(ptr, gas_limit)
        return e.tvm_emulator_run_get_method(ptr, method_id, base64.b64encode(stack.to_boc()))
    finally:
        e.tvm_emulator_destroy(ptr)
