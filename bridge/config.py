"""Configuration: one validated model for every component, loaded from TOML or JSON.

Chains are a list tagged by ``family`` (design rule 5) and validated at start-up; a bad
value stops the process with one clear line. Secrets never live here: keystores are files
encrypted at rest and their passwords come from environment variables named in the config.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from bridge.errors import ConfigError

_HEX40 = r"^0x[0-9a-fA-F]{40}$"

# the smallest held amount (base units of the chain's token) the committee refunds; a smaller
# one is kept in custody as dust and reported (refunding it would cost more than it returns).
# 0: refund everything. Recommended values per chain: README, "Refunds and dust".
MinRefund = Annotated[int, Field(strict=True, ge=0, lt=2**256)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvmChainConfig(_Model):
    family: Literal["evm"]
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    chain_id: int = Field(gt=0)
    rpc: list[str] = Field(min_length=1)
    token: str | None = None  # the native token paid on this chain (source chains)
    # "finalized" / "safe" block tags, or a number of confirmations below the head
    finality: Literal["finalized", "safe"] | int = "finalized"
    contracts: dict[str, Annotated[str, Field(pattern=_HEX40)]] = {}
    max_block_range: int = Field(default=1000, gt=0, le=100_000)
    poll_interval: float = Field(default=1.0, gt=0)
    start_block: int = Field(default=0, ge=0)
    request_timeout: float = Field(default=10.0, gt=0)
    min_refund: MinRefund = 0

    @field_validator("rpc")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for u in v:
            if not u.startswith(("http://", "https://", "ws://", "wss://")):
                raise ValueError(f"rpc url must be http(s):// or ws(s)://, got {u!r}")
        return v

    @field_validator("finality")
    @classmethod
    def _confirmations(cls, v):
        if isinstance(v, int) and not 0 <= v <= 10_000:
            raise ValueError("confirmations must be between 0 and 10000")
        return v


class SubstrateCommittee(_Model):
    """The committee's pallet_multisig account on an Asset Hub chain: its members' 32-byte
    public keys (0x hex) and the threshold; the account id is derived from them in code."""

    members: list[Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$")]] = Field(min_length=1, max_length=100)
    threshold: int = Field(ge=1)

    @model_validator(mode="after")
    def _t(self) -> "SubstrateCommittee":
        if self.threshold > len(self.members):
            raise ValueError("threshold exceeds the number of members")
        if len({m.lower() for m in self.members}) != len(self.members):
            raise ValueError("committee members must be distinct")
        return self


class SubstrateChainConfig(_Model):
    """An Asset Hub-style chain (Polkadot Hub: DOT, Kusama Asset Hub: KSM)."""

    family: Literal["substrate"]
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    rpc: list[str] = Field(min_length=1)
    token: str = Field(pattern=r"^[A-Z][A-Z0-9]{1,9}$")  # a symbol of the settings' tokens (DOT, KSM, WND, PAS ...)
    ss58_prefix: int = Field(ge=0, le=16383)
    genesis_hash: str | None = Field(default=None, pattern=r"^0x[0-9a-fA-F]{64}$")
    committee: SubstrateCommittee
    max_block_range: int = Field(default=100, gt=0, le=10_000)
    poll_interval: float = Field(default=2.0, gt=0)
    start_block: int = Field(default=0, ge=0)
    request_timeout: float = Field(default=30.0, gt=0)
    contracts: dict[str, str] = {}
    min_refund: MinRefund = 0

    @field_validator("rpc")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for u in v:
            if not u.startswith(("ws://", "wss://")):
                raise ValueError(f"substrate rpc url must be ws(s)://, got {u!r}")
        return v


# TON networks by global id (ConfigParam 19); the local chain has its own (-217)
TON_REAL_NETWORKS = {-239: "mainnet", -3: "testnet"}
# the smallest TON refund signed, in nanotons: relayers/ton/lock.py DEFAULT_MIN_RELEASE, the
# lock's own minimum (a release pays its fees, < 0.02 TON, out of its amount)
TON_DEFAULT_MIN_REFUND = 50_000_000


# the masterchain zero state (validator.zero_state) of each real network's global config: a
# liteserver config file for the other network is refused
TON_ZERO_STATES = {
    -239: ("F6OpKZKqvqeFp6CQmFomXNMfMj2EnaUSOXN+Mh+wVWk=", "XplPz01CXAps5qeSWUtxcyBfdAo5zVb1N979KLSKD24="),
    -3: ("gj+B8wb/AmlPk1z1AhVI484rhrUpgSr2oSFIh56VoSg=", "Z+IKwYS54DmmJmesw/nAD5DzWadnOCMzee+kdgSYDOg="),
}


def _read_liteserver_file(value: str, config_dir: Path | None) -> dict:
    p = Path(value).expanduser()
    if not p.is_absolute() and config_dir is not None:
        p = config_dir / p
    try:
        doc = json.loads(p.read_text())
    except OSError as e:
        raise ValueError(f"cannot read liteserver_config_file {p}: {e.strerror}") from None
    except ValueError as e:
        raise ValueError(f"liteserver_config_file {p} is not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("liteservers"), list):
        raise ValueError(f"liteserver_config_file {p} is not a TON global config (no liteservers list)")
    return doc


class TonChainConfig(_Model):
    """TON: a lock contract followed through liteservers (pytoniq LiteBalancer), with an
    optional toncenter v2 HTTP API as a second transport."""

    family: Literal["ton"]
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    token: Literal["TON"] = "TON"
    liteserver_config: dict | None = None  # global config JSON as LiteBalancer.from_config takes it
    # or the path of such a file (the public global config format; relative to the config
    # file's folder): read at load time into liteserver_config
    liteserver_config_file: str | None = None
    # the network's global id (mainnet -239, testnet -3): refund signatures and the lock's
    # address are bound to it; required to sign or submit refunds, checked against the chain
    # and the lock at start
    global_id: int | None = Field(default=None, ge=-(2**31), lt=2**31)
    # pytoniq's: 0 checks every liteserver proof (the default), 2 trusts the liteserver. Only
    # the local chain (no validator signatures) needs 2; on mainnet/testnet it also needs
    # allow_unproven = true
    trust_level: int = Field(default=0, ge=0, le=2)
    allow_unproven: bool = False
    # refunds below this (nanotons) are not signed: dust, kept and reported. At least the
    # lock's min_release (checked at start), which covers the fees a release pays itself
    min_refund: int = Field(default=TON_DEFAULT_MIN_REFUND, strict=True, gt=0, lt=2**256)
    toncenter: list[str] = []
    contracts: dict[str, str] = {}  # {"lock": "<raw 0:hex or user-friendly address>"}
    poll_interval: float = Field(default=2.0, gt=0)
    max_block_range: int = Field(default=100, gt=0, le=10_000)
    start_block: int = Field(default=0, ge=0)
    request_timeout: float = Field(default=15.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _liteserver_file(cls, data, info):
        if isinstance(data, dict) and data.get("liteserver_config_file") and data.get("liteserver_config") is None:
            config_dir = (info.context or {}).get("config_dir")
            data = {**data, "liteserver_config": _read_liteserver_file(str(data["liteserver_config_file"]), config_dir)}
        return data

    @model_validator(mode="after")
    def _transport(self) -> "TonChainConfig":
        zero = TON_ZERO_STATES.get(self.global_id)
        if zero is not None and self.liteserver_config is not None:
            state = (self.liteserver_config.get("validator") or {}).get("zero_state")
            if state is not None and (state.get("root_hash"), state.get("file_hash")) != zero:
                raise ValueError(f"liteserver config is not of TON {TON_REAL_NETWORKS[self.global_id]} (global id "
                                 f"{self.global_id}): its validator.zero_state differs")
        if self.liteserver_config is None and not self.toncenter:
            raise ValueError("a ton chain needs liteserver_config or toncenter URLs")
        if "lock" not in self.contracts:
            raise ValueError("a ton chain needs contracts.lock")
        network = TON_REAL_NETWORKS.get(self.global_id)
        if network and self.trust_level == 2 and not self.allow_unproven:
            raise ValueError(f"trust_level 2 reads {network} deposits without liteserver proofs: "
                             "use trust_level 0 (the default), or set allow_unproven = true")
        return self


class TokenConfig(_Model):
    """A token: its symbol, its decimals (``10**decimals`` base units make one whole token) and
    the symbol its USD price is asked under (default: the symbol itself; e.g. a testnet token
    priced by a fixed source under its own symbol).

    Without ``chain`` an entry defines a chain's *native* token (a chain's ``token`` names it).
    With ``chain`` it is a *non-native* token payable on that source chain, named by exactly the
    field the chain's family needs: ``contract`` (ERC-20, evm), ``asset_id`` (``pallet_assets``,
    substrate) or ``jetton_master`` (TEP-74, ton). A token is the pair (symbol, chain).

    Stablecoins: ``peg`` (USD per whole token, e.g. 1.00) and ``peg_band_bps`` arm the depeg
    guard (``bridge/pricing/quotes.py``): quotes always use the measured rate, and while it is
    more than the band away from the peg they are refused (``depeg = "refuse"``, the default)
    or priced at the measured rate anyway (``depeg = "price"``).
    """

    symbol: str = Field(pattern=r"^[A-Z][A-Z0-9]{1,9}$")
    decimals: int = Field(strict=True, ge=0, le=36)
    price_symbol: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9]{1,9}$")
    chain: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    contract: str | None = Field(default=None, pattern=_HEX40)
    asset_id: int | None = Field(default=None, strict=True, ge=0, lt=2**32)
    jetton_master: str | None = Field(default=None, min_length=1, max_length=80)
    peg: Decimal | None = Field(default=None, gt=0, allow_inf_nan=False)
    peg_band_bps: int | None = Field(default=None, strict=True, ge=1, le=5000)
    depeg: Literal["refuse", "price"] = "refuse"
    # a non-native token's smallest refund in base units (held amounts below it are kept as dust);
    # a native token's minimum is its chain's ``min_refund``
    min_refund: int = Field(default=0, strict=True, ge=0, lt=2**256)

    @property
    def priced_as(self) -> str:
        return self.price_symbol or self.symbol

    @property
    def locator(self) -> dict[str, str | int]:
        """The non-native token's on-chain name: ``{contract|asset_id|jetton_master: value}``."""
        return {k: getattr(self, k) for k in TOKEN_LOCATORS.values() if getattr(self, k) is not None}

    @model_validator(mode="after")
    def _shape(self) -> "TokenConfig":
        named = list(self.locator)
        if self.chain is None and named:
            raise ValueError(f"{named[0]} names a non-native token: give its chain too")
        if len(named) > 1:
            raise ValueError(f"give one of contract, asset_id, jetton_master, not {' and '.join(named)}")
        if (self.peg is None) != (self.peg_band_bps is None):
            raise ValueError("peg and peg_band_bps go together (e.g. peg = \"1.00\", peg_band_bps = 100)")
        if self.depeg != "refuse" and self.peg is None:
            raise ValueError("depeg needs a peg and peg_band_bps")
        if self.min_refund and self.chain is None:
            raise ValueError("min_refund on a native token: set the chain's min_refund instead")
        return self


