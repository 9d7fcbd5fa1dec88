"""Chain families: the only place chain SDKs (web3, substrate-interface, pytoniq) are imported."""
