"""Chaos and soak harness: N payments through the public API while components crash and the
chains misbehave, then reconciliation from the chains themselves.

    .venv/bin/python bench/chaos.py                     # 1,000 payments, default seed
    .venv/bin/python bench/chaos.py --quick --seed 7    # CI: tens of payments, every fault kind

It starts the devnet in this process (every component is still its own OS process, restarted
by the devnet when it dies), with a TCP proxy in front of each chain's endpoint for the
components (EVM and Asset Hub RPC, the TON liteserver's ADNL port), and pays from several payer
accounts per token as a dApp would: POST /v1/quotes, POST /v1/payments, then on the source
chain: ``lock(reference)`` on the Ethereum lock contract, a WalletV4R2 transfer to the TON lock
contract, or ``batch_all(transfer_keep_alive, remark_with_event)`` to the committee multisig on
the Asset Hub chains (DOT, KSM) -- or, for ``--transfer-share`` of each token's payments (half
by default), the plain transfer any wallet makes (issue 14, ``instructions.transfer``): plain ETH
with no calldata to the payment's deposit address (collected into the lock by the relay), a lone
``transfer_keep_alive`` to the payment's Asset Hub account (collected by the signers' multisig),
a TON transfer with the payment code as its text comment. Funds left at a payment address after
the drain fail the run (``stuck_at_payment_addresses``). ``--other-share`` of the payments go to
the non-ETH tokens.
A seeded schedule injects:

* ``kill_signer`` / ``kill_relay`` / ``kill_api``: SIGKILL (never more than n - t signers down);
* ``reorg``: ``anvil_reorg`` on Ethereum below the finality point (the payer re-broadcasts a
  transaction the reorg removed, as a wallet would). Not on the other chains: chopsticks
  finalizes every block at once (a ``dev_setHead`` rewind there is a finality violation, which
  the Asset Hub relayer's own tests cover) and the local TON chain has no forks;
* ``rpc_cut`` / ``rpc_flap``: a chain's RPC proxy cut for seconds, or flapping;
* ``rpc_stall``: re-observation times out: the Ethereum proxy holds back its answers to single
  receipt requests (what a signer's re-observation sends) and the TON liteserver's proxy all its
  answers, for longer than a reader's retries (the components' request timeout on these chains
  is ``REQUEST_TIMEOUT``), then recovers; an Ethereum payment made at its start is final and
  stored within the window, so the signers' re-observation of it times out: they must retry with
  a backoff, not reject (the report's ``signer_retries`` shows their
  ``creditbridge_signer_retries_total`` by chain and reason);
* ``settlement_drop``: the aggregator's settlement transaction is dropped from the mempool;
* ``settlement_fail``: the aggregator's gas account is emptied, so its transactions fail;
* ``undecodable_extrinsic``: an Asset Hub chain gets an extrinsic its runtime executes but
  scalecodec cannot decode (a ``Utility.batch`` nested 150 deep: ``RecursionError``), in a
  block among the payments; the relayers must read past it (issue 11, item 7);
* ``price_stale`` / ``price_disagree``: the devnet's Chainlink ETH/USD feed (one of the API's two
  required price sources) stops answering a fresh round, or answers a price 15% off; quotes
  must then be refused (503), never priced from one source or from the bad one.

Reconciliation reads every deposit from the source chains (``Locked`` events on Ethereum; the TON
lock's and the committee account's transactions walked by the relayers' watchers pointed
straight at the nodes) and every ``Credited`` event of the ledger: each deposit must be credited exactly once, to the payment's beneficiary, with the
credits its quote promised (``credits_for_deposit``); nothing may be credited that was not paid;
nothing may stay uncredited longer than ``--drain-bound`` seconds after the faults stop.

Refunds are held to the same standard: one payment in ``1 / --overpay-share`` (per payer, staggered
so that every token has some, in quick runs too) pays 10% more than quoted; the committee must
refund exactly that excess once, to the payer, on the source chain -- ``Released`` events of
the Ethereum lock (release id, recipient and amount checked), the TON lock's ``is_released``
and release count, the committee multisig's ``MultisigExecuted`` events on the Asset Hub chains
(one successful execution per expected refund, no call executed twice) -- within the same
drain bound.
Exit status 1 on any lost, doubled, mispriced or phantom credit, or any refund missing, doubled,
wrong or unexpected.

Scale-out mode (issue 16): ``--postgres --api-replicas 3 --aggregators 2`` runs the devnet with
the API on PostgreSQL, that many API processes and relays. The harness then spreads its requests
over the replicas (round robin, the next one on a failure), registers a webhook with the
devnet's ``merchant_key`` on a receiver of its own on 127.0.0.1 and opens every payment with
that key; ``kill_api_replica`` SIGKILLs one replica at a time (waiting for it to come back, so
never all at once) and ``kill_relay`` picks one of the relays. At the end it checks
(``webhooks`` and ``replicas`` in the report, and the exit status): every event the API
committed for the merchant (read from its PostgreSQL) reached the receiver; no change was
committed as two events (one row per payment and change) and no event id arrived for two
changes; no delivery was attempted by two replicas at once (the receiver records overlapping
attempts of one delivery id); every payment reads the same from every replica.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eth_account import Account  # noqa: E402

from devnet.network import DevnetOptions, run_devnet  # noqa: E402
from devnet.tcp_proxy import TcpProxy  # noqa: E402
from bridge.hashing import keccak256, source_id  # noqa: E402
from bridge.pricing.credits import amount_for_credits, credits_for_deposit  # noqa: E402

log = logging.getLogger("chaos")
LOCKED_TOPIC = "0x" + keccak256(b"Locked(uint64,address,uint256,bytes32)").hex()
CREDITED_TOPIC = "0x" + keccak256(b"Credited(bytes32,uint64,address,uint256,bytes32)").hex()
LOCK_SELECTOR = keccak256(b"lock(bytes32)")[:4]
RELEASED_TOPIC = "0x" + keccak256(b"Released(bytes32,address,uint256)").hex()
# ERC-20 custody of the lock (issue 15)
LOCKED_TOKEN_TOPIC = "0x" + keccak256(b"LockedToken(uint64,address,uint256,bytes32,address)").hex()
RELEASED_TOKEN_TOPIC = "0x" + keccak256(b"ReleasedToken(bytes32,address,uint256,address)").hex()
ERC20_TRANSFER = keccak256(b"transfer(address,uint256)")[:4]
FAULT_KINDS = ("kill_signer", "kill_relay", "kill_api", "reorg", "rpc_cut", "rpc_flap", "rpc_stall",
               "settlement_drop", "settlement_fail", "price_stale", "price_disagree",
               "undecodable_extrinsic")
SUBSTRATE_INCLUSION_WAIT = 300  # seconds a substrate payer waits for its extrinsic to be included
REPLICA_FAULT_KINDS = ("kill_api_replica",)  # scale-out mode only (the default schedule is unchanged)
API_RETRY_SECONDS = 180  # how long a payer's dApp keeps asking an API that is down (restarting)
REQUEST_TIMEOUT = 3.0  # the components' Ethereum and TON request timeout (s): a stall times out
STALL_SECONDS = (24.0, 26.0)  # a payment's finality + an EVM read's whole retry schedule at that timeout


def _single_receipt_request(data: bytes) -> bool:
    """An HTTP chunk carrying a single (not batched) ``eth_getTransactionReceipt`` call: what a
    signer's re-observation sends (the deposit follower batches its receipt requests)."""
    return b"eth_getTransactionReceipt" in data and b"[{" not in data.replace(b" ", b"")


async def _all_deposits(watcher) -> list[dict]:
    """Every deposit a source-chain watcher finds up to its final block (then closes it)."""
    try:
        obs = await watcher.fetch_deposits(1, await watcher.finalized_height())
    finally:
        await watcher.aclose()
    return [{"source": "0x" + o.source.hex(), "sequence": o.sequence, "reference": "0x" + o.reference.hex(),
             "amount": o.amount, "token": o.token} for o in obs]


# --- JSON-RPC -----------------------------------------------------------------------------------
class Rpc:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.s, self.url = session, url

    async def __call__(self, method: str, *params):
        async with self.s.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                               "params": list(params)}) as r:
            body = await r.json()
        if "error" in body:
            raise RuntimeError(f"{method}: {body['error']}")
        return body["result"]


