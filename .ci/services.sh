#!/usr/bin/env bash
# Installs and starts what the optional tests need (headless Chromium, a PostgreSQL
# server on loopback) and writes their settings to .ci/.services.env for .ci/run.
# `.ci/services.sh stop` stops what it started.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "stop" ]; then
  for part in .ci/services.d/*.sh; do [ -f "$part" ] && bash "$part" stop; done
  rm -f .ci/.services.env
  exit 0
fi
: > .ci/.services.env
for part in .ci/services.d/*.sh; do
  [ -f "$part" ] || continue
  bash "$part" start >> .ci/.services.env || echo "warning: $part failed" >&2
done
