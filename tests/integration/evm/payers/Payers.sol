// SPDX-License-Identifier: MIT
// Test-only payer contracts: what a refund to a payer that is a contract can meet.
pragma solidity ^0.8.24;

/// Refuses every payment: a refund to it reverts (CreditLock: TransferFailed).
contract RefusingPayer {
    receive() external payable {
        revert("no refunds here");
    }
}

/// Accepts payments but burns ~1.1M gas doing so.
contract GreedyPayer {
    uint256[] private sink;

    receive() external payable {
        for (uint256 i = 0; i < 50; i++) sink.push(i);
    }
}

/// Accepts payments until told to refuse them.
contract MoodyPayer {
    bool public refuse;

    function setRefuse(bool r) external {
        refuse = r;
    }

    receive() external payable {
        require(!refuse, "changed my mind");
    }
}
