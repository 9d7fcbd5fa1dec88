// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Committee} from "./Committee.sol";

/// @title CreditLock
/// @notice Source-chain lock contract: users pay ETH with a payment reference; each payment
///         gets the next dense nonce, which is its `sequence` in the settlement ledger.
///         The committee (same t-of-n scheme as the ledger, own EIP-712 domain
///         "CreditBridge Lock") can release funds, each release id at most once.
///         Wallets that can only send plain ETH pay to a per-payment deposit address instead
///         (`depositAddress(ref)`); `collect` moves those funds into the lock as a deposit.
/// @dev No receive/fallback: a plain transfer to the lock carries no reference and is refused.
contract CreditLock is Committee {
    error AmountTooSmall(uint256 amount, uint256 minimum);
    error NothingToCollect(bytes32 ref);
    error CollectFailed(bytes32 ref);
    error ReleaseUsed(bytes32 releaseId);
    error TransferFailed();

    event Locked(uint64 indexed nonce, address indexed sender, uint256 amount, bytes32 indexed ref);
    /// The `Locked` of the same nonce came from `collect`: the funds were sent to the deposit
    /// address (the `Locked` sender) by `fundingTx`, a hint the watchers verify (0: none).
    event Collected(uint64 indexed nonce, bytes32 fundingTx);
    event Released(bytes32 indexed releaseId, address indexed to, uint256 amount);

    bytes32 internal constant RELEASE_TYPEHASH = keccak256("Release(address to,uint256 amount,bytes32 releaseId)");

    /// Init code of the per-payment forwarder, written by hand so that the deposit addresses
    /// never depend on the compiler: CALLER SELFDESTRUCT. Deployed with CREATE2 (salt = ref) it
    /// sends everything its address holds to the lock and, created and destroyed in the same
    /// transaction (EIP-6780), leaves the address empty, so it can be collected again.
    bytes internal constant FORWARDER_INITCODE = hex"33ff";
    bytes32 public constant FORWARDER_INITCODE_HASH = keccak256(FORWARDER_INITCODE);

    uint256 public immutable minAmount;
    /// Nonce of the next lock; starts at 0.
    uint64 public nextNonce;
    mapping(bytes32 => bool) private _releaseUsed;

    constructor(address[] memory initialSigners, uint256 initialThreshold, uint256 minimum)
        Committee("CreditBridge Lock", initialSigners, initialThreshold)
    {
        minAmount = minimum;
    }

    /// @notice Pay `msg.value` for the payment `ref` (the reference the gateway issued).
    function lock(bytes32 ref) external payable {
        if (msg.value < minAmount) revert AmountTooSmall(msg.value, minAmount);
        _lock(msg.sender, msg.value, ref);
    }

    /// @notice The per-payment address of `ref`: a plain ETH transfer there pays the payment
    ///         once someone calls `collect(ref, ...)`.
    function depositAddress(bytes32 ref) public view returns (address) {
        return address(uint160(uint256(keccak256(abi.encodePacked(bytes1(0xff), address(this), ref,
            FORWARDER_INITCODE_HASH)))));
    }

    /// @notice Move everything held at `depositAddress(ref)` into the lock as a deposit of `ref`
    ///         (anyone may call; the relay does). `fundingTx` names the transaction that funded
    ///         the address, so the watchers can learn the payer; it is a hint they verify.
    function collect(bytes32 ref, bytes32 fundingTx) external returns (uint64 nonce) {
        address from = depositAddress(ref);
        uint256 amount = from.balance;
        if (amount == 0) revert NothingToCollect(ref);
        if (amount < minAmount) revert AmountTooSmall(amount, minAmount);
        uint256 before = address(this).balance;
        bytes memory code = FORWARDER_INITCODE;
        address made;
        assembly ("memory-safe") {
            made := create2(0, add(code, 0x20), mload(code), ref)
        }
        if (made != from || address(this).balance != before + amount) revert CollectFailed(ref);
        nonce = _lock(from, amount, ref);
        emit Collected(nonce, fundingTx);
    }

    function _lock(address sender, uint256 amount, bytes32 ref) internal returns (uint64 nonce) {
        nonce = nextNonce;
        unchecked {
            nextNonce = nonce + 1; // 2^64 locks are out of reach
        }
        emit Locked(nonce, sender, amount, ref);
    }

    /// @notice Pay out `amount` to `to` under a committee-signed `Release(to, amount, releaseId)`.
    function release(address payable to, uint256 amount, bytes32 releaseId, bytes calldata signatures) external {
        if (_releaseUsed[releaseId]) revert ReleaseUsed(releaseId);
        _verify(_hashTypedData(keccak256(abi.encode(RELEASE_TYPEHASH, to, amount, releaseId))), signatures);
        _releaseUsed[releaseId] = true;
        emit Released(releaseId, to, amount);
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }
}
