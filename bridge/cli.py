"""The ``creditbridge`` command.

    creditbridge devnet                       local chains + committee + aggregator + API
    creditbridge api|signer|relay --config F  run one component
    creditbridge config check --config F      validate a config file (alias: check-config)
    creditbridge keys new --kind K --out F    create an encrypted keystore (alias: keygen)
    creditbridge keys show --keystore F       print a keystore's public part only
    creditbridge apikey new|list|revoke --config F   merchants' / operators' API keys
    creditbridge status [--api URL]           chains, pending credits, governor queue, treasury (admin key)
    creditbridge treasury status [--api URL | --signer U ...]   earned / swept / pending per token
    creditbridge quote --token ETH --credits 500 [--api URL]
    creditbridge pay --credits 500            devnet demo: quote, pay on chain, wait for credits

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


def cmd_check(args) -> int:
    s = _settings(args.config)
    print(f"ok: {len(s.chains)} chain(s), settlement on {s.settlement_chain}; components: "
          + ", ".join(n for n in ("api", "signer", "aggregator") if getattr(s, n) is not None))
    return 0


def cmd_keygen(args) -> int:
    from bridge.config import secret_from_env
    from bridge.keystore import write_keystore

    if Path(args.out).exists() and not args.force:
        raise BridgeError(f"{args.out} exists; pass --force to overwrite")
    public = write_keystore(args.out, args.kind, os.urandom(32), secret_from_env(args.password_env))
    print(public)
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
    from bridge.devnet import demo_pay

    _setup_logging("WARNING")
    asyncio.run(demo_pay(_devnet(args), credits=args.credits, account=args.account, timeout=args.timeout))
    return 0


def cmd_devnet(args) -> int:
    from bridge.devnet import DevnetOptions, run_devnet

    _setup_logging("INFO", "devnet")
    opts = DevnetOptions(directory=Path(args.dir), signers=args.signers, threshold=args.threshold,
                         api_port=args.api_port, confirmations=args.confirmations, block_time=args.block_time,
                         families=not args.evm_only)
    asyncio.run(run_devnet(opts))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="creditbridge", description="Pay in DOT, KSM, ETH or TON; get compute credits.")
    p.add_argument("--log-format", choices=["text", "json"], help="log lines as text or JSON (overrides the config)")
    sub = p.add_subparsers(dest="cmd", required=True)
    from bridge import ops

    ops.add_commands(sub)
    from bridge import treasury_ops

    treasury_ops.add_commands(sub)
    for name, helptext in (("api", "run the HTTP API"), ("signer", "run one committee signer node"),
                           ("relay", "run the aggregator that settles attested credits")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--config", required=True)
        sp.set_defaults(func=cmd_component)
    sp = sub.add_parser("check-config", help="validate a config file")
    sp.add_argument("--config", required=True)
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