# --- a merchant's webhook receiver (scale-out mode) ------------------------------------------------
class WebhookReceiver:
    """Records every webhook POST: the event ids received (with their payment and type), and
    attempts of one delivery id that overlap in time (two replicas delivering it at once). Each
    answer is held a moment so that overlapping attempts would show."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.events: dict[str, set[tuple[str, str]]] = {}  # event id -> {(payment id, type)}
        self.attempts = 0
        self.in_flight: dict[str, list] = {}  # delivery id -> its requests being answered
        self.overlaps: list[dict] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        delivery = request.headers.get("Creditbridge-Delivery", "")
        self.attempts += 1
        # only attempts whose sender is still connected count as concurrent: aiohttp does not
        # cancel a handler whose client went away, so on a starved event loop (load average
        # 50) an attempt the sender had already timed out on (and retried) still looked "in
        # flight" here (the replica-mode run of this session counted 61 such overlaps)
        live = [r for r in self.in_flight.get(delivery, []) if r.transport is not None
                and not r.transport.is_closing()]
        live.append(request)
        self.in_flight[delivery] = live
        try:
            if len(live) > 1:
                self.overlaps.append({"delivery": delivery, "event": request.headers.get("Creditbridge-Event", ""),
                                      "concurrent": len(live)})
            body = json.loads(await request.read())
            await asyncio.sleep(self.rng.uniform(0.02, 0.15))
            self.events.setdefault(body["id"], set()).add((body.get("data", {}).get("payment_id", ""), body["type"]))
            return web.Response(status=200)
        finally:
            with contextlib.suppress(ValueError):
                self.in_flight[delivery].remove(request)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Payment:
    id: str
    reference: str
    payer: int
    token: str
    beneficiary: str
    quote_amount: int
    quote_credits: int
    value: int
    tx: str = ""
    raw: str = ""  # the signed transaction, re-broadcast if a reorg removes it
    sent_at: float = 0.0
    sends: int = 0
    included_at: float = 0.0  # TON / Asset Hub: when the payer saw its transfer in a block
    overpay: int = 0  # paid on top of the quoted amount: must come back as one refund
    instructions: dict = field(default_factory=dict)
    plain: bool = False  # paid by a plain transfer (instructions.transfer), not the call-based form
    symbol: str = ""  # the token's symbol (``token`` is SYMBOL@chain for a stablecoin)
    chain: str = ""  # a stablecoin's chain ("" for the native tokens)


@dataclass
class Stats:
    faults: dict[str, int] = field(default_factory=dict)
    windows: list[tuple[float, float]] = field(default_factory=list)
    quotes_refused: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    mispriced_quotes: list[str] = field(default_factory=list)
    resent: int = 0
    effects: dict[str, int] = field(default_factory=dict)

    def effect(self, what: str, n: int = 1) -> None:
        self.effects[what] = self.effects.get(what, 0) + n


class Harness:
    def __init__(self, args) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.stats = Stats()
        self.payments: dict[str, Payment] = {}  # by reference
        self.proxies: dict[str, TcpProxy] = {}
        self.block_seen: dict[int, float] = {}
        self.credit_seen: dict[tuple[str, int], float] = {}
        self.signers_down = 0
        self.pay_lock = asyncio.Lock()  # one signed transaction at a time per harness
        self._ms_scan: dict[str, tuple[int, list]] = {}
        self._ton_releaser = None
        self._readers: dict[str, object] = {}  # Asset Hub chain -> SubstrateInterface of the balance reads
        self._custodies: dict[str, object] = {}  # Asset Hub chain -> SubstrateCustody (scan cached)
        self._ton_swept: set[bytes] = set()  # TON sweep ids seen paid
        self.nonces: dict[int, int] = {}
        self.fault_kinds = FAULT_KINDS + (REPLICA_FAULT_KINDS if args.api_replicas > 1 else ())
        self.api_urls: list[str] = []
        self._next_api = 0
        self.auth: dict[str, str] = {}  # scale-out mode: the merchant's key on every request
        self.receiver: WebhookReceiver | None = None
        self._account_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._ton_lb = None  # a liteserver client for jetton balances
        self.stables: list[tuple[str, str]] = []  # (chain, symbol) of the devnet's stablecoins
        self._token_custody: dict[tuple[str, str], object] = {}  # (chain, symbol) -> custody reader
        # the gateway's decisions on late deposits (paid after the payment's expiry + grace), by
        # (source, sequence): credited at a fresh quote, or held and refunded under "late"
        self.late: dict[tuple[str, int], dict] = {}
        self._late_asked: dict[str, float] = {}  # payment id -> when its view was last read

    async def proxy(self, name: str, url: str) -> str:
        host, port = url.split("//")[1].split("/")[0].split(":")
        p = TcpProxy(name, host, int(port))
        self.proxies[name] = p
        return await p.start()

    # --- background observers (wall-clock times for latency) ---------------------------------------
    async def watch_heads(self, rpc: Rpc) -> None:
        while True:
            try:
                n = int(await rpc("eth_blockNumber"), 16)
                now = time.monotonic()
                for b in range(max(self.block_seen, default=n - 1) + 1, n + 1):
                    self.block_seen.setdefault(b, now)
            except (aiohttp.ClientError, RuntimeError):
                pass
            await asyncio.sleep(0.2)

    async def watch_credits(self, rpc: Rpc, ledger: str) -> None:
        start = 0
        while True:
            try:
                head = int(await rpc("eth_blockNumber"), 16)
                if head >= start:
                    logs = await rpc("eth_getLogs", {"address": ledger, "fromBlock": hex(start),
                                                     "toBlock": hex(head), "topics": [CREDITED_TOPIC]})
                    now = time.monotonic()
                    for e in logs:
                        self.credit_seen.setdefault((e["topics"][1], int(e["topics"][2], 16)), now)
                    start = head + 1
            except (aiohttp.ClientError, RuntimeError):
                pass
            await asyncio.sleep(0.5)

    # --- paying ------------------------------------------------------------------------------------
    def next_api(self) -> str:
        """The API to ask next: round robin over the replicas (the one API by default)."""
        urls = self.api_urls or [self.info["api"]]
        self._next_api += 1
        return urls[self._next_api % len(urls)]

    async def api(self, method: str, path: str, body=None, base: str | None = None) -> tuple[int, dict]:
        # the API may be restarting (then the next replica is asked): a dApp keeps retrying. The
        # budget is time, not attempts: a restart after SIGKILL on a loaded 2-core machine once took
        # 45 s (22 s of imports), longer than 120 quick connection refusals
        deadline = time.monotonic() + API_RETRY_SECONDS
        while True:
            try:
                async with self.session.request(method, (base or self.next_api()) + path, json=body,
                                                headers=self.auth, timeout=aiohttp.ClientTimeout(total=10)) as r:
                    return r.status, await r.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"API unreachable for {path} for {API_RETRY_SECONDS} s") from None
                await asyncio.sleep(0.25)

    async def send(self, p: Payment) -> None:
        acct = self.info["accounts"]["ethereum"][p.payer]
        nonce = self.nonces[p.payer]
        if p.plain:  # what any wallet sends: plain ETH, no calldata, to the payment's deposit address
            tx = {"to": p.instructions["transfer"]["to"], "value": p.value + p.overpay, "data": "0x",
                  "nonce": nonce, "gas": 21_000, "gasPrice": self.gas_price, "chainId": self.chain_id}
        else:
            tx = {"to": self.lock, "value": p.value + p.overpay,
                  "data": "0x" + (LOCK_SELECTOR + bytes.fromhex(p.reference[2:])).hex(),
                  "nonce": nonce, "gas": 120_000, "gasPrice": self.gas_price, "chainId": self.chain_id}
        p.raw = "0x" + Account.sign_transaction(tx, acct["private_key"]).raw_transaction.hex()
        p.tx = await self.eth("eth_sendRawTransaction", p.raw)
        p.sent_at = time.monotonic()
        p.sends += 1
        self.nonces[p.payer] = nonce + 1

    async def open_payment(self, token: str, decimals: int, index: int, value_field: str,
                           number: int = 1) -> Payment | None:
        """What a dApp does first: a quote for a random number of credits, then a payment for
        payer ``index``'s beneficiary; None when quotes stay refused (a price fault)."""
        beneficiary = self.info["accounts"]["settlement"][index]["address"]
        symbol, _, chain = token.partition("@")  # a stablecoin is SYMBOL@chain (USDT is paid on several)
        q = await self.quote(symbol, self.rng.randint(10, 2000), decimals, chain or None)
        if q is None:
            return None
        status, pay = await self.api("POST", "/v1/payments", {"quote_id": q["id"], "beneficiary": beneficiary})
        # a retried POST racing its own first request (after an API restart) is answered with the
        # payment (200) since the API asks again on a uniqueness race: any refusal is a failure
        if status not in (200, 201):
            raise RuntimeError(f"payment refused: {pay}")
        ins = pay["instructions"]
        p = Payment(pay["id"], pay["reference"], index, token, beneficiary.lower(), int(q["amount"]),
                    int(q["credits"]), int(ins[value_field] if value_field else ins["transfer"]["amount"]),
                    symbol=symbol, chain=chain)
        p.instructions = ins
        # about half of the payments by plain transfer (issue 14): alternate per payer, so every
        # token and every payer has both kinds, in quick runs too
        p.plain = "transfer" in ins and self.args.transfer_share > 0 and \
            (index + number) % max(1, round(1 / self.args.transfer_share)) == 0
        every = max(1, round(1 / self.args.overpay_share)) if self.args.overpay_share > 0 else 0
        if every and (index + number + 1) % every == 0:
            p.overpay = p.value // 10 + 1
        return p

    async def payer(self, index: int, count: int, pace: float) -> None:
        for number in range(count):
            p = await self.open_payment("ETH", 18, index, "value", number)
            if p is None:
                continue
            async with self.pay_lock:
                await self.send(p)
                self.payments[p.reference] = p
            await asyncio.sleep(pace)

    def account_lock(self, chain: str, index: int) -> asyncio.Lock:
        """One payment at a time per dev account of a chain whose payer waits for its own nonce or
        seqno to move (TON wallets, Asset Hub accounts): the native and the stablecoin payer of an
        account share it, so neither mistakes the other's transfer for its own."""
        return self._account_locks.setdefault((chain, index), asyncio.Lock())

    def family_of(self, chain: str) -> str:
        info = self.info["chains"][chain]
        return info.get("family") or ("ton" if chain == "ton" else "evm")

    def chain_tokens(self, chain: str) -> dict:
        """The devnet's stablecoins of ``chain`` (devnet.json ``chains.<chain>.tokens``) as the
        relayers take them: symbol -> ``PayableToken``."""
        from bridge.config import PayableToken

        out = {}
        for sym, spec in (self.info["chains"][chain].get("tokens") or {}).items():
            out[sym] = PayableToken(symbol=sym, chain=chain, family=self.family_of(chain),
                                    decimals=int(spec["decimals"]), price_symbol=sym, native=False,
                                    contract=spec.get("contract"), asset_id=spec.get("asset_id"),
                                    jetton_master=spec.get("jetton_master"))
        return out

    async def stable_payer(self, label: str, index: int, count: int, pace: float) -> None:
        """Pays in a stablecoin (issue 15) as a wallet does on its chain: an ERC-20 ``transfer`` to
        the payment's deposit address, an ``Assets.transfer_keep_alive`` (plain to the payment
        account, or the call-based batch with the reference), a TEP-74 jetton transfer to the lock
        with the code (or the reference) as forward payload."""
        symbol, _, chain = label.partition("@")
        family = self.family_of(chain)
        if family == "substrate":
            return await self.substrate_payer(chain, index, count, pace, token=label)
        if family == "ton":
            return await self.ton_payer(index, count, pace, token=label)
        spec = self.info["chains"][chain]["tokens"][symbol]
        for number in range(count):
            p = await self.open_payment(label, int(spec["decimals"]), index, None, number)
            if p is None:
                continue
            # the ordinary ERC-20 transfer to the payment's address (approve + lockToken, the
            # call-based form, is covered by tests/integration/evm)
            p.plain = True
            async with self.pay_lock:
                acct = self.info["accounts"]["ethereum"][p.payer]
                nonce = self.nonces[p.payer]
                to = p.instructions["transfer"]["to"]
                data = ERC20_TRANSFER + bytes(12) + bytes.fromhex(to[2:]) + (p.value + p.overpay).to_bytes(32, "big")
                tx = {"to": spec["contract"], "value": 0, "data": "0x" + data.hex(), "nonce": nonce, "gas": 120_000,
                      "gasPrice": self.gas_price, "chainId": self.chain_id}
                p.raw = "0x" + Account.sign_transaction(tx, acct["private_key"]).raw_transaction.hex()
                p.tx = await self.eth("eth_sendRawTransaction", p.raw)
                p.sent_at = time.monotonic()
                p.sends += 1
                self.nonces[p.payer] = nonce + 1
                self.payments[p.reference] = p
            await asyncio.sleep(pace)

    async def ton_payer(self, index: int, count: int, pace: float, token: str = "TON") -> None:
        """Pays in TON like a wallet app: a signed WalletV4R2 transfer built from the API's
        instructions, one at a time (the wallet's seqno must move before the next). A jetton
        (``token`` SYMBOL@ton) is paid by a TEP-74 transfer from the wallet's jetton wallet."""
        import base64

        from pytoniq_core import Cell

        from relayers.ton import wallet as tw

        account = self.info["accounts"]["ton"][index]
        symbol, _, chain = token.partition("@")
        decimals = int(self.info["chains"]["ton"]["tokens"][symbol]["decimals"]) if chain else 9
        config = self.info["chains"]["ton"]["liteserver_config"]
        conn: dict = {}

        async def close() -> None:
            lb = conn.pop("lb", None)
            conn.pop("wallet", None)
            if lb is not None:
                try:  # pytoniq's close can hang after its listener crashed: bound it
                    await asyncio.wait_for(lb.close_all(), 10)
                except (TimeoutError, OSError) as e:
                    log.warning("ton payer %d: closing the liteserver client: %r", index, e)

        async def wallet_now():
            """The wallet, connected again after a liteserver outage (an ``rpc_cut`` leaves
            pytoniq's balancer with no alive peers; a wallet app reconnects, it does not quit)."""
            if "wallet" not in conn:
                conn["lb"] = await tw.connect(config, trust_level=2)
                conn["wallet"] = await tw.open_wallet(conn["lb"], account["mnemonic"])
            return conn["wallet"]

        async def seqno_now() -> int:
            for attempt in range(60):
                try:
                    wallet = await wallet_now()
                    await wallet.update()
                    return await wallet.get_seqno() if wallet.is_active else 0
                except Exception as e:  # noqa: BLE001 - pytoniq raises plain Exceptions; retried below
                    if attempt == 59:
                        raise
                    self.stats.effect("ton_payer_reconnects")
                    log.info("ton payer %d: liteserver unreachable (%r); reconnecting", index, e)
                    await close()
                    await asyncio.sleep(2)
            raise AssertionError("unreachable")

        try:
            for number in range(count):
                p = await self.open_payment(token, decimals, index, None if chain else "amount", number)
                if p is None:
                    continue
                ins = p.instructions
                self.payments[p.reference] = p
                async with self.account_lock("ton", index):
                    seqno = await seqno_now()
                    for _attempt in range(5):  # an external message can be lost: re-send until seqno moves
                        try:
                            wallet = await wallet_now()
                            if chain:
                                from relayers.ton.jetton import pay_jettons

                                master = self.info["chains"]["ton"]["tokens"][symbol]["jetton_master"]
                                await pay_jettons(wallet, master, ins["transfer"]["to"], p.value + p.overpay,
                                                  **({"code": ins["transfer"]["comment"]} if p.plain
                                                     else {"reference": bytes.fromhex(p.reference[2:])}))
                            else:
                                # plain: the standard text comment (the payment code), as any TON wallet sends it
                                body = ins["transfer"]["payload"] if p.plain else ins["body"]
                                await tw.transfer(wallet, ins["transfer"]["to"] if p.plain else ins["contract"],
                                                  p.value + p.overpay, Cell.one_from_boc(base64.b64decode(body)))
                            p.sends += 1
                        except Exception as e:  # noqa: BLE001 - not sent (or unknown): the seqno decides below
                            log.info("ton payer %d: send failed (%r); checking the seqno", index, e)
                            await close()
                        try:
                            await tw.wait_for(lambda: self._seqno_moved(conn.get("wallet"), seqno), timeout=10)
                            p.included_at = time.monotonic()
                            break
                        except Exception:  # noqa: BLE001 - retried: the chain's own seqno guards against doubles
                            self.stats.effect("ton_transfers_resent")
                            if await seqno_now() > seqno:  # included after all (read after a reconnect)
                                p.included_at = time.monotonic()
                                break
                await asyncio.sleep(pace)
        finally:
            await close()

    async def substrate_payer(self, chain: str, index: int, count: int, pace: float, token: str | None = None) -> None:
        """Pays DOT or KSM like a wallet: ``Utility.batch_all([transfer_keep_alive(committee
        multisig, amount), remark_with_event(reference)])`` signed by a dev account, waiting for
        inclusion (substrate-interface is synchronous: it runs in a thread)."""
        from concurrent.futures import ThreadPoolExecutor

        from relayers.substrate import wallet as sw
        from relayers.substrate.client import SDK_LOCK

        info = self.info["chains"][chain]
        seed = self.info["accounts"][chain][index]["seed"]
        asset_id = None
        if token is None:  # the chain's native token
            token = info["token"]
            decimals = {"DOT": 10, "KSM": 12}[token]
        else:  # a pallet_assets stablecoin, SYMBOL@chain (issue 15)
            spec = info["tokens"][token.partition("@")[0]]
            decimals, asset_id = int(spec["decimals"]), int(spec["asset_id"])
        loop = asyncio.get_running_loop()
        # one SubstrateInterface per payer, used on one thread; scalecodec's registry is
        # process-wide and not thread-safe, so SDK work is serialized by the relayer's lock
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"payer-{chain}-{index}")

        def locked(fn, *args):
            with SDK_LOCK:
                return fn(*args)

        si = await loop.run_in_executor(pool, locked, sw.connect, info["rpc"], info["ss58_prefix"])

        address = sw.keypair(seed, info["ss58_prefix"]).ss58_address

        def nonce() -> int:
            return int(si.query("System", "Account", [address]).value["nonce"])

        def pay(to: str, amount: int, remark: bytes):
            if asset_id is not None:
                return sw.submit(si, seed, sw.asset_payment_call(si, asset_id, to, amount, remark), wait=False)
            return sw.submit(si, seed, sw.payment_call(si, to, amount, remark), wait=False)

        def pay_plain(to: str, amount: int):  # what any wallet sends: a lone transfer_keep_alive
            if asset_id is not None:
                return sw.submit(si, seed, sw.asset_payment_call(si, asset_id, to, amount, None), wait=False)
            return sw.submit(si, seed, si.compose_call("Balances", "transfer_keep_alive",
                                                       {"dest": to, "value": amount}), wait=False)

        try:
            for number in range(count):
                p = await self.open_payment(token, decimals, index, None if asset_id is not None else "amount",
                                            number)
                if p is None:
                    continue
                ins = p.instructions
                self.payments[p.reference] = p
                async with self.account_lock(chain, index):
                    before = await loop.run_in_executor(pool, locked, nonce)
                    # submit, then wait for the devnet's next block (one per 12 s slot) without
                    # holding the SDK lock, so other payers' extrinsics join the same block
                    if p.plain:
                        await loop.run_in_executor(pool, locked, pay_plain, ins["transfer"]["to"],
                                                   p.value + p.overpay)
                    else:
                        await loop.run_in_executor(pool, locked, pay, ins["to"], p.value + p.overpay,
                                                   bytes.fromhex(ins["remark"][2:]))
                    p.sends += 1
                    # a wallet waits while its extrinsic is in the pool: on a heavily loaded machine
                    # (load average 50) the devnet's 12 s slots came 60 s apart, and a 60 s bound
                    # ended a run that had lost nothing
                    deadline = time.monotonic() + SUBSTRATE_INCLUSION_WAIT
                    while await loop.run_in_executor(pool, locked, nonce) <= before:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{token} payment {p.id} not included within "
                                               f"{SUBSTRATE_INCLUSION_WAIT} s")
                        await asyncio.sleep(1.0)
                    p.included_at = time.monotonic()
                await asyncio.sleep(pace)
        finally:
            try:
                await asyncio.wait_for(loop.run_in_executor(pool, si.close), 10)
            except TimeoutError:
                log.warning("%s payer %d: closing the connection timed out", chain, index)
            pool.shutdown(wait=False)

    async def send_undecodable(self, chain: str) -> None:
        """Submit, straight to the node, a signed extrinsic the runtime runs but the SDK cannot
        decode (``relayers.substrate.wallet.nested_batch``), from a dev account no payer uses."""
        from relayers.substrate import wallet as sw
        from relayers.substrate.client import SDK_LOCK
        from devnet.substrate.devchain import FAULT_SEED

        info = self.info["chains"][chain]

        def job() -> str:
            with SDK_LOCK:
                si = sw.connect(info["rpc"], info["ss58_prefix"])
                try:
                    kp = sw.keypair(FAULT_SEED, info["ss58_prefix"])
                    call = sw.nested_batch(si, si.compose_call("System", "remark", {"remark": "0x" + os.urandom(8).hex()}))
                    raw = sw.signed_raw_extrinsic(si, kp, call, si.get_account_nonce(kp.ss58_address))
                    return si.rpc_request("author_submitExtrinsic", ["0x" + raw.hex()]).get("result")
                finally:
                    si.close()

        h = await asyncio.to_thread(job)
        log.info("undecodable extrinsic %s submitted on %s", h, chain)

    async def substrate_deposits(self, chain: str) -> list[dict]:
        """Every deposit to the committee account on an Asset Hub chain, walked block by block
        by the relayer's watcher pointed straight at the node (not through the chaos proxy)."""
        from bridge.config import SubstrateChainConfig
        from relayers.substrate.watcher import SubstrateWatcher

        cfg = next(c for c in self.api_cfg["chains"] if c["name"] == chain)
        return await _all_deposits(SubstrateWatcher(SubstrateChainConfig.model_validate(
            {**cfg, "rpc": [self.info["chains"][chain]["rpc"]]}), tokens=self.chain_tokens(chain)))

    @staticmethod
    async def _seqno_moved(wallet, seqno: int) -> bool:
        if wallet is None:  # disconnected after a failed send: the caller reconnects
            raise ConnectionError("ton wallet disconnected")
        await wallet.update()
        return wallet.is_active and await wallet.get_seqno() > seqno

    async def quote(self, token: str, credits: int, decimals: int, chain: str | None = None) -> dict | None:
        body = {"token": token, "credits": str(credits)}
        if chain:
            body["chain"] = chain
        for _attempt in range(40):  # a dApp retries a refused quote after a moment
            status, q = await self.api("POST", "/v1/quotes", body)
            if status == 201:
                expect = amount_for_credits(credits, Decimal("0.01"), self.prices[token], decimals)
                if int(q["amount"]) != expect:
                    self.stats.mispriced_quotes.append(q["id"])
                return q
            self.stats.quotes_refused += 1
            why = f"{status} {q.get('type', '').rsplit('/', 1)[-1]}" if isinstance(q, dict) else str(status)
            self.stats.refusals[why] = self.stats.refusals.get(why, 0) + 1
            if status < 500 and status != 429:
                raise RuntimeError(f"quote for {credits} {token} credits refused: {q}")  # the harness's fault
            await asyncio.sleep(0.5)
        return None

    async def rebroadcaster(self) -> None:
        """What a wallet does: re-broadcast a signed transaction that has no receipt (a reorg
        removed it, or the node forgot it), same nonce and hash, until it is final. anvil
        settles its pool a moment after ``anvil_reorg`` returns, so this keeps checking rather
        than repairing once."""
        final: set[str] = set()
        while True:
            try:
                head = int(await self.eth("eth_blockNumber"), 16)
                for p in list(self.payments.values()):
                    if not p.raw or p.tx in final or time.monotonic() - p.sent_at < 3:
                        continue
                    receipt = await self.eth("eth_getTransactionReceipt", p.tx)
                    if receipt is not None:
                        if int(receipt["blockNumber"], 16) <= head - self.args.confirmations:
                            final.add(p.tx)
                        continue
                    try:
                        await self.eth("eth_sendRawTransaction", p.raw)
                        self.stats.effect("payments_rebroadcast")
                    except RuntimeError as e:  # still in the pool, or mined meanwhile
                        if not any(w in str(e).lower() for w in ("already", "known", "nonce too low")):
                            raise
            except (aiohttp.ClientError, RuntimeError) as e:
                log.warning("rebroadcaster: %s", e)
            await asyncio.sleep(2)

    # --- faults --------------------------------------------------------------------------------------
    def pid(self, name: str) -> int:
        return int((Path(self.info["processes"]["pids_dir"]) / f"{name}.pid").read_text())

    async def healthy(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)

    async def fault(self, kind: str) -> None:
        t0 = time.monotonic()
        self.stats.faults[kind] = self.stats.faults.get(kind, 0) + 1
        n_signers = len(self.info["committee"]["nodes"])
        if kind == "kill_signer":
            i = self.rng.randrange(n_signers)
            node = self.info["committee"]["nodes"][i]
            os.kill(self.pid(node["name"]), signal.SIGKILL)  # n - t = 1: one at a time
            await asyncio.sleep(0.3)
            await self.healthy(node["url"] + "/v1/health")
        elif kind == "kill_relay":
            relays = [r["name"] for r in self.info.get("relays", [])] or ["relay"]
            os.kill(self.pid(self.rng.choice(relays) if len(relays) > 1 else relays[0]), signal.SIGKILL)
        elif kind == "kill_api_replica":
            # one replica at a time, back before the next fault: never all of them down
            i = self.rng.randrange(len(self.api_urls))
            os.kill(self.pid("api" if i == 0 else f"api-{i}"), signal.SIGKILL)
            self.stats.effect(f"api_replica_{i}_killed")
            await asyncio.sleep(0.3)
            await self.healthy(self.api_urls[i] + "/v1/health")
        elif kind == "kill_api":
            os.kill(self.pid("api"), signal.SIGKILL)
            await asyncio.sleep(0.3)
            await self.healthy(self.info["api"] + "/v1/health")
        elif kind == "reorg":
            depth = self.rng.randint(1, max(1, self.args.confirmations - 2))
            await self.eth("anvil_reorg", depth, [])
        elif kind == "rpc_cut":
            proxy = self.proxies[self.rng.choice(sorted(self.proxies))]
            await proxy.cut()
            await asyncio.sleep(self.rng.uniform(2, 5))
            await proxy.restore()
        elif kind == "rpc_flap":
            proxy = self.proxies[self.rng.choice(sorted(self.proxies))]
            end = time.monotonic() + 4
            while time.monotonic() < end:
                await proxy.cut()
                await asyncio.sleep(self.rng.uniform(0.2, 0.6))
                await proxy.restore()
                await asyncio.sleep(self.rng.uniform(0.2, 0.6))
        elif kind == "rpc_stall":
            # re-observation times out: Ethereum answers to single receipt requests (the signers'
            # re-observation) and everything the TON liteserver answers are held back for a window
            # longer than a reader's retries, then flow again; signers must retry, not reject
            window = self.rng.uniform(*STALL_SECONDS)
            stalled = [(self.proxies["ethereum"], _single_receipt_request)]
            if "ton" in self.proxies:
                stalled.append((self.proxies["ton"], None))
            held = sum(p.held for p, _ in stalled)
            until = time.monotonic() + window
            for p, when in stalled:
                p.stall(window, when)
            # an Ethereum payment made now is final and stored by the signers within the window,
            # so their re-observation of it is what times out
            pay = await self.open_payment("ETH", 18, 0, "value", 1000 + self.stats.faults[kind])
            if pay is not None:
                async with self.pay_lock:
                    await self.send(pay)
                    self.payments[pay.reference] = pay
                self.stats.effect("rpc_stall_payments")
            await asyncio.sleep(max(0.0, until - time.monotonic()))
            self.stats.effect("rpc_stall_answers_held", sum(p.held for p, _ in stalled) - held)
        elif kind == "settlement_drop":
            await self.st("evm_setAutomine", False)
            try:
                deadline = time.monotonic() + 6
                while time.monotonic() < deadline:
                    block = await self.st("eth_getBlockByNumber", "pending", False)
                    if block and block.get("transactions"):
                        self.stats.effect("settlement_txs_dropped", len(block["transactions"]))
                        break
                    await asyncio.sleep(0.1)
                await self.st("anvil_dropAllTransactions")
            finally:
                await self.st("evm_setAutomine", True)
        elif kind in ("price_stale", "price_disagree"):
            from relayers.evm.chainlink import start_round, submit_answer

            feed = self.info["price_feeds"]["ETH"]
            rpc = self.info["chains"][feed["chain"]]["rpc"]
            true_answer = int(self.prices["ETH"] * 10 ** feed["decimals"])
            refused_before = self.stats.quotes_refused
            if kind == "price_stale":
                await start_round(rpc, feed["owner_private_key"], feed["address"])
            else:
                await submit_answer(rpc, feed["owner_private_key"], feed["address"], true_answer * 115 // 100)
            await asyncio.sleep(self.rng.uniform(2, 4))
            await submit_answer(rpc, feed["owner_private_key"], feed["address"], true_answer)
            self.stats.effect(f"{kind}_quotes_refused", self.stats.quotes_refused - refused_before)
        elif kind == "undecodable_extrinsic":
            if not self.substrate_chains:
                raise RuntimeError("no Asset Hub chain in this devnet")
            chain = self.rng.choice(self.substrate_chains)
            await self.send_undecodable(chain)
            self.stats.effect(f"undecodable_extrinsics_{chain}")
        elif kind == "settlement_fail":
            relay = self.relay_address
            balance = await self.st("eth_getBalance", relay, "latest")
            await self.st("anvil_setBalance", relay, "0x0")
            pending_before = len(self.credit_seen)
            await asyncio.sleep(self.rng.uniform(2, 4))
            if len(self.credit_seen) == pending_before:
                self.stats.effect("settlement_windows_without_gas")
            await self.st("anvil_setBalance", relay, balance)
        self.stats.windows.append((t0, time.monotonic()))
        log.info("fault %s done in %.1fs", kind, time.monotonic() - t0)

    async def chaos(self, stop: asyncio.Event) -> None:
        kinds = list(self.fault_kinds)
        self.rng.shuffle(kinds)  # every kind once first, then at random
        while not stop.is_set():
            kind = kinds.pop() if kinds else self.rng.choice(self.fault_kinds)
            try:
                await self.fault(kind)
            except (RuntimeError, aiohttp.ClientError, OSError) as e:
                log.warning("fault %s could not be injected: %s", kind, e)
            try:
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*self.args.fault_gap))
            except TimeoutError:
                pass
        while kinds:  # quick runs: make sure every kind happened at least once
            await self.fault(kinds.pop())

    async def signer_retries(self) -> dict:
        """The signers' ``creditbridge_signer_retries_total`` by chain and reason, summed over the
        committee (scraped from their /metrics; a signer killed meanwhile restarted from 0)."""
        out: dict[str, float] = {}
        for node in self.info["committee"]["nodes"]:
            try:
                async with self.session.get(node["url"] + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    text = await r.text()
            except (aiohttp.ClientError, TimeoutError) as e:
                log.warning("metrics of %s: %s", node["name"], e)
                continue
            for line in text.splitlines():
                if line.startswith("creditbridge_signer_retries_total{"):
                    labels, value = line.rsplit(" ", 1)
                    key = labels[len("creditbridge_signer_retries_total"):]
                    out[key] = out.get(key, 0) + float(value)
        return {k: int(v) for k, v in sorted(out.items())}

    # --- reconciliation ----------------------------------------------------------------------------
    async def stuck_at_payment_addresses(self) -> list[dict]:
        """Plain-transfer payments whose per-payment address still holds funds: nothing may stay
        there once collected (Ethereum deposit addresses, Asset Hub payment accounts)."""
        out = []
        for p in self.payments.values():
            if not p.plain:
                continue
            to = p.instructions["transfer"]["to"]
            if p.token == "ETH":
                left = int(await self.eth("eth_getBalance", to, "latest"), 16)
            elif p.token in ("DOT", "KSM"):
                left = await self.substrate_free_balance(p.token, to)
            elif p.chain and self.family_of(p.chain) != "ton":  # a stablecoin at its payment address
                left = await self.token_balance_of(p.chain, p.symbol, to)
            else:
                continue  # TON: a text comment to the lock itself, no per-payment address
            if left:
                out.append({"token": p.token, "payment": p.id, "address": to, "left": left})
        return out

    async def token_balance_of(self, chain: str, symbol: str, address: str) -> int:
        """A stablecoin balance of ``address``, read from the chain itself (not through a proxy)."""
        spec = self.info["chains"][chain]["tokens"][symbol]
        family = self.family_of(chain)
        if family == "evm":
            from devnet.evm.tokens import token_balance

            return await token_balance(self.info["chains"][chain]["rpc"], spec["contract"], address)
        if family == "substrate":
            from relayers.substrate import wallet as sw
            from relayers.substrate.client import SDK_LOCK

            def job() -> int:
                with SDK_LOCK:
                    v = self._reader(chain).query("Assets", "Account", [int(spec["asset_id"]), address]).value
                    return int(v["balance"]) if v else 0

            return await asyncio.get_running_loop().run_in_executor(None, job)
        from relayers.ton import wallet as tw
        from relayers.ton.jetton import jetton_balance

        if self._ton_lb is None:
            self._ton_lb = await tw.connect(self.info["chains"]["ton"]["liteserver_config"], trust_level=2)
        return await jetton_balance(self._ton_lb, spec["jetton_master"], address)

    async def substrate_free_balance(self, token: str, address: str) -> int:
        chain = next(c for c in self.substrate_chains if self.info["chains"][c]["token"] == token)
        rpc = self.info["chains"][chain]["rpc"]

        def job() -> int:
            from relayers.substrate.client import SDK_LOCK

            with SDK_LOCK:
                acct = self._reader(chain).query("System", "Account", [address]).value
                return int(acct["data"]["free"]) + int(acct["data"]["reserved"])

        return await asyncio.get_running_loop().run_in_executor(None, job)

    def _reader(self, chain: str):
        """One SubstrateInterface per Asset Hub chain for the reconciliation's balance reads
        (call with SDK_LOCK held). A connection each read loaded the runtime each time: ~200
        plain-transfer payment accounts took over 30 minutes at load average 30. Reconnected
        once if the cached connection broke (a fault's proxy cut)."""
        from relayers.substrate import wallet as sw

        si = self._readers.get(chain)
        if si is not None:
            try:
                si.get_block_number(None)
                return si
            except Exception:  # noqa: BLE001 - a dead websocket: connect again
                with contextlib.suppress(Exception):
                    si.close()
        si = self._readers[chain] = sw.connect(self.info["chains"][chain]["rpc"],
                                               self.info["chains"][chain]["ss58_prefix"])
        return si

    async def chain_state(self) -> tuple[list[dict], list[dict], list[dict]]:
        """Deposits on every source chain and the ledger's credits, read from the chains."""
        locked = await self.eth("eth_getLogs", {"address": self.lock, "fromBlock": "0x0", "toBlock": "latest",
                                                "topics": [LOCKED_TOPIC]})
        eth_source = "0x" + source_id("evm", self.chain_id, bytes.fromhex(self.lock[2:])).hex()
        deposits = [{"source": eth_source, "sequence": int(e["topics"][1], 16), "reference": e["topics"][3],
                     "amount": int(e["data"], 16), "token": "ETH"} for e in locked]
        eth_tokens = {spec["contract"].lower(): sym for sym, spec in
                      (self.info["chains"]["ethereum"].get("tokens") or {}).items()}
        if eth_tokens:  # ERC-20 deposits of the same lock (one nonce stream)
            for e in await self.eth("eth_getLogs", {"address": self.lock, "fromBlock": "0x0", "toBlock": "latest",
                                                    "topics": [LOCKED_TOKEN_TOPIC]}):
                data = bytes.fromhex(e["data"][2:])
                contract = "0x" + data[44:64].hex()
                deposits.append({"source": eth_source, "sequence": int(e["topics"][1], 16),
                                 "reference": e["topics"][3], "amount": int.from_bytes(data[:32], "big"),
                                 "token": eth_tokens.get(contract, contract)})
        if "TON" in self.tokens:
            deposits += await self.ton_deposits()
        for chain in self.substrate_chains:
            deposits += await self.substrate_deposits(chain)
        credited = await self.st("eth_getLogs", {"address": self.ledger, "fromBlock": "0x0", "toBlock": "latest",
                                                 "topics": [CREDITED_TOPIC]})
        return deposits, credited, locked

    async def ton_deposits(self) -> list[dict]:
        """Every deposit of the TON lock contract, walked from its transactions (the relayer's
        watcher, pointed straight at the liteserver, not through the chaos proxy)."""
        from relayers.ton.watcher import TonWatcher

        return await _all_deposits(TonWatcher(self.ton_config(), tokens=self.chain_tokens("ton")))

    def ton_config(self):
        """The devnet TON chain, straight at its liteserver (not through the chaos proxy)."""
        from bridge.config import TonChainConfig

        info = self.info["chains"]["ton"]
        return TonChainConfig(family="ton", name="ton", liteserver_config=info["liteserver_config"], trust_level=2,
                              global_id=info["global_id"], contracts=info["contracts"])

    # --- refunds ------------------------------------------------------------------------------------
    async def learn_late(self, deposits: list[dict], credited: list[dict]) -> None:
        """The gateway's decisions on late deposits, for every deposit its quote does not explain
        (not credited, or credited other than its quote gives): a deposit made after the payment's
        expiry + grace is credited at a fresh quote (``late_tolerance_bps``) or held, and its held
        part refunded under the "late" purpose. Read from the payment's API view
        (``late_deposits``), each payment at most every 10 s."""
        got = {(e["topics"][1], int(e["topics"][2], 16)): int(e["data"][2:66], 16) for e in credited}
        ask = set()
        for d in deposits:
            key = (d["source"], d["sequence"])
            p = self.payments.get(d["reference"])
            if p is None or key in self.late:
                continue
            have = got.get(key)
            if have is None or have != credits_for_deposit(d["amount"], p.quote_amount, p.quote_credits):
                ask.add(p.id)
        now = time.monotonic()
        for pid in ask:
            if now - self._late_asked.get(pid, -1e9) < 10:
                continue
            self._late_asked[pid] = now
            status, body = await self.api("GET", f"/v1/payments/{pid}")
            if status != 200:
                continue
            for lt in body.get("late_deposits") or []:
                self.late[(lt["source"].lower(), int(lt["sequence"]))] = {
                    "decision": lt["decision"], "amount": int(lt["amount"]), "credits": int(lt["credits"]),
                    "refundable": int(lt["refundable"]), "reason": lt["reason"]}

    def late_of(self, d: dict) -> dict | None:
        """The gateway's decision on deposit ``d`` if it was late (``learn_late``), else None."""
        return self.late.get((d["source"], d["sequence"]))

    def expected_refunds(self, deposits: list[dict]) -> dict[bytes, dict]:
        """Release id -> what must be refunded: the part of each deposit above its quote, or of a
        late deposit what the gateway's decision holds (purpose "late")."""
        from bridge.payments.refunds import release_id

        out = {}
        for d in deposits:
            p = self.payments.get(d["reference"])
            late = self.late_of(d)
            if p is not None and late is not None:
                if late["refundable"] >= max(self.min_refund(p.token), 1):
                    rid = release_id(bytes.fromhex(d["source"][2:]), d["sequence"], "late")
                    out[rid] = {"token": p.token, "payment": p.id, "payer": p.payer, "amount": late["refundable"],
                                "late": True}
                continue
            if p is not None and d["amount"] > p.quote_amount:
                excess = d["amount"] - p.quote_amount
                if excess < self.min_refund(p.token):
                    continue  # dust: kept in custody and reported by the signers, never refunded
                rid = release_id(bytes.fromhex(d["source"][2:]), d["sequence"], "excess")
                out[rid] = {"token": p.token, "payment": p.id, "payer": p.payer, "amount": excess}
        return out

    def expected_dust(self, deposits: list[dict]) -> dict[str, int]:
        """Token -> how many overpayments are below the chain's ``min_refund`` (dust, not refunded)."""
        out: dict[str, int] = {}
        for d in deposits:
            p = self.payments.get(d["reference"])
            if p is None:
                continue
            late = self.late_of(d)
            held = late["refundable"] if late is not None else d["amount"] - p.quote_amount
            if 0 < held < self.min_refund(p.token):
                out[p.token] = out.get(p.token, 0) + 1
        return out

    def min_refund(self, token: str) -> int:
        """The devnet's smallest refunded amount of ``token`` (the TON lock refuses releases below
        its ``min_release``; the other devnet chains refund everything)."""
        if token == "TON":
            return int(self.info["chains"]["ton"].get("lock_min_release", 0))
        symbol, _, chain = token.partition("@")
        if chain:  # a stablecoin: its [[tokens]] min_refund (the TON lock's jetton minimum too)
            for t in self.api_cfg.get("tokens") or []:
                if t.get("symbol") == symbol and t.get("chain") == chain:
                    return int(t.get("min_refund") or 0)
        return 0

    async def multisig_executions(self, chain: str) -> list[tuple[str, bool]]:
        """(call hash, ok) of every ``Multisig.MultisigExecuted`` of the committee account on an
        Asset Hub chain, read block by block from the node (cached up to the last block read)."""
        from relayers.substrate import wallet as sw
        from relayers.substrate.client import SDK_LOCK
        from relayers.substrate.decode import account_bytes

        info = self.info["chains"][chain]
        committee = account_bytes(info["committee_account"])
        start, found = self._ms_scan.get(chain, (1, []))

        def job() -> tuple[int, list]:
            with SDK_LOCK:
                si = sw.connect(info["rpc"], info["ss58_prefix"])
                try:
                    head = si.get_block_number(si.get_chain_finalised_head())
                    out = []
                    for n in range(start, head + 1):
                        for e in si.get_events(si.get_block_hash(n)):
                            v = e.value
                            if (v.get("module_id"), v.get("event_id")) != ("Multisig", "MultisigExecuted"):
                                continue
                            a = v["attributes"]
                            if account_bytes(a["multisig"]) == committee:
                                out.append((str(a["call_hash"]), "Ok" in str(a["result"])))
                    return head + 1, out
                finally:
                    si.close()

        nxt, new = await asyncio.to_thread(job)
        self._ms_scan[chain] = (nxt, found + new)
        return found + new

    async def refund_state(self, deposits: list[dict]) -> dict:
        """Every expected refund against what the source chains show was paid back."""
        expected = self.expected_refunds(deposits)
        done: set[bytes] = set()
        doubled, wrong, phantom = [], [], []
        logs = await self.eth("eth_getLogs", {"address": self.lock, "fromBlock": "0x0", "toBlock": "latest",
                                              "topics": [RELEASED_TOPIC]})
        seen: dict[bytes, list] = {}
        for e in logs:
            seen.setdefault(bytes.fromhex(e["topics"][1][2:]), []).append(
                ("0x" + e["topics"][2][-40:], int(e["data"], 16), "ETH"))
        eth_tokens = {spec["contract"].lower(): f"{sym}@ethereum" for sym, spec in
                      (self.info["chains"]["ethereum"].get("tokens") or {}).items()}
        if eth_tokens:  # ERC-20 releases of the lock (refunds and sweeps in the token)
            for e in await self.eth("eth_getLogs", {"address": self.lock, "fromBlock": "0x0", "toBlock": "latest",
                                                    "topics": [RELEASED_TOKEN_TOPIC]}):
                data = bytes.fromhex(e["data"][2:])
                contract = "0x" + data[44:64].hex()
                seen.setdefault(bytes.fromhex(e["topics"][1][2:]), []).append(
                    ("0x" + e["topics"][2][-40:], int.from_bytes(data[:32], "big"), eth_tokens.get(contract, contract)))
        height = int(await self.st("eth_blockNumber"), 16)
        sweep_ids = self.sweep_ids(height) | {r for sym in eth_tokens.values()
                                              for r in self.sweep_ids_of("ethereum", height, sym.partition("@")[0])}
        for rid, got in seen.items():
            if rid in sweep_ids:
                continue  # a treasury sweep: reconciled by treasury_state
            exp = expected.get(rid)
            if exp is None or exp["token"] != got[0][2]:
                phantom.append({"token": got[0][2], "release_id": "0x" + rid.hex()})
                continue
            if len(got) > 1:
                doubled.append({"token": exp["token"], "payment": exp["payment"], "times": len(got)})
            to = self.info["accounts"]["ethereum"][exp["payer"]]["address"].lower()
            if got[0][:2] != (to, exp["amount"]):
                wrong.append({"token": exp["token"], "payment": exp["payment"], "want": [to, exp["amount"]],
                              "got": list(got[0][:2])})
            done.add(rid)
        ton = [rid for rid, e in expected.items() if e["token"] == "TON" or e["token"].endswith("@ton")]
        if "TON" in self.tokens:
            releaser = await self.ton_releaser()
            for rid in ton:
                if await releaser.released(rid):
                    done.add(rid)
            (count,) = await releaser.transport.run_get_method(releaser.lock, "get_release_count", [])
            swept = len(await self.ton_sweeps_paid(every=True))  # treasury sweeps: reconciled by treasury_state
            if int(count) > len([r for r in ton if r in done]) + swept:
                phantom.append({"token": "TON", "releases": int(count), "expected_done": len(ton), "sweeps": swept})
        missing_n: dict[str, int] = {}
        for chain in self.substrate_chains:
            token = self.info["chains"][chain]["token"]
            # the committee account refunds its native token and its pallet_assets alike
            want = [rid for rid, e in expected.items() if e["token"] == token or e["token"].endswith("@" + chain)]
            execs = await self.multisig_executions(chain)
            ok = [h for h, good in execs if good]
            wrong += [{"token": token, "call_hash": h, "result": "Err"} for h, good in execs if not good]
            doubled += [{"token": token, "call_hash": h, "times": ok.count(h)} for h in sorted(set(ok)) if ok.count(h) > 1]
            # executed release ids, from the remark each executed call carries (relayers/substrate/custody.py)
            executed = await self.substrate_released(chain)
            h = int(await self.st("eth_blockNumber"), 16)
            sweeps = self.sweep_ids_of(chain, h).union(
                *(self.sweep_ids_of(chain, h, sym) for sym in self.chain_tokens(chain)))
            others = executed - set(want) - sweeps
            if others or len(set(ok)) > len(executed):
                phantom.append({"token": token, "executions": len(set(ok)), "expected": len(want),
                                "unknown_release_ids": ["0x" + r.hex() for r in sorted(others)]})
            missing_n[token] = len([r for r in want if r not in executed])
            done.update(r for r in want if r in executed)
        by_token: dict[str, int] = {}
        for e in expected.values():
            by_token[e["token"]] = by_token.get(e["token"], 0) + 1
        missing = [{"token": e["token"], "payment": e["payment"], "amount": e["amount"]}
                   for rid, e in expected.items() if rid not in done]
        return {"expected": len(expected), "expected_by_token": by_token, "done": len(done),
                "dust_by_token": self.expected_dust(deposits),
                "missing": missing, "doubled": doubled, "wrong": wrong, "phantom": phantom}

    # --- treasury sweeps (ETH) ------------------------------------------------------------------------
    def sweep_ids(self, settlement_height: int) -> set[bytes]:
        """Release ids a sweep of the ETH lock may have: one per epoch closed on the settlement chain."""
        from bridge.payments.refunds import release_id

        source = source_id("evm", self.chain_id, bytes.fromhex(self.lock[2:]))
        return {release_id(source, k, "sweep") for k in range(1, settlement_height // self.epoch_blocks + 1)}

    def source_of(self, chain: str) -> bytes:
        """The deposit stream id (source) of a source chain, as its watcher computes it."""
        info = self.info["chains"][chain]
        if chain == "ethereum":
            return source_id("evm", self.chain_id, bytes.fromhex(self.lock[2:]))
        if info.get("family") == "ton":
            from pytoniq_core import Address

            return source_id("ton", int(info["global_id"]), Address(info["contracts"]["lock"]).hash_part)
        from relayers.substrate.decode import account_bytes

        return source_id("substrate", f"{info['genesis_hash'].lower()}/{info['token']}",
                         account_bytes(info["committee_account"]))

    def sweep_ids_of(self, chain: str, settlement_height: int, token: str | None = None) -> set[bytes]:
        """Release ids the sweeps of one custody may have (``token``: a non-native token's symbol)."""
        from bridge.payments.treasury import sweep_release_id

        source = self.source_of(chain)
        return {sweep_release_id(source, k, token) for k in range(1, settlement_height // self.epoch_blocks + 1)}

    async def signer_sweeps(self, chain: str, ledger: str | None = None) -> tuple[dict[bytes, dict], list]:
        """Every sweep the signers' audit trails (``GET /v1/sweeps``) list for ``chain``: release id ->
        {amount, to}; and the ids on which two signers disagree (they must be byte-identical)."""
        out: dict[bytes, dict] = {}
        disagree = []
        for node in self.info["committee"]["nodes"]:
            try:
                async with self.session.get(node["url"] + "/v1/sweeps", timeout=aiohttp.ClientTimeout(total=10)) as r:
                    view = await r.json()
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                log.warning("sweeps of %s: %s", node["name"], e)
                continue
            for w in view.get("sweeps", []):
                # a custody's sweeps are per token: the chain's own token, or SYMBOL@chain
                if w.get("ledger", w["chain"]) != (ledger or chain):
                    continue
                rid, got = bytes.fromhex(w["release_id"][2:]), {"amount": int(w["amount"]), "to": w["to"]}
                if out.setdefault(rid, got) != got:
                    disagree.append("0x" + rid.hex())
        return out, disagree

    async def substrate_released(self, chain: str) -> set[bytes]:
        """Release ids the committee executed on an Asset Hub chain up to its final head (the
        sweeper's own custody reader, pointed straight at the node)."""
        from bridge.config import SubstrateChainConfig
        from relayers.substrate.custody import SubstrateCustody

        c = self._custodies.get(chain)
        if c is None:
            cfg = next(x for x in self.api_cfg["chains"] if x["name"] == chain)
            c = self._custodies[chain] = SubstrateCustody(SubstrateChainConfig.model_validate(
                {**cfg, "rpc": [self.info["chains"][chain]["rpc"]]}))
        head = await c.client.call(lambda si: si.get_block_number(si.get_chain_finalised_head()), "final head")
        return await c.released(max(head, c._scanned))

    async def ton_sweeps_paid(self, token: str | None = None, every: bool = False) -> set[bytes]:
        """TON sweep ids the lock paid (``is_released``; paid ones are remembered): of its TON, of
        one jetton (``token``), or of both (``every``)."""
        releaser = await self.ton_releaser()
        h = int(await self.st("eth_blockNumber"), 16)
        tokens = [None, *self.chain_tokens("ton")] if every else [token]
        ids = set().union(*(self.sweep_ids_of("ton", h, t) for t in tokens))
        for rid in ids - self._ton_swept:
            if await releaser.released(rid):
                self._ton_swept.add(rid)
        return self._ton_swept & ids

    def earned_owed(self, deposits: list[dict], credited: list[dict], chain: str,
                    refunded: set[bytes], token: str | None = None) -> tuple[int, int]:
        """(earned, owed before sweeps) of one custody's ``token`` (a symbol; every deposit of the
        custody when None) from the chains: the counted part of credited deposits; every counted
        part, unpaid excess and deposit of an unknown payment."""
        from bridge.payments.refunds import release_id

        source = "0x" + self.source_of(chain).hex()
        credited_ids = {(e["topics"][1], int(e["topics"][2], 16)) for e in credited}
        earned = owed = 0
        for d in deposits:
            if d["source"] != source or (token is not None and d.get("token", token) != token):
                continue
            p = self.payments.get(d["reference"])
            if p is None:
                owed += d["amount"]
                continue
            late = self.late_of(d)
            counted = min(d["amount"], p.quote_amount) if late is None else d["amount"] - late["refundable"]
            if (d["source"], d["sequence"]) in credited_ids:
                earned += counted
            owed += counted
            excess = d["amount"] - counted
            purpose = "excess" if late is None else "late"
            if excess and release_id(bytes.fromhex(d["source"][2:]), d["sequence"], purpose) not in refunded:
                owed += excess
        return earned, owed

    async def other_treasury_state(self, deposits: list[dict], credited: list[dict]) -> dict[str, dict]:
        """TON, DOT and KSM sweeps against the chains, per token: every sweep the signers list paid
        once (the lock's ``is_released`` / the committee's executions), to the treasury; the
        treasury received what they paid (TON: minus each release's own fees, at most
        ``RELEASE_FEE_BOUND`` a sweep; Asset Hub: exactly, the approving members pay the fees);
        never more than earned; the custody still holds everything it owes."""
        from bridge import addresses
        from relayers.ton import lock as L

        out: dict[str, dict] = {}
        chains = (["ton"] if "TON" in self.tokens else []) + self.substrate_chains
        for chain in chains:
            info = self.info["chains"][chain]
            token = "TON" if chain == "ton" else info["token"]
            signed, disagree = await self.signer_sweeps(chain)
            treasury_text = self.info["treasury"][chain]
            treasury = addresses.parse(info.get("family", "substrate"), treasury_text)
            if chain == "ton":
                from pytoniq_core import Address

                from relayers.ton.custody import TonCustody

                paid = await self.ton_sweeps_paid()
                releaser = await self.ton_releaser()
                expected_refunds = self.expected_refunds(deposits)
                refunded = {rid for rid, e in expected_refunds.items() if e["token"] == "TON"
                            and await releaser.released(rid)}
                if "ton" not in self._custodies:
                    self._custodies["ton"] = TonCustody(self.ton_config())
                c = self._custodies["ton"]
                h = await c.transport.last_seqno()
                balance = await c.balance(h)
                received = await c.transport.balance(Address(treasury_text), await c.transport.mc_block(h))
                minimum = self.min_refund("TON")
            else:
                executed = await self.substrate_released(chain)
                paid = executed & self.sweep_ids_of(chain, int(await self.st("eth_blockNumber"), 16))
                refunded = executed - paid
                c = self._custodies[chain]
                head = await c.client.call(lambda si: si.get_block_number(si.get_chain_finalised_head()), "head")
                received = await c.client.call(lambda si, a=treasury_text: int(
                    si.query("System", "Account", [a]).value["data"]["free"]), "treasury balance")
                balance = await c.balance(head)
                minimum = 0
            unknown = ["0x" + r.hex() for r in sorted(paid) if r not in signed]  # paid, but no signer lists it
            wrong = [{"release_id": "0x" + r.hex(), "to": w["to"]} for r, w in signed.items()
                     if bytes.fromhex(w["to"][2:]).rjust(32, b"\x00") != treasury.rjust(32, b"\x00")]
            swept = sum(signed[r]["amount"] for r in paid if r in signed)
            earned, owed = self.earned_owed(deposits, credited, chain, refunded, token)
            fees = swept - received
            if chain == "ton":
                mismatch = not 0 <= fees <= len(paid) * L.RELEASE_FEE_BOUND
            else:
                mismatch = fees != 0
            owed -= swept
            out[token] = {"sweeps": len(paid), "swept": swept, "treasury_received": received, "fees": fees,
                          "earned": earned, "not_swept_yet": earned - swept, "min_sweep": minimum,
                          "custody_balance": balance, "custody_owes": owed, "unknown": unknown,
                          "disagree": disagree, "doubled": [], "wrong": wrong, "over_swept": swept > earned,
                          "treasury_mismatch": mismatch or bool(unknown), "insolvent": balance < owed}
        return out

    async def stable_treasury_state(self, deposits: list[dict], credited: list[dict]) -> dict[str, dict]:
        """Every stablecoin's sweeps against its chain (issue 15), per SYMBOL@chain: each sweep the
        signers list paid once (the custody reader's ``released``), to the treasury, which received
        exactly that token amount (fees are paid in the native token); never more swept than
        earned; the custody holds at least what it still owes in that token."""
        from bridge import addresses
        from bridge.config import EvmChainConfig, SubstrateChainConfig

        out: dict[str, dict] = {}
        h_settle = int(await self.st("eth_blockNumber"), 16)
        expected = self.expected_refunds(deposits)
        for chain, symbol in self.stables:
            label = f"{symbol}@{chain}"
            family = self.family_of(chain)
            token = self.chain_tokens(chain)[symbol]
            c = self._token_custody.get((chain, symbol))
            if c is None:
                cfg = next(x for x in self.api_cfg["chains"] if x["name"] == chain)
                if family == "evm":
                    from relayers.evm.custody import EvmCustody

                    c = EvmCustody(EvmChainConfig.model_validate({**cfg, "rpc": [self.info["chains"][chain]["rpc"]]}),
                                   token=token)
                elif family == "substrate":
                    from relayers.substrate.custody import SubstrateCustody

                    c = SubstrateCustody(SubstrateChainConfig.model_validate(
                        {**cfg, "rpc": [self.info["chains"][chain]["rpc"]]}), token=token)
                else:
                    from relayers.ton.custody import TonCustody

                    c = TonCustody(self.ton_config(), token=token)
                self._token_custody[(chain, symbol)] = c
                self._custodies[f"{label}"] = c  # closed with the others
            if family == "evm":
                height = int(await self.eth("eth_blockNumber"), 16)
            elif family == "substrate":
                height = await c.client.call(lambda si: si.get_block_number(si.get_chain_finalised_head()), "head")
            else:
                height = await c.transport.last_seqno()
            ids = self.sweep_ids_of(chain, h_settle, symbol)
            mine = {rid for rid, e in expected.items() if e["token"] == label}
            released = await c.released(height, ids | mine)
            paid, refunded = released & ids, released & mine
            signed, disagree = await self.signer_sweeps(chain, label)
            treasury_text = self.info["treasury"][chain]
            treasury = addresses.parse(family, treasury_text)
            received = await self.token_balance_of(chain, symbol, treasury_text)
            balance = await c.balance(height)
            unknown = ["0x" + r.hex() for r in sorted(paid) if r not in signed]
            wrong = [{"release_id": "0x" + r.hex(), "to": w["to"]} for r, w in signed.items()
                     if bytes.fromhex(w["to"][2:]).rjust(32, b"\x00") != treasury.rjust(32, b"\x00")]
            swept = sum(signed[r]["amount"] for r in paid if r in signed)
            earned, owed = self.earned_owed(deposits, credited, chain, refunded, symbol)
            owed -= swept
            out[label] = {"sweeps": len(paid), "swept": swept, "treasury_received": received,
                          "fees": swept - received, "earned": earned, "not_swept_yet": earned - swept,
                          "min_sweep": self.min_refund(label), "custody_balance": balance, "custody_owes": owed,
                          "unknown": unknown, "disagree": disagree, "doubled": [], "wrong": wrong,
                          "over_swept": swept > earned,
                          "treasury_mismatch": received != swept or bool(unknown), "insolvent": balance < owed}
        return out

    async def treasury_state(self, deposits: list[dict], credited: list[dict]) -> dict:
        """ETH sweeps against the chains: every sweep paid once, to the treasury; the treasury holds
        exactly what sweeps paid; never more swept than earned (the counted part of credited
        deposits); and the lock still holds everything it owes (refunds not paid, counted parts not
        swept, deposits of unknown payments)."""
        treasury = self.info["treasury"]["ethereum"].lower()
        sweep_ids = self.sweep_ids(int(await self.st("eth_blockNumber"), 16))
        logs = await self.eth("eth_getLogs", {"address": self.lock, "fromBlock": "0x0", "toBlock": "latest",
                                              "topics": [RELEASED_TOPIC]})
        paid: dict[bytes, list] = {}
        for e in logs:
            paid.setdefault(bytes.fromhex(e["topics"][1][2:]), []).append(
                ("0x" + e["topics"][2][-40:], int(e["data"], 16)))
        sweeps = {rid: got for rid, got in paid.items() if rid in sweep_ids}
        doubled = ["0x" + rid.hex() for rid, got in sweeps.items() if len(got) > 1]
        wrong = [{"release_id": "0x" + rid.hex(), "to": got[0][0]} for rid, got in sweeps.items()
                 if got[0][0] != treasury]
        swept = sum(amount for got in sweeps.values() for _, amount in got)
        received = int(await self.eth("eth_getBalance", treasury, "latest"), 16)
        earned, owed = self.earned_owed(deposits, credited, "ethereum", set(paid), "ETH")
        owed -= swept
        balance = int(await self.eth("eth_getBalance", self.lock, "latest"), 16)
        out = {"sweeps": len(sweeps), "swept": swept, "treasury_received": received, "earned": earned,
               "not_swept_yet": earned - swept, "lock_balance": balance, "lock_owes": owed,
               "doubled": doubled, "wrong": wrong, "over_swept": swept > earned,
               "treasury_mismatch": received != swept, "insolvent": balance < owed}
        out["others"] = others = await self.other_treasury_state(deposits, credited)
        others.update(await self.stable_treasury_state(deposits, credited))
        # everything earned is swept, but what waits for its epoch's minimum (TON's min_release)
        out["all_swept"] = out["not_swept_yet"] == 0 and all(
            t["not_swept_yet"] == 0 or 0 < t["not_swept_yet"] < t["min_sweep"] for t in others.values())
        out["problems"] = {tok: [k for k in ("doubled", "wrong", "unknown", "disagree") if t[k]]
                           + [k for k in ("over_swept", "treasury_mismatch", "insolvent") if t[k]]
                           for tok, t in others.items()}
        out["problems"] = {k: v for k, v in out["problems"].items() if v}
        return out

    async def ton_releaser(self):
        from relayers.ton.release import TonLockReleaser

        if self._ton_releaser is None:
            self._ton_releaser = TonLockReleaser(self.ton_config())
        return self._ton_releaser

    def reconcile(self, deposits: list[dict], credited: list[dict]) -> dict:
        credits: dict[tuple[str, int], list[dict]] = {}
        for e in credited:
            credits.setdefault((e["topics"][1], int(e["topics"][2], 16)), []).append(e)
        lost, doubled, mispriced, phantom, unknown, late_held = [], [], [], [], [], []
        late_credited = 0
        seen = set()
        for d in deposits:
            key = (d["source"], d["sequence"])
            seen.add(key)
            p = self.payments.get(d["reference"])
            if p is None:
                unknown.append(key)
                continue
            got = credits.get(key, [])
            late = self.late.get(key)
            if not got:
                if late is not None and late["credits"] == 0:
                    late_held.append({"token": p.token, "sequence": d["sequence"], "payment": p.id,
                                      "reason": late["reason"]})
                    continue
                lost.append({"token": p.token, "sequence": d["sequence"], "payment": p.id})
            elif len(got) > 1:
                doubled.append({"token": p.token, "sequence": d["sequence"], "payment": p.id, "times": len(got)})
            else:
                want = (credits_for_deposit(d["amount"], p.quote_amount, p.quote_credits) if late is None
                        else late["credits"])  # a late deposit: what the gateway's fresh quote gives
                if late is not None and late["credits"]:
                    late_credited += 1
                have = int(got[0]["data"][2:66], 16)
                benef = "0x" + got[0]["topics"][3][-40:]
                if have != want or benef != p.beneficiary:
                    mispriced.append({"token": p.token, "sequence": d["sequence"], "payment": p.id,
                                      "want": want, "got": have})
        phantom = [list(k) for k in credits if k not in seen]
        by_token: dict[str, int] = {}
        for d in deposits:
            p = self.payments.get(d["reference"])
            if p is not None:
                by_token[p.token] = by_token.get(p.token, 0) + 1
        return {"lost": lost, "doubled": doubled, "mispriced": mispriced, "phantom": phantom,
                "unknown_reference": unknown, "deposits": len(deposits), "deposits_by_token": by_token,
                "late": {"held": late_held, "credited_at_fresh_quote": late_credited}}

    def latencies(self, locked: list[dict], deposits: list[dict]) -> tuple[dict, dict]:
        """ETH: time from the deposit's finality (its block + confirmations seen by the head
        watcher) to the ``Credited`` event. TON and Asset Hub: from the payer seeing its transfer
        in a block (final at once on these devnet chains) to the credit. Each split by whether a
        fault window overlapped."""
        eth_source = "0x" + source_id("evm", self.chain_id, bytes.fromhex(self.lock[2:])).hex()
        samples: dict[str, tuple[list[float], list[float]]] = {}

        def add(token: str, start: float, end: float) -> None:
            quiet, faulty = samples.setdefault(token, ([], []))
            overlapped = any(a <= end and b >= start for a, b in self.stats.windows)
            (faulty if overlapped else quiet).append(max(0.0, end - start))

        for e in locked:
            t_final = self.block_seen.get(int(e["blockNumber"], 16) + self.args.confirmations)
            t_credit = self.credit_seen.get((eth_source, int(e["topics"][1], 16)))
            if t_final is not None and t_credit is not None:
                add("ETH", t_final, t_credit)
        for d in deposits:
            p = self.payments.get(d["reference"])
            t_credit = self.credit_seen.get((d["source"], d["sequence"]))
            if p is not None and p.token != "ETH" and p.included_at and t_credit is not None:
                add(p.token, p.included_at, t_credit)

        def summary(xs: list[float]) -> dict:
            if not xs:
                return {"n": 0}
            xs = sorted(xs)
            return {"n": len(xs), "p50": round(statistics.median(xs), 2),
                    "p99": round(xs[min(len(xs) - 1, int(0.99 * len(xs)))], 2), "max": round(xs[-1], 2)}

        def pair(token: str) -> dict:
            quiet, faulty = samples.get(token, ([], []))
            return {"without_faults": summary(quiet), "with_faults": summary(faulty)}

        return pair("ETH"), {t: pair(t) for t in sorted(samples) if t != "ETH"}

    # --- the run ------------------------------------------------------------------------------------
    async def run(self) -> dict:
        a = self.args
        directory = Path(a.dir)
        stop_devnet, ready = asyncio.Event(), asyncio.Event()
        opts = DevnetOptions(directory=directory, api_port=0, confirmations=a.confirmations, block_time=a.block_time,
                             families=a.families, rpc_proxy=self.proxy, min_sources=2, price_refresh_seconds=1.0,
                             request_timeout=REQUEST_TIMEOUT, postgres=a.postgres, api_replicas=a.api_replicas,
                             aggregators=a.aggregators)
        devnet = asyncio.create_task(run_devnet(opts, ready=ready, stop=stop_devnet))
        done, _ = await asyncio.wait([devnet, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        if devnet in done:
            devnet.result()
        self.info = json.loads((directory / "devnet.json").read_text())
        self.substrate_chains = [n for n, c in self.info["chains"].items() if c.get("family") == "substrate"]
        self.tokens = {"ETH"} | ({"TON"} if "ton" in self.info["chains"] else set()) | {
            self.info["chains"][n]["token"] for n in self.substrate_chains}
        # the stablecoins of every source chain (issue 15), paid and reconciled as SYMBOL@chain
        self.stables = [(n, sym) for n, c in self.info["chains"].items() if n != "settlement"
                        for sym in sorted(c.get("tokens") or {})] if a.stable_share > 0 else []
        self.tokens |= {f"{sym}@{n}" for n, sym in self.stables}
        self.session = aiohttp.ClientSession()
        self.api_urls = list(self.info.get("api_replicas") or [self.info["api"]])
        try:
            if a.postgres:
                await self.start_webhooks()
            return await self._run()
        finally:
            stop_devnet.set()
            await devnet
            await self.session.close()
            if self.receiver is not None:
                await self.receiver.stop()

    # --- scale-out checks (--postgres) -------------------------------------------------------------
    async def start_webhooks(self) -> None:
        """The merchant's receiver, registered with the devnet's merchant key; every request of
        the harness carries that key from now on, so the payments are the merchant's."""
        self.receiver = WebhookReceiver(random.Random(self.args.seed + 1))
        url = await self.receiver.start()
        self.auth = {"Authorization": f"Bearer {self.info['merchant_key']}"}
        status, body = await self.api("POST", "/v1/webhooks", {"url": url})
        if status != 201:
            raise RuntimeError(f"webhook registration refused: {status} {body}")
        self.webhook_id = body["id"]

    async def committed_events(self) -> list[tuple[str, str, int | None, str]]:
        """(event id, payment id, seq, type) of every event the API committed for the merchant,
        read from the API's PostgreSQL."""
        from sqlalchemy import select

        from bridge.storage.db import Database
        from bridge.storage.models import WebhookEventRow, WebhookRow

        db = Database(self.info["api_database"])
        try:
            async with db.begin() as s:
                merchant = (await s.execute(select(WebhookRow.merchant_id).where(
                    WebhookRow.id == self.webhook_id))).scalar_one()
                rows = (await s.execute(select(WebhookEventRow.id, WebhookEventRow.payment_id, WebhookEventRow.seq,
                                               WebhookEventRow.type).where(
                    WebhookEventRow.merchant_id == merchant))).all()
        finally:
            await db.dispose()
        return [tuple(r) for r in rows]

    async def webhook_state(self, bound: float) -> dict:
        """Waits up to ``bound`` s for every committed event to reach the receiver, then: events
        missing, changes committed as two events, event ids received for two changes, deliveries
        attempted by two replicas at once."""
        assert self.receiver is not None
        deadline = time.monotonic() + bound
        t0 = time.monotonic()
        while True:
            events = await self.committed_events()
            missing = [e for e in events if e[0] not in self.receiver.events]
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        by_change: dict[tuple[str, int | None, str], list[str]] = {}
        for eid, pid, seq, typ in events:
            by_change.setdefault((pid, seq, typ) if seq is not None else (pid, None, eid), []).append(eid)
        doubled = [{"payment": k[0], "seq": k[1], "type": k[2], "events": v} for k, v in by_change.items()
                   if len(v) > 1]
        ids = [e[0] for e in events]
        committed_twice = sorted({i for i in ids if ids.count(i) > 1})
        ambiguous = [{"event": k, "changes": sorted(map(list, v))} for k, v in self.receiver.events.items()
                     if len(v) > 1]
        return {"committed": len(events), "received": len(self.receiver.events),
                "attempts": self.receiver.attempts,
                "missing": [{"event": e[0], "payment": e[1], "type": e[3]} for e in missing],
                "change_committed_twice": doubled, "event_id_committed_twice": committed_twice,
                "event_id_for_two_changes": ambiguous, "overlapping_attempts": self.receiver.overlaps,
                "all_delivered_seconds": None if missing else round(time.monotonic() - t0, 1)}

    async def replica_state(self) -> dict:
        """GET every payment from every replica: each must read the same everywhere."""
        mismatches = []
        for p in self.payments.values():
            views = []
            for url in self.api_urls:
                status, body = await self.api("GET", f"/v1/payments/{p.id}", base=url)
                views.append((status, json.dumps(body, sort_keys=True)))
            if len(set(views)) > 1:
                mismatches.append({"payment": p.id, "states": [json.loads(v).get("state") if st == 200 else st
                                                               for st, v in views]})
        return {"replicas": len(self.api_urls), "payments_compared": len(self.payments), "mismatches": mismatches}

    async def _run(self) -> dict:
        a = self.args
        eth = self.info["chains"]["ethereum"]
        st = self.info["chains"]["settlement"]
        self.eth, self.st = Rpc(self.session, eth["rpc"]), Rpc(self.session, st["rpc"])
        self.lock, self.ledger = eth["contracts"]["lock"], st["contracts"]["credits"]
        self.chain_id = eth["chain_id"]
        self.gas_price = int(await self.eth("eth_gasPrice"), 16) * 4
        from bridge.manifest import load_manifest, merge_config

        # the API's config with what it takes from the deployment manifest (chain ids, tokens,
        # contracts, committees), as the API itself reads it
        self.api_cfg = api_cfg = merge_config(json.loads(
            (Path(self.info["processes"]["logs_dir"]).parent / "config" / "api.json").read_text()),
            load_manifest(self.info["manifest"]["path"]))
        self.prices = {k: Decimal(v) for k, v in api_cfg["pricing"]["fixed_usd"].items()}
        from bridge.manifest import load_manifest

        # the committee's sweep epoch: committee configuration, in the deployment manifest
        self.epoch_blocks = load_manifest(self.info["manifest"]["path"]).treasury.epoch_blocks
        self.relay_address = Account.from_key(
            "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6").address
        for i in range(a.payers):
            addr = self.info["accounts"]["ethereum"][i]["address"]
            self.nonces[i] = int(await self.eth("eth_getTransactionCount", addr, "pending"), 16)
        observers = [asyncio.create_task(self.watch_heads(self.eth)),
                     asyncio.create_task(self.watch_credits(self.st, self.ledger)),
                     asyncio.create_task(self.rebroadcaster())]
        t_start = time.monotonic()
        # payers: one per (token, account); TON takes a share of the payments when the devnet has it
        payers = [("ETH", i) for i in range(a.payers)]
        if "TON" in self.tokens:
            payers += [("TON", i) for i in range(min(a.payers, len(self.info["accounts"]["ton"])))]
        for chain in self.substrate_chains:
            payers += [(chain, i) for i in range(min(a.payers, len(self.info["accounts"][chain])))]
        others = ["TON"] * ("TON" in self.tokens) + self.substrate_chains
        if a.others is not None:  # e.g. only the Asset Hub chains: --others DOT,KSM
            others = [o for o in others if (o if o == "TON" else self.info["chains"][o]["token"]) in a.others]
        n_other = round(a.payments * a.other_share / len(others)) if others else 0
        stables = [f"{sym}@{n}" for n, sym in self.stables]
        for label in stables:
            chain = label.partition("@")[2]
            accounts = self.info["accounts"]["ton" if chain == "ton" else chain]
            payers += [(label, i) for i in range(min(a.payers, len(accounts)))]
        n_stable = round(a.payments * a.stable_share / len(stables)) if stables else 0
        counts = {}
        for token, n_token in (("ETH", a.payments - n_other * len(others) - n_stable * len(stables)),
                               *((o, n_other) for o in others), *((t, n_stable) for t in stables)):
            mine = [p for p in payers if p[0] == token]
            for j, p in enumerate(mine):
                counts[p] = n_token // len(mine) + (1 if j < n_token % len(mine) else 0)

        def job(token: str, i: int, k: int):
            if "@" in token:
                return self.stable_payer(token, i, k, a.pace)
            if token == "ETH":
                return self.payer(i, k, a.pace)
            if token == "TON":
                return self.ton_payer(i, k, a.pace)
            return self.substrate_payer(token, i, k, a.pace)

        def run_payers(share) -> list:
            jobs = []
            for (token, i), n in counts.items():
                k = share(n)
                if k > 0:
                    jobs.append(job(token, i, k))
            return jobs

        # a fifth of each payer's payments before the faults start (the quiet baseline); payers
        # with fewer than 5 (quick runs) leave theirs to the fault phase, but for the first one
        quiet = {p: n // 5 if n >= 5 else (1 if p[1] == 0 and n else 0) for p, n in counts.items()}
        log.info("phase 1: %d payments without faults", sum(quiet.values()))
        it = iter(quiet.values())
        await asyncio.gather(*run_payers(lambda n: next(it)))
        stop_chaos = asyncio.Event()
        chaos = asyncio.create_task(self.chaos(stop_chaos))
        log.info("phase 1 done; phase 2: %d payments under faults", sum(counts.values()) - sum(quiet.values()))
        it2 = iter(quiet.values())
        await asyncio.gather(*run_payers(lambda n: n - next(it2)))
        stop_chaos.set()
        await chaos
        faults_stopped = time.monotonic()
        log.info("faults stopped; draining (bound %ds)", a.drain_bound)
        # after the last fault: every deposit must be credited within the bound
        drained_at = None
        refunds_drained_at = None
        swept_at = None
        while time.monotonic() - faults_stopped < a.drain_bound:
            deposits, credited, _ = await self.chain_state()
            await self.learn_late(deposits, credited)
            r = self.reconcile(deposits, credited)
            if drained_at is None and not r["lost"] and r["deposits"] >= len(self.payments):
                drained_at = time.monotonic()
            if drained_at is not None and refunds_drained_at is None \
                    and not (await self.refund_state(deposits))["missing"]:
                refunds_drained_at = time.monotonic()
            if refunds_drained_at is not None \
                    and (await self.treasury_state(deposits, credited))["all_swept"]:
                swept_at = time.monotonic()
                break
            await asyncio.sleep(1)
        await asyncio.sleep(3)  # late doubles would show up here
        deposits, credited, locked = await self.chain_state()
        self._late_asked.clear()
        await self.learn_late(deposits, credited)
        result = self.reconcile(deposits, credited)
        refunds = await self.refund_state(deposits)
        # the report's lost/missing are these, taken now (not when the run ends: the checks below take minutes)
        log.info("drain ended %.0fs after the faults stopped: %d deposit(s) not credited, %d refund(s) missing",
                 time.monotonic() - faults_stopped, len(result["lost"]), len(refunds["missing"]))
        treasury = await self.treasury_state(deposits, credited)
        treasury["drain_seconds"] = None if swept_at is None else round(swept_at - faults_stopped, 1)
        if self._ton_releaser is not None:
            try:
                await asyncio.wait_for(self._ton_releaser.aclose(), 10)
            except TimeoutError:
                log.warning("closing the TON releaser timed out")
        for c in self._custodies.values():
            try:
                await asyncio.wait_for(c.aclose(), 10)
            except TimeoutError:
                log.warning("closing a custody reader timed out")
        if self._ton_lb is not None:
            try:  # pytoniq's close can hang after its listener crashed: bound it
                await asyncio.wait_for(self._ton_lb.close_all(), 10)
            except (TimeoutError, OSError) as e:
                log.warning("closing the jetton balance client: %r", e)
        for t in observers:
            t.cancel()
        signer_retries = await self.signer_retries()
        eth_latency, other_latency = self.latencies(locked, deposits)
        stuck = await self.stuck_at_payment_addresses()
        webhooks = await self.webhook_state(a.drain_bound) if self.receiver is not None else None
        replicas = await self.replica_state() if len(self.api_urls) > 1 else None
        plain: dict[str, int] = {}
        for p in self.payments.values():
            if p.plain:
                plain[p.token] = plain.get(p.token, 0) + 1
        report = {
            "seed": a.seed, "tokens": sorted(self.tokens), "payments": len(self.payments),
            "paid_by_plain_transfer": dict(sorted(plain.items())), "stuck_at_payment_addresses": stuck,
            "deposits": result["deposits"], "deposits_by_token": result["deposits_by_token"],
            "quotes_refused": self.stats.quotes_refused, "quote_refusals": self.stats.refusals,
            "fault_effects": self.stats.effects,
            "signer_retries": signer_retries,
            "faults": dict(sorted(self.stats.faults.items())), "faults_total": sum(self.stats.faults.values()),
            "lost": result["lost"], "late_deposits": result["late"],
            "doubled": result["doubled"], "mispriced": result["mispriced"],
            "mispriced_quotes": self.stats.mispriced_quotes, "phantom": result["phantom"],
            "unknown_reference": result["unknown_reference"],
            "drain_bound_seconds": a.drain_bound,
            "drain_seconds": None if drained_at is None else round(drained_at - faults_stopped, 1),
            "refunds": refunds,
            "treasury": treasury,
            "refunds_drain_seconds": (None if refunds_drained_at is None
                                      else round(refunds_drained_at - faults_stopped, 1)),
            "finality_to_credit_seconds": eth_latency,
            "inclusion_to_credit_seconds": other_latency,
            "run_seconds": round(time.monotonic() - t_start, 1),
        }
        if webhooks is not None:
            report["webhooks"] = webhooks
        if replicas is not None:
            report["replicas"] = replicas
        if len(self.info.get("relays", [])) > 1:
            report["relays"] = [r["name"] for r in self.info["relays"]]
        scale_out_bad = bool(webhooks and (webhooks["missing"] or webhooks["change_committed_twice"]
                                           or webhooks["event_id_committed_twice"]
                                           or webhooks["event_id_for_two_changes"]
                                           or webhooks["overlapping_attempts"])) \
            or bool(replicas and replicas["mismatches"])
        report["ok"] = not (report["lost"] or report["doubled"] or report["mispriced"] or report["phantom"]
                            or report["mispriced_quotes"] or refunds["missing"] or refunds["doubled"]
                            or refunds["wrong"] or refunds["phantom"]
                            or treasury["doubled"] or treasury["wrong"] or treasury["over_swept"]
                            or treasury["treasury_mismatch"] or treasury["insolvent"] or treasury["problems"]
                            or stuck or scale_out_bad) and report["deposits"] >= report["payments"]
        return report


def _pm(x: dict) -> str:
    return f"{x['p50']}/{x['max']}s" if x.get("n") else "-"


def _late(r: dict) -> str:
    late = r.get("late_deposits") or {}
    return f"{len(late.get('held', []))} held for refund / {late.get('credited_at_fresh_quote', 0)} credited fresh"


def summary_line(r: dict) -> str:
    lat = r["finality_to_credit_seconds"]
    wf, nf = lat["with_faults"], lat["without_faults"]
    faults = ", ".join(f"{k} {v}" for k, v in r["faults"].items())
    plain = ", ".join(f"{k} {v}" for k, v in r.get("paid_by_plain_transfer", {}).items()) or "none"
    return (f"chaos {'OK' if r['ok'] else 'FAILED'}: {r['payments']} payments ({plain} by plain transfer), "
            f"{r['deposits']} deposits, {len(r.get('stuck_at_payment_addresses', []))} stuck at payment addresses, "
            f"{r['faults_total']} faults ({faults}); lost {len(r['lost'])}, late {_late(r)}, doubled {len(r['doubled'])}, "
            f"mispriced {len(r['mispriced']) + len(r['mispriced_quotes'])}, phantom {len(r['phantom'])}; "
            f"finality->credit p50/p99/max {nf.get('p50')}/{nf.get('p99')}/{nf.get('max')}s without faults, "
            f"{wf.get('p50')}/{wf.get('p99')}/{wf.get('max')}s with (ETH)"
            + "".join(f"; {t} inclusion->credit p50/max {_pm(v['without_faults'])} without faults, "
                      f"{_pm(v['with_faults'])} with" for t, v in r.get("inclusion_to_credit_seconds", {}).items())
            + f"; refunds {r['refunds']['done']}/{r['refunds']['expected']} (missing {len(r['refunds']['missing'])}, "
            f"doubled {len(r['refunds']['doubled'])}, wrong {len(r['refunds']['wrong'])}, "
            f"phantom {len(r['refunds']['phantom'])}, all in {r['refunds_drain_seconds']}s)"
            + f"; signer retries {sum(r.get('signer_retries', {}).values())}"
            + (f"; treasury swept {r['treasury']['swept']} of {r['treasury']['earned']} earned wei in "
               f"{r['treasury']['sweeps']} sweeps (received {r['treasury']['treasury_received']}, doubled "
               f"{len(r['treasury']['doubled'])}, lock holds {r['treasury']['lock_balance']} >= owes "
               f"{r['treasury']['lock_owes']}: {not r['treasury']['insolvent']}"
               + "".join(f"; {tok} swept {t['swept']} of {t['earned']} in {t['sweeps']} sweeps (received "
                         f"{t['treasury_received']}, fees {t['fees']}, custody holds {t['custody_balance']} >= owes "
                         f"{t['custody_owes']}: {not t['insolvent']})"
                         for tok, t in r["treasury"].get("others", {}).items())
               + f"; treasury problems {r['treasury'].get('problems', {}) or 'none'})" if "treasury" in r else "")
            + f"; drained in {r['drain_seconds']}s "
            f"(bound {r['drain_bound_seconds']}s)"
            + (f"; webhooks {r['webhooks']['received']}/{r['webhooks']['committed']} events received "
               f"(missing {len(r['webhooks']['missing'])}, committed twice "
               f"{len(r['webhooks']['change_committed_twice']) + len(r['webhooks']['event_id_committed_twice'])}, "
               f"overlapping attempts {len(r['webhooks']['overlapping_attempts'])}, "
               f"{r['webhooks']['attempts']} attempts)" if "webhooks" in r else "")
            + (f"; {r['replicas']['payments_compared']} payments read alike from {r['replicas']['replicas']} "
               f"replicas: {not r['replicas']['mismatches']} ({len(r['replicas']['mismatches'])} differ)"
               if "replicas" in r else "")
            + (f"; relays {len(r['relays'])}" if "relays" in r else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--payments", type=int, default=1000)
    ap.add_argument("--payers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="CI size: 40 payments, every fault kind once")
    ap.add_argument("--dir", default=".devnet-chaos")
    ap.add_argument("--out", default=None, help="write the JSON report here")
    ap.add_argument("--confirmations", type=int, default=6)
    ap.add_argument("--block-time", type=float, default=0.5)
    ap.add_argument("--pace", type=float, default=0.05, help="seconds between one payer's payments")
    ap.add_argument("--drain-bound", type=int, default=180)
    ap.add_argument("--evm-only", dest="families", action="store_false",
                    help="only the EVM chains (no TON or Asset Hub devnet chains)")
    ap.add_argument("--other-share", type=float, default=0.3,
                    help="share of the payments made in the other tokens (TON, DOT, KSM), split evenly")
    ap.add_argument("--others", type=lambda v: set(v.split(",")), default=None, metavar="TOKEN,..",
                    help="pay --other-share only in these of TON, DOT, KSM (default: all)")
    ap.add_argument("--stable-share", type=float, default=0.15,
                    help="share of the payments made in the devnet's stablecoins (USDC, USDT on each chain), split "
                         "evenly; 0 pays none")
    ap.add_argument("--transfer-share", type=float, default=0.5,
                    help="share of the payments paid by a plain transfer (instructions.transfer)")
    ap.add_argument("--overpay-share", type=float, default=0.05,
                    help="share of the payments that pay 10%% more than quoted (the excess must be refunded once)")
    ap.add_argument("--postgres", action="store_true",
                    help="the API on PostgreSQL; checks webhook delivery through a merchant receiver")
    ap.add_argument("--api-replicas", type=int, default=1, metavar="N",
                    help="N API processes (needs --postgres); requests spread over them, kill_api_replica faults")
    ap.add_argument("--aggregators", type=int, default=1, metavar="N", help="N relay processes")
    args = ap.parse_args(argv)
    if args.api_replicas > 1 and not args.postgres:
        ap.error("--api-replicas above 1 needs --postgres")
    args.fault_gap = (1.0, 3.0)
    if args.quick:
        args.payments, args.pace = min(args.payments, 40), 4.0  # spread payments over the faults
        args.overpay_share = max(args.overpay_share, 0.25)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("LiteClient", "LiteBalancer", "pytoniq", "substrateinterface", "websocket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    report = asyncio.run(Harness(args).run())
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    print(summary_line(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
