#!/usr/bin/env bash
# The whole test suite: starts the services tests need (PostgreSQL; chains are started by the
# tests themselves from node_modules), runs pytest, stops them again.
set -euo pipefail
cd "$(dirname "$0")/.."
CREDITBRIDGE_TEST_PG_URL=$(bash scripts/pg.sh start)
export CREDITBRIDGE_TEST_PG_URL
trap 'bash scripts/pg.sh stop' EXIT
.venv/bin/python -m pytest -q -ra -p no:cacheprovider "$@"
