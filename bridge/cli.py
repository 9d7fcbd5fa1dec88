"""The ``creditbridge`` command.

    creditbridge devnet                       local chains + committee + aggregator + API
    creditbridge api|signer|relay --config F  run one component
    creditbridge config check --config F      validate a config file (alias: check-config)
    creditbridge keys new --kind K --out F    create an encrypted keystore (alias: keygen)
    creditbridge keys import --out F (--eth-keystore J | --hex-env V --kind K)   import an existing key
    creditbridge keys show --keystore F       public part: Ethereum / SS58 / TON address forms
    creditbridge committee init | deploy evm|ton|substrate | manifest show   (bridge/deploy_cli.py)
    creditbridge apikey new|list|revoke --config F   merchants' / operators' API keys
    creditbridge status [--api URL]           chains, pending credits, governor queue, treasury (admin key)
    creditbridge treasury status [--api URL | --signer U ...]   earned / swept / pending per token
    creditbridge quote --token ETH --credits 500 [--api URL]
    creditbridge pay --credits 500            devnet demo: quote, pay on chain, wait for credits
    creditbridge committee rotate propose|sign|submit|approve   hand every custody to a new committee

Errors print one line (``creditbridge: <code>: <detail>``) and exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from bridge.errors import BridgeError


_LOG_FORMAT: str | None = None  # --log-format, overrides the config's log_format


def _setup_logging(level: str = "INFO", name: str = "", fmt: str | None = None) -> None:
    from bridge import logs

    logs.setup(level, name, _LOG_FORMAT or fmt or "text")


def _settings(path: str):
    from bridge.config import load_settings

    return load_settings(path)


def cmd_component(args) -> int:
    from bridge import node

    settings = _settings(args.config)
    _setup_logging(settings.log_level, args.cmd, settings.log_format)
    run = {"api": node.run_api, "signer": node.run_signer, "relay": node.run_relay}[args.cmd]
    asyncio.run(run(settings))
    return 0


def _pricing_coverage(s) -> None:
    """What ``build_aggregator`` checks at start, without building a source: every payable
    token (by its price symbol) is known to ``min_sources`` configured sources."""
    from bridge.config import ExchangeSourceConfig, FixedSourceConfig, PricingConfig
    from bridge.pricing.factory import check_coverage

    def known(cfg) -> frozenset[str]:
        if isinstance(cfg, FixedSourceConfig):
            return frozenset(cfg.prices)
        if isinstance(cfg, ExchangeSourceConfig):
            if cfg.markets is not None:
                return frozenset(cfg.markets)
            from bridge.pricing.sources import binance, coinbase, coingecko, kraken

            return frozenset({"kraken": kraken.DEFAULT_PAIRS, "binance": binance.DEFAULT_SYMBOLS,
                              "coinbase": coinbase.DEFAULT_PRODUCTS, "coingecko": coingecko.DEFAULT_IDS}[cfg.kind])
        return frozenset(cfg.feeds)  # chainlink

    configs = s.pricing.source_configs()
    if not configs:
        return
    if s.api is not None:
        tokens = [t.price_symbol for t in s.payable_tokens()]
    elif s.signer is not None and s.signer.price_bound is not None:
        tokens = [t.price_symbol for t, b in s.bound_tokens() if b.kind == "band"]
    else:
        return
    check_coverage(s.pricing, [(PricingConfig.source_name(c), known(c)) for c in configs], tokens)


def placeholders(s) -> list[str]:
    """Values an operator still has to fill in (the shipped config/ profiles mark them)."""
    from urllib.parse import urlsplit

    out = []
    for c in s.chains:
        for u in list(getattr(c, "rpc", [])) + list(getattr(c, "toncenter", [])):
            if (urlsplit(u).hostname or "").endswith(".invalid"):
                out.append(f"chains {c.name}: rpc {u} is a placeholder")
        if c.family == "ton" and c.liteserver_config is not None and not c.liteserver_config.get("liteservers"):
            out.append(f"chains {c.name}: the liteserver config lists no liteservers")
    if s.signer is not None:
        if set(s.signer.gateway_public_key) == {"0"}:
            out.append("signer.gateway_public_key is a placeholder")
        if (urlsplit(s.signer.gateway_url).hostname or "").endswith(".invalid"):
            out.append("signer.gateway_url is a placeholder")
    if s.aggregator is not None:
        out += [f"aggregator.signers: {u} is a placeholder" for u in s.aggregator.signers
                if (urlsplit(u).hostname or "").endswith(".invalid")]
    return out


def cmd_check(args) -> int:
    s = _settings(args.config)
    if s.manifest_data is not None:
        from bridge.manifest import check_settings

        check_settings(s, s.manifest_data)
    _pricing_coverage(s)
    # --offline: nothing is contacted (no chain, price source or manifest URL); this command
    # never contacts the network yet, so both modes validate the file, its manifest and the
    # pricing coverage; the chains are checked against the config when each node starts
    print(f"ok: {len(s.chains)} chain(s), settlement on {s.settlement_chain}; components: "
          + ", ".join(n for n in ("api", "signer", "aggregator") if getattr(s, n) is not None))
    for p in placeholders(s):
        print(f"todo: {p}")
    return 0


def cmd_keygen(args) -> int:
    from bridge.config import secret_from_env
    from bridge.keystore import write_keystore

    if Path(args.out).exists() and not args.force:
        raise BridgeError(f"{args.out} exists; pass --force to overwrite")
    public = write_keystore(args.out, args.kind, os.urandom(32), secret_from_env(args.password_env))
    print(public)
    return 0


def _hex_secret_from_env(name: str) -> bytes:
    from bridge.config import secret_from_env

    text = secret_from_env(name).strip()  # registered as a secret: never logged
    text = text[2:] if text[:2] in ("0x", "0X") else text
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise BridgeError(f"environment variable {name} is not hex") from None
    if len(secret) != 32:
        raise BridgeError(f"environment variable {name} must hold 32 bytes (64 hex digits), not {len(secret)}")
    return secret


def cmd_keys_import(args) -> int:
    """Import an existing key into the project's encrypted keystore: from an Ethereum keystore
    v3 JSON file (secp256k1; its MAC is checked) or from hex in an environment variable."""
    from bridge.config import secret_from_env
    from bridge.errors import KeystoreError
    from bridge.keystore import write_keystore

    if Path(args.out).exists() and not args.force:
        raise BridgeError(f"{args.out} exists; pass --force to overwrite")
    if (args.eth_keystore is None) == (args.hex_env is None):
        raise BridgeError("give exactly one of --eth-keystore FILE or --hex-env VAR")
    if args.eth_keystore is not None:
        from relayers.evm.keys import decrypt_keystore_v3

        if args.kind not in (None, "secp256k1"):
            raise BridgeError("an Ethereum keystore holds a secp256k1 key")
        kind = "secp256k1"
        p = Path(args.eth_keystore)
        try:
            doc = json.loads(p.read_text())
        except OSError as e:
            raise KeystoreError(f"cannot read {p}: {e.strerror}") from None
        except ValueError:
            raise KeystoreError(f"{p} is not JSON") from None
        secret = decrypt_keystore_v3(doc, secret_from_env(args.eth_password_env))
    else:
        if args.kind is None:
            raise BridgeError("--hex-env needs --kind secp256k1 or --kind ed25519")
        kind = args.kind
        secret = _hex_secret_from_env(args.hex_env)
        if kind == "secp256k1" and not 0 < int.from_bytes(secret, "big") < SECP256K1_N:
            raise BridgeError(f"environment variable {args.hex_env} is not a valid secp256k1 private key")
    public = write_keystore(args.out, kind, secret, secret_from_env(args.password_env))
    print(json.dumps({"kind": kind, "public": public, "out": str(args.out)}))
    return 0


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SS58_NETWORKS = {"polkadot": 0, "kusama": 2, "generic": 42}


def key_forms(kind: str, public: str) -> dict:
    """What ``keys show`` prints for a public part: the Ethereum address of a secp256k1 key;
    the SS58 address per network prefix and the TON forms of an Ed25519 key."""
    if kind == "secp256k1":
        return {"ethereum": {"address": _checksum(public)}}
    key = bytes.fromhex(public.removeprefix("0x"))
    from relayers.substrate.multisig import ss58
    from relayers.ton.addresses import ton_forms

    return {"ed25519": "0x" + key.hex(), "ss58": {net: ss58(key, prefix) for net, prefix in SS58_NETWORKS.items()},
            "ton": ton_forms(key)}


def _checksum(address: str) -> str:
    """EIP-55 mixed-case form of a 0x address."""
    from bridge.hashing import keccak256

    h = address.lower().removeprefix("0x")
    digest = keccak256(h.encode()).hex()
    return "0x" + "".join(c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(h))


def cmd_keys_show(args) -> int:
    from bridge.config import secret_from_env
    from bridge.errors import KeystoreError
    from bridge.keystore import KINDS, read_keystore

    p = Path(args.keystore)
    try:
        doc = json.loads(p.read_text())
        kind, public = doc["kind"], doc["public"]
    except OSError as e:
        raise KeystoreError(f"cannot read keystore {p}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise KeystoreError(f"keystore {p} is malformed") from None
    if kind not in KINDS or not isinstance(public, str):
        raise KeystoreError(f"keystore {p} is malformed")
    if args.verify:
        key = read_keystore(p, secret_from_env(args.password_env))  # authenticates the public part
        public = key.public
    try:
        forms = key_forms(kind, public)
    except ValueError:
        raise KeystoreError(f"keystore {p} has a malformed public part") from None
    print(json.dumps({"kind": kind, "public": public, "verified": bool(args.verify), **forms}))
    return 0


def _api_url(args) -> str:
    if args.api:
        return args.api.rstrip("/")
    return _devnet(args)["api"]


def _devnet(args) -> dict:
    p = Path(args.devnet)
    try:
        return json.loads(p.read_text())
    except OSError:
        raise BridgeError(f"{p} not found: start the devnet first (make devnet) or pass --api") from None


class ApiProblem(BridgeError):
    """The API answered with a problem document; ``code`` is the problem's."""

    def __init__(self, status: int, data: object) -> None:
        problem = data if isinstance(data, dict) else {}
        kind = problem.get("type")
        self.code = kind.rsplit("/", 1)[-1] if isinstance(kind, str) and kind else f"http-{status}"
        self.status = status
        super().__init__(str(problem.get("detail") or problem.get("title") or f"HTTP {status}"))


