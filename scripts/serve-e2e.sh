#!/usr/bin/env bash
# End to end: start `greta serve` on a ../shared model on 127.0.0.1 and drive
# it with curl: health, completions, a chat stream, the API key, a bad body,
# tokenize, metrics, then SIGTERM. Skips when the model or curl is absent.
# Every step is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
model=../shared/models/stories260K.gguf
if [ ! -f "$model" ]; then echo "serve-e2e: skipped ($model is absent)"; exit 0; fi
if ! command -v curl >/dev/null; then echo "serve-e2e: skipped (curl is not installed)"; exit 0; fi

tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
go build -o "$tmp/greta" ./cmd/greta
"$tmp/greta" serve -m "$model" --host 127.0.0.1 --port 0 --ctx 512 --parallel 4 --api-key e2e-key \
  --shutdown-timeout 5s >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 600); do
  grep -q "ready at" "$tmp/out" && break
  if ! kill -0 "$pid" 2>/dev/null; then echo "serve-e2e: greta serve exited:"; cat "$tmp/err"; exit 1; fi
  sleep 0.1
done
url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$tmp/out" || true)
if [ -z "$url" ]; then echo "serve-e2e: no ready line within 60 s:"; cat "$tmp/out" "$tmp/err"; exit 1; fi
echo "serve-e2e: $(cat "$tmp/out")"

passed=0 failed=0
check() { # check NAME EXPECTED-SUBSTRING OUTPUT
  if [[ "$3" == *"$2"* ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL $1: wanted $2 in: ${3:0:400}"; fi
}
c() { curl -sS --max-time 30 -H 'Content-Type: application/json' "$@" || true; }
key=(-H 'Authorization: Bearer e2e-key')

check health '{"status":"ok"}' "$(c "$url/health")"
check models '"id":"stories260K"' "$(c "${key[@]}" "$url/v1/models")"
out=$(c "${key[@]}" "$url/v1/completions" -d '{"prompt":"Once upon a time","max_tokens":16,"temperature":0}')
check completion '"object":"text_completion"' "$out"
check completion-text '"text":", there was' "$out"
check completion-usage '"completion_tokens":16' "$out"
out=$(c "${key[@]}" -N "$url/v1/chat/completions" -d '{"messages":[{"role":"user","content":"Tell me a story."}],"max_tokens":12,"stream":true,"stream_options":{"include_usage":true}}')
check chat-stream-chunk '"object":"chat.completion.chunk"' "$out"
check chat-stream-usage '"completion_tokens":12' "$out"
check chat-stream-done $'data: [DONE]' "$(tail -n 2 <<<"$out")"
check no-key '"code":"invalid_api_key"' "$(c -w ' %{http_code}' "$url/v1/completions" -d '{"prompt":"x"}')"
check no-key-401 ' 401' "$(c -o /dev/null -w ' %{http_code}' "$url/v1/completions" -d '{"prompt":"x"}')"
check bad-json '"type":"invalid_request_error"' "$(c "${key[@]}" "$url/v1/completions" -d '{"prompt":')"
check bad-type '"param":"max_tokens"' "$(c "${key[@]}" "$url/v1/completions" -d '{"prompt":"x","max_tokens":"ten"}')"
check context '"code":"context_length_exceeded"' "$(c "${key[@]}" "$url/v1/completions" -d '{"prompt":"x","max_tokens":100000}')"
check tokenize '"tokens":[' "$(c "${key[@]}" "$url/tokenize" -d '{"content":"Once upon a time"}')"
metrics=$(c "$url/metrics")
check metrics-vllm 'vllm:num_requests_running 0' "$metrics"
check metrics-cache 'vllm:cache_config_info{block_size="16"' "$metrics"
check metrics-requests 'greta_http_requests_total{code="200",endpoint="completions"} 1' "$metrics"

lt=$(timeout 120 "$tmp/greta" loadtest --url "$url" --api-key e2e-key --concurrency 1,4 --requests 8 --prompt-tokens 32 \
  --max-tokens 8 --duration 60s --json 2>&1 || true)
check loadtest '"errors": 0' "$lt"
check loadtest-tokens '"output_tokens": 64' "$lt"

kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then failed=$((failed + 1)); echo "FAIL sigterm: greta serve still runs 10 s after SIGTERM"
else
  rc=0; wait "$pid" || rc=$?
  check sigterm-exit "rc 0" "rc $rc"
  pid=
fi
echo "serve-e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
