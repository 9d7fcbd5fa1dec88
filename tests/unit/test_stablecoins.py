"""Stablecoins (issue 15, item 4): a token is (symbol, chain); USDT payable on several chains
needs the chain in a quote; 6-decimal maths is exact and never sells more credits than paid for;
the depeg guard refuses (or, configured so, prices at the measured rate) a stablecoin outside its
band -- never an assumed 1.00; the config model names each non-native token by exactly the field
its chain family needs, with one-line errors."""

from __future__ import annotations

import logging
import re
import shutil
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.config import PricingConfig, settings_from_dict
from bridge.errors import ConfigError, InputError, TokenAmbiguous, TokenDepegged, TokenNotOffered
from bridge.pricing.credits import amount_for_credits, credits_for_amount
from bridge.pricing.quotes import QuoteService, QuoteSigner
from bridge.pricing.sources.fixed import FixedPriceSource

MEMBER = "0x" + "d4" * 32
USDC_ETH = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
USDT_ETH = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
USDT_TON = "EQCxE6mUtQJKFnGfaROTKOt1lZbDiiX1kCixRv7Nw2Id_sDs"
POLKADOT_HUB = "0x68d56f15f85d3136970ec16946040bc1752654e906147f7e43e9d539d7c3de2f"
ROOT = Path(__file__).resolve().parents[2]


def stable(symbol, chain, depeg=None, **locator) -> dict:
    t = {"symbol": symbol, "chain": chain, "decimals": 6, "peg": "1.00", "peg_band_bps": 100, **locator}
    if depeg:
        t["depeg"] = depeg
    return t