async def _http(method: str, url: str, body=None) -> dict:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        try:
            async with s.request(method, url, json=body) as r:
                try:
                    data = await r.json(content_type=None)
                except ValueError:
                    raise BridgeError(f"{url} answered HTTP {r.status} without JSON") from None
                if r.status >= 400:
                    raise ApiProblem(r.status, data)
                return data
        except (aiohttp.ClientError, TimeoutError) as e:
            raise BridgeError(f"cannot reach {url} ({e.__class__.__name__})") from None


def cmd_quote(args) -> int:
    body = {"token": args.token}
    if (args.credits is None) == (args.amount is None):
        raise BridgeError("give exactly one of --credits or --amount")
    if args.credits is not None:
        body["credits"] = args.credits
    else:
        body["amount"] = args.amount
    q = asyncio.run(_http("POST", _api_url(args) + "/v1/quotes", body))
    print(json.dumps(q, indent=2))
    return 0


def cmd_pay(args) -> int:
    from devnet.network import demo_pay

    _setup_logging("WARNING")
    asyncio.run(demo_pay(_devnet(args), credits=args.credits, account=args.account, timeout=args.timeout))
    return 0


def cmd_devnet(args) -> int:
    from devnet.network import DevnetOptions, run_devnet

    _setup_logging("INFO", "devnet")
    opts = DevnetOptions(directory=Path(args.dir), signers=args.signers, threshold=args.threshold,
                         api_port=args.api_port, confirmations=args.confirmations, block_time=args.block_time,
                         families=not args.evm_only, postgres=args.postgres, api_replicas=args.api_replicas,
                         aggregators=args.aggregators)
    asyncio.run(run_devnet(opts))
    return 0


