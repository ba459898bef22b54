// ops.cu: the small ops: RMSNorm, rope, the KV-cache store, argmax, and the
// elementwise epilogues of the GEMM path.

struct NormArgs {
  u64 x, w, y;  // x, y [rows][cols]; w [cols]
  i64 rows, cols;
  double eps;
};

// One block a row: y = x / sqrt(mean(x²) + eps) ⊙ w.
extern "C" __global__ void __launch_bounds__(1024) rmsnorm(const NormArgs a) {
  pdl_start();
  const i64 r = blockIdx.x;
  if (r >= a.rows) return;
  const float* x = (const float*)a.x + r * a.cols;
  float* y = (float*)a.y + r * a.cols;
  const float* w = (const float*)a.w;
  float ss = 0.f;
  for (i64 i = threadIdx.x; i < a.cols; i += blockDim.x) ss = fmaf(x[i], x[i], ss);
  ss = block_sum(ss);
  const float s = 1.0f / sqrtf(ss / (float)a.cols + (float)a.eps);
  for (i64 i = threadIdx.x; i < a.cols; i += blockDim.x) y[i] = x[i] * s * w[i];
}

struct RopeArgs {
  u64 x0;       // [rows][ld0] float, heads0 heads of hd values
  i64 heads0, ld0;
  u64 x1;       // a second tensor (k), or 0
  i64 heads1, ld1;
  i64 rows, hd, npairs;
  u64 freqs;    // [npairs] double
  u64 bat;      // the batch (common.cuh): row r's position is bat[r]
  double pos_scale;
};

// Rotates pair i of every head of row r by pos[r]·pos_scale·freq[i]
// (ggml's normal mode: values 2i and 2i+1). Grid: x over (heads0+heads1)·
// npairs pairs, y strides over rows.
extern "C" __global__ void __launch_bounds__(128) rope(const RopeArgs a) {
  pdl_start();
  const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  const i64 n0 = a.heads0 * a.npairs, total = n0 + a.heads1 * a.npairs;
  if (idx >= total) return;
  const i64 local = idx < n0 ? idx : idx - n0;
  const i64 head = local / a.npairs, i = local % a.npairs;
  const double freq = ((const double*)a.freqs)[i];
  for (i64 r = blockIdx.y; r < a.rows; r += gridDim.y) {
    float* p = (idx < n0 ? (float*)a.x0 + r * a.ld0 : (float*)a.x1 + r * a.ld1) + head * a.hd + 2 * i;
    float c, s;
    rope_cs(((const int*)a.bat)[r], a.pos_scale, freq, c, s);
    rope_rot(p[0], p[1], c, s, p[0], p[1]);
  }
}

struct RopeKVArgs {
  u64 q;        // [rows][ldq] float, hq heads
  i64 hq, ldq;
  u64 k, v;     // [rows][kvdim] float, hk heads
  i64 hk;
  u64 kc, vc;   // the layer's cache [slots][kvdim] f16 (or float, kv32)
  i64 rows, hd, npairs, nseq;
  u64 freqs;    // [npairs] double
  u64 bat;      // the batch (common.cuh)
  double pos_scale;
  i64 kv32;
};

// Rope of q and k, and the store of k and v into the cache through the
// rows' page tables, in one launch. Grid: x over hq·npairs q pairs, hk·hd/2
// k pairs (rotated or not) and hk·hd v values; y strides over rows.
extern "C" __global__ void __launch_bounds__(128) rope_kv(const RopeKVArgs a) {
  pdl_start();
  const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  const int half = (int)(a.hd >> 1);
  const i64 nq = a.hq * a.npairs, nk = a.hk * half, nv = a.hk * a.hd, kvdim = a.hk * a.hd;
  if (idx >= nq + nk + nv) return;
  for (i64 r = blockIdx.y; r < a.rows; r += gridDim.y) {
    const BatchRow br = batch_row(a.bat, a.rows, a.nseq, r);
    const i64 p = br.pos;
    if (idx < nq) {
      const i64 head = idx / a.npairs, i = idx % a.npairs;
      float* x = (float*)a.q + r * a.ldq + head * a.hd + 2 * i;
      float c, s;
      rope_cs(p, a.pos_scale, ((const double*)a.freqs)[i], c, s);
      rope_rot(x[0], x[1], c, s, x[0], x[1]);
    } else if (idx < nq + nk) {
      const i64 l = idx - nq, head = l / half, i = l % half;
      float* x = (float*)a.k + r * kvdim + head * a.hd + 2 * i;
      float x0 = x[0], x1 = x[1];
      if (i < a.npairs) {
        float c, s;
        rope_cs(p, a.pos_scale, ((const double*)a.freqs)[i], c, s);
        rope_rot(x0, x1, c, s, x0, x1);
        x[0] = x0;
        x[1] = x1;
      }
      const i64 o = kv_slot(br.pages, p) * kvdim + head * a.hd + 2 * i;
      kv_put(a.kc, o, x0, a.kv32);
      kv_put(a.kc, o + 1, x1, a.kv32);
    } else {
      const i64 l = idx - nq - nk;
      kv_put(a.vc, kv_slot(br.pages, p) * kvdim + l, ((const float*)a.v)[r * kvdim + l], a.kv32);
    }
  }
}

