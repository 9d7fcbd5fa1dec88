"""What the devnet and the chain families' devnet plug-ins share (``relayers/*/devchain.py``).

Plain data, no chain SDK: the plug-ins may import it (they may not import ``devnet.network``,
the composition root), and the devnet builds its extra source chains from what they return.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable


@dataclass(frozen=True)
class DevCommittee:
    """The devnet committee as chain families need it: EVM addresses (settlement, ETH lock)
    and one Ed25519 key per signer (Asset Hub multisig members, TON lock release keys)."""

    threshold: int
    evm_addresses: tuple[str, ...]
    ed25519_public: tuple[str, ...]  # 64 hex digits each, no 0x
    keystores: tuple[Path, ...]  # signer-i-ed25519.json, encrypted with the devnet password
    # the devnet's manifest (bridge/manifest.py), committee already in it: plug-ins deploy with
    # their family's deploy function (relayers/<family>/deploy.py), which records the chain there
    manifest: Path | None = None
    network: str = "devnet"


@dataclass
class DevChain:
    """One extra source chain a family plug-in started for the devnet."""

    name: str
    config: dict  # the chains[] entry of every component's config (the manifest gives the rest)
    info: dict  # devnet.json chains.<name>
    accounts: list[dict]  # devnet.json accounts.<name>
    fixed_usd: dict[str, str]  # devnet prices of its token
    min_amount: dict[str, int]
    stop: Callable[[], Awaitable[None]]
    # its non-native tokens: [[tokens]] entries of every component's config (issue 15); the
    # devnet bounds a symbol with a stablecoin PriceFeed (STABLE_USD) by that feed
    tokens: list[dict] = field(default_factory=list)
