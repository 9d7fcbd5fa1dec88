#!/usr/bin/env bash
# The whole test suite: starts the services tests need (PostgreSQL; chains are started by the
# tests themselves from node_modules), runs pytest, stops them again.
set -euo pipefail
cd "$(dirname "$0")/.."
# the checkout page's browser test drives Debian's chromium (installed only when absent)
if [ ! -x /usr/bin/chromium ]; then
  echo "test.sh: installing Debian's chromium for the checkout browser test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
CREDITBRIDGE_TEST_PG_URL=$(bash scripts/pg.sh start)
export CREDITBRIDGE_TEST_PG_URL
trap 'bash scripts/pg.sh stop' EXIT
.venv/bin/python -m pytest -q -ra -p no:cacheprovider "$@"
