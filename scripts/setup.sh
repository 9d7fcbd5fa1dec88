#!/usr/bin/env bash
# Idempotent project set-up: .venv with pinned Python deps, pinned npm tools (anvil, solc),
# compiled contracts. Safe to run repeatedly; skips steps whose inputs did not change.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# the stamp lives inside .venv: a venv that was removed or recreated is installed again
stamp_py=".venv/.stamp-py-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp_py" ]; then
  echo "setup: installing Python dependencies (pinned by constraints.txt)"
  .venv/bin/python -m pip install -q --upgrade "pip==25.3"
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
  rm -f .venv/.stamp-py-* .stamp-py-*; touch "$stamp_py"
fi

stamp_npm=".stamp-npm-$(cat package.json package-lock.json | sha256sum | cut -c1-16)"
if [ ! -f "$stamp_npm" ] || [ ! -d node_modules ]; then
  echo "setup: installing npm tools (pinned by package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
  rm -f .stamp-npm-*; touch "$stamp_npm"
fi

# the raw Asset Hub chain spec (with the runtime) that chopsticks runs, extracted from its npm
# package; kept under node_modules/ (never committed), so a fresh `npm ci` extracts it again
if [ ! -f node_modules/.cache/creditbridge/rococo_v2_2_asset_hub.json ]; then
  echo "setup: extracting the Asset Hub chain spec for chopsticks"
  .venv/bin/python -c "from devnet.substrate.chopsticks import asset_hub_genesis; asset_hub_genesis()"
fi

stamp_sol=".stamp-sol-$(cat contracts/ethereum/*.sol contracts/ethereum/build.js | sha256sum | cut -c1-16)"
if [ ! -f "$stamp_sol" ] || [ ! -d contracts/ethereum/build ]; then
  echo "setup: compiling Solidity contracts (solcjs, offline)"
  node contracts/ethereum/build.js
  rm -f .stamp-sol-*; touch "$stamp_sol"
fi

stamp_ton=".stamp-ton-$(cat contracts/ton/*.fc contracts/ton/build.py | sha256sum | cut -c1-16)"
if [ ! -f "$stamp_ton" ] || [ ! -f contracts/ton/build/lock.boc ]; then
  echo "setup: compiling the FunC lock contract (tonpy, offline; the build is committed)"
  .venv/bin/python contracts/ton/build.py
  rm -f .stamp-ton-*; touch "$stamp_ton"
fi
