"""Keystores: 32-byte secrets encrypted at rest (scrypt KDF + AES-256-GCM).

File format (JSON)::

    {"version": 1, "kind": "secp256k1" | "ed25519", "public": "<hex address or public key>",
     "kdf": {"name": "scrypt", "salt": hex, "n": 2**15, "r": 8, "p": 1},
     "cipher": {"name": "aes-256-gcm", "nonce": hex}, "ciphertext": hex}

The public part is authenticated as associated data, so a swapped address is detected.
Secrets are wrapped in ``SecretKey`` whose repr never shows the bytes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from bridge.errors import KeystoreError

KINDS = ("secp256k1", "ed25519")


@dataclass(frozen=True, repr=False)
class SecretKey:
    kind: str
    secret: bytes
    public: str

    def __repr__(self) -> str:  # never print the secret
        return f"SecretKey(kind={self.kind!r}, public={self.public!r})"

    __str__ = __repr__


def public_of(kind: str, secret: bytes) -> str:
    if kind == "secp256k1":
        from bridge.committee.digest import address_of

        return "0x" + address_of(secret).hex()
    if kind == "ed25519":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        pk = Ed25519PrivateKey.from_private_bytes(secret).public_key()
        return pk.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    raise KeystoreError(f"unknown key kind {kind!r}")


def _kdf(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode())


def encrypt(kind: str, secret: bytes, password: str, *, n: int = 2**15) -> dict:
    if kind not in KINDS:
        raise KeystoreError(f"unknown key kind {kind!r}")
    if len(secret) != 32:
        raise KeystoreError("secret must be 32 bytes")
    if len(password) < 8:
        raise KeystoreError("keystore password must have at least 8 characters")
    public = public_of(kind, secret)
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _kdf(password, salt, n, 8, 1)
    ct = AESGCM(key).encrypt(nonce, secret, f"{kind}|{public}".encode())
    return {
        "version": 1,
        "kind": kind,
        "public": public,
        "kdf": {"name": "scrypt", "salt": salt.hex(), "n": n, "r": 8, "p": 1},
        "cipher": {"name": "aes-256-gcm", "nonce": nonce.hex()},
        "ciphertext": ct.hex(),
    }


def decrypt(doc: dict, password: str) -> SecretKey:
    try:
        if doc["version"] != 1 or doc["kdf"]["name"] != "scrypt" or doc["cipher"]["name"] != "aes-256-gcm":
            raise KeystoreError("unsupported keystore format")
        kind, public = doc["kind"], doc["public"]
        kdf = doc["kdf"]
        key = _kdf(password, bytes.fromhex(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
        secret = AESGCM(key).decrypt(bytes.fromhex(doc["cipher"]["nonce"]), bytes.fromhex(doc["ciphertext"]),
                                     f"{kind}|{public}".encode())
    except InvalidTag:
        raise KeystoreError("wrong keystore password or corrupted keystore") from None
    except (KeyError, TypeError, ValueError):
        raise KeystoreError("malformed keystore file") from None
    if public_of(kind, secret) != public:
        raise KeystoreError("keystore public key does not match its secret")
    return SecretKey(kind, secret, public)


def write_keystore(path: str | Path, kind: str, secret: bytes, password: str, *, n: int = 2**15) -> str:
    """Write an encrypted keystore (mode 0600); return the public part."""
    doc = encrypt(kind, secret, password, n=n)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
    return doc["public"]


def read_keystore(path: str | Path, password: str) -> SecretKey:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except OSError as e:
        raise KeystoreError(f"cannot read keystore {p}: {e.strerror}") from None
    except ValueError:
        raise KeystoreError(f"keystore {p} is not JSON") from None
    return decrypt(doc, password)


def load_key(ref) -> SecretKey:
    """Load a ``config.KeyRef``: the file it names, the password from its env variable."""
    from bridge.config import secret_from_env

    return read_keystore(ref.keystore, secret_from_env(ref.password_env))
