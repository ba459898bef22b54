# gen.py OUT [FILE...]: the kernel sources (by default common.cuh,
# formats.cuh, matvec.cu, gemm.cu) for the CPU emulator: the PTX helpers
# are cut out (emu.h has their twins) and dynamic shared memory points at
# the emulator's buffer.
import os, re, sys
K = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'kernels')
files = sys.argv[2:] or ['common.cuh', 'formats.cuh', 'matvec.cu', 'gemm.cu']
src = ''.join(open(os.path.join(K, f)).read() + '\n' for f in files)

def remove(src, name):
    m = re.search(r'(template <[^>]*>\s*\n)?__device__ __forceinline__ [\w ]+\b' + name + r'\(', src)
    assert m, name
    i, d = src.index('{', m.end()), 0
    for j in range(i, len(src)):
        if src[j] == '{':
            d += 1
        elif src[j] == '}':
            d -= 1
            if d == 0:
                break
    return src[:m.start()] + src[j + 1:]

gemm_only = ['smem_addr', 'cp16', 'cp4', 'cp_commit', 'cp_wait', 'mma8']
for n in ['h2f', 'f2h', 'dp2a_lo', 'dp2a_hi', 'dp2a_lo_u', 'dp2a_hi_u', 'ld_stream', 'ld_nc'] + gemm_only:
    if n in gemm_only and 'gemm.cu' not in files:
        continue
    src = remove(src, n)
src = src.replace('extern __shared__ float4 xs4[];', 'float4* xs4 = (float4*)emu_smem;')
src = src.replace('extern __shared__ float4 gsm[];', 'float4* gsm = (float4*)emu_smem;')
open(sys.argv[1], 'w').write(src)
