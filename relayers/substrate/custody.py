"""What an Asset Hub committee account holds and has paid out, at a final block (the treasury
sweeper's solvency check, bridge/committee/treasury.py).

* ``balance(h)``: the account's ``free`` balance at block ``h``, minus nothing: the existential
  deposit the account must keep is the sweeper's ``reserve`` for the chain. For a reader of a
  ``pallet_assets`` token (``token=``, issue 15): ``Assets.Account(asset_id, committee).balance``
  at block ``h`` (0 when the account holds none); releases of that token pay
  ``Assets.transfer_keep_alive``, so the committee keeps the asset's ``min_balance`` once it
  holds any (the sweeper's reserve for that (chain, token)).
* ``released(h, candidates)``: the release ids (refunds and sweeps) the committee executed in
  blocks up to ``h``. Every release is the multisig call ``Utility.batch_all([
  Balances.transfer_keep_alive(to, amount), System.remark(REMARK_PREFIX + release_id)])`` (for
  a token: ``Assets.transfer_keep_alive(asset_id, to, amount)``; release ids are unique across
  tokens, so the scan is the same)
  (relayers/substrate/refund.py), so an execution is a ``Multisig.MultisigExecuted`` event of
  the committee account with result ``Ok`` and the call's hash, in the block whose final
  ``as_multi`` extrinsic carries the call's bytes. Blocks are scanned once (final blocks only:
  what was read is kept); the raw events are searched for the committee's account id first and
  only blocks naming it are decoded. A block with an execution is matched to its release ids
  on the exact bytes: the remark ``REMARK_PREFIX + release_id`` ends the executed call, whose
  hash (blake2-256 of its encoding) must be the event's -- a remark in a call that did not
  execute (a creation waiting for approvals, a stray operation) never counts.

Like the refunder's execution scan, this needs RPC endpoints that serve old blocks' state
(archive nodes) from the chain's ``start_block``: a pruned block raises ``ChainError``.
"""

from __future__ import annotations

import functools
import logging

from substrateinterface import SubstrateInterface

from bridge.config import PayableToken, SubstrateChainConfig
from bridge.errors import ChainError, ConfigError
from relayers.substrate.client import DecodeFailure, SubstrateClient
from relayers.substrate.decode import EVENTS_STORAGE_KEY, account_bytes, blake2_256, decode_events
from relayers.substrate.multisig import committee_account_id, ss58
from relayers.substrate.refund import REMARK_PREFIX

log = logging.getLogger(__name__)

RELEASE_ID_LEN = 32
CALL_LOOKBACK = 512  # bytes before the remark where the executed call may start (transfer + batch header)
SCAN_CHUNK = 32  # blocks per client call


def _short(e: BaseException) -> str:
    return f"{e.__class__.__name__}: {str(e)[:200]}"


