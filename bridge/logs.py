"""Logging set-up: plain text or structured JSON lines, with secrets redacted.

``--log-format json`` (or ``log_format = "json"`` in the config) writes one JSON object per
line: ``ts`` (RFC 3339 UTC), ``level``, ``logger``, ``component``, ``msg`` and, for errors,
``exc`` (the traceback text). Secrets never reach a log line: every secret the process reads
from its environment (keystore passwords) is registered with :func:`register_secret`, and a
filter on the root handler replaces registered values and anything shaped like an API key
(``cbk_...``) or a webhook secret (``whsec_...``) with ``[redacted]``, in the message and the
traceback alike.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_PATTERNS = re.compile(r"cbk_[0-9a-f]{12}_[A-Za-z0-9_-]{8,}|whsec_[A-Za-z0-9_-]{8,}")
_SECRETS: set[str] = set()
REDACTED = "[redacted]"
NOISY = ("web3", "urllib3", "asyncio", "aiohttp.access", "websockets")


def register_secret(value: str) -> None:
    """Never log ``value`` (values shorter than 6 characters are too common to redact)."""
    if value and len(value) >= 6:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for s in sorted(_SECRETS, key=len, reverse=True):
        if s in text:
            text = text.replace(s, REDACTED)
    return _PATTERNS.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string: log it as it is
            msg = str(record.msg)
        record.msg, record.args = redact(msg), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str = "") -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        d = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "component": self.component or None,
            "msg": record.getMessage(),
        }
        if record.exc_text:
            d["exc"] = record.exc_text
        elif record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return json.dumps(d, ensure_ascii=False)


def setup(level: str = "INFO", component: str = "", fmt: str = "text", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {component + ' ' if component else ''}%(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
