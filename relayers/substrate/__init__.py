"""Polkadot Hub / Kusama Asset Hub family (substrate-interface and scalecodec live only here).

* ``watcher``: ``SubstrateWatcher``, the ``bridge.chains.Watcher`` of one Asset Hub chain;
* ``client``: the synchronous substrate-interface connection behind one dedicated thread,
  with endpoint failover and error conversion;
* ``decode``: recognising payments in decoded extrinsics and events;
* ``multisig``: the committee's ``pallet_multisig`` account;
* ``instructions``: what a payer must sign (shown by the API);
* ``networks``: facts of the real networks (genesis hashes, SS58 prefixes);
* ``chopsticks`` / ``devchain`` / ``wallet``: the offline devnet chains and a dev payer.
"""
