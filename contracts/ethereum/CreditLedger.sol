// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Committee} from "./Committee.sol";

/// @title CreditLedger
/// @notice Settlement contract of creditbridge: mints compute credits for deposits that a
///         t-of-n committee attests, each deposit at most once.
///
/// Message (EIP-712, domain `EIP712Domain(name "CreditBridge Ledger", version "1", chainId,
/// verifyingContract = this)`; bridge/committee/digest.py computes the same bytes):
///
///     Credit(bytes32 source,uint64 sequence,address beneficiary,uint256 credits,bytes32 quoteId)
///     CreditBatch(uint64 committeeIndex,Credit[] credits)
///
/// - `source` names a deposit stream (one lock contract or account on one chain, see
///   bridge.hashing.source_id) and `sequence` is the deposit's dense position in it (the lock
///   contract's nonce), so `(source, sequence)` is the deposit id.
/// - `committeeIndex` binds the batch to the committee that signed it: after a rotation, old
///   signatures are useless even if old keys leak. The chain id and contract address in the
///   domain bind it to this deployment.
/// - One signature set covers a whole batch, so the fixed cost (t ecrecovers, t membership
///   reads, the base transaction) is shared by all credits in it.
/// - `settle` is idempotent per deposit: already settled deposits are skipped, so overlapping
///   batches from competing (untrusted) aggregators are harmless; a batch that credits
///   nothing reverts `NothingToSettle` so the replay costs its sender and shows up as a revert.
///
/// Storage per credited deposit:
/// - one bit in `_settled[source][sequence >> 8]` (bit `sequence & 255`): sequences of a
///   source are dense, so 256 deposits share one slot and a new slot (22.1k gas) is paid once
///   per 256 deposits; consecutive credits of one word are accumulated in memory and written
///   once per batch.
/// - the beneficiary's balance `creditsOf[beneficiary]`; consecutive credits to the same
///   beneficiary are summed in memory and written once.
/// Nothing else (no per-deposit record): the `Credited` event carries the details.
/// Aggregators should order a batch by (source, sequence) to share bitmap words.
///
/// Gas (bench/gas.py, anvil, t=3 of n=4, receipt gasUsed per credited payment): a single
/// credit 77.5k; in a batch of 64, 27.7k to a new beneficiary (22.1k of it is the new balance
/// slot), 6.4k to beneficiaries that already hold credits; +6.7k per extra signature.
/// The per-credit floor is calldata (~1.7k), the Credited log (2.4k) and the balance write.
contract CreditLedger is Committee {
    struct Credit {
        bytes32 source;
        uint64 sequence;
        address beneficiary;
        uint256 credits;
        bytes32 quoteId;
    }

    error NothingToSettle();
    error NotProvider();
    error InsufficientCredits(uint256 balance, uint256 amount);

    event Credited(
        bytes32 indexed source, uint64 indexed sequence, address indexed beneficiary, uint256 credits, bytes32 quoteId
    );
    event Spent(address indexed account, uint256 amount, bytes32 memo);
    event ProviderChanged(address provider);

    bytes32 internal constant CREDIT_TYPEHASH =
        keccak256("Credit(bytes32 source,uint64 sequence,address beneficiary,uint256 credits,bytes32 quoteId)");
    bytes32 internal constant BATCH_TYPEHASH = keccak256(
        "CreditBatch(uint64 committeeIndex,Credit[] credits)Credit(bytes32 source,uint64 sequence,address beneficiary,uint256 credits,bytes32 quoteId)"
    );

    /// Credits available to each account, spent by the compute provider.
    mapping(address => uint256) public creditsOf;
    /// The compute provider: the only account that may spend credits.
    address public provider;
    /// Replay protection: source => word (sequence >> 8) => bitmap of settled sequences.
    mapping(bytes32 => mapping(uint256 => uint256)) private _settled;

    constructor(address[] memory initialSigners, uint256 initialThreshold, address initialProvider)
        Committee("CreditBridge Ledger", initialSigners, initialThreshold)
    {
        provider = initialProvider;
        emit ProviderChanged(initialProvider);
    }

    // ---------------------------------------------------------------- settlement
    /// @notice Credit every not yet settled deposit of a committee-signed batch.
    /// @return creditedCount how many credits of the batch were new (>= 1, else it reverts)
    function settle(Credit[] calldata credits, bytes calldata signatures) external returns (uint256 creditedCount) {
        uint256 n = credits.length;
        if (n == 0) revert NothingToSettle();
        _verify(_hashTypedData(_batchStructHash(credits)), signatures);
        creditedCount = _apply(credits);
        if (creditedCount == 0) revert NothingToSettle();
    }

    function isSettled(bytes32 source, uint64 sequence) external view returns (bool) {
        return (_settled[source][sequence >> 8] >> (sequence & 255)) & 1 == 1;
    }

    /// @dev Marks and credits every not yet settled credit; returns how many were new.
    ///      Runs only after `_verify`, so every calldata word is one the committee signed:
    ///      signers sign canonical encodings only (uint64 and address words with clean upper
    ///      bits; a dirty word would hash differently), so no further decoding checks are needed.
    ///      The bitmap word and the pending balance are cached across consecutive credits that
    ///      share them and written back when the key changes and at the end.
    function _apply(Credit[] calldata credits) private returns (uint256 count) {
        bytes32 topic = Credited.selector;
        assembly ("memory-safe") {
            let settledSlot := _settled.slot
            let balanceSlot := creditsOf.slot
            let m := mload(0x40) // event data scratch
            let curSource := 0
            let curWord := not(0) // matches no real word (sequence >> 8 < 2^56)
            let wordSlot := 0
            let bits := 0 // cached bitmap word with this batch's new bits
            let loaded := 0 // the cached word as in storage
            let curBen := 0
            let pending := 0
            for {
                let p := credits.offset
                let end := add(p, mul(credits.length, 0xa0))
            } lt(p, end) { p := add(p, 0xa0) } {
                let source := calldataload(p)
                let seq := calldataload(add(p, 0x20))
                let word := shr(8, seq)
                if iszero(and(eq(source, curSource), eq(word, curWord))) {
                    if iszero(eq(bits, loaded)) { sstore(wordSlot, bits) }
                    mstore(0x00, source)
                    mstore(0x20, settledSlot)
                    mstore(0x20, keccak256(0x00, 0x40))
                    mstore(0x00, word)
                    wordSlot := keccak256(0x00, 0x40)
                    curSource := source
                    curWord := word
                    bits := sload(wordSlot)
                    loaded := bits
                }
                let mask := shl(and(seq, 0xff), 1)
                if iszero(and(bits, mask)) {
                    bits := or(bits, mask)
                    let ben := calldataload(add(p, 0x40))
                    let amount := calldataload(add(p, 0x60))
                    switch eq(ben, curBen)
                    case 0 {
                        if pending { _addBalance(balanceSlot, curBen, pending) }
                        curBen := ben
                        pending := amount
                    }
                    default {
                        pending := add(pending, amount)
                        if lt(pending, amount) { _overflow() }
                    }
                    mstore(m, amount)
                    mstore(add(m, 0x20), calldataload(add(p, 0x80)))
                    log4(m, 0x40, topic, source, seq, ben)
                    count := add(count, 1)
                }
            }
            if iszero(eq(bits, loaded)) { sstore(wordSlot, bits) }
            if pending { _addBalance(balanceSlot, curBen, pending) }

            // creditsOf[who] += amount, checked
            function _addBalance(base, who, amount) {
                mstore(0x00, who)
                mstore(0x20, base)
                let slot := keccak256(0x00, 0x40)
                let b := add(sload(slot), amount)
                if lt(b, amount) { _overflow() }
                sstore(slot, b)
            }

            function _overflow() {
                mstore(0x00, shl(224, 0x4e487b71)) // Panic(0x11), as checked arithmetic reverts
                mstore(0x04, 0x11)
                revert(0x00, 0x24)
            }
        }
    }

    /// @dev hashStruct(CreditBatch) with the current committee index; one keccak per credit.
    function _batchStructHash(Credit[] calldata credits) private view returns (bytes32 structHash) {
        bytes32 creditTypehash = CREDIT_TYPEHASH;
        bytes32 batchTypehash = BATCH_TYPEHASH;
        uint64 index = committeeIndex;
        assembly ("memory-safe") {
            let n := credits.length
            let m := mload(0x40)
            // m: [typehash | 5 words of the credit] scratch; hashes follow at m + 0xc0
            let hashes := add(m, 0xc0)
            mstore(m, creditTypehash)
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                calldatacopy(add(m, 0x20), add(credits.offset, mul(i, 0xa0)), 0xa0)
                mstore(add(hashes, shl(5, i)), keccak256(m, 0xc0))
            }
            let items := keccak256(hashes, shl(5, n))
            mstore(m, batchTypehash)
            mstore(add(m, 0x20), index)
            mstore(add(m, 0x40), items)
            structHash := keccak256(m, 0x60)
        }
    }

    // ---------------------------------------------------------------- provider
    /// @notice The provider consumes `amount` credits of `account` (memo: e.g. a job id).
    function spend(address account, uint256 amount, bytes32 memo) external {
        if (msg.sender != provider) revert NotProvider();
        uint256 balance = creditsOf[account];
        if (balance < amount) revert InsufficientCredits(balance, amount);
        unchecked {
            creditsOf[account] = balance - amount;
        }
        emit Spent(account, amount, memo);
    }

    function setProvider(address newProvider) external {
        if (msg.sender != provider) revert NotProvider();
        provider = newProvider;
        emit ProviderChanged(newProvider);
    }
}
