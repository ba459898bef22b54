#!/bin/bash
# famtrace.sh GRETA DEVICE: each family's small random-weight file (Q4_K_M,
# 256 wide, 4 layers, 16-token windows where the family has them), traced on
# DEVICE and on the float64 oracle over a 30-token prompt and 6 greedy
# steps, every value of every row kept (a relative error over the 8 values
# that a trace keeps by default is too noisy to hold to a tolerance), then
# diffed at TOL (default 2e-3). Extra flags for `trace record` on DEVICE
# go in FLAGS (FLAGS="--cache-type f32").
G=$1; D=${2:-cuda}; T=${TMPDIR:-/tmp}/famtrace; TOL=${TOL:-2e-3}; mkdir -p $T
P="one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"
for a in llama qwen2 qwen3 gemma2 gemma3 phi3; do
  x=""; case $a in gemma2|gemma3|llama) x="--sliding-window 16";; esac
  [ $a = gemma3 ] && x="$x --layers 6" || x="$x --layers 4"
  [ $a = qwen3 ] || [ $a = gemma2 ] || [ $a = gemma3 ] && x="$x --head-dim 64"
  $G synth --arch $a --type q4_k_m --dim 256 --heads 4 --kv-heads 2 --ffn 512 $x -o $T/$a.gguf > $T/$a.synth.log 2>&1 || { echo "$a: synth failed: $(tail -1 $T/$a.synth.log)"; continue; }
  for dev in $D ref; do
    f=; [ $dev = $D ] && f=${FLAGS:-}
    $G trace record -o $T/$a-$dev.jsonl --model $T/$a.gguf --device $dev $f --trace-values all --prompt "$P" -n 6 --greedy > $T/$a-$dev.log 2>&1 || echo "$a $dev: record failed: $(tail -1 $T/$a-$dev.log)"
  done
  out=$($G trace diff $T/$a-$D.jsonl $T/$a-ref.jsonl --tol $TOL 2>&1); rc=$?
  echo "$a: diff rc=$rc $(echo "$out" | head -1 | cut -c1-200); $(echo "$out" | tail -1 | cut -c1-100)"
done
