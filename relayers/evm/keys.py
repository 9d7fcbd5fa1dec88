"""Ethereum keystore v3 import (Web3 Secret Storage: scrypt or PBKDF2-SHA256, AES-128-CTR, the
MAC checked before anything is decrypted), through eth-account. The secret leaves this module
only as bytes for the project's own keystore; errors never carry it."""

from __future__ import annotations

from bridge.errors import KeystoreError


def decrypt_keystore_v3(doc: object, password: str) -> bytes:
    """The 32-byte private key of an Ethereum keystore v3 document; KeystoreError if the
    document is not one, or the password is wrong (MAC mismatch)."""
    from eth_account import Account

    if not isinstance(doc, dict) or doc.get("version") != 3 or not isinstance(doc.get("crypto") or doc.get("Crypto"),
                                                                              dict):
        raise KeystoreError("not an Ethereum keystore v3 document (version 3 with a crypto section)")
    kdf = (doc.get("crypto") or doc.get("Crypto")).get("kdf")
    if kdf not in ("scrypt", "pbkdf2"):
        raise KeystoreError(f"unsupported keystore v3 kdf {kdf!r} (scrypt or pbkdf2)")
    try:
        secret = bytes(Account.decrypt(doc, password))
    except ValueError as e:
        if "MAC mismatch" in str(e):
            raise KeystoreError("wrong password for the Ethereum keystore (MAC mismatch)") from None
        raise KeystoreError(f"malformed Ethereum keystore v3: {e.__class__.__name__}") from None
    except (KeyError, TypeError):
        raise KeystoreError("malformed Ethereum keystore v3") from None
    if len(secret) != 32:
        raise KeystoreError("the Ethereum keystore does not hold a 32-byte key")
    address = doc.get("address")
    if isinstance(address, str) and address:
        derived = Account.from_key(secret).address.lower()
        if derived.removeprefix("0x") != address.lower().removeprefix("0x"):
            raise KeystoreError(f"the keystore's address {address} is not its key's ({derived})")
    return secret
