"""Local substrate stand-ins for the devnet and tests."""
