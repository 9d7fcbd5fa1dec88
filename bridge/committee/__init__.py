"""The committee: signer keys, the signer node, and the (untrusted) aggregator."""
