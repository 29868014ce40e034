#!/usr/bin/env bash
# Installs and starts what the optional tests need; writes .ci/.services.env.
# Filled in by the browser (chromium) and PostgreSQL work; a no-op for now.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "stop" ]; then
  rm -f .ci/.services.env
  exit 0
fi
: > .ci/.services.env