# the field that names a non-native token on each chain family
TOKEN_LOCATORS = {"evm": "contract", "substrate": "asset_id", "ton": "jetton_master"}


@dataclass(frozen=True)
class PayableToken:
    """A token payable on one source chain: the pair (``symbol``, ``chain``) is its identity.

    ``native``: the chain's own currency (ETH, DOT, TON ...); otherwise exactly one of
    ``contract`` (evm), ``asset_id`` (substrate) or ``jetton_master`` (ton) names it.
    ``price_symbol`` is the asset its USD price is asked under: USDT on every chain is priced as
    one asset, so price caches and feeds stay keyed by it, while decimals, minimums and the
    signers' bound are per (symbol, chain)."""

    symbol: str
    chain: str
    family: str
    decimals: int
    price_symbol: str
    native: bool = True
    contract: str | None = None
    asset_id: int | None = None
    jetton_master: str | None = None
    peg: Decimal | None = None
    peg_band_bps: int | None = None
    depeg: str = "refuse"
    min_refund: int = 0  # non-native tokens: the smallest refund in base units (the chain's otherwise)

    @property
    def key(self) -> tuple[str, str]:
        return (self.symbol, self.chain)

    @property
    def label(self) -> str:
        """``SYMBOL@chain``: the per-chain key of config maps (``min_amount``, the price bound)."""
        return f"{self.symbol}@{self.chain}"


