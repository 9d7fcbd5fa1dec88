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
///         ERC-20 tokens (issue 15) use the same custody: a payer `transfer`s the token to the
///         same deposit address (`collectToken` moves it in) or calls `lockToken` after
///         `approve`. A token deposit takes the next nonce of the same stream and is emitted as
///         `LockedToken` (with the token); its amount is what the lock's balance of the token
///         grew by, never the amount asked (fee-on-transfer tokens). Any token can be held;
///         the watchers count only the tokens configured for the chain (others are never
///         credited and leave only by a committee-signed `releaseToken`).
/// @dev No receive/fallback: a plain transfer to the lock carries no reference and is refused.
contract CreditLock is Committee {
    error AmountTooSmall(uint256 amount, uint256 minimum);
    error NothingToCollect(bytes32 ref);
    error CollectFailed(bytes32 ref);
    error ReleaseUsed(bytes32 releaseId);
    error TransferFailed();
    error TokenTransferFailed(address token);
    error Reentered();

    event Locked(uint64 indexed nonce, address indexed sender, uint256 amount, bytes32 indexed ref);
    /// The `Locked` of the same nonce came from `collect`: the funds were sent to the deposit
    /// address (the `Locked` sender) by `fundingTx`, a hint the watchers verify (0: none).
    event Collected(uint64 indexed nonce, bytes32 fundingTx);
    event Released(bytes32 indexed releaseId, address indexed to, uint256 amount);
    /// A deposit of `amount` base units of the ERC-20 `token` (what the lock received), in the
    /// same nonce stream as `Locked`; from `collectToken` (then `sender` is the deposit address
    /// and a `Collected` of the same nonce follows) or `lockToken` (the payer).
    event LockedToken(uint64 indexed nonce, address indexed sender, uint256 amount, bytes32 indexed ref, address token);
    event ReleasedToken(bytes32 indexed releaseId, address indexed to, uint256 amount, address token);

    bytes32 internal constant RELEASE_TYPEHASH = keccak256("Release(address to,uint256 amount,bytes32 releaseId)");
    bytes32 internal constant TOKEN_RELEASE_TYPEHASH =
        keccak256("TokenRelease(address token,address to,uint256 amount,bytes32 releaseId)");

    /// Init code of the per-payment forwarder, written by hand so that the deposit addresses
    /// never depend on the compiler. Deployed by the lock with CREATE2 (salt = ref) it asks its
    /// deployer which token is being collected (`collectingToken()`, 0 = only ETH), moves its
    /// whole balance of that token to the lock (`balanceOf(self)` then `transfer(lock, bal)`,
    /// accepting empty return data (USDT) or a 32-byte true, reverting otherwise), then
    /// SELFDESTRUCTs to the lock, which sends any ETH there too and, created and destroyed in
    /// the same transaction (EIP-6780), leaves the address empty so it can be collected again.
    /// Bytes and opcodes (offset: bytes  mnemonic):
    ///   00: 63285e37c9  PUSH4 0x285e37c9   // ask the deployer (the lock) collectingToken()
    ///   05: 60e0        PUSH1 0xe0
    ///   07: 1b          SHL
    ///   08: 5f          PUSH0
    ///   09: 52          MSTORE
    ///   0a: 6020        PUSH1 0x20
    ///   0c: 5f          PUSH0
    ///   0d: 6004        PUSH1 0x04
    ///   0f: 5f          PUSH0
    ///   10: 33          CALLER
    ///   11: 5a          GAS
    ///   12: fa          STATICCALL
    ///   13: 15          ISZERO   // call failed: revert
    ///   14: 6078        PUSH1 fail
    ///   16: 57          JUMPI
    ///   17: 6020        PUSH1 0x20   // less than 32 bytes back: revert
    ///   19: 3d          RETURNDATASIZE
    ///   1a: 10          LT
    ///   1b: 6078        PUSH1 fail
    ///   1d: 57          JUMPI
    ///   1e: 5f          PUSH0   // token; 0 = only ETH: selfdestruct
    ///   1f: 51          MLOAD
    ///   20: 80          DUP1
    ///   21: 15          ISZERO
    ///   22: 607c        PUSH1 done
    ///   24: 57          JUMPI
    ///   25: 6370a08231  PUSH4 0x70a08231   // balanceOf(self): args mem[0..0x24], result at mem[0x24..0x44]
    ///   2a: 60e0        PUSH1 0xe0
    ///   2c: 1b          SHL
    ///   2d: 5f          PUSH0
    ///   2e: 52          MSTORE
    ///   2f: 30          ADDRESS
    ///   30: 6004        PUSH1 0x04
    ///   32: 52          MSTORE
    ///   33: 6020        PUSH1 0x20
    ///   35: 6024        PUSH1 0x24
    ///   37: 6024        PUSH1 0x24
    ///   39: 5f          PUSH0
    ///   3a: 84          DUP5
    ///   3b: 5a          GAS
    ///   3c: fa          STATICCALL
    ///   3d: 15          ISZERO
    ///   3e: 6078        PUSH1 fail
    ///   40: 57          JUMPI
    ///   41: 6020        PUSH1 0x20
    ///   43: 3d          RETURNDATASIZE
    ///   44: 10          LT
    ///   45: 6078        PUSH1 fail
    ///   47: 57          JUMPI
    ///   48: 63a9059cbb  PUSH4 0xa9059cbb   // transfer(lock, balance): the balance already sits at mem[0x24]
    ///   4d: 60e0        PUSH1 0xe0
    ///   4f: 1b          SHL
    ///   50: 5f          PUSH0
    ///   51: 52          MSTORE
    ///   52: 33          CALLER
    ///   53: 6004        PUSH1 0x04
    ///   55: 52          MSTORE
    ///   56: 6020        PUSH1 0x20
    ///   58: 5f          PUSH0
    ///   59: 6044        PUSH1 0x44
    ///   5b: 5f          PUSH0
    ///   5c: 5f          PUSH0
    ///   5d: 85          DUP6
    ///   5e: 5a          GAS
    ///   5f: f1          CALL
    ///   60: 15          ISZERO   // call reverted: revert
    ///   61: 6078        PUSH1 fail
    ///   63: 57          JUMPI
    ///   64: 3d          RETURNDATASIZE   // no return data (USDT): ok
    ///   65: 15          ISZERO
    ///   66: 607c        PUSH1 done
    ///   68: 57          JUMPI
    ///   69: 6020        PUSH1 0x20   // return data: 32 bytes and exactly 1 (true), else revert
    ///   6b: 3d          RETURNDATASIZE
    ///   6c: 10          LT
    ///   6d: 6078        PUSH1 fail
    ///   6f: 57          JUMPI
    ///   70: 5f          PUSH0
    ///   71: 51          MLOAD
    ///   72: 6001        PUSH1 0x01
    ///   74: 14          EQ
    ///   75: 607c        PUSH1 done
    ///   77: 57          JUMPI
    ///   78: 5b          JUMPDEST   // fail: REVERT(0, 0)
    ///   79: 5f          PUSH0
    ///   7a: 80          DUP1
    ///   7b: fd          REVERT
    ///   7c: 5b          JUMPDEST   // done: SELFDESTRUCT to the lock (ETH too)
    ///   7d: 33          CALLER
    ///   7e: ff          SELFDESTRUCT
    bytes internal constant FORWARDER_INITCODE = hex"63285e37c960e01b5f5260205f60045f335afa1560785760203d106078575f518015607c576370a0823160e01b5f52306004526020602460245f845afa1560785760203d1060785763a9059cbb60e01b5f523360045260205f60445f5f855af1156078573d15607c5760203d106078575f51600114607c575b5f80fd5b33ff";
    bytes32 public constant FORWARDER_INITCODE_HASH = keccak256(FORWARDER_INITCODE);

    uint256 public immutable minAmount;
    /// Nonce of the next lock; starts at 0.
    uint64 public nextNonce;
    mapping(bytes32 => bool) private _releaseUsed;
    /// The token `collectToken` is collecting (0 outside it: only ETH), read by the forwarder;
    /// also the re-entrancy guard of the token paths (`_entered`).
    address private transient _collecting;
    bool private transient _entered;

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
        // not from inside a token collect (its forwarder would move that token uncounted)
        if (_entered) revert Reentered();
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

    /// @notice The token being collected right now (the forwarder asks; 0: none, only ETH).
    function collectingToken() external view returns (address) {
        return _collecting;
    }

    /// @notice Move all of `token` (and any ETH) held at `depositAddress(ref)` into the lock as
    ///         deposits of `ref` (anyone may call; the relay does). `fundingTx` names the
    ///         transaction that moved the token there (a hint the watchers verify). The token
    ///         deposit is what the lock's balance grew by; ETH found there as well is a `Locked`
    ///         deposit of its own (without a funding hint).
    function collectToken(address token, bytes32 ref, bytes32 fundingTx) external returns (uint64 nonce) {
        if (_entered) revert Reentered();
        if (token == address(0)) revert TokenTransferFailed(token);
        _entered = true;
        address from = depositAddress(ref);
        uint256 eth = from.balance;
        uint256 ethBefore = address(this).balance;
        uint256 before = _balanceOf(token, address(this));
        _collecting = token;
        bytes memory code = FORWARDER_INITCODE;
        address made;
        assembly ("memory-safe") {
            made := create2(0, add(code, 0x20), mload(code), ref)
        }
        _collecting = address(0);
        if (made != from || address(this).balance != ethBefore + eth) revert CollectFailed(ref);
        uint256 received = _balanceOf(token, address(this)) - before;
        if (received == 0 && eth == 0) revert NothingToCollect(ref);
        if (received > 0) {
            nonce = _lockToken(token, from, received, ref);
            emit Collected(nonce, fundingTx);
        }
        if (eth > 0) {
            uint64 n = _lock(from, eth, ref);
            emit Collected(n, bytes32(0));
            if (received == 0) nonce = n;
        }
        _entered = false;
    }

    /// @notice Pay `amount` of `token` for the payment `ref` from the caller's allowance; the
    ///         deposit is what the lock actually received.
    function lockToken(address token, uint256 amount, bytes32 ref) external returns (uint64 nonce) {
        if (_entered) revert Reentered();
        _entered = true;
        uint256 before = _balanceOf(token, address(this));
        _callToken(token, abi.encodeWithSelector(0x23b872dd, msg.sender, address(this), amount)); // transferFrom
        uint256 received = _balanceOf(token, address(this)) - before;
        if (received == 0) revert AmountTooSmall(0, 1);
        nonce = _lockToken(token, msg.sender, received, ref);
        _entered = false;
    }

    function _lockToken(address token, address sender, uint256 amount, bytes32 ref) internal returns (uint64 nonce) {
        nonce = nextNonce;
        unchecked {
            nextNonce = nonce + 1;
        }
        emit LockedToken(nonce, sender, amount, ref, token);
    }

    function _balanceOf(address token, address who) internal view returns (uint256 amount) {
        (bool ok, bytes memory ret) = token.staticcall(abi.encodeWithSelector(0x70a08231, who));
        if (!ok || ret.length < 32 || token.code.length == 0) revert TokenTransferFailed(token);
        amount = abi.decode(ret, (uint256));
    }

    /// A token call that must succeed and return nothing (USDT) or a 32-byte true.
    function _callToken(address token, bytes memory data) internal {
        if (token.code.length == 0) revert TokenTransferFailed(token);
        (bool ok, bytes memory ret) = token.call(data);
        if (!ok || (ret.length != 0 && (ret.length < 32 || abi.decode(ret, (uint256)) != 1))) {
            revert TokenTransferFailed(token);
        }
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

    /// @notice Pay out `amount` of `token` to `to` under a committee-signed
    ///         `TokenRelease(token, to, amount, releaseId)`; release ids are shared with `release`.
    function releaseToken(address token, address to, uint256 amount, bytes32 releaseId, bytes calldata signatures)
        external
    {
        if (_releaseUsed[releaseId]) revert ReleaseUsed(releaseId);
        _verify(_hashTypedData(keccak256(abi.encode(TOKEN_RELEASE_TYPEHASH, token, to, amount, releaseId))), signatures);
        _releaseUsed[releaseId] = true;
        emit ReleasedToken(releaseId, to, amount, token);
        _callToken(token, abi.encodeWithSelector(0xa9059cbb, to, amount)); // transfer
    }
}