def config(tokens=None, **pricing) -> dict:
    return {
        "chains": [
            {"family": "evm", "name": "ethereum", "chain_id": 1, "rpc": ["http://127.0.0.1:1"], "token": "ETH",
             "contracts": {"lock": "0x" + "11" * 20}},
            {"family": "substrate", "name": "polkadot", "rpc": ["ws://127.0.0.1:1"], "token": "DOT",
             "ss58_prefix": 0, "genesis_hash": POLKADOT_HUB, "committee": {"members": [MEMBER], "threshold": 1}},
            {"family": "ton", "name": "ton", "liteserver_config": {"liteservers": []},
             "contracts": {"lock": "0:" + "33" * 32}},
            {"family": "evm", "name": "settlement", "chain_id": 8453, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": "0x" + "22" * 20}},
        ],
        "settlement_chain": "settlement",
        "tokens": [stable("USDC", "ethereum", contract=USDC_ETH), stable("USDT", "ethereum", contract=USDT_ETH),
                   stable("USDT", "polkadot", asset_id=1984), stable("USDT", "ton", jetton_master=USDT_TON)]
        if tokens is None else tokens,
        "pricing": {"credit_price_usd": "0.01", "fixed_usd": {"ETH": "3000", "DOT": "5", "TON": "3",
                                                              "USDC": "0.9998", "USDT": "1.0003"}, **pricing},
    }


def service(settings, prices=None, registry=None) -> QuoteService:
    source = FixedPriceSource({k: Decimal(v) for k, v in (prices or settings.pricing.fixed_usd).items()})
    return QuoteService.from_settings(settings, source, QuoteSigner.from_secret(bytes(range(32))),
                                      registry=registry or CollectorRegistry())


# --- the token model --------------------------------------------------------------------------
def test_payable_tokens_are_symbol_chain_pairs():
    s = settings_from_dict(config())
    got = [(t.symbol, t.chain, t.native, t.contract, t.asset_id, t.jetton_master) for t in s.payable_tokens()]
    assert got == [("ETH", "ethereum", True, None, None, None), ("DOT", "polkadot", True, None, None, None),
                   ("TON", "ton", True, None, None, None),
                   ("USDC", "ethereum", False, USDC_ETH, None, None), ("USDT", "ethereum", False, USDT_ETH, None, None),
                   ("USDT", "polkadot", False, None, 1984, None), ("USDT", "ton", False, None, None, USDT_TON)]


@pytest.mark.parametrize("tokens, message", [
    ([stable("USDT", "polkadot", contract=USDT_ETH)],
     "tokens.0 (USDT on polkadot): a non-native token on a substrate chain is named by asset_id, not contract"),
    ([stable("USDT", "ethereum")], "tokens.0 (USDT on ethereum): a non-native token on a evm chain is named by contract"),
    ([stable("USDT", "ton", asset_id=1984)],
     "tokens.0 (USDT on ton): a non-native token on a ton chain is named by jetton_master, not asset_id"),
    ([stable("USDT", "ton", jetton_master="EQnotanaddress")], "tokens.0 (USDT on ton): jetton_master:"),
    ([stable("USDT", "polkadot", asset_id=1984, contract=USDT_ETH)],
     "give one of contract, asset_id, jetton_master, not contract and asset_id"),
    ([{"symbol": "USDT", "decimals": 6, "asset_id": 1984}], "asset_id names a non-native token: give its chain too"),
    ([stable("USDT", "settlement", contract=USDT_ETH)], "tokens.0 (USDT on settlement): 'settlement' is not a source chain"),
    ([stable("USDT", "kusama", asset_id=1984)], "'kusama' is not a source chain"),
    ([stable("USDT", "polkadot", asset_id=1984), stable("USDT", "polkadot", asset_id=1985)],
     "tokens.1 (USDT on polkadot): the token is declared twice"),
    ([stable("DOT", "polkadot", asset_id=5)], "tokens.0 (DOT on polkadot): DOT is the chain's native token"),
    ([{**stable("USDT", "polkadot", asset_id=1984), "peg_band_bps": None}], "peg and peg_band_bps go together"),
    ([{"symbol": "USDT", "chain": "polkadot", "decimals": 6, "asset_id": 1984, "depeg": "price"}],
     "depeg needs a peg and peg_band_bps"),
    ([{**stable("USDT", "polkadot", asset_id=1984), "depeg": "ignore"}], "tokens.0.depeg"),
    ([{**stable("USDT", "polkadot", asset_id=1984), "peg_band_bps": 0}], "tokens.0.peg_band_bps"),
    ([{**stable("USDT", "polkadot", asset_id=1984), "asset_id": -1}], "tokens.0.asset_id"),
    ([{**stable("USDT", "ethereum", contract="0x1234")}], "tokens.0.contract"),
])
def test_bad_stablecoin_configs_are_one_line_errors(tokens, message):
    for t in tokens:
        for k in [k for k, v in t.items() if v is None]:
            del t[k]
    with pytest.raises(ConfigError) as e:
        settings_from_dict(config(tokens))
    assert "\n" not in str(e.value)
    assert message in str(e.value)


def test_per_chain_min_amount_keys_must_name_a_payable_token():
    with pytest.raises(ConfigError, match=r"pricing.min_amount: USDT@kusama: USDT is not payable on 'kusama'"):
        settings_from_dict(config(min_amount={"USDT@kusama": 1}))


# --- resolving (symbol, chain) ----------------------------------------------------------------
def test_a_symbol_on_several_chains_needs_the_chain():
    svc = service(settings_from_dict(config()))
    with pytest.raises(TokenAmbiguous) as e:
        svc.resolve("USDT")
    assert e.value.code == "token-ambiguous" and e.value.http_status == 400
    assert "USDT is payable on several chains (ethereum, polkadot, ton)" in e.value.detail
    assert svc.resolve("USDT", "polkadot").asset_id == 1984
    assert svc.resolve("USDC").chain == "ethereum"  # one chain only: no chain needed
    with pytest.raises(TokenNotOffered) as e:
        svc.resolve("USDC", "polkadot")
    assert e.value.http_status == 400 and "chain 'polkadot' does not offer USDC; USDC is payable on: ethereum" in e.value.detail
    with pytest.raises(InputError, match="unknown token"):
        svc.resolve("DAI")


async def test_quotes_carry_the_chain_and_its_decimals():
    s = settings_from_dict(config(tokens=[stable("USDT", "polkadot", asset_id=1984),
                                          {**stable("USDT", "ethereum", contract=USDT_ETH), "decimals": 18}],
                                  min_amount={"USDT@polkadot": 2_000_000, "USDT": 5}))
    svc = service(s)
    dot = await svc.make_quote("USDT", credits=300, chain="polkadot")
    eth = await svc.make_quote("USDT", credits=300, chain="ethereum")
    assert (dot.token, dot.chain, eth.chain) == ("USDT", "polkadot", "ethereum")
    assert dot.rate == eth.rate == Decimal("1.0003")  # one asset, one price; decimals per chain
    assert dot.amount == amount_for_credits(300, Decimal("0.01"), Decimal("1.0003"), 6) == 2_999_101
    assert eth.amount == amount_for_credits(300, Decimal("0.01"), Decimal("1.0003"), 18)
    with pytest.raises(InputError, match="below the minimum of 2000000 base units of USDT"):
        await svc.make_quote("USDT", credits=100, chain="polkadot")  # the per-chain minimum wins
    assert (await svc.make_quote("USDT", credits=1, chain="ethereum")).amount > 5


# --- exact 6-decimal maths ----------------------------------------------------------------------
@pytest.mark.parametrize("rate", ["1", "0.9998", "1.0003", "0.99995", "1.00000001", "0.333333"])
def test_six_decimal_maths_never_sells_more_credits_than_paid_for(rate):
    price, r = Decimal("0.01"), Decimal(rate)
    for credits in [*range(1, 400), 10**6 + 7, 123_456_789, 10**15 + 3]:
        amount = amount_for_credits(credits, price, r, 6)
        # paid >= worth of the credits, exactly; one base unit less would not pay for them
        assert Fraction(amount, 10**6) * Fraction(r) >= credits * Fraction(price)
        assert Fraction(amount - 1, 10**6) * Fraction(r) < credits * Fraction(price)
        # paying that amount buys at least the credits quoted, and never more than it is worth
        bought = credits_for_amount(amount, price, r, 6)
        assert bought >= credits and bought * Fraction(price) <= Fraction(amount, 10**6) * Fraction(r)


async def test_amount_quotes_round_credits_down():
    svc = service(settings_from_dict(config()), prices={"USDC": "0.9998", "ETH": "1", "DOT": "1", "TON": "1"})
    q = await svc.make_quote("USDC", amount=1_000_000)  # 1 USDC at $0.9998 = 99.98 credits
    assert q.credits == 99 and q.rate == Decimal("0.9998")
    with pytest.raises(InputError, match="does not buy a single credit"):
        await svc.make_quote("USDC", amount=10_001)  # $0.009999...: less than one credit


# --- the depeg guard ----------------------------------------------------------------------------
async def test_inside_the_band_the_measured_rate_is_used_never_the_peg():
    svc = service(settings_from_dict(config()), prices={"USDT": "0.99", "USDC": "1.01", "ETH": "1", "DOT": "1",
                                                        "TON": "1"})
    q = await svc.make_quote("USDT", credits=100, chain="ton")  # exactly 100 bps off: still in the band
    assert q.rate == Decimal("0.99") and q.amount == amount_for_credits(100, Decimal("0.01"), Decimal("0.99"), 6)
    assert q.amount == 1_010_102  # not 1_000_000 (an assumed 1.00)
    assert (await svc.make_quote("USDC", credits=100)).rate == Decimal("1.01")


async def test_outside_the_band_quotes_are_refused_with_a_warning_and_a_metric(caplog):
    registry = CollectorRegistry()
    svc = service(settings_from_dict(config()), registry=registry,
                  prices={"USDT": "0.9899", "USDC": "1", "ETH": "1", "DOT": "1", "TON": "1"})
    with caplog.at_level(logging.WARNING, logger="creditbridge.pricing"):
        for _ in range(3):
            with pytest.raises(TokenDepegged) as e:
                await svc.make_quote("USDT", credits=100, chain="polkadot")
    assert e.value.code == "token-depegged" and e.value.http_status == 503
    assert "USDT on polkadot trades at 0.9899 USD, outside its peg band (1 USD +/- 100 bps)" in e.value.detail
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("DEPEG: USDT on polkadot trades at 0.9899 USD, 101.0 bps")
    labels = {"token": "USDT", "chain": "polkadot", "action": "refused"}
    assert registry.get_sample_value("creditbridge_pricing_depegged_quotes_total", labels) == 3
    assert registry.get_sample_value("creditbridge_pricing_peg_deviation_bps",
                                     {"token": "USDT", "chain": "polkadot"}) == pytest.approx(101)
    assert (await svc.make_quote("USDC", credits=100)).rate == 1  # other tokens are unaffected


async def test_depeg_price_quotes_at_the_measured_rate():
    s = settings_from_dict(config(tokens=[stable("USDT", "polkadot", depeg="price", asset_id=1984),
                                          stable("USDT", "ton", jetton_master=USDT_TON)]))
    registry = CollectorRegistry()
    svc = service(s, registry=registry, prices={"USDT": "0.92", "ETH": "1", "DOT": "1", "TON": "1"})
    q = await svc.make_quote("USDT", credits=300, chain="polkadot")
    assert q.rate == Decimal("0.92") and q.amount == amount_for_credits(300, Decimal("0.01"), Decimal("0.92"), 6)
    assert q.amount == 3_260_870  # 3 USD of credits cost 3.26087 USDT at $0.92
    with pytest.raises(TokenDepegged):  # the same asset on a chain configured to refuse
        await svc.make_quote("USDT", credits=300, chain="ton")
    assert registry.get_sample_value("creditbridge_pricing_depegged_quotes_total",
                                     {"token": "USDT", "chain": "polkadot", "action": "priced"}) == 1


# --- the shipped mainnet profile ------------------------------------------------------------------
def _uncomment(text: str, start: str, end: str) -> str:
    lines, out, inside = text.splitlines(), [], False
    for line in lines:
        if line.startswith(start):
            inside = True
        elif line.startswith(end):
            inside = False
        elif inside and line.startswith("# "):
            line = line[2:]
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("name", ["api.toml", "signer.toml", "relay.toml"])
def test_the_mainnet_stablecoin_block_is_valid_once_uncommented(tmp_path, monkeypatch, capsys, name):
    from bridge.cli import main

    monkeypatch.setenv("CREDITBRIDGE_DATABASE_URL", "postgresql+asyncpg://creditbridge@db/creditbridge")
    d = tmp_path / "mainnet"
    shutil.copytree(ROOT / "config" / "mainnet", d)
    shutil.copy(d / "manifest.example.json", d / "manifest.json")
    text = (d / name).read_text()
    text = _uncomment(text, "# --- stablecoins (issue 15)", "# --- end stablecoins")
    text = _uncomment(text, "# --- stablecoin bounds", "# --- end stablecoin bounds")
    assert re.search(r"^\[\[tokens\]\]$", text, re.M)
    (d / name).write_text(text)
    assert main(["config", "check", "--offline", "--config", str(d / name)]) == 0, capsys.readouterr().err
    from bridge.config import load_settings

    s = load_settings(d / name)
    usdt = [(t.chain, t.contract or t.asset_id or t.jetton_master) for t in s.payable_tokens() if t.symbol == "USDT"]
    assert usdt == [("ethereum", USDT_ETH), ("polkadot", 1984), ("ton", USDT_TON)]
    if name == "relay.toml":  # the relay prices nothing: it collects and pays the tokens
        return
    feeds = next(src for src in s.pricing.sources if src.kind == "chainlink").feeds
    # docs.chain.link, Ethereum mainnet "USDC / USD" and "USDT / USD" proxies (24 h heartbeat)
    assert feeds["USDC"].address == "0x8fFfFfd4AfB6115b954Bd326cbe7B4BA576818f6"
    assert feeds["USDT"].address == "0x3E7d1eAB13ad0104d2750B8863b489D65364e32D"
    if name == "signer.toml":
        bound = {t.label: b.address for t, b in s.bound_tokens() if b.kind == "chainlink"}
        assert bound["USDT@polkadot"] == bound["USDT@ton"] == feeds["USDT"].address
        assert bound["USDC@ethereum"] == feeds["USDC"].address


def test_price_bound_keys_are_symbols_or_symbol_at_chain():
    cfg = config()
    cfg["signer"] = {"name": "s1", "key": {"keystore": "/k.json", "password_env": "PW"}, "gateway_url": "http://gw",
                     "gateway_public_key": "00" * 32,
                     "price_bound": {"max_deposit_usd": "1000", "unbounded": ["ETH", "DOT", "TON"],
                                     "tokens": {"USDT": {"kind": "band"}, "USDC": {"kind": "band"},
                                                "USDT@ton": {"kind": "band", "tolerance": "0.5"}}}}
    s = settings_from_dict(cfg)
    assert {t.label: str(b.tolerance) for t, b in s.bound_tokens()} == {
        "USDC@ethereum": "0.25", "USDT@ethereum": "0.25", "USDT@polkadot": "0.25", "USDT@ton": "0.5"}
    del cfg["signer"]["price_bound"]["tokens"]["USDT"]
    with pytest.raises(ConfigError, match=r"token\(s\) USDT@ethereum, USDT@polkadot neither bounded"):
        settings_from_dict(cfg)
    cfg["signer"]["price_bound"]["tokens"]["USDT"] = {"kind": "band"}
    cfg["signer"]["price_bound"]["tokens"]["USDT@kusama"] = {"kind": "band"}
    with pytest.raises(ConfigError, match="USDT@kusama: USDT is not payable on 'kusama'"):
        settings_from_dict(cfg)


def test_pricing_config_accepts_per_chain_minimums():
    assert PricingConfig(min_amount={"USDT@polkadot": 10}).min_amount == {"USDT@polkadot": 10}
    with pytest.raises(ValueError):
        PricingConfig(min_amount={"usdt": 10})


# --- the signers' price bound per (symbol, chain) ------------------------------------------------
class _Ref:
    def __init__(self, price: str) -> None:
        self.price, self.asked = price, []

    async def reference(self, token, at):
        from bridge.committee.pricebound import Reference

        self.asked.append(token)
        return Reference(Fraction(Decimal(self.price)), Fraction(3, 100), "test")


def _obs(chain: str, amount: int):
    from bridge.types import Observation

    return Observation(chain=chain, source=b"\x01" * 32, sequence=7, tx_id=b"\x02" * 32, event_index=0,
                       block_number=5, block_hash=b"\x03" * 32, timestamp=10_000, token="USDT", amount=amount,
                       payer=b"\x00" * 12 + b"\x04" * 20, reference=b"\x05" * 32)


def _terms(chain: str, amount: int, credits: int):
    from datetime import UTC, datetime

    from bridge.types import PaymentTerms

    return PaymentTerms("p1", b"\x05" * 32, b"\x06" * 20, "q", chain, "USDT", amount, credits,
                        datetime.fromtimestamp(10_500, UTC))


async def test_the_price_bound_uses_each_chains_decimals_and_key():
    from bridge.committee.pricebound import PriceBound
    from bridge.errors import PriceUnavailable
    from bridge.payments import rules

    usdt = _Ref("0.9990")
    b = PriceBound(references={"USDT": usdt, "USDT@bsc": _Ref("1")}, credit_price_usd=Decimal("0.01"),
                   max_deposit_usd=Decimal("100000"), quote_ttl_seconds=900,
                   decimals={"USDT": 6, "USDT@bsc": 18}, unbounded=frozenset({"USDT@ton"}))
    honest = rules.Decision(rules.CREDIT, 300, 3_002_000, 0)  # $3 of credits for 3.002 USDT at $0.999
    assert await b.apply(_obs("polkadot", 3_002_000), _terms("polkadot", 3_002_000, 300), honest) is honest
    # the same base units on a chain where USDT has 18 decimals are worth nothing: out of bound
    got = await b.apply(_obs("bsc", 3_002_000), _terms("bsc", 3_002_000, 300), honest)
    assert got.outcome == rules.UNPRICED
    assert usdt.asked == ["USDT"]
    free = rules.Decision(rules.CREDIT, 2**100, 1, 0)
    assert await b.apply(_obs("ton", 1), _terms("ton", 1, 2**100), free) is free  # USDT@ton: unbounded
    b2 = PriceBound(references={"USDT@polkadot": usdt}, credit_price_usd=Decimal("0.01"),
                    max_deposit_usd=Decimal("100000"), quote_ttl_seconds=900, decimals={"USDT@polkadot": 6})
    with pytest.raises(PriceUnavailable, match="no price bound is configured for USDT on ethereum"):
        await b2.apply(_obs("ethereum", 3_002_000), _terms("ethereum", 3_002_000, 300), honest)


def test_a_per_chain_unbounded_entry_overrides_the_symbols_bound():
    cfg = config()
    cfg["signer"] = {"name": "s1", "key": {"keystore": "/k.json", "password_env": "PW"}, "gateway_url": "http://gw",
                     "gateway_public_key": "00" * 32,
                     "price_bound": {"max_deposit_usd": "1000", "unbounded": ["ETH", "DOT", "TON", "USDT@ton"],
                                     "tokens": {"USDT": {"kind": "band"}, "USDC": {"kind": "band"}}}}
    s = settings_from_dict(cfg)
    assert sorted(t.label for t, _ in s.bound_tokens()) == ["USDC@ethereum", "USDT@ethereum", "USDT@polkadot"]