def per_token(mapping, symbol: str, chain: str, default=None):
    """A per-token config value: the ``SYMBOL@chain`` entry, else the ``SYMBOL`` one (every chain)."""
    v = mapping.get(f"{symbol}@{chain}")
    return mapping.get(symbol, default) if v is None else v


# the built-in tokens (their decimals are facts of the chains); ``[[tokens]]`` adds to them, and
# an entry with one of these symbols replaces the built-in one
DEFAULT_TOKENS: tuple[TokenConfig, ...] = (
    TokenConfig(symbol="DOT", decimals=10), TokenConfig(symbol="KSM", decimals=12),
    TokenConfig(symbol="ETH", decimals=18), TokenConfig(symbol="TON", decimals=9),
)


ChainConfig = Annotated[Union[EvmChainConfig, SubstrateChainConfig, TonChainConfig], Field(discriminator="family")]


class KeyRef(_Model):
    """A key kept in an encrypted keystore file; the password comes from an env variable."""

    keystore: Path
    password_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")


_SYMBOL = r"^[A-Z][A-Z0-9]{1,9}$"
# a per-token config key: SYMBOL (the token on every chain that pays it) or SYMBOL@chain
_TOKEN_KEY = r"^[A-Z][A-Z0-9]{1,9}(@[a-z][a-z0-9_-]{0,31})?$"
_SOURCE_NAME = r"^[a-z][a-z0-9_.:-]{0,31}$"


class FixedSourceConfig(_Model):
    """Fixed USD prices per whole token (devnet, tests, a configured last resort)."""

    kind: Literal["fixed"]
    name: str | None = Field(default=None, pattern=_SOURCE_NAME)  # default: "fixed"
    prices: dict[Annotated[str, Field(pattern=_SYMBOL)], Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]] = Field(
        min_length=1)


class ChainlinkFeedConfig(_Model):
    address: str = Field(pattern=_HEX40)
    # the feed's own staleness limit: it promises an update at least this often
    heartbeat_seconds: int = Field(gt=0, le=7 * 86_400)


class ChainlinkSourceConfig(_Model):
    """Chainlink AggregatorV3Interface feeds on one of the configured evm chains."""

    kind: Literal["chainlink"]
    name: str | None = Field(default=None, pattern=_SOURCE_NAME)  # default: "chainlink"
    chain: str  # an evm chain of ``chains`` (its RPC pool is used)
    feeds: dict[Annotated[str, Field(pattern=_SYMBOL)], ChainlinkFeedConfig] = Field(min_length=1)


