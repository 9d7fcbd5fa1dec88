"""The one exception tree of creditbridge.

``BridgeError`` is the root. Every error carries a stable machine ``code`` (used as the
problem ``type`` over HTTP) and whether retrying the same operation may succeed.
Relayers convert their SDK's exceptions into ``ChainError`` subclasses at their boundary.
Messages must never contain keys, seeds or passwords.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of all creditbridge errors."""

    code: str = "bridge-error"
    http_status: int = 500
    retryable: bool = False

    def __init__(self, detail: str = "", *, retryable: bool | None = None) -> None:
        super().__init__(detail or self.__class__.__doc__ or self.code)
        self.detail = detail or (self.__class__.__doc__ or self.code).strip()
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:  # one line, for CLI and logs
        return f"{self.code}: {self.detail}"


# --- caller's fault -------------------------------------------------------------------------
class InputError(BridgeError):
    """The input is invalid."""

    code = "invalid-input"
    http_status = 400


class NotFound(InputError):
    """The requested object does not exist."""

    code = "not-found"
    http_status = 404


class DepositNotSeen(NotFound):
    """This node has not (yet) observed the deposit as final; ask again later."""

    code = "deposit-not-seen"
    retryable = True


class TokenAmbiguous(InputError):
    """The token symbol is payable on several chains: give the chain."""

    code = "token-ambiguous"


class TokenNotOffered(InputError):
    """The chain does not offer that token."""

    code = "token-not-offered"


class Conflict(InputError):
    """The request conflicts with the current state."""

    code = "conflict"
    http_status = 409


class QuoteExpired(Conflict):
    """The quote has expired."""

    code = "quote-expired"


class Unauthorized(InputError):
    """Authentication is required or failed."""

    code = "unauthorized"
    http_status = 401


class RateLimited(InputError):
    """Too many requests."""

    code = "rate-limited"
    http_status = 429


class ConfigError(BridgeError):
    """The configuration is invalid."""

    code = "invalid-config"


# --- the world's fault ------------------------------------------------------------------------
class ChainError(BridgeError):
    """A chain or its RPC endpoint failed; retryable unless said otherwise."""

    code = "chain-error"
    http_status = 502
    retryable = True


class RpcUnavailable(ChainError):
    """No RPC endpoint of the chain answered."""

    code = "rpc-unavailable"
    http_status = 503


class ReorgDetected(ChainError):
    """The chain's history changed under the watcher; it rewinds and rescans."""

    code = "reorg-detected"


class TransactionFailed(ChainError):
    """A submitted transaction reverted or was dropped."""

    code = "transaction-failed"


class PriceUnavailable(BridgeError):
    """No trustworthy price is available right now."""

    code = "price-unavailable"
    http_status = 503
    retryable = True


class TokenDepegged(PriceUnavailable):
    """The stablecoin trades outside its peg band: no quote for it until it is back."""

    code = "token-depegged"


class VerificationError(BridgeError):
    """A deposit, quote or signature failed verification; never retried blindly."""

    code = "verification-failed"
    http_status = 422


class KeystoreError(BridgeError):
    """The keystore cannot be read or decrypted."""

    code = "keystore-error"


class StorageError(BridgeError):
    """The database failed."""

    code = "storage-error"
    http_status = 503
    retryable = True


class GatewayUnavailable(BridgeError):
    """The payment gateway (API) could not be reached or answered badly; retried later."""

    code = "gateway-unavailable"
    http_status = 503
    retryable = True


class SignerUnavailable(BridgeError):
    """A committee signer node could not be reached or answered badly."""

    code = "signer-unavailable"
    http_status = 503
    retryable = True