struct KVStoreArgs {
  u64 k, v;     // [rows][kvdim] float
  u64 kc, vc;   // the layer's cache [slots][kvdim] f16 (or float, kv32)
  i64 rows, kvdim, nseq;
  u64 bat;      // the batch (common.cuh)
  i64 kv32;
};

// Grid: x over kvdim, y strides over rows.
extern "C" __global__ void __launch_bounds__(256) kv_store(const KVStoreArgs a) {
  pdl_start();
  const i64 d = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= a.kvdim) return;
  for (i64 r = blockIdx.y; r < a.rows; r += gridDim.y) {
    const BatchRow br = batch_row(a.bat, a.rows, a.nseq, r);
    const i64 o = kv_slot(br.pages, br.pos) * a.kvdim + d;
    kv_put(a.kc, o, ((const float*)a.k)[r * a.kvdim + d], a.kv32);
    kv_put(a.vc, o, ((const float*)a.v)[r * a.kvdim + d], a.kv32);
  }
}

struct GatherArgs {
  u64 src, dst;  // [*][cols] float
  i64 cols, nrows;
  u64 idx;       // int32 [nrows]: dst row i = src row idx[i]
};

// Grid: x over cols, y strides over the rows gathered.
extern "C" __global__ void __launch_bounds__(256) gather_rows(const GatherArgs a) {
  pdl_start();
  const i64 c = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= a.cols) return;
  for (i64 r = blockIdx.y; r < a.nrows; r += gridDim.y) {
    const i64 s = ((const int*)a.idx)[r];
    ((float*)a.dst)[r * a.cols + c] = ((const float*)a.src)[s * a.cols + c];
  }
}

struct ArgmaxArgs {
  u64 x;  // [rows][cols] float
  i64 rows, cols;
  u64 out;       // [rows] int32
  u64 part;      // [rows][nb] (value, index) pairs
  u64 counters;  // [rows] int, zero between launches
  i64 nb;        // blocks a row
};

__device__ __forceinline__ void amax_merge(float& bv, int& bi, float v, int i) {
  if (v > bv || (v == bv && i < bi)) bv = v, bi = i;
}

// Grid (nb, rows), 256 threads: each block scans a slice of its row, four
// loads in flight a thread; the last block of a row to finish merges the
// slices. The first index wins ties, as in the oracle.
extern "C" __global__ void __launch_bounds__(256) argmax(const ArgmaxArgs a) {
  pdl_start();
  __shared__ float bv[8];
  __shared__ int bi[8];
  __shared__ int last;
  const i64 r = blockIdx.y;
  const float* x = (const float*)a.x + r * a.cols;
  const i64 slice = (a.cols + a.nb - 1) / a.nb;
  const i64 c0 = blockIdx.x * slice, c1 = min(c0 + slice, a.cols);
  float best = NEG_INF;
  int idx = 0x7fffffff;
  for (i64 i = c0 + threadIdx.x; i < c1; i += 4 * 256) {
    float v[4];
#pragma unroll
    for (int k = 0; k < 4; k++) v[k] = i + 256 * k < c1 ? x[i + 256 * k] : NEG_INF;
#pragma unroll
    for (int k = 0; k < 4; k++)
      if (i + 256 * k < c1) amax_merge(best, idx, v[k], (int)(i + 256 * k));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(FULL_MASK, best, o);
    const int oi = __shfl_xor_sync(FULL_MASK, idx, o);
    amax_merge(best, idx, ov, oi);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) bv[warp] = best, bi[warp] = idx;
  __syncthreads();
  float2* part = (float2*)a.part + r * a.nb;
  if (threadIdx.x == 0) {
    for (int w = 1; w < 8; w++) amax_merge(best, idx, bv[w], bi[w]);
    part[blockIdx.x] = make_float2(best, __int_as_float(idx));
    __threadfence();
    last = atomicAdd((int*)a.counters + r, 1) == (int)a.nb - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  best = NEG_INF;
  idx = 0x7fffffff;
  for (i64 b = threadIdx.x; b < a.nb; b += 256) {
    const float2 p = __ldcg(part + b);
    amax_merge(best, idx, p.x, __float_as_int(p.y));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(FULL_MASK, best, o);
    const int oi = __shfl_xor_sync(FULL_MASK, idx, o);
    amax_merge(best, idx, ov, oi);
  }
  __syncthreads();
  if (lane == 0) bv[warp] = best, bi[warp] = idx;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < 8; w++) amax_merge(best, idx, bv[w], bi[w]);
    ((int*)a.out)[r] = idx == 0x7fffffff ? 0 : idx;
    ((int*)a.counters)[r] = 0;
  }
}