class ExchangeSourceConfig(_Model):
    """A public exchange / aggregator HTTP API (no key needed; CoinGecko takes an optional one)."""

    kind: Literal["kraken", "binance", "coinbase", "coingecko"]
    name: str | None = Field(default=None, pattern=_SOURCE_NAME)  # default: the kind
    base_url: str | None = Field(default=None, pattern=r"^https?://")  # default: the public API
    timeout: float = Field(default=5.0, gt=0, le=60)
    # symbol -> the exchange's own pair / product / coin id (default: DOT, KSM, ETH, TON as listed)
    markets: dict[Annotated[str, Field(pattern=_SYMBOL)], str] | None = None
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")  # coingecko only

    @model_validator(mode="after")
    def _key(self) -> "ExchangeSourceConfig":
        if self.api_key_env is not None and self.kind != "coingecko":
            raise ValueError("api_key_env is for kind coingecko only")
        return self


PriceSourceConfig = Annotated[
    Union[FixedSourceConfig, ChainlinkSourceConfig, ExchangeSourceConfig], Field(discriminator="kind")
]


class PricingConfig(_Model):
    credit_price_usd: Decimal = Field(default=Decimal("0.01"), gt=0, allow_inf_nan=False)
    # fraction added to the credit price (0.02: a credit costs 2% more than credit_price_usd)
    credit_spread: Decimal = Field(default=Decimal("0"), ge=0, lt=1, allow_inf_nan=False)
    quote_ttl_seconds: int = Field(default=900, gt=0, le=86_400)
    # fixed USD prices per whole token: shorthand for one {kind = "fixed"} source named "fixed"
    fixed_usd: dict[str, Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]] = {}
    # smallest quotable amount in base units, per SYMBOL or SYMBOL@chain (decimals differ per chain)
    min_amount: dict[Annotated[str, Field(pattern=_TOKEN_KEY)], Annotated[int, Field(ge=0)]] = {}
    # price sources, tagged by kind; the API prices from their guarded median
    sources: list[PriceSourceConfig] = []
    min_sources: int = Field(default=1, ge=1)  # fresh sources needed per token
    max_deviation: Decimal = Field(default=Decimal("0.02"), ge=0, allow_inf_nan=False)  # (max-min)/median
    max_age_seconds: int = Field(default=300, gt=0)  # staleness limit (Chainlink: the feed's heartbeat)
    refresh_seconds: float = Field(default=30.0, gt=0)

    def source_configs(self) -> list:
        """The configured sources, ``fixed_usd`` (if any) as a fixed source named "fixed" last."""
        out = list(self.sources)
        if self.fixed_usd:
            out.append(FixedSourceConfig(kind="fixed", name="fixed", prices=dict(self.fixed_usd)))
        return out

    @staticmethod
    def source_name(cfg) -> str:
        return cfg.name or cfg.kind

    @model_validator(mode="after")
    def _sources(self) -> "PricingConfig":
        configs = self.source_configs()
        names = [self.source_name(c) for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"price source names must be unique, got {names} (set name = ... on one)")
        if configs and self.min_sources > len(configs):
            raise ValueError(f"min_sources is {self.min_sources} but only {len(configs)} source(s) are configured")
        return self


class ApiConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    quote_key: KeyRef
    rate_limit_per_minute: int = Field(default=600, gt=0)
    rate_limit_burst: int = Field(default=60, gt=0)
    trust_forwarded_for: bool = False
    # quote retention (bridge/storage/quotes.py): quotes expired longer ago than this that no
    # payment, late decision or credit uses are deleted, every interval, in batches
    quote_retention_seconds: int = Field(default=7 * 86_400, ge=0, le=10 * 365 * 86_400)
    quote_prune_interval_seconds: float = Field(default=600.0, gt=0, le=86_400)
    quote_prune_batch: int = Field(default=1000, ge=1, le=100_000)
    # GET /v1/admin/treasury (bridge/treasury_view.py): the committee signers' base URLs, and how
    # many must report the same figures (default: a majority of those listed)
    treasury_signers: list[str] = []
    treasury_threshold: int | None = Field(default=None, ge=1)
    # how often the API refreshes the view for its creditbridge_treasury_* metrics (seconds)
    treasury_poll_seconds: float = Field(default=30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _treasury_view(self) -> "ApiConfig":
        for u in self.treasury_signers:
            if not u.startswith(("http://", "https://")):
                raise ValueError(f"api.treasury_signers: {u!r} is not an http(s) URL")
        if len(set(self.treasury_signers)) != len(self.treasury_signers):
            raise ValueError("api.treasury_signers: a signer is listed twice")
        if self.treasury_threshold is not None and self.treasury_threshold > len(self.treasury_signers):
            raise ValueError(f"api.treasury_threshold: {self.treasury_threshold} is more than the "
                             f"{len(self.treasury_signers)} treasury_signers")
        return self


class ChainlinkBoundConfig(_Model):
    """A token bounded by a Chainlink feed's round in force at the quote's issue time."""

    kind: Literal["chainlink"]
    chain: str  # an evm chain of ``chains`` (its RPC pool is used): e.g. ethereum mainnet
    address: str = Field(pattern=_HEX40)  # the feed (proxy), e.g. ETH / USD, DOT / USD
    heartbeat_seconds: int = Field(gt=0, le=7 * 86_400)
    # the credits may be worth at most this fraction more than the paid amount at the round's price
    tolerance: Decimal = Field(default=Decimal("0.03"), ge=0, le=1, allow_inf_nan=False)
    # a time is settled history on the feed's chain once that chain's head is past it, or the
    # wall clock is past it by this many seconds (no later round can carry an earlier updatedAt)
    settle_seconds: int = Field(default=60, ge=0, le=3600)


class BandBoundConfig(_Model):
    """A token without an on-chain feed: a wide band around the signer's own ``[pricing]``
    sources' guarded median, read when the deposit is decided."""

    kind: Literal["band"]
    tolerance: Decimal = Field(default=Decimal("0.25"), ge=0, le=10, allow_inf_nan=False)


TokenBoundConfig = Annotated[Union[ChainlinkBoundConfig, BandBoundConfig], Field(discriminator="kind")]


class PriceBoundConfig(_Model):
    """The signer's own bound on what a deposit may mint (bridge/committee/pricebound.py):
    every source chain's token is bounded (``tokens``) or explicitly left to the gateway key
    alone (``unbounded``)."""

    max_deposit_usd: Decimal = Field(gt=0, allow_inf_nan=False)  # hard cap on one deposit's credits
    # per SYMBOL (that token on every chain paying it) or SYMBOL@chain (one chain; wins)
    tokens: dict[Annotated[str, Field(pattern=_TOKEN_KEY)], TokenBoundConfig] = {}
    unbounded: list[Annotated[str, Field(pattern=_TOKEN_KEY)]] = []
    # the API's quote TTL (a payment expires with its quote): issue time = expires_at - TTL;
    # default: this config's pricing.quote_ttl_seconds
    quote_ttl_seconds: int | None = Field(default=None, gt=0, le=86_400)

    @model_validator(mode="after")
    def _disjoint(self) -> "PriceBoundConfig":
        both = sorted(set(self.tokens) & set(self.unbounded))
        if both:
            raise ValueError(f"tokens both bounded and unbounded: {', '.join(both)}")
        return self


class SignerConfig(_Model):
    name: str
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    key: KeyRef
    gateway_url: str
    gateway_public_key: str = Field(pattern=r"^[0-9a-f]{64}$")  # Ed25519, hex
    # how long after a payment's expiry a deposit is still honoured (block time vs expiry)
    late_grace_seconds: int = Field(default=0, ge=0)
    # the member's Ed25519 key: TON lock releases and Asset Hub multisig approvals (refunds on
    # those chains need it; without it this node authorizes Ethereum refunds only)
    refund_key: KeyRef | None = None
    # required: the committee's own bound on the terms' rate (the gateway key alone cannot mint)
    price_bound: PriceBoundConfig | None = None
    # a deposit whose payment reference the gateway does not know is asked about again (a
    # database failover must not lose it) until this long after its block time, then refunded
    # in full to its payer (purpose "unattributed"); at least a minute, at most 30 days
    unknown_reference_refund_after_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400)


class AggregatorConfig(_Model):
    signers: list[str] = Field(min_length=1)
    key: KeyRef  # pays the settlement chain's gas; holds no authority
    batch_size: int = Field(default=32, gt=0, le=256)
    poll_interval: float = Field(default=1.0, gt=0)
    # largest age (s) of attestations worth collecting before a batch is cut anyway
    max_batch_wait: float = Field(default=2.0, ge=0)
    # refunds on EVM locks: most gas a release may use (one whose estimate is above is parked
    # as failed: a payer contract burning gas), and how many mined reverts park a release
    refund_gas_cap: int = Field(default=300_000, ge=100_000, le=30_000_000)
    refund_max_reverts: int = Field(default=3, ge=1, le=100)
    # plain transfers to per-payment deposit addresses on EVM locks (relayers/evm/collector.py):
    # the gateway whose reference feed names the payments to watch (unset: no collector), how
    # often the collector runs (s), and every how many final blocks it also polls the watched
    # addresses' balances (funds sent by contracts leave no transaction to scan)
    gateway_url: str | None = None
    collect_interval: float = Field(default=2.0, gt=0, le=3600)
    collect_balance_every_blocks: int = Field(default=20, ge=1, le=100_000)
    # settlement transactions' fees (relayers/evm/fees.py), in wei per gas: the cap on
    # maxFeePerGas (unset: no cap; a transaction whose base fee + tip is above it is not sent),
    # the priority fee (unset: the node's suggestion), and the replacement of a transaction
    # left unmined fee_bump_after_seconds: same nonce, both fees raised by fee_bump_percent
    # (>= 10, the geth/anvil replacement minimum), at most max_fee_bumps times, never above the cap
    max_fee_per_gas: int | None = Field(default=None, gt=0, lt=2**256)
    priority_fee_per_gas: int | None = Field(default=None, ge=0, lt=2**256)
    fee_bump_percent: int = Field(default=12, ge=10, le=1000)
    fee_bump_after_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_fee_bumps: int = Field(default=3, ge=0, le=20)
    # several relays (each with its own gas key): relay relay_index of relay_count settles the
    # deposits whose id hashes to its index at once and the others only when they have been
    # ready for takeover_after_seconds (their relay is down), so relays rarely send the same batch
    relay_index: int = Field(default=0, ge=0)
    relay_count: int = Field(default=1, ge=1, le=64)
    takeover_after_seconds: float = Field(default=30.0, ge=0, le=86_400)

    @model_validator(mode="after")
    def _collector(self) -> "AggregatorConfig":
        if self.gateway_url is not None and not self.gateway_url.startswith(("http://", "https://")):
            raise ValueError(f"aggregator.gateway_url: {self.gateway_url!r} is not an http(s) URL")
        if self.relay_index >= self.relay_count:
            raise ValueError(f"aggregator.relay_index: {self.relay_index} must be below relay_count "
                             f"({self.relay_count})")
        if (self.max_fee_per_gas is not None and self.priority_fee_per_gas is not None
                and self.priority_fee_per_gas > self.max_fee_per_gas):
            raise ValueError(f"aggregator.priority_fee_per_gas: {self.priority_fee_per_gas} is above "
                             f"max_fee_per_gas ({self.max_fee_per_gas})")
        return self


