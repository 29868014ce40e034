#!/usr/bin/env bash
# Headless Chromium for the HTML report's browser test (tests/cli/test_html_report.py).
# `start` (the default) installs Debian's chromium when it is missing (needs root, as in
# CI) and prints `export CJ_TEST_CHROMIUM=...` on stdout when a browser is available;
# everything else goes to stderr. `stop` does nothing: there is no server to stop.
set -uo pipefail

action="${1:-start}"
if [ "$action" = "stop" ]; then
  exit 0
fi

browser=/usr/bin/chromium
if [ ! -x "$browser" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (apt-get)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq chromium; } >&2 \
      || echo "warning: could not install chromium; the browser test will be skipped" >&2
  else
    echo "warning: $browser is missing and cannot be installed here (not root or no" \
      "apt-get); the browser test will be skipped" >&2
  fi
fi

if [ -x "$browser" ]; then
  echo "export CJ_TEST_CHROMIUM=$browser"
else
  exit 1
fi
