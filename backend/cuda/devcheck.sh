#!/bin/bash
# devcheck.sh: one run on the GPU machine. It runs the backend's tests (op
# conformance against the float64 oracle, whole models, graph replay),
# the model conformance test of model/llama with the cuda case,
# compute-sanitizer's memcheck, greta bench on the synth presets, and the
# matvec bandwidth table, and prints a compact summary last. Logs go to
# $OUT.
#
# The machine has no Go: build here first, into carry/ (git-ignored):
#   CGO_ENABLED=0 go build -ldflags='-s -w' -o carry/greta ./cmd/greta
#   CGO_ENABLED=0 go test -c -ldflags='-s -w' -o carry/cuda.test ./backend/cuda
#   CGO_ENABLED=0 go test -c -ldflags='-s -w' -o carry/llama.test ./model/llama
# and copy the ../shared models and reference rows wanted into
# carry/shared/{models,reference/llamacpp,reference/f64}.
#
# STAGES picks what runs (comma-separated): test, llama, memcheck, bench,
# profile (per-kernel times of a Llama-3-8B-shaped decode), bw, gemm (the
# many-row GEMM against mvn at 2-512 rows), ncu (Nsight
# Compute on one matvec kernel: NCU_KERNEL, NCU_FORMAT). Default: all but
# ncu. All logs end up in $OUT/logs.tgz too.
set -u
OUT=${OUT:-/tmp/devcheck-out}
# Logs sit three folders down, where the device tool does not fetch them
# one by one; logs.tgz and summary.txt come back.
LOG=$OUT/l/o/g
mkdir -p "$LOG"
C=$PWD/carry
export GRETA_CUDA_CACHE=/tmp/greta-cubin
STAGES=${STAGES:-test,llama,memcheck,bench,profile,bw,gemm}
has() { [[ ",$STAGES," == *",$1,"* ]]; }
SUM=$OUT/summary.txt
: >"$SUM"
say() { echo "$*" | tee -a "$SUM"; }
T0=$(date +%s)
el() { echo "$(($(date +%s) - T0))s"; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee "$LOG/gpu.txt"
say "gpu: $(cat "$LOG/gpu.txt")"

# The benchmark models are made here (random weights at real shapes), in
# the background while the tests run.
SYNTH=
if has bench || has profile; then
  ("$C/greta" synth --preset tinyllama-1.1b --type q4_k_m -o /tmp/tinyllama-q4_k_m.gguf &&
    "$C/greta" synth --preset llama3-8b --type q4_k_m -o /tmp/llama3-8b-q4_k_m.gguf) >"$LOG/synth.log" 2>&1 &
  SYNTH=$!
fi

if has test; then
  # One process per test, so that one failure does not hide the rest.
  for t in TestKernelsCompile TestNoDeviceIsOneLine TestMatMul TestGemm TestHGemm TestMatvecVariants TestNormFused TestMatMulCuBLAS TestMatMulAddGateUpFused TestEmbed TestRMSNorm TestRope \
    TestPagedAttention TestMatMulInvariance TestForwardBatchInvariance TestArgmaxAndGather TestTopK TestTopKManyRows TestPairKernel TestAttention TestAttentionDecodeRope TestKVCacheTooLarge TestModelShapes TestGraphReplayAndTracing TestSharedModels \
    TestBatchDesc TestAttentionLong TestFamilyNorms TestFamilyBiasScaleGeGLU TestFamilyRope TestFamilyAttention TestFamilyModels TestFamilyDecodeLaunches TestNCCLAllReduce; do
    (cd /tmp && GRETA_SHARED=$C/shared timeout 240 "$C/cuda.test" -test.run "^$t\$" -test.v -test.count=1) >"$LOG/test-$t.log" 2>&1
    rc=$?
    st=PASS
    grep -q -- "--- SKIP: $t" "$LOG/test-$t.log" && st=SKIP
    [ $rc -ne 0 ] && st="FAIL(rc=$rc)"
    say "test $t: $st [$(el)]"
    if [ "$st" != PASS ] && [ "$st" != SKIP ]; then grep -E -- "--- FAIL|_test.go:[0-9]+:|panic|cuda:" "$LOG/test-$t.log" | head -12 | sed 's/^/    /' | tee -a "$SUM"; fi
  done
  grep -h "^SHARED" "$LOG"/test-TestSharedModels.log | tee -a "$SUM"
  grep -h "worst NMSE" "$LOG"/test-TestModelShapes.log | sed 's/^ */    /' | tee -a "$SUM"
  cat "$LOG"/test-*.log >"$LOG/tests.log"
fi

if has llama; then
  # model/llama's conformance test finds ../shared three levels up.
  mkdir -p /tmp/w/r/model/llama
  ln -sfn "$C/shared" /tmp/w/shared
  (cd /tmp/w/r/model/llama && timeout 200 "$C/llama.test" -test.run 'TestTeacherForcedLogitsAgainstOracle/cuda' -test.v -test.count=1) >"$LOG/llama.log" 2>&1
  say "llama conformance (cuda): rc=$? [$(el)]"
  grep -E -- "--- (PASS|FAIL|SKIP)|worst NMSE" "$LOG/llama.log" | sed 's/^ */    /' | tee -a "$SUM"
fi

if has memcheck; then
  (cd /tmp && timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 30 \
    "$C/cuda.test" -test.v -test.short -test.count=1 -test.run "${MEMCHECK_RUN:-TestMatMul\$|TestGemm\$|TestHGemm\$|TestTopKManyRows|TestMatvecVariants|TestNormFused|TestMatMulAddGateUpFused|TestEmbed|TestRMSNorm|TestRope|TestArgmaxAndGather|TestTopK|TestPagedAttention|TestForwardBatchInvariance|TestPairKernel|TestAttention|TestAttentionDecodeRope|TestGraphReplayAndTracing|TestModelShapes}") >"$LOG/memcheck.log" 2>&1
  rc=$?
  say "memcheck: rc=$rc; $(grep -E "ERROR SUMMARY" "$LOG/memcheck.log" | tail -1); $(grep -c -- "^--- PASS" "$LOG/memcheck.log") tests passed under it [$(el)]"
  grep -E -- "--- FAIL|Invalid|out of bounds|Address" "$LOG/memcheck.log" | head -10 | sed 's/^/    /' | tee -a "$SUM"
fi

if has bench; then
  [ -n "$SYNTH" ] && wait $SYNTH
  say "synth: $(grep -c wrote "$LOG/synth.log") models [$(el)]"
  for m in tinyllama-q4_k_m llama3-8b-q4_k_m; do
    f=/tmp/$m.gguf
    [ -f "$f" ] || continue
    timeout 150 "$C/greta" bench --device cuda -m "$f" -p 512 -n 128 -r 3 >"$LOG/bench-$m.log" 2>&1
    say "bench $m: rc=$? [$(el)]"
    grep -E "^\| .*(pp|tg)" "$LOG/bench-$m.log" | tee -a "$SUM"
    GRETA_CUDA_GRAPH=0 timeout 60 "$C/greta" bench --device cuda -m "$f" -p 0 -n 128 -r 2 >"$LOG/bench-$m-nograph.log" 2>&1
    grep -E "^\| .*tg" "$LOG/bench-$m-nograph.log" | sed 's/$/ (graphs off)/' | tee -a "$SUM"
    grep -iE "error|panic" "$LOG/bench-$m.log" | head -5 | tee -a "$SUM"
  done
  f=/tmp/llama3-8b-q4_k_m.gguf
  [ -f "$f" ] && timeout 60 "$C/greta" run --device cuda -m "$f" -p "Once upon a time" -n 24 --greedy >"$LOG/run.log" 2>&1
  say "run llama3-8b-shape: rc=$? $(tail -c 300 "$LOG/run.log" | tr '\n' ' ')"
  f=/tmp/tinyllama-q4_k_m.gguf
  [ -f "$f" ] && timeout 60 "$C/greta" run --device cuda -m "$f" -p "Once upon a time" -n 3 --greedy --trace-out "$LOG/trace-tinyllama.jsonl" >"$LOG/trace-run.log" 2>&1
  say "traced run tinyllama-shape: rc=$? $(wc -l <"$LOG/trace-tinyllama.jsonl" 2>/dev/null) records"
  ls -la /tmp/*.gguf | awk '{print $5, $9}' >"$LOG/models.txt"
fi

if has profile; then
  [ -n "$SYNTH" ] && wait $SYNTH
  f=/tmp/llama3-8b-q4_k_m.gguf
  [ -f "$f" ] && GRETA_CUDA_PROFILE=1 timeout 60 "$C/greta" bench --device cuda -m "$f" -p 0 -n 64 -r 1 >"$LOG/profile-llama3.log" 2>&1
  say "profile llama3-8b decode: rc=$?"
  grep -A14 "cuda profile" "$LOG/profile-llama3.log" | tee -a "$SUM"
fi

if has bw; then
  (cd /tmp && GRETA_CUDA_BENCH=1 timeout 120 "$C/cuda.test" -test.run '^(TestKernelBandwidth|TestAttentionDecodeTime)$' -test.v -test.count=1) >"$LOG/bw.log" 2>&1
  say "bandwidth: rc=$? [$(el)]"
  grep "^BENCH" "$LOG/bw.log" | tee -a "$SUM"
fi

if has gemm; then
  (cd /tmp && GRETA_CUDA_BENCH=gemm timeout 150 "$C/cuda.test" -test.run '^TestGemmTime$' -test.v -test.count=1) >"$LOG/gemm.log" 2>&1
  say "gemm timing: rc=$? [$(el)]"
  grep "^BENCH" "$LOG/gemm.log" | tee -a "$SUM"
fi

if has ncu; then
  # Nsight Compute's view of one decode matvec launch.
  (cd /tmp && GRETA_CUDA_BENCH=${NCU_FORMAT:-Q4_K} timeout 240 ncu --kernel-name regex:"${NCU_KERNEL:-mvs_q4_k_r1u4w8}" --launch-skip 10 --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats --section MemoryWorkloadAnalysis --section InstructionStats \
    --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio \
    "$C/cuda.test" -test.run '^TestKernelBandwidth$' -test.count=1) >"$LOG/ncu.log" 2>&1
  say "ncu ${NCU_KERNEL:-mvs_q4_k_r1u4w8}: rc=$?"
  cuobjdump -sass -fun "${NCU_KERNEL:-mvs_q4_k_r1u4w8}" /tmp/greta-cubin/*.cubin >"$LOG/sass.txt" 2>&1
  # And the decode attention kernel inside a Llama-3-8B-shaped decode.
  f=/tmp/llama3-8b-q4_k_m.gguf
  [ -f "$f" ] && GRETA_CUDA_GRAPH=0 timeout 120 ncu --kernel-name regex:"${NCU_KERNEL2:-attn_dec_4_4}" --launch-skip 200 --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats \
    --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio \
    "$C/greta" bench --device cuda -m "$f" -p 0 -n 32 -r 1 >"$LOG/ncu2.log" 2>&1
  say "ncu ${NCU_KERNEL2:-attn_dec_4_4}: rc=$?"
  grep -E "Duration|Registers Per|Achieved Occupancy|Warp Cycles Per Issued|Grid Size|Block Size|Dynamic Shared|stalled_(long_scoreboard|short_scoreboard|wait|barrier|membar|lg_throttle|no_instruction|math_pipe)_per" "$LOG/ncu2.log" | sed 's/^ */    /' | tee -a "$SUM"
  grep -E "stalled_(long_scoreboard|short_scoreboard|wait|math_pipe_throttle|mio_throttle|lg_throttle|not_selected|selected|no_instruction|barrier|dispatch_stall|drain|tex_throttle|membar|branch_resolving)_per" "$LOG/ncu.log" | sed 's/^ */    /' | tee -a "$SUM"
  grep -E "Executed Instructions  |Duration|Throughput|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Issue Slots Busy|No Eligible|Registers Per|Block Limit|Eligible Warps|Active Warps|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth|Stall" "$LOG/ncu.log" | head -40 | sed 's/^ */    /' | tee -a "$SUM"
fi

# Everything in one archive (the device tool returns few files).
tar czf "$OUT/logs.tgz" -C "$LOG" . 2>/dev/null
echo "==== summary ($(el))"
cat "$SUM"