class WebhooksConfig(_Model):
    """Webhook delivery: where targets may point and how redelivery backs off."""

    # target addresses: public ones only, unless these allow more (the devnet allows loopback)
    allow_loopback: bool = False
    allow_private: bool = False  # RFC 1918 / ULA / CGNAT; never link-local or metadata (webhooks/targets.py)
    max_attempts: int = Field(default=8, ge=1, le=50)
    backoff_initial_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=600.0, gt=0)
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    max_webhooks_per_merchant: int = Field(default=16, ge=1, le=1000)


class PaymentsConfig(_Model):
    """The API's payment lifecycle."""

    # must equal the signers' signer.late_grace_seconds: the API predicts their decisions
    late_grace_seconds: int = Field(default=0, ge=0)
    webhooks: WebhooksConfig = WebhooksConfig()
    # late deposits (after expires_at + grace): credited at a fresh quote when the price of the
    # quoted credits moved at most this many basis points (bridge/payments/late.py); 0: every
    # late deposit is held for refund
    late_tolerance_bps: int = Field(default=0, ge=0, le=10000)


class GovernorLimits(_Model):
    # rolling 24 h limit on the USD value credited from this chain (credits x credit price)
    daily_limit_usd: Decimal = Field(gt=0, allow_inf_nan=False)
    # a single deposit worth more than this waits ``large_payment_delay_seconds`` after its block
    large_payment_usd: Decimal = Field(gt=0, allow_inf_nan=False)
    large_payment_delay_seconds: int = Field(default=86_400, ge=0, le=30 * 86_400)


class GovernorConfig(_Model):
    """Per source chain limits that signers enforce before attesting (same on every signer)."""

    chains: dict[str, GovernorLimits] = {}


class TreasuryConfig(_Model):
    """Where the committee sweeps earned funds (issue 12, bridge/payments/treasury.py). Part of the
    committee's configuration: every signer has the same section and signs a sweep only to the
    address named here for the custody's chain; changing it takes what a committee change takes."""

    # source chain name -> treasury address in that chain's own form (EVM 0x.., SS58, TON raw or
    # user-friendly); a chain without one is never swept
    addresses: dict[str, str] = {}
    # epoch k covers credits recorded up to settlement block k * epoch_blocks
    epoch_blocks: int = Field(default=7200, gt=0, le=10_000_000)
    # base units a custody keeps whatever it owes (Asset Hub: the existential deposit)
    reserve: dict[str, Annotated[int, Field(ge=0)]] = {}
    # how often the sweeper looks for a closed epoch (seconds)
    poll_interval: float = Field(default=5.0, gt=0)


class StorageConfig(_Model):
    url: str = "sqlite+aiosqlite:///creditbridge.db"
    # or the name of an environment variable holding the URL (a PostgreSQL URL carries a
    # password: keep it out of the file); read at load time, redacted from logs
    url_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")

    @model_validator(mode="before")
    @classmethod
    def _from_env(cls, data):
        if isinstance(data, dict) and data.get("url_env"):
            if "url" in data:
                raise ValueError("give storage.url or storage.url_env, not both")
            data = {**data, "url": secret_from_env(str(data["url_env"]))}
        return data