def command_group(sub, name: str, helptext: str):
    """The sub-command group ``name`` (``creditbridge NAME ACTION``), created on first use, so
    several modules can add actions to one group (e.g. ``committee init`` and ``committee rotate``).
    A group another module created with ``sub.add_parser(name)`` is found and reused too."""
    existing = sub.choices.get(name)
    if existing is None:
        return existing_or_new(sub.add_parser(name, help=helptext))
    return existing_or_new(existing)


def existing_or_new(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="action", required=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="creditbridge", description="Pay in DOT, KSM, ETH or TON; get compute credits.")
    p.add_argument("--log-format", choices=["text", "json"], help="log lines as text or JSON (overrides the config)")
    sub = p.add_subparsers(dest="cmd", required=True)
    from bridge import ops, rotation_cli

    ops.add_commands(sub)
    from bridge import treasury_ops

    treasury_ops.add_commands(sub)
    rotation_cli.add_commands(sub)
    from bridge import deploy_cli

    deploy_cli.add_commands(sub, command_group)
    for name, helptext in (("api", "run the HTTP API"), ("signer", "run one committee signer node"),
                           ("relay", "run the aggregator that settles attested credits")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--config", required=True)
        sp.set_defaults(func=cmd_component)
    sp = sub.add_parser("check-config", help="validate a config file")
    sp.add_argument("--config", required=True)
    sp.add_argument("--offline", action="store_true", help="contact no network")
    sp.set_defaults(func=cmd_check)
    sp = sub.add_parser("keygen", help="create an encrypted keystore (password from an env variable)")
    sp.add_argument("--kind", choices=["secp256k1", "ed25519"], required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--password-env", default="CREDITBRIDGE_KEY_PASSWORD")
    sp.add_argument("--force", action="store_true")
    sp.set_defaults(func=cmd_keygen)
    sp = sub.add_parser("quote", help="ask the API for a quote")
    sp.add_argument("--token", required=True)
    sp.add_argument("--credits")
    sp.add_argument("--amount")
    sp.add_argument("--api")
    sp.add_argument("--devnet", default=".devnet/devnet.json")
    sp.set_defaults(func=cmd_quote)
    sp = sub.add_parser("pay", help="devnet demo: pay in ETH and wait until credited")
    sp.add_argument("--credits", default="500")
    sp.add_argument("--account", type=int, default=0)
    sp.add_argument("--timeout", type=float, default=120.0)
    sp.add_argument("--devnet", default=".devnet/devnet.json")
    sp.set_defaults(func=cmd_pay)
    sp = sub.add_parser("devnet", help="run the local devnet until Ctrl-C")
    sp.add_argument("--dir", default=".devnet")
    sp.add_argument("--signers", type=int, default=4)
    sp.add_argument("--threshold", type=int, default=3)
    sp.add_argument("--api-port", type=int, default=8080)
    sp.add_argument("--confirmations", type=int, default=2)
    sp.add_argument("--block-time", type=float, default=1.0)
    sp.add_argument("--evm-only", action="store_true", help="start only the EVM chains")
    sp.add_argument("--postgres", action="store_true",
                    help="the API's database on PostgreSQL (scripts/pg.sh starts a cluster under --dir)")
    sp.add_argument("--api-replicas", type=int, default=1, metavar="N",
                    help="run N API processes on the one database (needs --postgres)")
    sp.add_argument("--aggregators", type=int, default=1, metavar="N",
                    help="run N relay processes (aggregators), each with its own gas key (1-4)")
    sp.set_defaults(func=cmd_devnet)
    return p


def main(argv: list[str] | None = None) -> int:
    global _LOG_FORMAT
    args = build_parser().parse_args(argv)
    _LOG_FORMAT = args.log_format
    try:
        return args.func(args)
    except BridgeError as e:
        from bridge.logs import redact

        print(f"creditbridge: {redact(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
