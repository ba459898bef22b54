#!/bin/bash
# Run on the GPU machine from the repo root, with carry/greta (CGO_ENABLED=0 GOEXPERIMENT=simd go build -o carry/greta ./cmd/greta)
# and carry/m/ holding stories260K.gguf, stories260K-Q8_0.gguf, syn-spm-Q4_K_M.gguf, syn-bpe-Q4_K_M.gguf and
# ../shared/reference/evalcb/stories260K-once.log. $OUT receives the traces.
# Final CUDA verification: trace diff CUDA vs the float64 oracle and greedy ids CUDA vs CPU on the shared models.
G=${G:-carry/greta}; M=${M:-carry/m}; EVALCB=${EVALCB:-$M/stories260K-once.log}
# MODELS picks the models (default: all four).
MODELS=${MODELS:-stories260K stories260K-Q8_0 syn-spm-Q4_K_M syn-bpe-Q4_K_M}
has() { [[ " $MODELS " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run() { # model prompt
  for d in cuda ref; do
    $G trace record -o $OUT/$1.$d.jsonl --model $M/$1.gguf --prompt "$2" --max-tokens 8 --greedy --device $d --trace-values all --json > $OUT/$1.$d.json 2>$OUT/$1.$d.err || { echo "FAIL $1 $d"; tail -3 $OUT/$1.$d.err; }
  done
  echo "== $1: cuda vs ref"; $G trace diff $OUT/$1.cuda.jsonl $OUT/$1.ref.jsonl --tol 1e-3 | head -1
  $G run --model $M/$1.gguf --prompt "$2" --max-tokens 32 --greedy --device cuda --json > $OUT/$1.g.cuda.json 2>/dev/null
  $G run --model $M/$1.gguf --prompt "$2" --max-tokens 32 --greedy --device cpu --act f32 --json > $OUT/$1.g.cpu.json 2>/dev/null
  python3 -c "
import json,sys; a=json.load(open('$OUT/$1.g.cuda.json'))['generated']; b=json.load(open('$OUT/$1.g.cpu.json'))['generated']
n=next((i for i,(x,y) in enumerate(zip(a,b)) if x!=y), min(len(a),len(b)))
print('   greedy cuda vs cpu: %d of %d ids equal%s' % (n, len(b), '' if n==len(b) else ' (first differ at %d)'%n))"
}
for m in stories260K stories260K-Q8_0; do has $m && run $m "Once upon a time"; done
for m in syn-spm-Q4_K_M syn-bpe-Q4_K_M; do has $m && run $m "The quick brown fox jumps over the lazy dog"; done
has stories260K && { echo "== vs llama.cpp dump"; $G trace diff $OUT/stories260K.cuda.jsonl $EVALCB --tol 1e-3 | head -1; }