class Settings(_Model):
    chains: list[ChainConfig] = Field(min_length=1)
    # native tokens beyond (or replacing) the built-in DOT, KSM, ETH, TON (DEFAULT_TOKENS), and
    # non-native ones (with ``chain``: ERC-20s, Asset Hub assets, jettons)
    tokens: list[TokenConfig] = []
    settlement_chain: str
    storage: StorageConfig = StorageConfig()
    pricing: PricingConfig = PricingConfig()
    api: ApiConfig | None = None
    signer: SignerConfig | None = None
    aggregator: AggregatorConfig | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    payments: PaymentsConfig = PaymentsConfig()
    governor: GovernorConfig = GovernorConfig()
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    treasury: TreasuryConfig | None = None  # issue 12: committee-signed sweeps of earned funds
    # the committee / deployment manifest (bridge/manifest.py; relative to the config's folder):
    # what the config omits is taken from it, what it states must agree with it
    manifest: str | None = None
    _manifest = PrivateAttr(default=None)  # the loaded bridge.manifest.Manifest

    @property
    def manifest_data(self):
        """The manifest this config points to (loaded by ``load_settings``), or None."""
        return self._manifest

    @model_validator(mode="after")
    def _cross(self) -> "Settings":
        names = [c.name for c in self.chains]
        if len(set(names)) != len(names):
            raise ValueError("chain names must be unique")
        st = self.chain(self.settlement_chain)
        if st.family != "evm":
            raise ValueError(f"settlement chain {st.name!r} must be an evm chain")
        if "credits" not in st.contracts:
            raise ValueError(f"settlement chain {st.name!r} needs contracts.credits")
        declared = [t.symbol for t in self.tokens if t.chain is None]
        if len(set(declared)) != len(declared):
            raise ValueError(f"tokens: symbols must be unique, got {declared}")
        table = self.token_table()
        for c in self.chains:
            if c.token and c.token not in table:
                raise ValueError(f"chain {c.name!r}: token {c.token!r} is not configured "
                                 f"(known: {', '.join(sorted(table))}; add it under [[tokens]])")
        tokens = [c.token for c in self.source_chains()]
        if len(set(tokens)) != len(tokens):
            raise ValueError("each native token can be paid on one source chain only")
        self._check_non_native()
        for key in self.pricing.min_amount:
            if "@" in key:  # a plain symbol may name a token of another profile (shared pricing tables)
                self._check_token_key("pricing.min_amount", key)
        for name in self.governor.chains:
            if name not in [c.name for c in self.source_chains()]:
                raise ValueError(f"governor.chains: {name!r} is not a source chain")
        for c in self.source_chains():
            if c.family in ("evm", "ton") and "lock" not in c.contracts:
                raise ValueError(f"source chain {c.name!r} needs contracts.lock")
        if self.signer is not None:
            self._check_price_bound(names)
        _check_treasury(self)
        for src in self.pricing.sources:
            if src.kind == "chainlink":
                if src.chain not in names:
                    raise ValueError(f"pricing source {src.name or src.kind!r}: no chain named {src.chain!r}")
                if self.chain(src.chain).family != "evm":
                    raise ValueError(f"pricing source {src.name or src.kind!r}: chain {src.chain!r} is not an evm chain")
        return self

    def _check_non_native(self) -> None:
        from bridge import addresses

        sources = {c.name: c for c in self.source_chains()}
        seen: set[tuple[str, str]] = set()
        for i, t in enumerate(self.tokens):
            if t.chain is None:
                continue
            where = f"tokens.{i} ({t.symbol} on {t.chain})"
            c = sources.get(t.chain)
            if c is None:
                raise ValueError(f"{where}: {t.chain!r} is not a source chain "
                                 f"(source chains: {', '.join(sorted(sources)) or 'none'})")
            if (t.symbol, t.chain) in seen:
                raise ValueError(f"{where}: the token is declared twice")
            seen.add((t.symbol, t.chain))
            if t.symbol == c.token:
                raise ValueError(f"{where}: {t.symbol} is the chain's native token")
            need = TOKEN_LOCATORS[c.family]
            have = list(t.locator)
            if have != [need]:
                raise ValueError(f"{where}: a non-native token on a {c.family} chain is named by {need}"
                                 + (f", not {have[0]}" if have else ""))
            if t.jetton_master is not None:
                try:
                    addresses.parse("ton", t.jetton_master)
                except ValueError as e:
                    raise ValueError(f"{where}: jetton_master: {e}") from None

    def _check_token_key(self, where: str, key: str) -> None:
        symbol, _, chain = key.partition("@")
        known = {t.key for t in self.payable_tokens()}
        if chain and (symbol, chain) not in known:
            raise ValueError(f"{where}: {key}: {symbol} is not payable on {chain!r}")
        if not chain and symbol not in {s for s, _ in known}:
            raise ValueError(f"{where}: {key} is not paid on any source chain")

    def _check_price_bound(self, names: list[str]) -> None:
        pb = self.signer.price_bound
        payable = self.payable_tokens()
        tokens = sorted(t.symbol if t.native else t.label for t in payable)
        if pb is None:
            raise ValueError(
                "signer.price_bound is required: without it the gateway key alone can mint credits; bound "
                f"each source token ({', '.join(tokens)}) in price_bound.tokens or list it in price_bound.unbounded")
        missing = [t.label if not t.native else t.symbol for t in payable
                   if _bound_of(pb, t) is None and t.label not in pb.unbounded and t.symbol not in pb.unbounded]
        if missing:
            raise ValueError(f"signer.price_bound: token(s) {', '.join(sorted(missing))} neither bounded (tokens) "
                             "nor explicitly unbounded (unbounded)")
        for key in [*pb.tokens, *pb.unbounded]:
            self._check_token_key("signer.price_bound", key)
        for token, b in pb.tokens.items():
            if b.kind == "chainlink":
                if b.chain not in names:
                    raise ValueError(f"signer.price_bound.tokens.{token}: no chain named {b.chain!r}")
                if self.chain(b.chain).family != "evm":
                    raise ValueError(f"signer.price_bound.tokens.{token}: chain {b.chain!r} is not an evm chain")
            elif not self.pricing.source_configs():
                raise ValueError(f"signer.price_bound.tokens.{token}: a band needs this config's pricing sources")

    def token_table(self) -> dict[str, TokenConfig]:
        """Every known native token by symbol: the built-in ones, then ``[[tokens]]`` entries
        without a chain (which win)."""
        table = {t.symbol: t for t in DEFAULT_TOKENS}
        table.update({t.symbol: t for t in self.tokens if t.chain is None})
        return table

    def bound_tokens(self) -> list[tuple[PayableToken, "ChainlinkBoundConfig | BandBoundConfig"]]:
        """The signer's price bound per payable token: the ``SYMBOL@chain`` entry of
        ``signer.price_bound.tokens``, else the ``SYMBOL`` one; unbounded tokens are left out."""
        pb = self.signer.price_bound if self.signer is not None else None
        if pb is None:
            return []
        return [(t, b) for t in self.payable_tokens() if (b := _bound_of(pb, t)) is not None]

    def payable_tokens(self) -> list[PayableToken]:
        """Every token payable on a source chain: each chain's native token, then the
        non-native ``[[tokens]]`` in config order. (symbol, chain) is unique."""
        table = self.token_table()
        out = []
        for c in self.source_chains():
            t = table[c.token]
            out.append(PayableToken(symbol=t.symbol, chain=c.name, family=c.family, decimals=t.decimals,
                                    price_symbol=t.priced_as, native=True, peg=t.peg,
                                    peg_band_bps=t.peg_band_bps, depeg=t.depeg))
        families = {c.name: c.family for c in self.source_chains()}
        for t in self.tokens:
            if t.chain is not None and t.chain in families:
                out.append(PayableToken(symbol=t.symbol, chain=t.chain, family=families[t.chain],
                                        decimals=t.decimals, price_symbol=t.priced_as, native=False,
                                        contract=t.contract, asset_id=t.asset_id, jetton_master=t.jetton_master,
                                        peg=t.peg, peg_band_bps=t.peg_band_bps, depeg=t.depeg,
                                        min_refund=t.min_refund))
        return out

    def token(self, symbol: str) -> TokenConfig:
        try:
            return self.token_table()[symbol]
        except KeyError:
            raise ConfigError(f"token {symbol!r} is not configured") from None

    def chain(self, name: str):
        for c in self.chains:
            if c.name == name:
                return c
        raise ValueError(f"no chain named {name!r}")

    def source_chains(self) -> list:
        return [c for c in self.chains if c.name != self.settlement_chain and c.token]

    def chain_for_token(self, token: str):
        for c in self.source_chains():
            if c.token == token:
                return c
        raise KeyError(token)


