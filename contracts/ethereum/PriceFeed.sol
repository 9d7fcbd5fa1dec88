// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title PriceFeed
/// @notice A price feed with Chainlink's `AggregatorV3Interface` (plus the `AggregatorInterface`
///         getters and events), for the devnet and the tests: readers cannot tell it from a
///         Chainlink feed. Its owner pushes answers with `submit`; each submission is a new
///         round with `updatedAt = block.timestamp` and `answeredInRound = roundId`.
///         `startRound` opens a round that has no answer of its own yet, as Chainlink's
///         FluxAggregator does while a round is pending or after it timed out: the round
///         carries the previous answer and its `updatedAt`, and `answeredInRound` is the
///         earlier round that produced that answer (so `answeredInRound < roundId`).
///         `newPhase` emulates a Chainlink proxy switching to a new aggregator: round ids are
///         `(phaseId << 64) | aggregatorRoundId`, and each phase's aggregator round ids start
///         at 1 again, so a reader walking back through history must cross phases.
/// @dev Round ids start at 1 (phase 0: a plain aggregator's ids). Before the first round
///      `latestRoundData` answers zeros (as Chainlink's OCR aggregators do) and `getRoundData`
///      of an unknown round reverts with "No data present". Answers may be zero or negative
///      (Chainlink allows it); readers must reject them for prices.
contract PriceFeed {
    struct Round {
        int256 answer;
        uint64 startedAt;
        uint64 updatedAt;
        uint80 answeredInRound;
    }

    error NotOwner(address caller);
    error ZeroAddress();

    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);
    event NewRound(uint256 indexed roundId, address indexed startedBy, uint256 startedAt);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    uint256 public constant version = 4;
    uint8 public immutable decimals;
    string public description;
    address public owner;

    uint80 private _latestRound;
    uint16 public phaseId;
    mapping(uint80 => Round) private _rounds;

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    constructor(uint8 feedDecimals, string memory feedDescription) {
        decimals = feedDecimals;
        description = feedDescription;
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    /// @notice Start a new round answered with `answer` now; returns its id.
    function submit(int256 answer) external onlyOwner returns (uint80 roundId) {
        roundId = _nextRound();
        uint64 nowTs = uint64(block.timestamp);
        _rounds[roundId] = Round(answer, nowTs, nowTs, roundId);
        emit NewRound(roundId, msg.sender, block.timestamp);
        emit AnswerUpdated(answer, roundId, block.timestamp);
    }

    /// @notice Start a new round without an answer of its own: it carries the latest answer,
    ///         with that answer's `updatedAt` and `answeredInRound`.
    function startRound() external onlyOwner returns (uint80 roundId) {
        Round memory previous = _rounds[_latestRound];
        roundId = _nextRound();
        _rounds[roundId] = Round(previous.answer, uint64(block.timestamp), previous.updatedAt, previous.answeredInRound);
        emit NewRound(roundId, msg.sender, block.timestamp);
    }

    /// @notice Switch to a new phase (a proxy's new aggregator): the next round is
    ///         `((phaseId + 1) << 64) | 1`. Rounds of earlier phases stay readable.
    function newPhase() external onlyOwner returns (uint16) {
        phaseId += 1;
        return phaseId;
    }

    function _nextRound() private returns (uint80 roundId) {
        uint80 first = uint80(phaseId) << 64;
        roundId = _latestRound >= first ? _latestRound + 1 : first | 1;
        _latestRound = roundId;
    }

    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    // --- AggregatorV3Interface ---------------------------------------------------------------
    function getRoundData(uint80 roundId)
        external
        view
        returns (uint80, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        Round memory r = _rounds[roundId];
        require(r.startedAt != 0, "No data present");
        return (roundId, r.answer, r.startedAt, r.updatedAt, r.answeredInRound);
    }

    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        roundId = _latestRound;
        Round memory r = _rounds[roundId];
        return (roundId, r.answer, r.startedAt, r.updatedAt, r.answeredInRound);
    }

    // --- AggregatorInterface (the older getters some readers still use) --------------------------
    function latestAnswer() external view returns (int256) {
        return _rounds[_latestRound].answer;
    }

    function latestTimestamp() external view returns (uint256) {
        return _rounds[_latestRound].updatedAt;
    }

    function latestRound() external view returns (uint256) {
        return _latestRound;
    }

    function getAnswer(uint256 roundId) external view returns (int256) {
        return roundId <= type(uint80).max ? _rounds[uint80(roundId)].answer : int256(0);
    }

    function getTimestamp(uint256 roundId) external view returns (uint256) {
        return roundId <= type(uint80).max ? _rounds[uint80(roundId)].updatedAt : 0;
    }
}
