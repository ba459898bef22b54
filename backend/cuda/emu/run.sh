#!/bin/sh
# run.sh [format [rows]]: builds and runs the CPU emulation of the staged-x
# kernels and the GEMM (no GPU needed; g++ with C++17): for each format,
# every GEMM output (plain, norm folded in, residual, GateUp, three weights;
# splits 1, 2, 16) must have the bits of the one-row kernel. Slow (every
# CUDA thread is a fiber): minutes a format.
set -e
D=$(cd "$(dirname "$0")" && pwd)
T=${TMPDIR:-/tmp}/greta-emu
mkdir -p "$T"
python3 "$D/gen.py" "$T/kern.inc"
g++ -std=c++17 -O1 -ffp-contract=off -w -I"$T" -o "$T/emu" "$D/main.cpp" "$D/emu.cpp"
if [ $# -gt 0 ]; then exec "$T/emu" "$@"; fi
for f in q4_k q5_k q6_k q8_0 q4_0; do "$T/emu" $f 40; done
