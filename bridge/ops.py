"""Operator commands of the ``creditbridge`` CLI (registered by ``bridge.cli``)::

    creditbridge keys new --kind secp256k1|ed25519 --out F [--password-env V] [--force]
    creditbridge keys import --out F (--eth-keystore J [--eth-password-env V] | --hex-env V --kind K)
    creditbridge keys show --keystore F [--verify --password-env V]
    creditbridge config check --config F
    creditbridge apikey new --config F --name N [--role merchant|admin]
    creditbridge apikey list|revoke --config F [--id ID]
    creditbridge status [--api URL | --devnet F] [--key-env CREDITBRIDGE_ADMIN_KEY] [--json]
    creditbridge db upgrade|status --config F   the schema: migrate (once, under an advisory lock) / show

Secrets never appear in output: ``keys show`` prints the public part only, ``apikey new``
prints the new key once (it is stored as a hash), errors are one redacted line.
"""

from __future__ import annotations

import asyncio
import json
import os

from bridge.errors import BridgeError, ConfigError


async def _with_db(settings, fn):
    from bridge.storage.db import open_database

    db = await open_database(settings.storage.url)
    try:
        return await fn(db)
    finally:
        await db.dispose()


def cmd_apikey(args) -> int:
    from bridge.api.auth import create_key
    from bridge.cli import _settings
    from bridge.storage import webhooks as repo
    from bridge.types import utcnow

    settings = _settings(args.config)
    if args.action == "new":
        key_id, key = asyncio.run(_with_db(settings, lambda db: create_key(db, args.name, args.role)))
        print(json.dumps({"id": key_id, "name": args.name, "role": args.role, "key": key}))
        return 0
    if args.action == "list":
        async def lst(db):
            async with db.begin() as s:
                return await repo.list_api_keys(s)

        for k in asyncio.run(_with_db(settings, lst)):
            print(json.dumps({"id": k.id, "name": k.name, "role": k.role, "created_at": k.created_at.isoformat(),
                              "revoked": k.revoked}))
        return 0
    if not args.id:
        raise BridgeError("apikey revoke needs --id")

    async def rev(db):
        async with db.begin() as s:
            return await repo.revoke_api_key(s, args.id, utcnow())

    if not asyncio.run(_with_db(settings, rev)):
        raise BridgeError(f"no active API key {args.id}")
    print(json.dumps({"id": args.id, "revoked": True}))
    return 0


def cmd_db(args) -> int:
    """``db upgrade``: run the migrations (PostgreSQL: under an advisory lock, so running it
    from several hosts at once is safe; the later ones find nothing to do). ``db status``:
    the database's revision and the code's (exit 1 when they differ)."""
    from bridge.cli import _settings
    from bridge.storage.db import Database

    settings = _settings(args.config)

    async def go() -> tuple[str | None, str, str | None]:
        db = Database(settings.storage.url)
        try:
            before, head = await db.revisions()
            if args.action == "upgrade":
                await db.migrate()
                return before, head, (await db.revisions())[0]
            return before, head, before
        finally:
            await db.dispose()

    before, head, now = asyncio.run(go())
    print(json.dumps({"database": now, "head": head, **({"was": before} if args.action == "upgrade" else {})}))
    return 0 if now == head else 1


def _fmt_status(st: dict) -> str:
    lines = [f"status at {st['time']}", "chains:"]
    for c in st["chains"]:
        lag = "?" if c["lag"] is None else c["lag"]
        lines.append(f"  {c['name']:<12} head {c['head']}  final {c['final']}  stored {c['stored']}  lag {lag}"
                     + (f"  ({c['error']})" if c.get("error") else ""))
    lines.append("payments: " + (", ".join(f"{k} {v}" for k, v in sorted(st["payments"].items())) or "none"))
    lines.append(f"pending credit (attestation / settlement): {st['pending_credit']}")
    lines.append(f"governor queue: {len(st['queued'])}")
    for q in st["queued"]:
        lines.append(f"  {q['chain']} payment {q['payment_id']} {q['credits']} credits (${q['usd']}) "
                     f"released at {q['release_at']}")
    lines.append(f"webhook deliveries pending: {st['webhooks']['pending_deliveries']}")
    return "\n".join(lines)


def _admin_key(args) -> str:
    from bridge.config import secret_from_env

    if os.environ.get(args.key_env) or args.api:
        return secret_from_env(args.key_env)
    from bridge.cli import _devnet  # the devnet's operator key

    return _devnet(args).get("admin_key") or secret_from_env(args.key_env)


