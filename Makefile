# The two commands: `make devnet` and `make test`. Everything else is set-up they share.
PY := .venv/bin/python
SHELL := /bin/bash

.PHONY: setup devnet test clean

setup:
	bash scripts/setup.sh

devnet: setup
	$(PY) -m bridge.cli devnet

test: setup
	bash scripts/test.sh

bench: setup
	$(PY) bench/gas.py

clean:
	rm -rf .venv node_modules contracts/ethereum/build .devnet .pgdata .stamp-*
