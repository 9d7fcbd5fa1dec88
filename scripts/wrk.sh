#!/usr/bin/env bash
# Make sure Debian's wrk (the C HTTP load generator the benchmarks drive the API with) is
# installed; prints its path. Pinned to what Debian ships (bench/README: wrk 4.1.0).
set -euo pipefail
if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk.sh: installing Debian's wrk" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
  else
    sudo apt-get update -qq >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
  fi
fi
command -v wrk
