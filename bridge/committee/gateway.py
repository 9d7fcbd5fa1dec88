"""The signer's client of the gateway API: fetch the signed terms of a payment reference."""

from __future__ import annotations

import aiohttp

from bridge.errors import GatewayUnavailable, VerificationError
from bridge.types import PaymentTerms


class GatewayClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def terms(self, reference: bytes) -> PaymentTerms | None:
        """The gateway-signed terms for ``reference``; None if the gateway knows no such payment.

        The signature is *not* checked here; the caller verifies it with the pinned key.
        """
        url = f"{self.base_url}/v1/payments/by-reference/0x{reference.hex()}"
        try:
            async with self.session.get(url, timeout=self.timeout) as r:
                if r.status == 404:
                    return None
                if r.status != 200:
                    raise GatewayUnavailable(f"gateway answered HTTP {r.status}")
                body = await r.json()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise GatewayUnavailable(f"gateway unreachable ({e.__class__.__name__})") from None
        except ValueError:
            raise GatewayUnavailable("gateway answered malformed JSON") from None
        return terms_from_json(body)


def terms_from_json(d: dict) -> PaymentTerms:
    from bridge.pricing.quotes import terms_from_json as parse

    try:
        return parse(d)
    except (KeyError, TypeError, ValueError) as e:
        raise VerificationError(f"malformed payment terms ({e.__class__.__name__})") from None
