"""``creditbridge keys import`` / ``keys show`` (issue 13, item 5) with known vectors:
the Web3 Secret Storage Definition's keystore v3 test vectors (PBKDF2 and scrypt, password
"testpassword"), RFC 8032's first Ed25519 key, the well-known SS58 forms of one public key
(//Alice's sr25519 key on Polkadot, Kusama and generic Substrate), and a TON wallet v4r2
address computed by another implementation (tonutils-go's address test)."""

from __future__ import annotations

import json

import pytest

from bridge.cli import key_forms, main
from bridge.keystore import read_keystore

PASSWORD = "testpassword"
SECRET = "7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d"
ADDRESS = "0x008AeEda4D805471dF9b2A5B0f38A0C3bCBA786b"
PBKDF2 = {
    "crypto": {"cipher": "aes-128-ctr", "cipherparams": {"iv": "6087dab2f9fdbbfaddc31a909735c1e6"},
               "ciphertext": "5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46",
               "kdf": "pbkdf2", "kdfparams": {"c": 262144, "dklen": 32, "prf": "hmac-sha256",
                                              "salt": "ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd"},
               "mac": "517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2"},
    "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6", "version": 3,
}
SCRYPT = {
    "crypto": {"cipher": "aes-128-ctr", "cipherparams": {"iv": "83dbcc02d8ccb40e466191a123791e0e"},
               "ciphertext": "d172bf743a674da9cdad04534d56926ef8358534d458fffccd4e6ad2fbde479c",
               "kdf": "scrypt", "kdfparams": {"dklen": 32, "n": 262144, "p": 8, "r": 1,
                                              "salt": "ab0c7876052600dd703518d6fc3fe8984592145b591fc8fb5c6d43190334ba19"},
               "mac": "2103ac29920d71da29f15d75b4a16dbe95cfd7ff8faea1056c33131d846e3097"},
    "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6", "version": 3,
}
NEW_PASSWORD = "creditbridge keystore password"


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("ETH_KEYSTORE_PASSWORD", PASSWORD)
    monkeypatch.setenv("CREDITBRIDGE_KEY_PASSWORD", NEW_PASSWORD)
    return monkeypatch


def run(capsys, *argv) -> tuple[int, dict | None, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 else None), err


@pytest.mark.parametrize("vector", [PBKDF2, SCRYPT], ids=["pbkdf2", "scrypt"])
def test_import_an_ethereum_keystore_v3(vector, tmp_path, env, capsys):
    src = tmp_path / "eth.json"
    src.write_text(json.dumps(vector))
    out = tmp_path / "signer.json"
    rc, doc, err = run(capsys, "keys", "import", "--eth-keystore", str(src), "--out", str(out))
    assert rc == 0, err
    assert doc == {"kind": "secp256k1", "public": ADDRESS.lower(), "out": str(out)}
    key = read_keystore(out, NEW_PASSWORD)
    assert key.secret.hex() == SECRET and key.kind == "secp256k1"
    assert SECRET not in json.dumps(doc) and SECRET not in out.read_text()
    rc, shown, _ = run(capsys, "keys", "show", "--keystore", str(out), "--verify")
    assert shown["ethereum"] == {"address": ADDRESS} and shown["verified"] is True


def test_a_wrong_password_is_a_mac_mismatch_and_writes_nothing(tmp_path, env, capsys):
    env.setenv("ETH_KEYSTORE_PASSWORD", "not the password")
    src = tmp_path / "eth.json"
    src.write_text(json.dumps(PBKDF2))
    rc, _, err = run(capsys, "keys", "import", "--eth-keystore", str(src), "--out", str(tmp_path / "k.json"))
    assert rc == 1 and "MAC mismatch" in err and err.count("\n") == 1
    assert not (tmp_path / "k.json").exists()
    tampered = json.loads(json.dumps(PBKDF2))
    tampered["crypto"]["ciphertext"] = "00" + tampered["crypto"]["ciphertext"][2:]
    env.setenv("ETH_KEYSTORE_PASSWORD", PASSWORD)
    src.write_text(json.dumps(tampered))
    rc, _, err = run(capsys, "keys", "import", "--eth-keystore", str(src), "--out", str(tmp_path / "k.json"))
    assert rc == 1 and "MAC mismatch" in err