class SubstrateCustody:
    def __init__(self, cfg: SubstrateChainConfig, client: SubstrateClient | None = None, *,
                 token: PayableToken | None = None) -> None:
        if token is not None and not token.native and (token.asset_id is None or token.chain != cfg.name):
            raise ConfigError(f"chain {cfg.name}: custody of {token.symbol} needs its pallet_assets asset_id on this chain")
        self.asset_id = None if token is None or token.native else token.asset_id
        self.chain = cfg.name
        self.committee = committee_account_id(cfg.committee)
        self.address = ss58(self.committee, cfg.ss58_prefix)
        self._own = client is None
        self.client = client or SubstrateClient(cfg.name, cfg.rpc, timeout=cfg.request_timeout,
                                                ss58_format=cfg.ss58_prefix, genesis_hash=cfg.genesis_hash)
        self._paid: set[bytes] = set()
        # executions read up to this block (final ones only); the genesis has no events and no execution
        self._scanned = max(cfg.start_block, 1) - 1

    async def balance(self, height: int) -> int:
        """The committee account's free balance at block ``height`` (planck), or its balance of
        the reader's asset."""
        return await self.client.call(functools.partial(self._balance, height), f"balance at {height}")

    async def released(self, height: int, candidates: set[bytes] | None = None) -> set[bytes]:
        """Release ids (of ``candidates``, or all) the committee executed in blocks up to ``height``
        (a final block)."""
        while self._scanned < height:
            a, b = self._scanned + 1, min(self._scanned + SCAN_CHUNK, height)
            found = await self.client.call(functools.partial(self._scan, a, b), f"executions in {a}..{b}")
            self._paid |= found
            self._scanned = b
        if height < self._scanned:  # asked about an older block than already read
            raise ChainError(f"chain {self.chain}: released() asked for block {height} below {self._scanned}",
                             retryable=True)
        return set(self._paid) if candidates is None else self._paid & set(candidates)

    async def aclose(self) -> None:
        if self._own:
            await self.client.aclose()

    # ------------------------------------------------------------------ on the client's thread
    def _hash(self, si: SubstrateInterface, n: int) -> str:
        h = si.rpc_request("chain_getBlockHash", [n]).get("result")
        if not isinstance(h, str):
            raise ChainError(f"chain {self.chain}: block {n} has no hash (not produced yet?)")
        return h.lower()

    def _balance(self, height: int, si: SubstrateInterface) -> int:
        h = self._hash(si, height)
        if self.asset_id is not None:
            held = si.query("Assets", "Account", [self.asset_id, self.address], block_hash=h)
            try:
                return int(held.value["balance"]) if held.value else 0
            except (KeyError, TypeError, ValueError, AttributeError):
                raise ChainError(f"chain {self.chain}: malformed Assets.Account of the committee at block {height}",
                                 retryable=False) from None
        account = si.query("System", "Account", [self.address], block_hash=h)
        try:
            return int(account.value["data"]["free"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ChainError(f"chain {self.chain}: malformed System.Account of the committee at block {height}",
                             retryable=False) from None

    def _scan(self, a: int, b: int, si: SubstrateInterface) -> set[bytes]:
        out: set[bytes] = set()
        for n in range(a, b + 1):
            h = self._hash(si, n)
            raw = si.rpc_request("state_getStorage", [EVENTS_STORAGE_KEY, h]).get("result")
            if not isinstance(raw, str):
                raise ChainError(f"chain {self.chain}: no System.Events for block {n} (pruned state? the custody "
                                 "reader needs archive nodes)")
            if self.committee.hex() not in raw.lower():
                continue  # cheap: every MultisigExecuted of the committee names its account
            executed = self._executed(si, n, h, raw)
            if executed:
                out |= self._release_ids(si, n, h, executed)
        return out

    def _executed(self, si: SubstrateInterface, n: int, h: str, raw: str) -> set[bytes]:
        """Call hashes the committee executed successfully in block ``n``."""
        try:
            si.init_runtime(block_hash=h)
            events = decode_events(si.runtime_config, si.metadata, raw)
        except ChainError:
            raise
        except Exception as e:  # scalecodec's many exception types
            raise DecodeFailure(f"chain {self.chain}: cannot decode the events of block {n} ({_short(e)})",
                                retryable=False) from None
        out = set()
        for ev in events:
            if (ev.get("module_id"), ev.get("event_id")) != ("Multisig", "MultisigExecuted"):
                continue
            attrs = ev.get("attributes")
            if not isinstance(attrs, dict) or account_bytes(attrs.get("multisig")) != self.committee:
                continue
            result = attrs.get("result")
            if not (result == "Ok" or (isinstance(result, dict) and "Ok" in result)):
                continue  # executed with an error: nothing was paid
            try:
                out.add(bytes.fromhex(str(attrs.get("call_hash", "")).lower().removeprefix("0x")))
            except ValueError:
                raise ChainError(f"chain {self.chain}: malformed MultisigExecuted in block {n}",
                                 retryable=False) from None
        return out

    def _release_ids(self, si: SubstrateInterface, n: int, h: str, executed: set[bytes]) -> set[bytes]:
        block = si.rpc_request("chain_getBlock", [h]).get("result")
        try:
            extrinsics = [bytes.fromhex(x[2:]) for x in block["block"]["extrinsics"]]
        except (KeyError, TypeError, ValueError):
            raise ChainError(f"chain {self.chain}: malformed block {n}") from None
        out = set()
        for raw in extrinsics:
            p = raw.find(REMARK_PREFIX)
            while p >= 0:
                end = p + len(REMARK_PREFIX) + RELEASE_ID_LEN
                if end <= len(raw):
                    for start in range(max(0, p - CALL_LOOKBACK), p):
                        if blake2_256(raw[start:end]) in executed:
                            out.add(raw[p + len(REMARK_PREFIX):end])
                            break
                p = raw.find(REMARK_PREFIX, p + 1)
        if not out:
            log.debug("chain %s: block %d executed committee calls that are no creditbridge release", self.chain, n)
        return out
