"""The small JSON-over-HTTP helper every exchange price source shares.

One :class:`JsonHttpClient` per source. It owns no session: the caller injects an
``aiohttp.ClientSession`` (one per process, closed by the composition root) and a
``base_url`` (the exchange's public API root in production, ``http://127.0.0.1:PORT`` in
tests). It adds what every source needs and none should re-invent:

* a total timeout per request, and a cap on the body size;
* status handling: 429 and 418 (Binance's IP ban) and every 5xx become a retryable
  :class:`PriceSourceRateLimited` / :class:`PriceUnavailable`; a ``Retry-After`` header
  (delta-seconds or HTTP-date) starts a **cool-down** during which this client refuses to
  call the exchange at all, so a rate-limited or banned source is not hammered further;
  other 4xx are not retryable and carry the exchange's own error message;
* strict JSON: non-JSON content types, invalid UTF-8, ``NaN``/``Infinity`` literals and
  oversized bodies are rejected, and JSON numbers are decoded as ``Decimal`` (never
  ``float``), so a price is exact from the wire to the median.

It also holds the strict field parsers the sources use (:func:`parse_price`,
:func:`parse_unix_seconds`, :func:`parse_iso8601`): prices are positive, finite Decimals,
timestamps are aware UTC datetimes not in the future.

``asyncio.CancelledError`` is never caught here.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp

from bridge.errors import PriceUnavailable

__all__ = [
    "HttpSettings",
    "check_not_future",
    "JsonHttpClient",
    "JsonResponse",
    "MalformedPriceData",
    "PriceSourceRateLimited",
    "PriceSourceRejected",
    "parse_iso8601",
    "parse_price",
    "parse_unix_seconds",
    "require",
]

USER_AGENT = "creditbridge-pricing/0.1"
_ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error response read for its message


# --- errors: all PriceUnavailable, so callers need to know only the one type --------------
class PriceSourceRateLimited(PriceUnavailable):
    """A price source rate-limited or banned us (HTTP 429/418 or its own rate-limit error)."""

    code = "price-source-rate-limited"
    retryable = True

    def __init__(self, detail: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after  # seconds of cool-down started, if any


class PriceSourceRejected(PriceUnavailable):
    """A price source rejected the request (a 4xx other than a rate limit, or an error body)."""

    code = "price-source-rejected"
    retryable = False


class MalformedPriceData(PriceUnavailable):
    """A price source answered with data that does not have the documented shape."""

    code = "price-source-malformed"
    retryable = False


# --- settings and response ----------------------------------------------------------------
def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HttpSettings:
    """Knobs shared by all HTTP sources; the clocks are injectable for tests."""

    timeout: float = 5.0  # seconds, total per request (connect + read)
    default_cooldown: float = 30.0  # seconds, for a 429/418 without a usable Retry-After
    max_cooldown: float = 3600.0  # seconds; Binance bans last up to 3 days: re-ask hourly
    max_body_bytes: int = 1 << 20
    max_clock_skew: timedelta = timedelta(seconds=60)  # payload timestamps may lead us by this
    clock: Callable[[], datetime] = field(default=_utc_now)  # wall clock, aware UTC
    monotonic: Callable[[], float] = field(default=time.monotonic)  # for cool-downs

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and self.default_cooldown >= 0 and self.max_cooldown >= 0):
            raise ValueError("HttpSettings: timeout must be > 0 and cool-downs >= 0")


@dataclass(frozen=True)
class JsonResponse:
    status: int
    body: Any  # decoded JSON; numbers are int or Decimal
    received_at: datetime  # aware UTC, when the response arrived


ErrorDescriber = Callable[[Any], str | None]


# --- the client ---------------------------------------------------------------------------
class JsonHttpClient:
    """GET JSON from one exchange, with timeout, status handling and a Retry-After cool-down."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        source: str,
        settings: HttpSettings | None = None,
        headers: Mapping[str, str] | None = None,
        describe_error: ErrorDescriber | None = None,
    ) -> None:
        if not re.match(r"^https?://[^/\s]+", base_url):
            raise ValueError(f"{source}: base_url must be an http(s) URL, got {base_url!r}")
        self._session = session
        self._base_url = base_url.rstrip("/")
        self.source = source
        self.settings = settings or HttpSettings()
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        self._describe_error = describe_error or (lambda body: None)
        self._cooldown_until: float | None = None  # on the monotonic clock

    # cool-down ------------------------------------------------------------------------------
    def cooldown_remaining(self) -> float:
        """Seconds left in the current cool-down (0 when none)."""
        if self._cooldown_until is None:
            return 0.0
        left = self._cooldown_until - self.settings.monotonic()
        if left <= 0:
            self._cooldown_until = None
            return 0.0
        return left

    def start_cooldown(self, seconds: float | None) -> float:
        """Refuse requests for ``seconds`` (default cool-down if None); returns the duration."""
        s = self.settings
        duration = s.default_cooldown if seconds is None else seconds
        duration = min(max(duration, 0.0), s.max_cooldown)
        until = s.monotonic() + duration
        if self._cooldown_until is None or until > self._cooldown_until:
            self._cooldown_until = until
        return duration

    # requests -------------------------------------------------------------------------------
    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> JsonResponse:
        """GET ``base_url + path`` and return the decoded JSON of a 200 response.

        Raises ``PriceUnavailable`` (or a subclass) for everything else.
        """
        remaining = self.cooldown_remaining()
        if remaining > 0:
            raise PriceSourceRateLimited(
                f"{self.source}: cooling down after a rate limit, {remaining:.0f}s left",
                retry_after=remaining,
            )
        url = self._base_url + path
        try:
            async with self._session.get(
                url,
                params=params,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                raw, error_raw = b"", None
                if status == 200:
                    raw = await self._read_limited(resp)
                else:  # an error body is only mined for a message: read a prefix, never fail on size
                    error_raw = await self._read_prefix(resp, _ERROR_BODY_LIMIT)
                received_at = self.settings.clock()
                content_type = resp.content_type
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError as exc:  # also aiohttp's ServerTimeoutError
            raise PriceUnavailable(
                f"{self.source}: no answer within {self.settings.timeout:g}s", retryable=True
            ) from exc
        except aiohttp.ClientError as exc:
            raise PriceUnavailable(
                f"{self.source}: request failed: {type(exc).__name__}: {exc}", retryable=True
            ) from exc

        if status == 200:
            if not _is_json_type(content_type):
                raise MalformedPriceData(f"{self.source}: expected JSON, got {content_type!r}")
            return JsonResponse(status, decode_json(raw, source=self.source), received_at)

        message = self._error_message(error_raw, content_type)
        suffix = f": {message}" if message else ""
        if status in (429, 418):
            waited = self.start_cooldown(self._retry_after_seconds(retry_after, received_at))
            what = "banned us (HTTP 418)" if status == 418 else "rate limited us (HTTP 429)"
            raise PriceSourceRateLimited(
                f"{self.source}: {what}, cooling down {waited:.0f}s{suffix}", retry_after=waited
            )
        if 500 <= status < 600:
            seconds = self._retry_after_seconds(retry_after, received_at)
            if seconds is not None:
                self.start_cooldown(seconds)
            raise PriceUnavailable(f"{self.source}: server error HTTP {status}{suffix}", retryable=True)
        raise PriceSourceRejected(f"{self.source}: HTTP {status}{suffix}")

    async def _read_limited(self, resp: aiohttp.ClientResponse) -> bytes:
        limit = self.settings.max_body_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise MalformedPriceData(f"{self.source}: response of {resp.content_length} bytes is too large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise MalformedPriceData(f"{self.source}: response larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    async def _read_prefix(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
        """Up to ``limit`` bytes of the body; None when it is longer (then it is not parsed)."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(16 * 1024):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _error_message(self, raw: bytes | None, content_type: str) -> str | None:
        """The exchange's own error message from an error body, if it has a known shape."""
        if raw is None or not _is_json_type(content_type):
            return None
        try:
            body = decode_json(raw, source=self.source)
        except PriceUnavailable:
            return None
        message = self._describe_error(body)
        return _clip(message) if message else None

    def _retry_after_seconds(self, header: str | None, now: datetime) -> float | None:
        if header is None:
            return None
        header = header.strip()
        if re.fullmatch(r"\d{1,9}", header):
            return float(int(header))
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max((when - now).total_seconds(), 0.0)


def _is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- JSON and field parsing ---------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} in JSON")


def decode_json(raw: bytes, *, source: str) -> Any:
    """Strict JSON: UTF-8, numbers as int/Decimal, no NaN/Infinity literals."""
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedPriceData(f"{source}: response is not valid JSON: {exc}") from exc


def require(condition: bool, source: str, what: str) -> None:
    """Raise ``MalformedPriceData`` unless the payload has the documented shape."""
    if not condition:
        raise MalformedPriceData(f"{source}: {what}")


_DECIMAL_STRING = re.compile(r"[0-9]{1,30}(\.[0-9]{1,30})?")


def parse_price(value: Any, *, source: str, where: str, json_number: bool = False) -> Decimal:
    """A positive, finite price as an exact Decimal, in the one type the exchange documents.

    Exchanges send prices as decimal strings ("3012.45000"): only plain digits with an
    optional fraction are accepted (no sign, exponent, whitespace, "NaN" or "Infinity").
    With ``json_number`` (CoinGecko) the price must instead be a JSON number, which
    :func:`decode_json` has already turned into an ``int`` or ``Decimal``, never a float.
    """
    if json_number:
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
            raise MalformedPriceData(f"{source}: {where}: price must be a JSON number, got {_type_name(value)}")
        price = Decimal(value)
        if not price.is_finite() or len(price.as_tuple().digits) > 60 or abs(price.adjusted()) > 60:
            raise MalformedPriceData(f"{source}: {where}: price {price} out of range")
    else:
        if not isinstance(value, str):
            raise MalformedPriceData(f"{source}: {where}: price must be a decimal string, got {_type_name(value)}")
        if not _DECIMAL_STRING.fullmatch(value):
            raise MalformedPriceData(f"{source}: {where}: price {_clip(value, 40)!r} is not a decimal string")
        price = Decimal(value)
    if not price > 0:
        raise MalformedPriceData(f"{source}: {where}: price {price} is not positive")
    return price


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, Decimal)):
        return "number"
    for kind, name in ((str, "string"), (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


# 2001-09-09 .. 2100-01-01: anything outside is a unit error (ms vs s) or garbage
_MIN_UNIX, _MAX_UNIX = 1_000_000_000, 4_102_444_800


def parse_unix_seconds(value: Any, *, source: str, where: str) -> datetime:
    """A Unix time in whole seconds (a JSON integer) as an aware UTC datetime."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedPriceData(f"{source}: {where}: timestamp must be integer seconds, got {_type_name(value)}")
    if not _MIN_UNIX <= value <= _MAX_UNIX:
        raise MalformedPriceData(f"{source}: {where}: timestamp {value} out of range")
    return datetime.fromtimestamp(value, UTC)


_ISO8601 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})T(?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})"
)


def parse_iso8601(value: Any, *, source: str, where: str) -> datetime:
    """An RFC 3339 timestamp with an explicit offset ("...Z"), as an aware UTC datetime.

    Fractions beyond microseconds (some APIs send nanoseconds) are truncated.
    """
    if not isinstance(value, str):
        raise MalformedPriceData(f"{source}: {where}: time must be a string, got {_type_name(value)}")
    m = _ISO8601.fullmatch(value)
    if m is None:
        raise MalformedPriceData(f"{source}: {where}: time {_clip(value, 40)!r} is not RFC 3339 with offset")
    frac = (m["frac"] or "")[:6].ljust(6, "0")
    tz = "+00:00" if m["tz"] == "Z" else m["tz"]
    try:
        parsed = datetime.fromisoformat(f"{m['date']}T{m['time']}.{frac}{tz}")
    except ValueError as exc:
        raise MalformedPriceData(f"{source}: {where}: time {value!r} is not a valid date") from exc
    return parsed.astimezone(UTC)


def check_not_future(
    ts: datetime, received_at: datetime, settings: HttpSettings, *, source: str, where: str
) -> datetime:
    """Reject timestamps further in the future than the allowed clock skew.

    A future timestamp would look fresh for longer than it is, defeating staleness checks.
    Timestamps slightly ahead (within the skew) are clamped to the receipt time.
    """
    if ts > received_at + settings.max_clock_skew:
        raise MalformedPriceData(f"{source}: {where}: timestamp {ts.isoformat()} is in the future")
    return min(ts, received_at)
