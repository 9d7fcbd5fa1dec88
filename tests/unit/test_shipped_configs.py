"""The shipped network profiles (config/mainnet, config/testnet): every file passes
``creditbridge config check --offline`` (with the profile's example manifest in place of the
one ``creditbridge deploy`` writes), and their constants are the real networks' ones."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.config import TON_ZERO_STATES, load_settings
from bridge.errors import ConfigError
from relayers.substrate.networks import KUSAMA_ASSET_HUB, POLKADOT_HUB, WESTEND_ASSET_HUB

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
FILES = sorted(CONFIG.glob("*/*.toml"))
EXPECTED = {  # network -> (ethereum chain id, settlement chain id, TON global id, Asset Hub chains)
    "mainnet": (1, 8453, -239, {"polkadot": POLKADOT_HUB, "kusama": KUSAMA_ASSET_HUB}),
    "testnet": (11155111, 84532, -3, {"westend": WESTEND_ASSET_HUB}),
}
CHAINLINK = {  # the feeds' proxies: docs.chain.link "Price Feed Contract Addresses"
    "mainnet": {"ETH": "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419", "DOT": "0x1C07AFb8E2B827c5A4739C6d59Ae3A5035f28734",
                "USDC": "0x8fFfFfd4AfB6115b954Bd326cbe7B4BA576818f6", "USDT": "0x3E7d1eAB13ad0104d2750B8863b489D65364e32D"},
    "testnet": {"ETH": "0x694AA1769357215DE4FAC081bf1f309aDC325306"},
}


def test_every_network_has_the_three_roles():
    assert sorted({f.parent.name for f in FILES}) == ["mainnet", "testnet"]
    for net in ("mainnet", "testnet"):
        assert sorted(f.name for f in (CONFIG / net).glob("*.toml")) == ["api.toml", "relay.toml", "signer.toml"]


@pytest.fixture
def profile(tmp_path, monkeypatch):
    """A copy of config/<network> with its example manifest as manifest.json."""
    monkeypatch.setenv("CREDITBRIDGE_DATABASE_URL", "postgresql+asyncpg://creditbridge@db/creditbridge")

    def make(net: str) -> Path:
        d = tmp_path / net
        shutil.copytree(CONFIG / net, d)
        shutil.copy(d / "manifest.example.json", d / "manifest.json")
        return d

    return make


@pytest.mark.parametrize("path", FILES, ids=[f"{f.parent.name}/{f.name}" for f in FILES])
def test_config_check_offline_accepts_every_shipped_file(path, profile, capsys):
    pytest.importorskip("bridge.manifest", reason="the shipped files point to a manifest (bridge/manifest.py)")
    d = profile(path.parent.name)
    assert main(["config", "check", "--offline", "--config", str(d / path.name)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.startswith("ok: ")
    assert "todo: chains ton: the liteserver config lists no liteservers" in out  # placeholders are listed


@pytest.mark.parametrize("net", ["mainnet", "testnet"])
def test_the_profiles_carry_the_real_constants(net):
    eth_id, settle_id, ton_id, hubs = EXPECTED[net]
    for path in (CONFIG / net).glob("*.toml"):
        doc = tomllib.loads(path.read_text())
        chains = {c["name"]: c for c in doc["chains"]}
        evm = [c for c in chains.values() if c["family"] == "evm" and c.get("token") == "ETH"]
        assert [c["chain_id"] for c in evm] == [eth_id]
        assert chains["settlement"]["chain_id"] == settle_id
        assert chains["ton"]["global_id"] == ton_id
        for name, hub in hubs.items():
            c = chains[name]
            assert (c["token"], c["ss58_prefix"], c["genesis_hash"]) == (hub.token, hub.ss58_prefix, hub.genesis_hash)
        table = {t["symbol"]: t["decimals"] for t in doc.get("tokens", [])}
        for hub in hubs.values():
            assert table.get(hub.token, {"DOT": 10, "KSM": 12}.get(hub.token)) == hub.decimals
        feeds = {}
        for src in doc.get("pricing", {}).get("sources", []):
            if src["kind"] == "chainlink":
                feeds.update({s: f["address"] for s, f in src["feeds"].items()})
        bound = doc.get("signer", {}).get("price_bound", {}).get("tokens", {})
        feeds.update({s: b["address"] for s, b in bound.items() if b["kind"] == "chainlink"})
        assert feeds == ({} if path.name == "relay.toml" else CHAINLINK[net])
    ton = json.loads((CONFIG / net / "ton-global.config.json").read_text())
    zs = ton["validator"]["zero_state"]
    assert (zs["root_hash"], zs["file_hash"]) == TON_ZERO_STATES[ton_id]
    manifest = json.loads((CONFIG / net / "manifest.example.json").read_text())
    assert manifest["network"] == net and manifest["chains"]["ton"]["global_id"] == ton_id


def test_chainlink_addresses_are_checksummed():
    from eth_utils import is_checksum_address

    assert all(is_checksum_address(a) for feeds in CHAINLINK.values() for a in feeds.values())


def _ton_only(tmp_path, global_id: int, file: str) -> Path:
    shutil.copy(CONFIG / file, tmp_path / "ton.json")
    p = tmp_path / "c.toml"
    p.write_text(f'''settlement_chain = "settlement"
[[chains]]
family = "ton"
name = "ton"
global_id = {global_id}
liteserver_config_file = "ton.json"
contracts = {{ lock = "0:{"7e" * 32}" }}
[[chains]]
family = "evm"
name = "settlement"
chain_id = 8453
rpc = ["http://127.0.0.1:1"]
contracts = {{ credits = "0x{"11" * 20}" }}
''')
    return p


def test_a_liteserver_file_is_read_relative_to_the_config_and_bound_to_its_network(tmp_path):
    s = load_settings(_ton_only(tmp_path, -239, "mainnet/ton-global.config.json"))
    assert s.chain("ton").liteserver_config["validator"]["zero_state"]["root_hash"] == TON_ZERO_STATES[-239][0]
    with pytest.raises(ConfigError) as e:  # a testnet liteserver file on a mainnet chain
        load_settings(_ton_only(tmp_path, -239, "testnet/ton-global.config.json"))
    assert "liteserver config is not of TON mainnet (global id -239)" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "ton.json").unlink()
    p = tmp_path / "c.toml"
    with pytest.raises(ConfigError, match="cannot read liteserver_config_file"):
        load_settings(p)


def test_storage_url_from_the_environment(tmp_path, monkeypatch):
    p = _ton_only(tmp_path, -3, "testnet/ton-global.config.json")
    p.write_text(p.read_text() + '[storage]\nurl_env = "CB_TEST_DB_URL"\n')
    monkeypatch.delenv("CB_TEST_DB_URL", raising=False)
    with pytest.raises(ConfigError, match="environment variable CB_TEST_DB_URL is not set"):
        load_settings(p)
    monkeypatch.setenv("CB_TEST_DB_URL", "postgresql+asyncpg://u:secret-pw@db/x")
    assert load_settings(p).storage.url == "postgresql+asyncpg://u:secret-pw@db/x"