async def admin_get(url: str, key: str, *, missing_ok: bool = False) -> dict | None:
    """GET an admin endpoint; None for a 404 when ``missing_ok`` (an API without it)."""
    import aiohttp

    async with aiohttp.ClientSession() as s:
        try:
            async with s.get(url, headers={"Authorization": f"Bearer {key}"},
                             timeout=aiohttp.ClientTimeout(total=15)) as r:
                body = await r.json(content_type=None)
                if r.status == 404 and missing_ok:
                    return None
                if r.status != 200:
                    raise BridgeError(f"{url} answered {r.status}: {body.get('detail', '') if isinstance(body, dict) else ''}")
                return body
        except aiohttp.ClientError as e:
            raise BridgeError(f"cannot reach {url} ({e.__class__.__name__})") from None
        except ValueError:
            raise BridgeError(f"{url} answered without JSON") from None


def cmd_status(args) -> int:
    from bridge import treasury_view
    from bridge.cli import _api_url

    base = _api_url(args)
    key = _admin_key(args)

    async def get() -> tuple[dict, dict | None]:
        st = await admin_get(base + "/v1/admin/status", key)
        return st, await admin_get(base + "/v1/admin/treasury", key, missing_ok=True)

    st, tv = asyncio.run(get())
    if args.json:
        print(json.dumps({**st, "treasury": tv}, indent=2))
    else:
        print(_fmt_status(st))
        if tv is not None:
            print(treasury_view.short_line(tv))
    return 0


def add_commands(sub) -> None:
    from bridge.cli import cmd_check, cmd_keygen, cmd_keys_import, cmd_keys_show

    keys = sub.add_parser("keys", help="encrypted keystores").add_subparsers(dest="action", required=True)
    sp = keys.add_parser("new", help="create an encrypted keystore (password from an env variable)")
    sp.add_argument("--kind", choices=["secp256k1", "ed25519"], required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--password-env", default="CREDITBRIDGE_KEY_PASSWORD")
    sp.add_argument("--force", action="store_true")
    sp.set_defaults(func=cmd_keygen)
    sp = keys.add_parser("import", help="import an Ethereum keystore v3 JSON or hex from an env variable")
    sp.add_argument("--out", required=True, help="the project keystore to write")
    sp.add_argument("--eth-keystore", help="an Ethereum keystore v3 JSON file (scrypt or pbkdf2; MAC checked)")
    sp.add_argument("--eth-password-env", default="ETH_KEYSTORE_PASSWORD", help="env variable: its password")
    sp.add_argument("--hex-env", help="env variable holding the 32-byte secret as hex")
    sp.add_argument("--kind", choices=["secp256k1", "ed25519"], help="the key's kind (with --hex-env)")
    sp.add_argument("--password-env", default="CREDITBRIDGE_KEY_PASSWORD", help="env variable: the new keystore's password")
    sp.add_argument("--force", action="store_true")
    sp.set_defaults(func=cmd_keys_import)
    sp = keys.add_parser("show", help="print a keystore's public part and address forms (never the secret)")
    sp.add_argument("--keystore", required=True)
    sp.add_argument("--verify", action="store_true", help="decrypt to check the password and the public part")
    sp.add_argument("--password-env", default="CREDITBRIDGE_KEY_PASSWORD")
    sp.set_defaults(func=cmd_keys_show)

    config = sub.add_parser("config", help="configuration files").add_subparsers(dest="action", required=True)
    sp = config.add_parser("check", help="validate a config file")
    sp.add_argument("--config", required=True)
    sp.add_argument("--offline", action="store_true", help="contact no network (chains, price sources)")
    sp.set_defaults(func=cmd_check)

    apikey = sub.add_parser("apikey", help="API keys of merchants and operators").add_subparsers(
        dest="action", required=True)
    for action in ("new", "list", "revoke"):
        sp = apikey.add_parser(action)
        sp.add_argument("--config", required=True)
        if action == "new":
            sp.add_argument("--name", required=True)
            sp.add_argument("--role", choices=["merchant", "admin"], default="merchant")
        if action == "revoke":
            sp.add_argument("--id")
        sp.set_defaults(func=cmd_apikey)

    db = sub.add_parser("db", help="the database schema").add_subparsers(dest="action", required=True)
    for action, helptext in (("upgrade", "migrate the database to this version (run before starting "
                                         "components on PostgreSQL; safe to run concurrently)"),
                             ("status", "the database's schema revision and this version's")):
        sp = db.add_parser(action, help=helptext)
        sp.add_argument("--config", required=True)
        sp.set_defaults(func=cmd_db)

    sp = sub.add_parser("status", help="chains, pending credits and the governor queue of a running API")
    sp.add_argument("--api")
    sp.add_argument("--devnet", default=".devnet/devnet.json")
    sp.add_argument("--key-env", default="CREDITBRIDGE_ADMIN_KEY", help="env variable holding an admin API key")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_status)