struct EltArgs {
  u64 a, b, out;
  i64 n;
};

// out = a + b (out may be a).
extern "C" __global__ void __launch_bounds__(256) add_f32(const EltArgs e) {
  pdl_start();
  const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < e.n) ((float*)e.out)[i] = ((const float*)e.a)[i] + ((const float*)e.b)[i];
}

// out = silu(a) ⊙ b.
extern "C" __global__ void __launch_bounds__(256) silu_mul(const EltArgs e) {
  pdl_start();
  const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < e.n) ((float*)e.out)[i] = silu(((const float*)e.a)[i]) * ((const float*)e.b)[i];
}

// out (f16) = a (f32).
extern "C" __global__ void __launch_bounds__(256) to_f16(const EltArgs e) {
  pdl_start();
  const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < e.n) ((u16*)e.out)[i] = f2h(((const float*)e.a)[i]);
}

// ---- the ops of the families beyond llama (family.go): per-head and
// residual-adding RMSNorm, biases, scale with softcap, GELU-gated products,
// NEOX rope, and attention through a sliding window or with softcapped
// scores.

struct NormSegArgs {
  u64 x, w, y;  // x, y [rows][cols]; w [seg]
  i64 rows, cols, seg;
  double eps;
  i64 add;  // 0: y = norm(x)·w; 1: y += norm(x)·w
};

// One block a segment of seg values of a row (grid x: rows·cols/seg):
// Qwen3's and Gemma 3's RMSNorm of each head of q and k (seg = head size,
// y may be x), and Gemma's norms after the attention and the feed-forward
// added to the residual (seg = cols, add).
extern "C" __global__ void __launch_bounds__(1024) rmsnorm_seg(const NormSegArgs a) {
  pdl_start();
  const i64 nseg = a.cols / a.seg;
  const i64 r = blockIdx.x / nseg, s0 = (blockIdx.x % nseg) * a.seg;
  if (r >= a.rows) return;
  const float* x = (const float*)a.x + r * a.cols + s0;
  float* y = (float*)a.y + r * a.cols + s0;
  const float* w = (const float*)a.w;
  float ss = 0.f;
  for (i64 i = threadIdx.x; i < a.seg; i += blockDim.x) ss = fmaf(x[i], x[i], ss);
  ss = block_sum(ss);
  const float sc = 1.0f / sqrtf(ss / (float)a.seg + (float)a.eps);
  for (i64 i = threadIdx.x; i < a.seg; i += blockDim.x) {
    const float v = x[i] * sc * w[i];
    if (a.add)
      y[i] += v;
    else
      y[i] = v;
  }
}

struct BiasArgs {
  u64 x[3];     // [rows][cols[i]] float, added to in place
  u64 b[3];     // [cols[i]] float
  i64 cols[3];
  i64 n, rows;  // tensors (1..3), rows
};

// x[i][r] += b[i] for up to three tensors (Qwen2's q, k and v biases in
// one launch). Grid: x over the columns of all tensors, y strides over rows.
extern "C" __global__ void __launch_bounds__(256) add_bias(const BiasArgs a) {
  pdl_start();
  i64 c = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  int t = 0;
  while (t < a.n && c >= a.cols[t]) c -= a.cols[t++];
  if (t >= a.n) return;
  float* x = (float*)a.x[t];
  const float bias = ((const float*)a.b[t])[c];
  for (i64 r = blockIdx.y; r < a.rows; r += gridDim.y) x[r * a.cols[t] + c] += bias;
}

