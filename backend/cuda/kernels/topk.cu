// topk.cu: the k largest values of each of some rows (Backend.TopK), so
// that sampling a step copies a few candidates a row to the host instead
// of whole logits rows: one launch and one copy for all of a step's rows.
//
// One block of 1024 threads a row (grid.y = rows). A radix select on the
// values' order-preserving 32-bit keys finds the key T of the k-th largest
// value, 8 bits a pass from the top (a 256-bin histogram of the values that
// match the digits found so far). A last pass in column order writes every
// value above T, then the first `need` values equal to T (the lowest ids
// win ties, as in ml.TopKHost). So the k candidates come out as those above
// T, then those equal to T, each in column order: equal values keep their
// column order, and the host, which sorts them (backend/cuda/topk.go),
// breaks ties by the index among the candidates. Then the block reads the
// row's gathered columns (the tokens a sampler's penalties touch).
//
// A row's k and gathered columns come from its description in the per-step
// values (desc), so a step's launch keeps its signature while they change.

#define TOPK_DESC 5  // int32s a row: x row, k, first entry, gather start (int32s from desc), gather count

struct TopKArgs {
  u64 x;     // [rows, n] float
  i64 n;     // values a row
  u64 desc;  // [grid.y] TOPK_DESC int32s, then the gather lists
  u64 out;   // entries: (column, value bits) int32 pairs
};

// A float's key: larger values have larger keys; -0 and +0 are one key.
__device__ __forceinline__ u32 topk_key(float f) {
  u32 u = __float_as_uint(f);
  if (u == 0x80000000u) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

#define TOPK_THREADS 1024

extern "C" __global__ void __launch_bounds__(TOPK_THREADS) topk(const TopKArgs a) {
  pdl_start();
  __shared__ u32 hist[256];
  __shared__ u32 sh_prefix, sh_need;
  __shared__ u32 wcnt[2][TOPK_THREADS / 32];
  const int* d = (const int*)a.desc + TOPK_DESC * blockIdx.y;
  const i64 n = a.n, k = d[1];
  const float* x = (const float*)a.x + n * d[0];
  int* out = (int*)a.out + 2 * (i64)d[2];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  u32 prefix = 0, mask = 0, need = (u32)k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += TOPK_THREADS) hist[i] = 0;
    __syncthreads();
    for (i64 i = threadIdx.x; i < n; i += TOPK_THREADS) {
      const u32 key = topk_key(x[i]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (warp == 0) {
      // Lane l holds bins 255-8l down to 248-8l; a scan over the lanes
      // finds the bin where the count from the top reaches need.
      u32 c[8], s = 0;
#pragma unroll
      for (int j = 0; j < 8; j++) {
        c[j] = hist[255 - 8 * lane - j];
        s += c[j];
      }
      u32 incl = s;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const u32 t = __shfl_up_sync(FULL_MASK, incl, o);
        if (lane >= o) incl += t;
      }
      u32 acc = incl - s;
      if (acc < need && need <= incl) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
          if (acc + c[j] >= need) {
            sh_prefix = prefix | ((u32)(255 - 8 * lane - j) << shift);
            sh_need = need - acc;
            break;
          }
          acc += c[j];
        }
      }
    }
    __syncthreads();
    prefix = sh_prefix;
    need = sh_need;
    mask |= 255u << shift;
  }
  // prefix is T; need values equal to T are taken after the k-need above it.
  const u32 T = prefix, ngt = (u32)k - need;
  const u32 below = (1u << lane) - 1u;
  u32 baseGt = 0, baseEq = 0;
  for (i64 c0 = 0; c0 < n; c0 += TOPK_THREADS) {
    const i64 i = c0 + threadIdx.x;
    const float v = i < n ? x[i] : 0.f;
    const u32 key = topk_key(v);
    const bool gt = i < n && key > T, eq = i < n && key == T;
    const u32 bg = __ballot_sync(FULL_MASK, gt), be = __ballot_sync(FULL_MASK, eq);
    if (lane == 0) {
      wcnt[0][warp] = __popc(bg);
      wcnt[1][warp] = __popc(be);
    }
    __syncthreads();
    u32 og = __popc(bg & below), oe = __popc(be & below), tg = 0, te = 0;
    for (int w = 0; w < TOPK_THREADS / 32; w++) {
      const u32 g = wcnt[0][w], e = wcnt[1][w];
      if (w < warp) og += g, oe += e;
      tg += g;
      te += e;
    }
    if (gt) {
      out[2 * (baseGt + og)] = (int)i;
      out[2 * (baseGt + og) + 1] = __float_as_int(v);
    }
    if (eq && baseEq + oe < need) {
      out[2 * (ngt + baseEq + oe)] = (int)i;
      out[2 * (ngt + baseEq + oe) + 1] = __float_as_int(v);
    }
    baseGt += tg;
    baseEq += te;
    __syncthreads();
  }
  const int* g = (const int*)a.desc + d[3];
  for (int j = threadIdx.x; j < d[4]; j += TOPK_THREADS) {
    out[2 * (k + j)] = g[j];
    out[2 * (k + j) + 1] = __float_as_int(x[g[j]]);
  }
}
