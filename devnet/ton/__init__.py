"""Local ton stand-ins for the devnet and tests."""
