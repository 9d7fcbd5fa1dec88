#!/usr/bin/env bash
# Copy the pinned TON Connect UI bundle (npm @tonconnect/ui, version pinned in package.json and
# package-lock.json) into the Python package, so the API serves it with no node_modules and no CDN
# (bridge/api/checkout.py looks in bridge/api/static/vendor/ first, then node_modules/).
# Run after `npm ci` (the runtime image's build does the same). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
src=node_modules/@tonconnect/ui/dist/tonconnect-ui.min.js
want=$(node -p 'require("./package.json").dependencies["@tonconnect/ui"]')
have=$(node -p 'require("./node_modules/@tonconnect/ui/package.json").version')
if [ "$want" != "$have" ]; then
  echo "vendor_tonconnect: node_modules has @tonconnect/ui $have, package.json pins $want: run npm ci" >&2
  exit 1
fi
mkdir -p bridge/api/static/vendor
cp "$src" bridge/api/static/vendor/tonconnect-ui.min.js
cp node_modules/@tonconnect/ui/LICENSE bridge/api/static/vendor/tonconnect-ui.LICENSE
echo "vendor_tonconnect: @tonconnect/ui $have -> bridge/api/static/vendor/"
