#!/bin/sh
# topk.sh: builds and runs the CPU emulation of the batched top-k kernel
# (topk.cpp; no GPU needed; g++ with C++17). A minute or so.
set -e
D=$(cd "$(dirname "$0")" && pwd)
T=${TMPDIR:-/tmp}/greta-emu
mkdir -p "$T"
python3 "$D/gen.py" "$T/topk.inc" common.cuh topk.cu
g++ -std=c++17 -O1 -w -I"$T" -o "$T/topk" "$D/topk.cpp" "$D/emu.cpp"
exec "$T/topk"
