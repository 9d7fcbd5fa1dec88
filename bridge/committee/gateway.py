"""The signer's client of the gateway API: fetch the signed terms of a payment reference, the
signed decision on a late deposit of it, and the reference feed of per-payment addresses."""

from __future__ import annotations

import json
import re
from urllib.parse import urlencode

import aiohttp

from bridge.errors import GatewayUnavailable, VerificationError
from bridge.payments.feed import FeedEntry
from bridge.payments.late import LateTerms
from bridge.types import PaymentTerms


class GatewayClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _get(self, url: str, not_found: tuple[str, ...] = ("not-found",)) -> dict | None:
        """The JSON body of a 200 answer; None on the gateway's own 404 problem answer of one of
        the ``not_found`` types; GatewayUnavailable otherwise (any other 404 -- a proxy, a
        load balancer or a gateway still starting -- says nothing about the payment)."""
        try:
            async with self.session.get(url, timeout=self.timeout) as r:
                if r.status == 404:
                    if _problem_code(await r.read()) in not_found:
                        return None
                    raise GatewayUnavailable("gateway answered HTTP 404 without a not-found problem")
                if r.status != 200:
                    raise GatewayUnavailable(f"gateway answered HTTP {r.status}")
                return await r.json()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise GatewayUnavailable(f"gateway unreachable ({e.__class__.__name__})") from None
        except ValueError:
            raise GatewayUnavailable("gateway answered malformed JSON") from None

    async def terms(self, reference: bytes) -> PaymentTerms | None:
        """The gateway-signed terms for ``reference``; None if the gateway says it knows no such
        payment (its ``not-found`` problem: maybe not *yet*, e.g. during a database failover, so
        callers ask again later rather than treat it as final).

        The signature is *not* checked here; the caller verifies it with the pinned key.
        """
        body = await self._get(f"{self.base_url}/v1/payments/by-reference/0x{reference.hex()}")
        return None if body is None else terms_from_json(body)

    async def late_terms(self, reference: bytes, source: bytes, sequence: int) -> LateTerms | None:
        """The gateway-signed decision on the late deposit ``(source, sequence)`` of ``reference``.

        None on 404: the gateway knows no such payment (``not-found``) or has not observed the
        deposit as final yet (``deposit-not-seen``): ask again later. GatewayUnavailable on any
        other non-200 answer (409: the gateway does not consider the deposit late) or a network
        failure; VerificationError when the answer is not well-formed late terms. The signature
        is *not* checked here: the caller verifies it (``verify_late_terms``) with the pinned key,
        then the bounds (``LateTerms.within_bounds``, the deposit's own amount and id).
        """
        url = f"{self.base_url}/v1/payments/by-reference/0x{reference.hex()}/late/0x{source.hex()}/{int(sequence)}"
        body = await self._get(url, ("not-found", "deposit-not-seen"))
        return None if body is None else late_terms_from_json(body)

    async def references(self, chain: str, after: int, limit: int) -> list[FeedEntry]:
        """``bridge.payments.feed.ReferenceFeed`` over ``GET /v1/payment-references``: entries of
        ``chain`` after the cursor ``after``, ascending, at most ``limit``. GatewayUnavailable when
        the gateway cannot answer; VerificationError when the answer is not a well-formed feed page
        (a field missing or malformed, cursors not ascending or not after ``after``, too many)."""
        url = f"{self.base_url}/v1/payment-references?" + urlencode({"chain": chain, "after": int(after),
                                                                     "limit": int(limit)})
        body = await self._get(url, ())
        return feed_from_json(body, chain, after, limit)


_FEED_REFERENCE = re.compile(r"^0x[0-9a-f]{64}$")
_MAX_UNIX = 2**63 - 1


def _feed_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _MAX_UNIX:
        raise VerificationError(f"malformed reference feed: {what} is not an integer in range")
    return value


def feed_from_json(body: object, chain: str, after: int, limit: int) -> list[FeedEntry]:
    """Parse and check one page of the reference feed (the gateway is trusted for liveness only:
    whatever it answers, a collector recomputes addresses from the references)."""
    if not isinstance(body, dict) or not isinstance(body.get("entries"), list):
        raise VerificationError("malformed reference feed: no entries list")
    raw = body["entries"]
    if len(raw) > limit:
        raise VerificationError("malformed reference feed: more entries than asked for")
    entries: list[FeedEntry] = []
    last = after
    for e in raw:
        if not isinstance(e, dict):
            raise VerificationError("malformed reference feed: an entry is not an object")
        cursor = _feed_int(e.get("cursor"), "cursor", 1)
        if cursor <= last:
            raise VerificationError("malformed reference feed: cursors not ascending after the one asked for")
        ref = e.get("reference")
        if not isinstance(ref, str) or not _FEED_REFERENCE.fullmatch(ref.lower()):
            raise VerificationError("malformed reference feed: a reference is not 0x and 64 hex digits")
        expires_at = _feed_int(e.get("expires_at"), "expires_at", 0)
        entries.append(FeedEntry(cursor=cursor, chain=chain, reference=bytes.fromhex(ref[2:]), expires_at=expires_at))
        last = cursor
    nxt = body.get("next")
    if nxt is not None and _feed_int(nxt, "next", 0) < last:
        raise VerificationError("malformed reference feed: next is before the last entry")
    return entries


def _problem_code(body: bytes) -> str | None:
    """The code of a creditbridge problem document (``.../problems/<code>``), else None."""
    from bridge.api.problems import PROBLEM_BASE

    try:
        doc = json.loads(body)
    except ValueError:
        return None
    t = doc.get("type") if isinstance(doc, dict) else None
    if not isinstance(t, str) or not t.startswith(PROBLEM_BASE):
        return None
    return t[len(PROBLEM_BASE):]


def terms_from_json(d: dict) -> PaymentTerms:
    from bridge.pricing.quotes import terms_from_json as parse

    try:
        return parse(d)
    except (KeyError, TypeError, ValueError) as e:
        raise VerificationError(f"malformed payment terms ({e.__class__.__name__})") from None


def late_terms_from_json(d: dict) -> LateTerms:
    from bridge.pricing.quotes import late_terms_from_json as parse

    try:
        return parse(d)
    except (KeyError, TypeError, ValueError) as e:
        raise VerificationError(f"malformed late terms ({e.__class__.__name__})") from None
