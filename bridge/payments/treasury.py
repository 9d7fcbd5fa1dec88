"""Earned funds and treasury sweeps, defined once: a pure function of chain facts, integers only.

Every base unit in a custody (a lock contract, the Asset Hub committee account) is one of
*pending*, *earned*, *owed* or *dust* (DESIGN.md, "Custody and the money flow"). This module
says which, from facts every honest signer reads the same way:

* a deposit's decision by the deposit rule (``bridge.payments.rules.decide``, or the gateway's
  signed late decision): ``counted`` towards the quote, ``credits``, ``refundable``;
* the settlement block at which the settlement contract recorded its credit (``Credited``),
  read only at or below the settlement chain's finality point;
* which release ids (refunds, sweeps) the custody has paid at a final block.

**Earned at cut-off B.** A deposit that carries credits (``credits > 0``) earns its ``counted``
once its credit is recorded at a settlement block ``<= B``. A counted deposit that completes no
credit on its own (``below-one-credit``) earns its ``counted`` once a *later* deposit of the same
payment (higher deposit key) that carries credits is recorded ``<= B``: that deposit's credits
were computed with it counted (the rule telescopes). A trailing below-one-credit remainder of a
payment nothing later completes is never earned: it stays in custody and is reported
(:func:`stranded`) -- sweeping it would take value nobody was credited for, and refunding it
would need a rule change that every signer applies the same way (left to the dust policy).
Refundable parts (excess, late, invalid, unattributed, unpriced, dust) are never earned, nor
is anything not decided, not final, not credited or held by the governor (its credit is not
recorded).

**Sweeps.** Epoch ``k``'s cut-off is settlement block ``B_k = k * epoch_blocks``; its sweep
moves ``E(B_k) - E(B_{k-1})``; the epochs telescope, so all sweeps up to ``k`` add up to
``E(B_k)``, whatever epochs were skipped as empty. An epoch whose amount is below the chain's
minimum sweep (the custody's ``min_refund``: a TON lock refuses releases below its
``min_release``, which pay their own fees) is skipped too and rolls into the next epoch that
reaches the minimum: that sweep moves ``E(B_k) - E(B_j)``, ``j`` the last swept epoch
(:func:`span_items`); every signer skips the same epochs (the amounts and the minimum are facts).

**Solvency.** Before signing epoch ``k``'s sweep a signer reads the custody's balance at a
final block ``h`` it has fully processed and requires ``balance - sweep >= owed + reserve``,
where ``owed`` is everything the custody still has to pay or keep from its deposits stored up to
``h``: held parts whose refund was not paid at ``h``, counted parts not earned at ``B_k``
(pending credits, governor-held deposits, below-one-credit remainders), undecided deposits
whole, and earlier sweeps signed but not paid at ``h``; ``reserve`` is what the chain keeps
(Asset Hub's existential deposit).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Collection, Iterable, NamedTuple

from bridge.errors import InputError
from bridge.payments import rules

SWEEP = "sweep"  # release purpose of a treasury sweep


class Payout(NamedTuple):
    """Where a custody paid a release: the chain's transaction id, its block and that block's
    time (unix seconds; None when the custody cannot tell). An optional custody ability."""

    tx: bytes
    block: int
    time: int | None = None


@dataclass(frozen=True)
class DepositFacts:
    """One deposit into a custody, as a signer knows it from chain facts."""

    key: tuple[bytes, int]  # deposit id (source, sequence): orders a payment's deposits
    payment: bytes  # the payment's reference
    amount: int
    outcome: str | None  # rules outcome (credit, below-one-credit, excess, late, invalid, ...); None: undecided
    credits: int = 0
    counted: int = 0
    refundable: int = 0
    refund_id: bytes | None = None  # release id of the refund of ``refundable``
    credited_at: int | None = None  # settlement block that recorded its credit (final), or None

    def __post_init__(self) -> None:
        for name in ("amount", "credits", "counted", "refundable"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"deposit {name} must be a non-negative integer")
        if self.outcome is not None and self.counted + self.refundable != self.amount:
            raise InputError("a decided deposit's counted + refundable must equal its amount")


def sweep_release_id(source: bytes, epoch: int, token: str | None = None) -> bytes:
    """The release id of epoch ``epoch``'s sweep of a custody: one per (custody, token, epoch).
    ``token`` None is the chain's native token (the id every sweep had before custodies held
    several tokens); another token's sweeps have ids of their own."""
    from bridge.payments.refunds import release_id

    return release_id(source, epoch, SWEEP if token is None else f"{SWEEP}:{token}")


