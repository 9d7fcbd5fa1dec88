"""Chainlink price feeds (``AggregatorV3Interface``) as a ``bridge.pricing`` price source.

For each configured symbol the source reads the feed's ``latestRoundData()`` and
``decimals()`` with raw ``eth_call``s (one JSON-RPC batch per feed, through the chain's
:class:`~relayers.evm.rpc.RpcPool`, so endpoint failover applies) and decodes them with
``eth_abi``. A round is used only if

* ``roundId > 0`` and ``answer > 0`` (a feed may legally answer zero or a negative number;
  neither is a price),
* ``answeredInRound >= roundId`` (the round carries its own answer, not one carried over
  from an earlier round that timed out), and
* ``updatedAt`` is no older than the feed's **heartbeat** (the feed promises an update at
  least that often, and on every price move beyond its deviation threshold), and not
  ahead of the wall clock by more than ``max_clock_skew``.

The price is exact: ``Decimal(answer) / 10**decimals`` built from the digits, never through a
float or a rounding context. The point's timestamp is ``updatedAt``, and the source tells the
aggregator (``max_age_for_symbol``) that the heartbeat is that symbol's staleness limit, so
the guard holds at quote time too, not only when the feed was read.

Feeds fail independently: ``fetch`` returns the points of the feeds that answered well,
records each failing feed in its health entry (``chainlink:ETH``, listed by ``statuses()``
for ``GET /v1/prices``), and raises :class:`~bridge.errors.PriceUnavailable` only if every
asked feed failed. RPC and decoding errors never leave this module as anything but
``PriceUnavailable``.

The devnet and tests deploy ``contracts/ethereum/PriceFeed.sol``, which implements the same
interface (:func:`deploy_price_feed`, :func:`submit_answer`).

**History** (:class:`ChainlinkHistory`, the signers' price bound, ``bridge/committee/pricebound.py``):
the round *in force at a past time* ``t``, read with ``getRoundData`` so that every honest signer
reads the same round. All reads of one walk are pinned to one block. A proxy's round id is
``(phaseId << 64) | aggregatorRoundId``; within a phase, rounds' ``updatedAt`` never decreases,
so the latest round with ``updatedAt <= t`` is found by binary search over the aggregator round
ids (``getRoundData`` of the phase's first round, then halving); when even the phase's first
round is after ``t``, the walk moves to the previous phase, whose last round id it finds by
doubling probes (a missing round reverts or answers zeros) before searching it the same way. A
round that carries an earlier round's answer (``answeredInRound < roundId``) is replaced by that
earlier round (the answer's own round). The round is usable only if its answer is positive and
it was no older than the heartbeat at ``t``. ``t`` must be settled history: the pinned block's
timestamp is at least ``t``, or the wall clock is past ``t`` by more than ``max_clock_skew`` (a
round published later cannot carry ``updatedAt <= t``). Otherwise, and on any RPC failure, the
answer is a retryable ``PriceUnavailable``: the caller cannot tell yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak, to_checksum_address

from bridge.committee.pricebound import Reference
from bridge.config import EvmChainConfig
from bridge.errors import ChainError, ConfigError, PriceUnavailable, TransactionFailed
from bridge.pricing.sources.base import PricePoint
from bridge.pricing.sources.http import MalformedPriceData
from bridge.pricing.wrappers import SourceHealth
from relayers.evm.rpc import JsonRpcError, RpcPool

__all__ = [
    "ChainlinkHistory",
    "ChainlinkSource",
    "Feed",
    "FeedAnswerInvalid",
    "FeedStale",
    "RoundData",
    "deploy_price_feed",
    "submit_answer",
]

log = logging.getLogger("creditbridge.pricing.chainlink")

PRICE_FEED = "PriceFeed"  # the devnet's AggregatorV3Interface contract (contracts/ethereum)
LATEST_ROUND_DATA = keccak(text="latestRoundData()")[:4]  # 0xfeaf968c
DECIMALS = keccak(text="decimals()")[:4]  # 0x313ce567
GET_ROUND_DATA = keccak(text="getRoundData(uint80)")[:4]  # 0x9a6fc8f5
PHASE_SHIFT = 64
AGGREGATOR_ROUND_MASK = 2**PHASE_SHIFT - 1
ROUND_DATA_TYPES = ("uint80", "int256", "uint256", "uint256", "uint80")
MAX_FEED_DECIMALS = 36


class FeedStale(PriceUnavailable):
    """A Chainlink feed's latest answer is older than its heartbeat (or carried over)."""

    code = "price-source-stale"
    retryable = True


