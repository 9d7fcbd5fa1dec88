"""Local evm stand-ins for the devnet and tests."""
