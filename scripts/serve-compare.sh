#!/usr/bin/env bash
# Side by side: greta loadtest drives two running OpenAI-compatible servers
# (greta serve and llama-server, say) with the same prompts, in ROUNDS
# rounds (env, default 3) whose order alternates, at each concurrency of
# LEVELS (env, default "1 8"). Each level of each round takes prompts of
# its own seed, sent to both: prompts neither server has seen, so that
# their prefix caches (llama-server also keeps slots' prompts in RAM)
# cannot help, as long as SEED (default 1000) is new to both servers: give
# each run a new one (SEED=2000, ...) or restart the servers. Requests ask for MAX_TOKENS (default 64) tokens with
# ignore_eos, so both generate the same count (checked: the figures are
# output tokens the servers report). Prints one line per run and the
# median of each figure.
# GRETA=BINARY takes that greta for the load instead of building one.
#   [ROUNDS=N] [LEVELS="1 8"] [REQS="4 16"] [PROMPT=64] [MAX_TOKENS=64] scripts/serve-compare.sh NAME1=URL1 NAME2=URL2
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 NAME1=URL1 NAME2=URL2" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -n "${GRETA:-}" ]; then cp "$GRETA" "$tmp/greta"; else go build -o "$tmp/greta" ./cmd/greta; fi
read -r -a levels <<<"${LEVELS:-1 8}"
read -r -a reqs <<<"${REQS:-4 16}"
servers=("$@")
for round in $(seq "${ROUNDS:-3}"); do
  order=("${servers[@]}")
  if (( round % 2 == 0 )); then order=("${servers[1]}" "${servers[0]}"); fi
  for li in "${!levels[@]}"; do
    c=${levels[$li]}
    n=${reqs[$li]:-${reqs[-1]}}
    for s in "${order[@]}"; do
      name=${s%%=*} url=${s#*=}
      "$tmp/greta" loadtest --url "$url" --concurrency "$c" --requests "$n" --prompt-tokens "${PROMPT:-64}" \
        --max-tokens "${MAX_TOKENS:-64}" --seed $((${SEED:-1000} + round * 100 + c)) --json 2>/dev/null >"$tmp/r.json"
      python3 - "$name" "$round" "$(cut -d' ' -f1 /proc/loadavg)" "$tmp/r.json" <<'PY' | tee -a "$tmp/all"
import json, sys
name, rnd, load, path = sys.argv[1:]
l = json.load(open(path))["levels"][0]
per = l["output_tokens"] / max(1, l["requests"] - l["errors"])
print(f'{name} round {rnd} conc {l["concurrency"]}: {l["requests"]} requests, {l["errors"]} errors, {per:.1f} output tokens each, '
      f'{l["output_tokens_per_s"]:.2f} out tok/s, TTFT p50 {l["ttft_ms"]["p50"]:.0f} ms, ITL p50 {l["itl_ms"]["p50"]:.1f} ms, load {load}')
if l["errors"]:
    print(f'  {name} first error: {l.get("first_error", "")}')
PY
    done
  done
done
python3 - "$tmp/all" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r'(\S+) round \d+ conc (\d+): .* ([\d.]+) out tok/s, TTFT p50 (\d+) ms, ITL p50 ([\d.]+) ms', line)
    if m:
        runs.setdefault((m[1], int(m[2])), []).append((float(m[3]), float(m[4]), float(m[5])))
print("median (min-max) over the rounds:")
for (name, c), v in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    col = lambda i: f'{statistics.median(x[i] for x in v):.1f} ({min(x[i] for x in v):.1f}-{max(x[i] for x in v):.1f})'
    print(f'  {name} conc {c}: out tok/s {col(0)}, TTFT p50 ms {col(1)}, ITL p50 ms {col(2)}')
PY