def cutoff(epoch: int, epoch_blocks: int) -> int:
    """Settlement block that closes epoch ``epoch`` (epoch 0 closes at block 0)."""
    if epoch < 0 or epoch_blocks <= 0:
        raise InputError("epoch must be >= 0 and epoch_blocks > 0")
    return epoch * epoch_blocks


def _recorded(d: DepositFacts, at: int) -> bool:
    return d.outcome is not None and d.credits > 0 and d.credited_at is not None and d.credited_at <= at


def earned_items(deposits: Iterable[DepositFacts], at: int) -> dict[tuple[bytes, int], int]:
    """Deposit id -> earned base units at cut-off ``at`` (only deposits that earned something)."""
    by_payment: dict[bytes, list[DepositFacts]] = defaultdict(list)
    for d in deposits:
        by_payment[d.payment].append(d)
    out: dict[tuple[bytes, int], int] = {}
    for group in by_payment.values():
        group.sort(key=lambda d: d.key)
        completed = False  # a later deposit carrying credits is recorded <= at
        for d in reversed(group):
            if _recorded(d, at):
                completed = True
                if d.counted > 0:
                    out[d.key] = d.counted
            elif d.outcome == rules.BELOW_ONE_CREDIT and completed and d.counted > 0:
                out[d.key] = d.counted
    return out


def earned(deposits: Iterable[DepositFacts], at: int) -> int:
    """Cumulative earned base units at cut-off ``at`` (``E(at)``)."""
    return sum(earned_items(deposits, at).values())


def epoch_items(deposits: Iterable[DepositFacts], epoch: int, epoch_blocks: int) -> dict[tuple[bytes, int], int]:
    """What epoch ``epoch``'s sweep covers: deposit id -> earned in ``(B_{k-1}, B_k]``."""
    deposits = list(deposits)
    now = earned_items(deposits, cutoff(epoch, epoch_blocks))
    before = earned_items(deposits, cutoff(epoch - 1, epoch_blocks)) if epoch > 0 else {}
    return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0) > 0}


def span_items(deposits: Iterable[DepositFacts], since: int, epoch: int,
               epoch_blocks: int) -> dict[tuple[bytes, int], int]:
    """What a sweep of epoch ``epoch`` covers when the last sweep was of epoch ``since`` (``0``:
    none): deposit id -> earned in ``(B_since, B_epoch]``. With ``since = epoch - 1`` this is
    :func:`epoch_items`. Epochs whose amount is below the chain's minimum sweep are not swept:
    they roll into the next epoch that reaches it (``since`` stays at the last swept epoch), so
    the sweeps still telescope to ``E(B_k)`` and nothing earned is lost."""
    if since < 0 or since >= epoch:
        raise InputError("a sweep covers epochs after the last swept one: need 0 <= since < epoch")
    deposits = list(deposits)
    now = earned_items(deposits, cutoff(epoch, epoch_blocks))
    before = earned_items(deposits, cutoff(since, epoch_blocks))
    return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0) > 0}


def epoch_amount(deposits: Iterable[DepositFacts], epoch: int, epoch_blocks: int) -> int:
    """``E(B_k) - E(B_{k-1})``: the amount of epoch ``epoch``'s sweep (0: no sweep)."""
    return sum(epoch_items(deposits, epoch, epoch_blocks).values())


def stranded(deposits: Iterable[DepositFacts], at: int) -> int:
    """Counted base units of below-one-credit deposits that nothing later completes (yet):
    kept in custody and reported, never swept."""
    deposits = list(deposits)
    got = earned_items(deposits, at)
    return sum(d.counted for d in deposits if d.outcome == rules.BELOW_ONE_CREDIT and d.key not in got)


def owed(deposits: Iterable[DepositFacts], paid: Collection[bytes], at: int,
         unpaid_sweeps: int = 0) -> int:
    """What the custody must still hold after sweeping up to cut-off ``at``: held parts whose
    refund is not paid (``paid``: release ids paid at the balance's block), counted parts not
    earned at ``at``, undecided deposits whole, and ``unpaid_sweeps`` (earlier sweeps signed but
    not paid at the balance's block)."""
    deposits = list(deposits)
    got = earned_items(deposits, at)
    total = unpaid_sweeps
    for d in deposits:
        if d.outcome is None:
            total += d.amount
            continue
        total += d.counted - got.get(d.key, 0)
        if d.refundable and (d.refund_id is None or d.refund_id not in paid):
            total += d.refundable
    return total


def solvent(balance: int, sweep: int, owed_after: int, reserve: int = 0) -> bool:
    """The invariant: after the sweep the custody still holds everything it owes."""
    return balance - sweep >= owed_after + reserve
