// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Committee
/// @notice A t-of-n secp256k1 committee that authorises messages by EIP-712 digest.
/// @dev Signatures are 65 bytes `r || s || v` (v 27/28, low s), concatenated in strictly
///      ascending order of the recovered signer address, which rejects duplicates in O(1).
///      Membership is `memberTag[signer] == committeeIndex + 1`: a rotation writes only the
///      new set, and every member of an older set is invalidated by the index bump.
///      The committee rotates itself: the current set signs
///      `RotateCommittee(uint64 newIndex,address[] signers,uint256 threshold)`.
abstract contract Committee {
    error BadSignatureLength();
    error BelowThreshold(uint256 got, uint256 needed);
    error InvalidSignature();
    error HighS();
    error SignersNotAscending();
    error UnknownSigner(address signer);
    error InvalidCommittee();

    event CommitteeRotated(uint64 indexed index, address[] signers, uint256 threshold);

    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant ROTATE_TYPEHASH =
        keccak256("RotateCommittee(uint64 newIndex,address[] signers,uint256 threshold)");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// secp256k1 n / 2: signatures with a larger s are malleable twins and are rejected.
    uint256 private constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    uint256 internal constant MAX_SIGNERS = 64;

    bytes32 private immutable _nameHash;
    uint256 private immutable _cachedChainId;
    bytes32 private immutable _cachedDomainSeparator;

    /// Index of the current committee; starts at 0, +1 per rotation.
    uint64 public committeeIndex;
    /// Packed with committeeIndex: one SLOAD gives both. Bounded by MAX_SIGNERS.
    uint64 private _threshold;
    address[] private _signers;
    /// committeeIndex + 1 of the latest committee the address was a member of (0: never).
    mapping(address => uint64) private _memberTag;

    constructor(string memory name, address[] memory initialSigners, uint256 initialThreshold) {
        _nameHash = keccak256(bytes(name));
        _cachedChainId = block.chainid;
        _cachedDomainSeparator = _buildDomainSeparator(keccak256(bytes(name)));
        _install(0, initialSigners, initialThreshold);
    }

    // ---------------------------------------------------------------- views
    function threshold() external view returns (uint256) {
        return _threshold;
    }

    function signers() external view returns (address[] memory) {
        return _signers;
    }

    function domainSeparator() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedDomainSeparator : _buildDomainSeparator(_nameHash);
    }

    // ---------------------------------------------------------------- rotation
    function rotateCommittee(address[] calldata newSigners, uint256 newThreshold, bytes calldata signatures)
        external
    {
        uint64 newIndex = committeeIndex + 1;
        bytes32 digest = _hashTypedData(
            keccak256(abi.encode(ROTATE_TYPEHASH, newIndex, keccak256(abi.encodePacked(newSigners)), newThreshold))
        );
        _verify(digest, signatures);
        _install(newIndex, newSigners, newThreshold);
    }

    // ---------------------------------------------------------------- internals
    function _install(uint64 index, address[] memory newSigners, uint256 newThreshold) private {
        uint256 n = newSigners.length;
        if (n == 0 || n > MAX_SIGNERS || newThreshold == 0 || newThreshold > n) revert InvalidCommittee();
        uint64 tag = index + 1;
        for (uint256 i; i < n; ) {
            address s = newSigners[i];
            // a signer already tagged with the new index appears twice in the set
            if (s == address(0) || _memberTag[s] == tag) revert InvalidCommittee();
            _memberTag[s] = tag;
            unchecked {
                ++i;
            }
        }
        committeeIndex = index;
        _threshold = uint64(newThreshold);
        _signers = newSigners;
        emit CommitteeRotated(index, newSigners, newThreshold);
    }

    function _buildDomainSeparator(bytes32 nameHash) private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, nameHash, VERSION_HASH, block.chainid, address(this)));
    }

    function _hashTypedData(bytes32 structHash) internal view returns (bytes32 digest) {
        bytes32 sep = domainSeparator();
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, 0x1901000000000000000000000000000000000000000000000000000000000000)
            mstore(add(m, 0x02), sep)
            mstore(add(m, 0x22), structHash)
            digest := keccak256(m, 0x42)
        }
    }

    /// @dev Reverts unless `signatures` holds at least `threshold` valid signatures of
    ///      distinct members of the current committee over `digest`, in ascending signer order.
    function _verify(bytes32 digest, bytes calldata signatures) internal view {
        uint256 len = signatures.length;
        if (len % 65 != 0) revert BadSignatureLength();
        uint256 count = len / 65;
        uint256 t = _threshold;
        if (count < t) revert BelowThreshold(count, t);
        uint64 tag = committeeIndex + 1;
        address prev;
        for (uint256 i; i < count; ) {
            bytes32 r;
            uint256 s;
            uint256 v;
            assembly {
                let p := add(signatures.offset, mul(i, 65))
                r := calldataload(p)
                s := calldataload(add(p, 0x20))
                v := byte(0, calldataload(add(p, 0x40)))
            }
            if (s > HALF_N) revert HighS();
            if (v != 27 && v != 28) revert InvalidSignature();
            address signer;
            assembly ("memory-safe") {
                let m := mload(0x40)
                mstore(m, digest)
                mstore(add(m, 0x20), v)
                mstore(add(m, 0x40), r)
                mstore(add(m, 0x60), s)
                mstore(0x00, 0)
                pop(staticcall(gas(), 0x01, m, 0x80, 0x00, 0x20))
                signer := mload(0x00)
            }
            if (signer == address(0)) revert InvalidSignature();
            if (signer <= prev) revert SignersNotAscending();
            if (_memberTag[signer] != tag) revert UnknownSigner(signer);
            prev = signer;
            unchecked {
                ++i;
            }
        }
    }
}