def test_a_keystore_whose_address_is_not_its_keys_is_refused(tmp_path, env, capsys):
    src = tmp_path / "eth.json"
    src.write_text(json.dumps({**PBKDF2, "address": "11" * 20}))
    rc, _, err = run(capsys, "keys", "import", "--eth-keystore", str(src), "--out", str(tmp_path / "k.json"))
    assert rc == 1 and "is not its key's" in err


def test_import_hex_from_the_environment(tmp_path, env, capsys):
    env.setenv("MEMBER_ED25519", "0x9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")  # RFC 8032 test 1
    out = tmp_path / "ed.json"
    rc, doc, err = run(capsys, "keys", "import", "--hex-env", "MEMBER_ED25519", "--kind", "ed25519", "--out", str(out))
    assert rc == 0, err
    assert doc["public"] == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    env.setenv("MEMBER_SECP", SECRET)
    rc, doc, err = run(capsys, "keys", "import", "--hex-env", "MEMBER_SECP", "--kind", "secp256k1",
                       "--out", str(tmp_path / "secp.json"))
    assert rc == 0 and doc["public"] == ADDRESS.lower()
    # refusals: existing file, short hex, non-hex, a secp256k1 scalar out of range, no kind
    rc, _, err = run(capsys, "keys", "import", "--hex-env", "MEMBER_SECP", "--kind", "secp256k1", "--out", str(out))
    assert rc == 1 and "exists" in err
    for value, message in (("abcd", "must hold 32 bytes"), ("zz" * 32, "is not hex"),
                           ("ff" * 32, "not a valid secp256k1 private key")):
        env.setenv("BAD_KEY", value)
        rc, _, err = run(capsys, "keys", "import", "--hex-env", "BAD_KEY", "--kind", "secp256k1",
                         "--out", str(tmp_path / "bad.json"))
        assert rc == 1 and message in err and value not in err
    rc, _, err = run(capsys, "keys", "import", "--hex-env", "MEMBER_SECP", "--out", str(tmp_path / "x.json"))
    assert rc == 1 and "--kind" in err


def test_show_an_ed25519_key_per_network(tmp_path, env, capsys):
    env.setenv("MEMBER_ED25519", "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    out = tmp_path / "ed.json"
    assert run(capsys, "keys", "import", "--hex-env", "MEMBER_ED25519", "--kind", "ed25519", "--out", str(out))[0] == 0
    rc, shown, _ = run(capsys, "keys", "show", "--keystore", str(out))
    assert rc == 0 and shown["verified"] is False
    assert shown["ed25519"] == "0xd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert set(shown["ss58"]) == {"polkadot", "kusama", "generic"}
    assert shown["ton"]["public_key"] == shown["ed25519"][2:]
    assert shown["ton"]["wallet_v4r2"]["raw"].startswith("0:")


def test_known_ss58_forms():
    alice = key_forms("ed25519", "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d")
    assert alice["ss58"] == {"polkadot": "15oF4uVJwmo4TdGW7VfQxNLavjCXviqxT9S1MgbjMNHr6Sp5",
                             "kusama": "HNZata7iMYWmk5RvZRTiAsSDhV8366zq2YGb3tLH5Upf74F",
                             "generic": "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"}


def test_known_ton_wallet_v4r2_address():
    ton = key_forms("ed25519", "dcc39550bb494f4b493e7efe1aa18ea31470f33a2553c568cb74a17ed56790c1")["ton"]
    w = ton["wallet_v4r2"]
    assert w["non_bounceable"] == "UQAwwdowWbBKkrnRlbY8CUEzy_pgK9pIvOKP2eqcD01EWl2U"  # tonutils-go's vector
    assert w["raw"] == "0:30c1da3059b04a92b9d195b63c094133cbfa602bda48bce28fd9ea9c0f4d445a"
    # the same account, other flags: bounceable EQ.., testnet kQ.. / 0Q..
    assert w["bounceable"].startswith("EQ") and w["bounceable"][2:45] == w["non_bounceable"][2:45]
    assert w["testnet_bounceable"].startswith("kQ") and w["testnet_non_bounceable"].startswith("0Q")
