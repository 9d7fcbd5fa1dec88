"""creditbridge core: chain-agnostic types, committee, pricing, payments, storage and API.

Nothing under ``bridge/`` imports a chain SDK (web3, substrateinterface, pytoniq) or
``relayers/`` -- except the composition root (``bridge.node``, ``bridge.cli``,
``devnet.network`` and ``bridge.api.wiring``), which wires chain families in.
"""

__version__ = "0.1.0"