struct ScaleArgs {
  u64 x;
  i64 n;
  double s, cap;  // x = s·x, then cap·tanh(x/cap) when cap > 0 (as float)
};

// Gemma's embedding scale (√dim) and final logit softcap, in place.
extern "C" __global__ void __launch_bounds__(256) scale_cap(const ScaleArgs a) {
  pdl_start();
  const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= a.n) return;
  const float sc = (float)a.s, cap = (float)a.cap;
  float v = ((float*)a.x)[i] * sc;
  if (cap > 0.f) v = cap * tanhf(v * (1.0f / cap));
  ((float*)a.x)[i] = v;
}

// gelu(x) with the tanh approximation, in float (ggml_gelu).
__device__ __forceinline__ float gelu_tanh(float x) {
  return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

// out = gelu(a) ⊙ b (GeGLU after the gate and up products).
extern "C" __global__ void __launch_bounds__(256) gelu_mul(const EltArgs e) {
  pdl_start();
  const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < e.n) ((float*)e.out)[i] = gelu_tanh(((const float*)e.a)[i]) * ((const float*)e.b)[i];
}

// NEOX rope: pair i of a head is values i and i+npairs (the first
// 2·npairs values rotate, the rest stay). Same grid and arguments as rope.
extern "C" __global__ void __launch_bounds__(128) rope_neox(const RopeArgs a) {
  pdl_start();
  const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  const i64 n0 = a.heads0 * a.npairs, total = n0 + a.heads1 * a.npairs;
  if (idx >= total) return;
  const i64 local = idx < n0 ? idx : idx - n0;
  const i64 head = local / a.npairs, i = local % a.npairs;
  const double freq = ((const double*)a.freqs)[i];
  for (i64 r = blockIdx.y; r < a.rows; r += gridDim.y) {
    float* p = (idx < n0 ? (float*)a.x0 + r * a.ld0 : (float*)a.x1 + r * a.ld1) + head * a.hd;
    float c, s;
    rope_cs(((const int*)a.bat)[r], a.pos_scale, freq, c, s);
    rope_rot(p[i], p[i + a.npairs], c, s, p[i], p[i + a.npairs]);
  }
}

// rope_kv with NEOX pairs: k's pair i < npairs is values (i, i+npairs),
// rotated; pair i ≥ npairs is values (2i, 2i+1), stored as they are. Same
// grid and arguments as rope_kv.
extern "C" __global__ void __launch_bounds__(128) rope_kv_neox(const RopeKVArgs a) {
  pdl_start();
  const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  const int half = (int)(a.hd >> 1);
  const i64 nq = a.hq * a.npairs, nk = a.hk * half, nv = a.hk * a.hd, kvdim = a.hk * a.hd;
  if (idx >= nq + nk + nv) return;
  for (i64 r = blockIdx.y; r < a.rows; r += gridDim.y) {
    const BatchRow br = batch_row(a.bat, a.rows, a.nseq, r);
    const i64 p = br.pos;
    if (idx < nq) {
      const i64 head = idx / a.npairs, i = idx % a.npairs;
      float* x = (float*)a.q + r * a.ldq + head * a.hd;
      float c, s;
      rope_cs(p, a.pos_scale, ((const double*)a.freqs)[i], c, s);
      rope_rot(x[i], x[i + a.npairs], c, s, x[i], x[i + a.npairs]);
    } else if (idx < nq + nk) {
      const i64 l = idx - nq, head = l / half, i = l % half;
      const i64 d0 = i < a.npairs ? i : 2 * i, d1 = i < a.npairs ? i + a.npairs : 2 * i + 1;
      float* x = (float*)a.k + r * kvdim + head * a.hd;
      float x0 = x[d0], x1 = x[d1];
      if (i < a.npairs) {
        float c, s;
        rope_cs(p, a.pos_scale, ((const double*)a.freqs)[i], c, s);
        rope_rot(x0, x1, c, s, x0, x1);
        x[d0] = x0;
        x[d1] = x1;
      }
      const i64 o = kv_slot(br.pages, p) * kvdim + head * a.hd;
      kv_put(a.kc, o + d0, x0, a.kv32);
      kv_put(a.kc, o + d1, x1, a.kv32);
    } else {
      const i64 l = idx - nq - nk;
      kv_put(a.vc, kv_slot(br.pages, p) * kvdim + l, ((const float*)a.v)[r * kvdim + l], a.kv32);
    }
  }
}

