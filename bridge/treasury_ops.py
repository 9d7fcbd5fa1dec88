"""``creditbridge treasury status``: the operator's view of treasury sweeps, one line per token
(chain): earned, swept, pending (earned, not paid to the treasury yet), stranded and the last
sweep with its payout tx and time.

From the API's ``GET /v1/admin/treasury`` with an admin key (``--api``, or the devnet's API and
key without arguments), or straight from the signers' ``GET /v1/sweeps`` (``--signer`` ...,
``--threshold``). Either way the figures are those ``threshold`` signers report identically;
signers that disagree or cannot be reached are named (bridge/treasury_view.py)."""

from __future__ import annotations

import asyncio
import json

from bridge import treasury_view
from bridge.errors import BridgeError


async def _from_signers(urls: list[str], threshold: int) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        return treasury_view.summarize(await treasury_view.fetch(urls, s), threshold)


def cmd_treasury_status(args) -> int:
    if args.signer:
        urls = list(dict.fromkeys(args.signer))
        threshold = args.threshold if args.threshold is not None else treasury_view.default_threshold(len(urls))
        if threshold > len(urls):
            raise BridgeError(f"--threshold {threshold} is more than the {len(urls)} signers given")
        view = asyncio.run(_from_signers(urls, threshold))
    else:
        from bridge.cli import _api_url
        from bridge.ops import _admin_key, admin_get

        view = asyncio.run(admin_get(_api_url(args) + "/v1/admin/treasury", _admin_key(args)))
    print(json.dumps(view, indent=2) if args.json else treasury_view.format_table(view))
    return 0


def add_commands(sub) -> None:
    sp = sub.add_parser("treasury", help="treasury sweeps: earned, swept and pending per chain")
    tsub = sp.add_subparsers(dest="treasury_cmd", required=True)
    st = tsub.add_parser("status", help="what the committee earned, swept and has pending, one line per token")
    st.add_argument("--api", help="the API's base URL (default: the devnet's)")
    st.add_argument("--key-env", default="CREDITBRIDGE_ADMIN_KEY", help="env variable holding an admin API key")
    st.add_argument("--signer", action="append", help="read a signer's /v1/sweeps instead (repeatable)")
    st.add_argument("--threshold", type=int, help="with --signer: how many must agree (default: a majority)")
    st.add_argument("--devnet", default=".devnet/devnet.json", help="read the API and its key from devnet.json")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_treasury_status)
