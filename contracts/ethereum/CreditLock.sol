// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Committee} from "./Committee.sol";

/// @title CreditLock
/// @notice Source-chain lock contract: users pay ETH with a payment reference; each payment
///         gets the next dense nonce, which is its `sequence` in the settlement ledger.
///         The committee (same t-of-n scheme as the ledger, own EIP-712 domain
///         "CreditBridge Lock") can release funds, each release id at most once.
/// @dev No receive/fallback: a plain transfer carries no reference and is refused.
contract CreditLock is Committee {
    error AmountTooSmall(uint256 amount, uint256 minimum);
    error ReleaseUsed(bytes32 releaseId);
    error TransferFailed();

    event Locked(uint64 indexed nonce, address indexed sender, uint256 amount, bytes32 indexed ref);
    event Released(bytes32 indexed releaseId, address indexed to, uint256 amount);

    bytes32 internal constant RELEASE_TYPEHASH = keccak256("Release(address to,uint256 amount,bytes32 releaseId)");

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
        uint64 nonce = nextNonce;
        unchecked {
            nextNonce = nonce + 1; // 2^64 locks are out of reach
        }
        emit Locked(nonce, msg.sender, msg.value, ref);
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