def _bound_of(pb: PriceBoundConfig, t: PayableToken):
    """The bound of token ``t``: its ``SYMBOL@chain`` entry (bounded or listed unbounded) wins
    over the symbol's; None when unbounded or not configured."""
    if t.label in pb.tokens:
        return pb.tokens[t.label]
    if t.label in pb.unbounded:
        return None
    return pb.tokens.get(t.symbol)


def _check_treasury(settings: "Settings") -> None:
    from bridge import addresses

    t = settings.treasury
    if t is None:
        return
    sources = {c.name: c for c in settings.source_chains()}
    for name in [*t.addresses, *t.reserve]:
        if name not in sources:
            raise ValueError(f"treasury: {name!r} is not a source chain")
    for name, value in t.addresses.items():
        c = sources[name]
        try:
            parsed = addresses.parse(c.family, value)
            lock = c.contracts.get("lock")
            if lock is not None and parsed == addresses.parse(c.family, lock):
                raise ValueError("the treasury cannot be the custody itself")
        except ValueError as e:
            raise ValueError(f"treasury.addresses.{name}: {e}") from None


def load_settings(path: str | Path) -> Settings:
    """Read and validate a config file (``.toml`` or ``.json``); raise ConfigError in one line."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode()) if p.suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"config {p} is not valid {p.suffix[1:] or 'json'}: {e}") from None
    return settings_from_dict(data, origin=str(p), config_path=p)


def settings_from_dict(data: dict, origin: str = "config", config_path: str | Path | None = None) -> Settings:
    """Validate ``data``; with a ``manifest`` key, the manifest fills what ``data`` omits first."""
    manifest = None
    if isinstance(data, dict) and isinstance(data.get("manifest"), str):
        from bridge import manifest as mf

        manifest = mf.load_manifest(mf.resolve_path(data["manifest"], config_path))
        data = mf.merge_config(data, manifest)
    try:
        config_dir = Path(config_path).resolve().parent if config_path is not None else None
        settings = Settings.model_validate(data, context={"config_dir": config_dir})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"{origin}: {where}: {first['msg']} ({e.error_count()} error(s))") from None
    settings._manifest = manifest
    return settings


def secret_from_env(name: str) -> str:
    try:
        v = os.environ[name]
    except KeyError:
        raise ConfigError(f"environment variable {name} is not set") from None
    if not v:
        raise ConfigError(f"environment variable {name} is empty")
    from bridge.logs import register_secret

    register_secret(v)  # never logged
    return v
