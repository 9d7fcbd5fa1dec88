"""Chain addresses as configuration names them, checked without a chain SDK (the core may not
import one): EVM ``0x`` + 40 hex, Substrate SS58 (checksum verified), TON raw ``wc:hex`` or
user-friendly base64 (CRC16 verified). Each parser returns the address in the core's neutral
form (20 bytes for EVM, the 32-byte account id / account hash otherwise) or raises ValueError
with a one-line reason."""

from __future__ import annotations

import base64
import hashlib
import re

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def evm_address(value: str) -> bytes:
    if not isinstance(value, str) or not re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
        raise ValueError(f"{value!r} is not an EVM address (0x + 40 hex digits)")
    b = bytes.fromhex(value[2:])
    if b == bytes(20):
        raise ValueError("the zero address cannot receive funds")
    return b


def _b58decode(value: str) -> bytes:
    n = 0
    for ch in value:
        i = _B58.find(ch)
        if i < 0:
            raise ValueError(f"{value!r} is not base58")
        n = n * 58 + i
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes(len(value) - len(value.lstrip("1"))) + raw


def ss58_address(value: str) -> bytes:
    """The 32-byte account id of an SS58 address (any network prefix)."""
    if not isinstance(value, str) or not 46 <= len(value) <= 50:
        raise ValueError(f"{value!r} is not an SS58 address")
    raw = _b58decode(value)
    prefix_len = 1 if raw and raw[0] < 64 else 2
    if len(raw) != prefix_len + 32 + 2:
        raise ValueError(f"{value!r} is not an SS58 account address")
    body, check = raw[:-2], raw[-2:]
    if hashlib.blake2b(b"SS58PRE" + body, digest_size=64).digest()[:2] != check:
        raise ValueError(f"{value!r}: bad SS58 checksum")
    return body[prefix_len:]


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def ton_address(value: str) -> bytes:
    """The 32-byte account hash of a TON address, raw (``0:<64 hex>``) or user-friendly."""
    if not isinstance(value, str):
        raise ValueError("a TON address must be a string")
    m = re.fullmatch(r"(-1|0):([0-9a-fA-F]{64})", value)
    if m:
        return bytes.fromhex(m.group(2))
    if len(value) != 48:
        raise ValueError(f"{value!r} is not a TON address (0:<64 hex> or 48-character user-friendly form)")
    try:
        raw = base64.urlsafe_b64decode(value.replace("+", "-").replace("/", "_"))
    except ValueError:
        raise ValueError(f"{value!r} is not a TON address (bad base64)") from None
    if len(raw) != 36 or _crc16(raw[:34]) != int.from_bytes(raw[34:], "big"):
        raise ValueError(f"{value!r}: bad TON address checksum")
    return raw[2:34]


def parse(family: str, value: str) -> bytes:
    """The neutral form of ``value`` as an address of a chain of ``family``."""
    if family == "evm":
        return evm_address(value)
    if family == "substrate":
        return ss58_address(value)
    if family == "ton":
        return ton_address(value)
    raise ValueError(f"unknown chain family {family!r}")


def _b58encode(raw: bytes) -> str:
    n = int.from_bytes(raw, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\x00"))) + out


def ss58_encode(account: bytes, prefix: int) -> str:
    """The SS58 address of a 32-byte account id under network ``prefix`` (0..16383)."""
    if len(account) != 32 or not 0 <= prefix < 16384:
        raise ValueError("ss58_encode takes a 32-byte account id and a prefix in [0, 16384)")
    if prefix < 64:
        head = bytes([prefix])
    else:
        head = bytes([((prefix & 0xFC) >> 2) | 0x40, (prefix >> 8) | ((prefix & 0x03) << 6)])
    body = head + account
    return _b58encode(body + hashlib.blake2b(b"SS58PRE" + body, digest_size=64).digest()[:2])
