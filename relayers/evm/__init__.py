"""EVM family (web3.py): anvil launcher, contract artifacts and deployment, watcher, submitter."""