class FeedAnswerInvalid(PriceUnavailable):
    """A Chainlink feed answered no usable price (no round yet, zero or negative answer)."""

    code = "price-source-invalid-answer"
    retryable = True


@dataclass(frozen=True)
class RoundData:
    round_id: int
    answer: int
    started_at: int
    updated_at: int
    answered_in_round: int


@dataclass(frozen=True)
class Feed:
    """One feed: where to call it, its address and its heartbeat."""

    rpc: RpcPool | EvmChainConfig
    address: str | bytes
    heartbeat: timedelta


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _address(value: str | bytes, symbol: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            raw = b""
    else:
        raw = b""
    if len(raw) != 20 or raw == bytes(20):
        raise ConfigError(f"chainlink feed of {symbol}: address must be a non-zero 20-byte address")
    return raw


def _heartbeat(value: timedelta | int | float, symbol: str) -> timedelta:
    hb = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if hb <= timedelta(0):
        raise ConfigError(f"chainlink feed of {symbol}: heartbeat must be positive")
    return hb


def price_from_answer(answer: int, decimals: int) -> Decimal:
    """``answer / 10**decimals`` exactly (built from the digits: no context, no rounding)."""
    return Decimal(f"{answer}e-{decimals}")


class ChainlinkSource:
    """USD prices from Chainlink ``AggregatorV3Interface`` feeds, one feed per symbol.

    ``feeds`` maps a symbol to a :class:`Feed` or a ``(rpc, address, heartbeat)`` tuple,
    where ``rpc`` is an :class:`RpcPool` (shared, not closed here) or an
    :class:`EvmChainConfig` (the source makes one pool per chain and closes it in
    :meth:`aclose`), and ``heartbeat`` is a ``timedelta`` or seconds.
    """

    def __init__(
        self,
        feeds: Mapping[str, Feed | tuple[Any, Any, Any]],
        *,
        name: str = "chainlink",
        clock: Callable[[], datetime] = _utc_now,
        max_clock_skew: timedelta = timedelta(seconds=60),
        rpc_attempts: int = 2,
    ) -> None:
        if not feeds:
            raise ConfigError(f"{name}: no feeds configured")
        self.name = name
        self._clock = clock
        self.max_clock_skew = max_clock_skew
        self._owned: dict[str, RpcPool] = {}
        self._feeds: dict[str, tuple[RpcPool, bytes, timedelta]] = {}
        for symbol, spec in feeds.items():
            feed = spec if isinstance(spec, Feed) else Feed(*spec)
            self._feeds[symbol] = (
                self._pool(feed.rpc, rpc_attempts),
                _address(feed.address, symbol),
                _heartbeat(feed.heartbeat, symbol),
            )
        self.health = {s: SourceHealth(f"{name}:{s}") for s in self._feeds}

    def _pool(self, rpc: RpcPool | EvmChainConfig, attempts: int) -> RpcPool:
        if isinstance(rpc, RpcPool):
            return rpc
        if isinstance(rpc, EvmChainConfig):
            pool = self._owned.get(rpc.name)
            if pool is None:
                pool = self._owned[rpc.name] = RpcPool.from_config(rpc, attempts=attempts)
            return pool
        raise ConfigError(f"{self.name}: a feed's rpc must be an RpcPool or an evm chain config")

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(self._feeds)

    def heartbeat(self, symbol: str) -> timedelta:
        return self._feeds[symbol][2]

    def max_age_for_symbol(self, symbol: str) -> timedelta | None:
        """The staleness limit of ``symbol``'s points: its feed's heartbeat (for the aggregator)."""
        feed = self._feeds.get(symbol)
        return None if feed is None else feed[2]

    def feed_address(self, symbol: str) -> str:
        return to_checksum_address(self._feeds[symbol][1])

    # reading ---------------------------------------------------------------------------------
    async def read_round(self, symbol: str) -> tuple[RoundData, int]:
        """The feed's raw ``latestRoundData()`` and ``decimals()`` (no checks but decoding)."""
        pool, address, _ = self._feeds[symbol]
        what = f"{self.name}: {symbol} feed {to_checksum_address(address)}"
        target = "0x" + address.hex()
        calls = [
            ("eth_call", [{"to": target, "data": "0x" + LATEST_ROUND_DATA.hex()}, "latest"]),
            ("eth_call", [{"to": target, "data": "0x" + DECIMALS.hex()}, "latest"]),
        ]
        try:
            raw_round, raw_decimals = await pool.request_many(calls)
        except JsonRpcError as e:
            if e.is_revert:
                raise FeedAnswerInvalid(f"{what}: call reverted ({e.rpc_message[:120]})", retryable=False) from e
            raise PriceUnavailable(f"{what}: {e.detail}", retryable=e.retryable) from e
        except ChainError as e:
            raise PriceUnavailable(f"{what}: {e.detail}", retryable=e.retryable) from e
        except ConfigError as e:  # the endpoint serves another chain
            raise PriceUnavailable(f"{what}: {e.detail}", retryable=False) from e
        round_bytes = _hex(raw_round, what)
        decimals_bytes = _hex(raw_decimals, what)
        if not round_bytes or not decimals_bytes:
            raise MalformedPriceData(f"{what}: empty answer (is there a contract at that address?)")
        try:
            values = abi_decode(list(ROUND_DATA_TYPES), round_bytes)
            (decimals,) = abi_decode(["uint8"], decimals_bytes)
        except (DecodingError, ValueError, OverflowError) as e:
            raise MalformedPriceData(f"{what}: answer does not decode as AggregatorV3Interface ({e})") from e
        return RoundData(*(int(v) for v in values)), int(decimals)

    def check_round(self, symbol: str, rnd: RoundData, decimals: int, now: datetime) -> PricePoint:
        """The price point of a round, or the reason it is unusable (raised)."""
        _, address, heartbeat = self._feeds[symbol]
        what = f"{self.name}: {symbol} feed {to_checksum_address(address)}"
        if not 0 <= decimals <= MAX_FEED_DECIMALS:
            raise MalformedPriceData(f"{what}: decimals() = {decimals} is out of range")
        if rnd.round_id == 0 or rnd.updated_at == 0:
            raise FeedAnswerInvalid(f"{what}: the feed has no answered round yet")
        if rnd.answer <= 0:
            raise FeedAnswerInvalid(f"{what}: round {rnd.round_id} answered {rnd.answer}, not a positive price")
        if rnd.answered_in_round < rnd.round_id:
            raise FeedStale(
                f"{what}: round {rnd.round_id} carries the answer of round {rnd.answered_in_round} "
                "(the round has no answer of its own)"
            )
        try:
            updated = datetime.fromtimestamp(rnd.updated_at, UTC)
        except (OverflowError, OSError, ValueError) as e:
            raise MalformedPriceData(f"{what}: updatedAt {rnd.updated_at} is not a timestamp") from e
        age = now - updated
        if age < -self.max_clock_skew:
            raise MalformedPriceData(f"{what}: updatedAt {updated.isoformat()} is in the future")
        if age > heartbeat:
            raise FeedStale(
                f"{what}: last update {int(age.total_seconds())}s ago, older than the "
                f"{int(heartbeat.total_seconds())}s heartbeat"
            )
        return PricePoint(symbol, price_from_answer(rnd.answer, decimals), updated, self.name)

    async def _one(self, symbol: str) -> PricePoint:
        rnd, decimals = await self.read_round(symbol)
        return self.check_round(symbol, rnd, decimals, self._clock())

    async def fetch(self, symbols: frozenset[str]) -> dict[str, PricePoint]:
        wanted = sorted(s for s in symbols if s in self._feeds)
        if not wanted:
            return {}
        results = await asyncio.gather(*(self._one(s) for s in wanted), return_exceptions=True)
        points: dict[str, PricePoint] = {}
        errors: list[PriceUnavailable] = []
        now = self._clock()
        for symbol, result in zip(wanted, results):
            health = self.health[symbol]
            if isinstance(result, PricePoint):
                health.succeeded(now)
                points[symbol] = result
                continue
            if isinstance(result, asyncio.CancelledError):
                raise result
            if not isinstance(result, PriceUnavailable):
                if not isinstance(result, Exception):  # KeyboardInterrupt, SystemExit ...
                    raise result
                log.error("%s: %s feed raised %s", self.name, symbol, type(result).__name__, exc_info=result)
                wrapped = PriceUnavailable(f"{self.name}: {symbol}: unexpected {type(result).__name__}", retryable=True)
                wrapped.__cause__ = result
                result = wrapped
            health.failed(result, now)
            errors.append(result)
        if points or not errors:
            for e in errors:  # a partial answer: the caller sees no error, so log each one
                log.warning("%s", e.detail)
            return points
        if len(errors) == 1:
            raise errors[0]
        raise PriceUnavailable(
            "; ".join(e.detail for e in errors), retryable=any(e.retryable for e in errors)
        )

    def statuses(self) -> list[SourceHealth]:
        return [self.health[s] for s in sorted(self.health)]

    async def aclose(self) -> None:
        for pool in self._owned.values():
            await pool.aclose()
        self._owned.clear()


class _Absent(Exception):
    """getRoundData of a round the feed does not have (reverted or answered zeros)."""


class ChainlinkHistory:
    """One Chainlink feed (proxy) read as history: the round in force at a past time.

    ``rpc`` is an :class:`RpcPool` (shared, not closed here) or an :class:`EvmChainConfig` (a
    pool made and closed here). ``tolerance`` is what the price bound allows over this feed's
    price (see ``bridge/committee/pricebound.py``); ``clock`` returns unix seconds.
    """

    def __init__(self, rpc: RpcPool | EvmChainConfig, address: str | bytes, heartbeat: timedelta | int, *,
                 symbol: str, tolerance: Decimal | None = None, clock: Callable[[], float] = time.time,
                 max_clock_skew: int = 60, max_calls: int = 512, rpc_attempts: int = 2) -> None:
        self.symbol = symbol
        self._address = _address(address, symbol)
        self.heartbeat = _heartbeat(heartbeat, symbol)
        self.tolerance = tolerance
        self._clock = clock
        self.max_clock_skew = max_clock_skew
        self.max_calls = max_calls
        if isinstance(rpc, RpcPool):
            self._pool, self._owned = rpc, False
        elif isinstance(rpc, EvmChainConfig):
            self._pool, self._owned = RpcPool.from_config(rpc, attempts=rpc_attempts), True
        else:
            raise ConfigError(f"chainlink feed of {symbol}: rpc must be an RpcPool or an evm chain config")
        self._what = f"chainlink history: {symbol} feed {to_checksum_address(self._address)}"

    async def aclose(self) -> None:
        if self._owned:
            await self._pool.aclose()

    async def reference(self, token: str, at: int) -> Reference:
        """The price bound's reference (``bridge.committee.pricebound.ReferenceSource``)."""
        from fractions import Fraction

        if token != self.symbol:
            raise PriceUnavailable(f"{self._what}: asked for {token}", retryable=False)
        if self.tolerance is None:
            raise ConfigError(f"{self._what}: no tolerance configured")
        rnd, decimals = await self.round_at(at)
        return Reference(Fraction(rnd.answer, 10**decimals), Fraction(self.tolerance),
                         f"{self.symbol} Chainlink {to_checksum_address(self._address)} round {rnd.round_id} "
                         f"(phase {rnd.round_id >> PHASE_SHIFT}) answer {price_from_answer(rnd.answer, decimals)} "
                         f"updated at {rnd.updated_at}")

    async def round_at(self, at: int) -> tuple[RoundData, int]:
        """``(round, decimals)`` of the round in force at unix time ``at`` (see the module
        docstring); PriceUnavailable (retryable) if it cannot be told now."""
        try:
            return await self._round_at(at)
        except (ChainError, ConfigError) as e:
            raise PriceUnavailable(f"{self._what}: {e.detail}", retryable=True) from e
        except _Absent as e:
            raise PriceUnavailable(f"{self._what}: round {e.args[0]} is missing", retryable=True) from None

    async def _round_at(self, at: int) -> tuple[RoundData, int]:
        self._calls = 0
        head = await self._pool.get_block("latest")
        if head is None:
            raise PriceUnavailable(f"{self._what}: the node has no latest block", retryable=True)
        if head.timestamp < at and self._clock() < at + self.max_clock_skew:
            raise PriceUnavailable(f"{self._what}: time {at} is not settled history yet (head at {head.timestamp})",
                                   retryable=True)
        block = head.number
        latest_raw, decimals_raw = await self._pool.request_many([
            ("eth_call", [{"to": "0x" + self._address.hex(), "data": "0x" + LATEST_ROUND_DATA.hex()}, hex(block)]),
            ("eth_call", [{"to": "0x" + self._address.hex(), "data": "0x" + DECIMALS.hex()}, hex(block)]),
        ])
        try:
            latest = RoundData(*(int(v) for v in abi_decode(list(ROUND_DATA_TYPES), _hex(latest_raw, self._what))))
            (decimals,) = abi_decode(["uint8"], _hex(decimals_raw, self._what))
        except (DecodingError, ValueError, OverflowError) as e:
            raise MalformedPriceData(f"{self._what}: answer does not decode as AggregatorV3Interface ({e})") from e
        if not 0 <= decimals <= MAX_FEED_DECIMALS:
            raise MalformedPriceData(f"{self._what}: decimals() = {decimals} is out of range")
        if latest.round_id == 0 or latest.updated_at == 0:
            raise FeedAnswerInvalid(f"{self._what}: the feed has no answered round yet")
        found = await self._search(latest, at, block)
        if found.answered_in_round < found.round_id:  # a carried answer: use the answer's own round
            found = await self._get(found.answered_in_round, block)
        if found.answer <= 0:
            raise FeedAnswerInvalid(f"{self._what}: round {found.round_id} answered {found.answer}, not a price")
        if at - found.updated_at > self.heartbeat.total_seconds():
            raise FeedStale(f"{self._what}: at {at} the round in force ({found.round_id}, updated at "
                            f"{found.updated_at}) was older than the {int(self.heartbeat.total_seconds())}s heartbeat")
        return found, int(decimals)

    async def _search(self, latest: RoundData, at: int, block: int) -> RoundData:
        """The latest round with ``updatedAt <= at``, from ``latest`` back through phases."""
        if latest.updated_at <= at:
            return latest
        phase = latest.round_id >> PHASE_SHIFT
        hi = (latest.round_id & AGGREGATOR_ROUND_MASK) - 1  # rounds [1, hi] of this phase remain
        while True:
            if hi >= 1:
                first = await self._get_or_none((phase << PHASE_SHIFT) | 1, block)
                if first is not None and first.updated_at <= at:
                    lo, lo_round = 1, first  # invariant: round lo is <= at, rounds > hi are > at
                    while lo < hi:
                        mid = (lo + hi + 1) // 2
                        r = await self._get((phase << PHASE_SHIFT) | mid, block)
                        if r.updated_at <= at:
                            lo, lo_round = mid, r
                        else:
                            hi = mid - 1
                    return lo_round
            if phase == 0:
                break
            phase -= 1
            hi = await self._last_of_phase(phase, block)
        raise FeedAnswerInvalid(f"{self._what}: the feed has no round at or before {at}")

    async def _last_of_phase(self, phase: int, block: int) -> int:
        """The last aggregator round id of an earlier ``phase`` (0 if it has none): doubling
        probes, then a binary search between the last present and the first absent id."""
        base = phase << PHASE_SHIFT
        if await self._get_or_none(base | 1, block) is None:
            return 0
        present, step = 1, 2
        while step <= AGGREGATOR_ROUND_MASK and await self._get_or_none(base | step, block) is not None:
            present, step = step, step * 2
        absent = step
        while absent - present > 1:
            mid = (present + absent) // 2
            if await self._get_or_none(base | mid, block) is None:
                absent = mid
            else:
                present = mid
        return present

    async def _get_or_none(self, round_id: int, block: int) -> RoundData | None:
        try:
            return await self._get(round_id, block)
        except _Absent:
            return None

    async def _get(self, round_id: int, block: int) -> RoundData:
        self._calls += 1
        if self._calls > self.max_calls:
            raise PriceUnavailable(f"{self._what}: more than {self.max_calls} calls to find a round", retryable=True)
        data = GET_ROUND_DATA + round_id.to_bytes(32, "big")
        try:
            raw = await self._pool.call(self._address, data, block)
        except JsonRpcError as e:
            if e.is_revert:
                raise _Absent(round_id) from None
            raise
        if not raw:
            raise MalformedPriceData(f"{self._what}: getRoundData answered nothing (is the feed there?)")
        try:
            r = RoundData(*(int(v) for v in abi_decode(list(ROUND_DATA_TYPES), raw)))
        except (DecodingError, ValueError, OverflowError) as e:
            raise MalformedPriceData(f"{self._what}: getRoundData does not decode ({e})") from e
        if r.updated_at == 0 and r.started_at == 0:
            raise _Absent(round_id)
        return r


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise MalformedPriceData(f"{what}: eth_call answered {type(value).__name__}, not hex data")
    try:
        return bytes.fromhex(value[2:])
    except ValueError as e:
        raise MalformedPriceData(f"{what}: eth_call answered malformed hex") from e


# --- devnet and tests: deploy and feed a PriceFeed -------------------------------------------------
async def deploy_price_feed(
    rpc_url: str, private_key: str, *, decimals: int, description: str, answer: int | None = None
) -> str:
    """Deploy ``PriceFeed(decimals, description)`` and, if given, submit a first ``answer``."""
    from relayers.evm.wallet import deploy_to

    address = await deploy_to(rpc_url, PRICE_FEED, [decimals, description], private_key)
    if answer is not None:
        await submit_answer(rpc_url, private_key, address, answer)
    return address


async def submit_answer(rpc_url: str, private_key: str, feed: str, answer: int) -> dict:
    """``submit(answer)`` on a PriceFeed as its owner (a new round, updatedAt = block time)."""
    return await _owner_call(rpc_url, private_key, feed, "submit", answer)


async def start_round(rpc_url: str, private_key: str, feed: str) -> dict:
    """``startRound()``: a round without its own answer (answeredInRound < roundId)."""
    return await _owner_call(rpc_url, private_key, feed, "startRound")


async def new_phase(rpc_url: str, private_key: str, feed: str) -> dict:
    """``newPhase()``: the feed's round ids continue in the next phase (a proxy's new aggregator)."""
    return await _owner_call(rpc_url, private_key, feed, "newPhase")


async def _owner_call(rpc_url: str, private_key: str, feed: str, fn: str, *args: Any) -> dict:
    from eth_account import Account
    from web3 import AsyncHTTPProvider, AsyncWeb3
    from web3.exceptions import ContractLogicError, Web3Exception

    from relayers.evm.contracts import load_abi, send_transaction

    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    try:
        contract = w3.eth.contract(address=to_checksum_address(feed), abi=load_abi(PRICE_FEED))
        sender = Account.from_key(private_key).address
        try:
            tx = await getattr(contract.functions, fn)(*args).build_transaction({"from": sender})
        except ContractLogicError as e:
            raise TransactionFailed(f"PriceFeed.{fn} would revert: {e}", retryable=False) from e
        except (Web3Exception, OSError, asyncio.TimeoutError) as e:
            raise ChainError(f"preparing PriceFeed.{fn} failed: {e.__class__.__name__}: {e}") from e
        return await send_transaction(w3, tx, private_key)
    finally:
        await w3.provider.disconnect()
