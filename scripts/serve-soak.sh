#!/usr/bin/env bash
# Soak: greta serve on MODEL driven by greta loadtest with CONC streaming
# greedy clients, in ROUNDS rounds of DURATION (env, default 2). It prints
# each round's errors and figures, then asks VERIFY of the round's
# requests (env, default 64; -1: every one) again one at a time and counts
# the answers that differ from the ones given under load; and the server's
# goroutines, RSS and Go heap (from /metrics) when idle after a warm-up and
# after each round. The KV pool is allocated at start and its pages are
# touched as they are first used (the prefix cache keeps freed prompt
# pages and evicts them only when no free page is left), so RSS grows up
# to the pool's size while the pool fills, then stays flat: size the pool
# (--ctx, --kv-budget) so that the warm-up fills it. Build with GOEXPERIMENT=simd in the
# environment for the SIMD kernels.
# With PPROF=ADDR (e.g. 127.0.0.1:6060) the server also serves its
# runtime profiles there, and each idle point adds the live heap after a
# forced GC (the /metrics heap figures count garbage not yet collected).
#   [ROUNDS=N] [VERIFY=N] [PPROF=ADDR] scripts/serve-soak.sh [MODEL] [DURATION] [CONC] [extra greta serve flags...]
# Issue 13's soak (docs/BENCHMARKS.md): GOEXPERIMENT=simd ROUNDS=5 VERIFY=-1 PPROF=127.0.0.1:6060 \
#   scripts/serve-soak.sh ../shared/models/syn-spm-Q4_K_M.gguf 1m 64 --ctx 512
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
"$tmp/greta" serve -m "$model" --host 127.0.0.1 --port 0 --parallel "$conc" ${PPROF:+--pprof "$PPROF"} "$@" >"$tmp/out" 2>"$tmp/log" &
pid=$!
for _ in $(seq 1200); do grep -q "ready at" "$tmp/out" && break; kill -0 "$pid" || { cat "$tmp/log"; exit 1; }; sleep 0.1; done
url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$tmp/out")
cat "$tmp/out"
gauges() {
  curl -sS --max-time 10 "$url/metrics" | awk '/^go_goroutines /{g=$2} /^process_resident_memory_bytes /{r=$2} /^go_memstats_heap_inuse_bytes /{h=$2}
    /^go_memstats_heap_alloc_bytes /{a=$2} /^greta_kv_pages_used /{u=$2} /^greta_kv_pages_cached /{c=$2}
    END{printf "goroutines %d, RSS %.1f MiB, Go heap in use %.1f MiB (allocated %.1f MiB), KV pages used %d, cached %d", g, r/1048576, h/1048576, a/1048576, u, c}'
  if [ -n "${PPROF:-}" ]; then
    curl -sS --max-time 30 "http://$PPROF/debug/pprof/heap?gc=1&debug=1" | awk '/^# HeapAlloc = /{a=$4} /^# HeapIdle = /{i=$4} /^# HeapReleased = /{r=$4} /^# Sys = /{s=$4}
      END{printf ", live after GC %.1f MiB, free heap kept from the OS %.1f MiB, runtime total %.1f MiB", a/1048576, (i-r)/1048576, s/1048576}'
  fi
}
echo "idle before the warm-up: $(gauges)"
"$tmp/greta" loadtest --url "$url" --concurrency "$conc" --requests $((conc * 4)) --max-tokens 64 --prompt-tokens 128 --duration 120s >/dev/null 2>&1
sleep 1
echo "idle after the warm-up:  $(gauges)"
bad=0
for round in $(seq "${ROUNDS:-2}"); do
  out=$("$tmp/greta" loadtest --url "$url" --concurrency "$conc" --requests 100000000 --max-tokens 128 --prompt-tokens 128 \
    --duration "$duration" --seed "$round" --verify "${VERIFY:-64}" --json 2>/dev/null)
  echo "$out" | awk -v r="$round" '/"requests":/{q=$2} /"errors":/{e=$2} /"output_tokens_per_s":/{t=$2} /"verified":/{v=$2} /"mismatches":/{m=$2}
    /"first_error":|"first_mismatch":/{print "  " $0}
    /"ttft_ms"/{s="ttft"} /"itl_ms"/{s="itl"} /"latency_ms"/{s="lat"} /"p50":/{p[s]=$2}
    END{gsub(",","",q); gsub(",","",e); gsub(",","",t); gsub(",","",v); gsub(",","",m); gsub(",","",p["ttft"]); gsub(",","",p["itl"]);
      printf "round %d: %d requests, %d errors, %.1f output tok/s, TTFT p50 %.1f ms, ITL p50 %.2f ms; %d asked again alone, %d differ\n", r, q, e, t, p["ttft"], p["itl"], v, m+0}'
  if echo "$out" | grep -Eq '"(errors|mismatches)": [1-9]'; then bad=1; fi
  sleep 1
  echo "idle after round $round:    $(gauges)"
done
exit $bad
