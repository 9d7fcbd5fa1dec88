"""Operator tools: keys new|show, config check, apikey, status (from the admin endpoint), JSON
logs -- and secrets (keystore passwords, API keys) never in logs, output or errors."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

from bridge import logs
from bridge.cli import main

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "correct horse battery staple 7"


def run_cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "bridge.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_keys_new_and_show_print_only_the_public_part(tmp_path):
    out = tmp_path / "k.json"
    env = {"CB_OPS_PW": PASSWORD}
    r = run_cli("keys", "new", "--kind", "secp256k1", "--out", str(out), "--password-env", "CB_OPS_PW", env=env)
    assert r.returncode == 0, r.stderr
    public = r.stdout.strip()
    assert public.startswith("0x") and len(public) == 42
    doc = json.loads(out.read_text())
    r = run_cli("keys", "show", "--keystore", str(out))
    shown = json.loads(r.stdout)
    assert r.returncode == 0 and shown == {"kind": "secp256k1", "public": public, "verified": False,
                                           "ethereum": {"address": shown["ethereum"]["address"]}}
    assert shown["ethereum"]["address"].lower() == public.lower()  # EIP-55 form of the same address
    r = run_cli("keys", "show", "--keystore", str(out), "--verify", "--password-env", "CB_OPS_PW", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["verified"] is True
    for text in (r.stdout, r.stderr):
        assert PASSWORD not in text and doc["ciphertext"] not in text
    bad = run_cli("keys", "show", "--keystore", str(out), "--verify", "--password-env", "CB_OPS_PW",
                  env={"CB_OPS_PW": PASSWORD + "x"})
    assert bad.returncode == 1 and "wrong keystore password" in bad.stderr
    assert PASSWORD not in bad.stderr + bad.stdout
    # the old spelling stays
    r = run_cli("keygen", "--kind", "ed25519", "--out", str(tmp_path / "e.json"), "--password-env", "CB_OPS_PW",
                env=env)
    assert r.returncode == 0 and len(r.stdout.strip()) == 64


def _config(tmp_path: Path, **extra) -> Path:
    cfg = {
        "chains": [
            {"family": "evm", "name": "ethereum", "chain_id": 1, "rpc": ["http://127.0.0.1:1"], "token": "ETH",
             "contracts": {"lock": "0x" + "11" * 20}},
            {"family": "evm", "name": "settlement", "chain_id": 2, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": "0x" + "22" * 20}},
        ],
        "settlement_chain": "settlement",
        "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/ops.sqlite"},
        **extra,
    }
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    return p


def test_config_check_and_its_alias(tmp_path, capsys):
    p = _config(tmp_path)
    assert main(["config", "check", "--config", str(p)]) == 0
    assert main(["check-config", "--config", str(p)]) == 0
    assert "ok: 2 chain(s)" in capsys.readouterr().out
    bad = _config(tmp_path, governor={"chains": {"nowhere": {"daily_limit_usd": "1", "large_payment_usd": "1"}}})
    assert main(["config", "check", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "governor.chains" not in err or "nowhere" in err
    assert err.count("\n") == 1


def test_apikey_commands(tmp_path, capsys):
    p = _config(tmp_path)
    assert main(["apikey", "new", "--config", str(p), "--name", "shop"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["role"] == "merchant" and created["key"].startswith(f"cbk_{created['id']}_")
    assert main(["apikey", "list", "--config", str(p)]) == 0
    listed = capsys.readouterr().out
    assert created["id"] in listed and created["key"] not in listed
    assert main(["apikey", "revoke", "--config", str(p), "--id", created["id"]]) == 0
    assert main(["apikey", "revoke", "--config", str(p), "--id", created["id"]]) == 1


def test_json_logs_redact_secrets():
    from bridge.config import secret_from_env
    import os

    os.environ["CB_OPS_LOG_PW"] = PASSWORD
    try:
        secret_from_env("CB_OPS_LOG_PW")
    finally:
        del os.environ["CB_OPS_LOG_PW"]
    buf = io.StringIO()
    logs.setup("INFO", "api", "json", stream=buf)
    try:
        log = logging.getLogger("creditbridge.test")
        key = "cbk_0123456789ab_" + "Z" * 43
        log.info("password %s and key %s and hook whsec_%s", PASSWORD, key, "q" * 20)
        try:
            raise ValueError(f"failed with {PASSWORD}")
        except ValueError:
            log.exception("boom")
    finally:
        logs.setup("WARNING", "", "text")
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [x["level"] for x in lines] == ["INFO", "ERROR"]
    assert lines[0]["component"] == "api" and lines[0]["logger"] == "creditbridge.test"
    text = buf.getvalue()
    assert PASSWORD not in text and key not in text and "whsec_q" not in text and "[redacted]" in text
    assert "ValueError" in lines[1]["exc"]


async def test_status_from_the_admin_endpoint(lifecycle, tmp_path):
    lc = await lifecycle(governor={"chains": {"ethereum": {"daily_limit_usd": "1000", "large_payment_usd": "2",
                                                             "large_payment_delay_seconds": 3600}}})
    admin = await lc.merchant("ops", role="admin")
    p = await lc.payment(None, credits="500")  # $5 > $2: held by the governor for an hour
    await lc.deposit(p, int(p["amount"]))
    small = await lc.payment(None, credits="100")  # $1: not held
    await lc.deposit(small, int(small["amount"]))
    await lc.watcher.step()
    status, st = await lc.request("GET", "/v1/admin/status", admin)
    assert status == 200, st
    assert st["payments"] == {"confirmed": 2} and st["pending_credit"] == 2
    assert [q["payment_id"] for q in st["queued"]] == [p["id"]]
    assert st["queued"][0]["credits"] == "500" and st["queued"][0]["usd"] == "5.00"
    assert st["chains"][0]["name"] == "ethereum" and st["chains"][0]["stored"] is not None
    import os

    r = await asyncio.to_thread(run_cli, "status", "--api", lc.url, env={"CREDITBRIDGE_ADMIN_KEY": admin})
    assert r.returncode == 0, r.stderr
    assert "governor queue: 1" in r.stdout and p["id"] in r.stdout and admin not in r.stdout + r.stderr
    r = await asyncio.to_thread(run_cli, "status", "--api", lc.url, env={"CREDITBRIDGE_ADMIN_KEY": admin + "x"})
    assert r.returncode == 1 and "401" in r.stderr and admin not in r.stderr
    assert os.environ.get("CREDITBRIDGE_ADMIN_KEY") is None