struct AttnWinArgs {
  u64 q;        // [rows][nh·hd] float
  u64 kc, vc;   // the layer's cache [slots][kvdim] f16 (or float, kv32)
  u64 out;      // [rows][nh·hd] float
  u64 bat;      // the batch (common.cuh)
  i64 rows, nseq, nh, nkv, hd;
  double scale, softcap;  // score = scale·q·k, then softcap·tanh(score/softcap) when softcap > 0 (as float)
  i64 window;   // > 0: the last window positions only
  i64 kv32;
};

#define ATTW_WARPS 4

// Attention of one query head of one row (grid: rows × heads, 4 warps) over
// positions lo..pos of its sequence, lo = pos−window+1 with a window:
// Gemma's windowed and softcapped layers and Mistral's window. Each warp
// takes every fourth position with an online softmax (its running max, sum
// and value accumulator, a lane holding values lane, lane+32, ... of a
// head of up to 256); the four are merged at the end. The order of every
// sum depends on the row's position alone, so a row's result is the same
// in any batch.
extern "C" __global__ void __launch_bounds__(ATTW_WARPS * 32) attn_window(const AttnWinArgs a) {
  pdl_start();
  __shared__ float sm[ATTW_WARPS], sl[ATTW_WARPS], sacc[ATTW_WARPS][256];
  const i64 r = blockIdx.x, h = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const BatchRow br = batch_row(a.bat, a.rows, a.nseq, r);
  const i64 pos = br.pos;
  const i64 lo = a.window > 0 && pos + 1 > a.window ? pos + 1 - a.window : 0;
  const i64 kvdim = a.nkv * a.hd, koff = (h / (a.nh / a.nkv)) * a.hd;
  const int per = (int)((a.hd + 31) / 32);  // values a lane holds, ≤ 8
  const float* q = (const float*)a.q + r * a.nh * a.hd + h * a.hd;
  float qv[8], acc[8];
#pragma unroll
  for (int j = 0; j < 8; j++) {
    const i64 d = lane + 32 * j;
    qv[j] = j < per && d < a.hd ? q[d] : 0.f;
    acc[j] = 0.f;
  }
  const float scale = (float)a.scale, cap = (float)a.softcap;
  float m = NEG_INF, l = 0.f;
  for (i64 t = lo + warp; t <= pos; t += ATTW_WARPS) {
    const i64 base = kv_slot(br.pages, t) * kvdim + koff;
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const i64 d = lane + 32 * j;
      if (j < per && d < a.hd) s = fmaf(qv[j], kv_get(a.kc, base + d, a.kv32), s);
    }
    s = warp_sum(s) * scale;
    if (cap > 0.f) s = cap * tanhf(s * (1.0f / cap));
    const float mn = fmaxf(m, s);
    const float corr = expf(m - mn), e = expf(s - mn);
    l = l * corr + e;
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const i64 d = lane + 32 * j;
      if (j < per && d < a.hd) acc[j] = fmaf(e, kv_get(a.vc, base + d, a.kv32), acc[j] * corr);
    }
    m = mn;
  }
  if (lane == 0) sm[warp] = m, sl[warp] = l;
#pragma unroll
  for (int j = 0; j < 8; j++) {
    const i64 d = lane + 32 * j;
    if (j < per && d < a.hd) sacc[warp][d] = acc[j];
  }
  __syncthreads();
  if (warp != 0) return;
  float M = NEG_INF;
  for (int w = 0; w < ATTW_WARPS; w++) M = fmaxf(M, sm[w]);
  float L = 0.f, f[ATTW_WARPS];
  for (int w = 0; w < ATTW_WARPS; w++) {
    f[w] = sm[w] == NEG_INF ? 0.f : expf(sm[w] - M);  // a warp that saw no position
    L += sl[w] * f[w];
  }
  float* out = (float*)a.out + r * a.nh * a.hd + h * a.hd;
  for (int j = 0; j < per; j++) {
    const i64 d = lane + 32 * j;
    if (d >= a.hd) break;
    float v = 0.f;
    for (int w = 0; w < ATTW_WARPS; w++) v = fmaf(sacc[w][d], f[w], v);
    out[d] = v / L;
  }
}
