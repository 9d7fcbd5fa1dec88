"""The local devnet and its chain stand-ins: never part of an operator's runtime.

``devnet.network`` runs the whole local devnet (``creditbridge devnet`` / ``make devnet``);
``devnet.evm.anvil``, ``devnet.substrate.chopsticks`` and ``devnet.ton.localchain`` (with its
liteserver, toncenter server and TVM emulator) start the local chains that stand in for real
nodes; ``devnet.*.devchain`` are the per-family plug-ins that deploy onto them with the same
``creditbridge deploy`` functions an operator uses. Tests and the chaos harness use them too.
``relayers/`` holds only the production relayers, and never imports this package.
"""
