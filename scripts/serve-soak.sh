#!/usr/bin/env bash
# Soak: greta serve on MODEL driven by greta loadtest with CONC streaming
# clients for DURATION; prints the errors and the server's goroutines and
# RSS (from /metrics) idle after a warm-up and idle after the soak.
#   scripts/serve-soak.sh [MODEL] [DURATION] [CONC] [extra greta serve flags...]
# Issue 13's soak is: scripts/serve-soak.sh ../shared/models/<model> 5m 64
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-../shared/models/stories260K.gguf}
duration=${2:-60s}
conc=${3:-64}
shift $(( $# < 3 ? $# : 3 ))
tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
go build -o "$tmp/greta" ./cmd/greta
"$tmp/greta" serve -m "$model" --host 127.0.0.1 --port 0 --parallel "$conc" "$@" >"$tmp/out" 2>"$tmp/log" &
pid=$!
for _ in $(seq 1200); do grep -q "ready at" "$tmp/out" && break; kill -0 "$pid" || { cat "$tmp/log"; exit 1; }; sleep 0.1; done
url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$tmp/out")
cat "$tmp/out"
gauges() { curl -sS --max-time 10 "$url/metrics" | awk '/^go_goroutines /{g=$2} /^process_resident_memory_bytes /{r=$2} END{printf "goroutines %d, RSS %.1f MiB", g, r/1048576}'; }
echo "idle before the warm-up: $(gauges)"
"$tmp/greta" loadtest --url "$url" --concurrency "$conc" --requests $((conc * 2)) --max-tokens 64 --prompt-tokens 64 --duration 120s >/dev/null 2>&1
sleep 1
echo "idle after the warm-up:  $(gauges)"
"$tmp/greta" loadtest --url "$url" --concurrency "$conc" --requests 100000000 --max-tokens 128 --prompt-tokens 128 --duration "$duration"
sleep 1
echo "idle after the soak:     $(gauges)"
