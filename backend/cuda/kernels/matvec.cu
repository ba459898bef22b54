// matvec.cu: y = W·x for a few activation rows (decode), every format.
//
// A block of MV_THREADS threads computes R consecutive output rows for all
// nx ≤ NX activation rows. Its threads split the row's units between them
// (unit u goes to thread u mod MV_THREADS), so the weight bytes of one
// output row are read by the whole block in coalesced 16-byte loads, and the
// x values a thread loads are reused for the block's R rows. Partial sums
// are reduced with warp shuffles and then across the block's warps.
//
// One launch can cover up to three weights of the same format and width
// that read the same x (q, k and v): blocks [0, blk1) do weight 0, [blk1,
// blk2) weight 1, [blk2, blk3) weight 2. With GU (SwiGLU), weight 0 is the
// gate and weight 1 the up projection of the same rows, and the block writes
// silu(gate·x)·(up·x). With resid set (one weight), it also adds y to
// resid: the output projections fused with their residual add.

#define MV_THREADS 128

struct MVArgs {
  u64 w0, w1, w2;           // weights
  u64 y0, y1, y2;           // outputs [nx][rows_i] float
  i64 rows0, rows1, rows2;  // rows of each weight
  i64 blk1, blk2, blk3;     // first block of weights 1 and 2; total blocks
  u64 x;                    // [nx][cols] float
  u64 resid;                // [nx][rows0] float, or 0
  i64 cols, nx;
  // RMSNorm fused in front (mvs/gus with one row): x is the raw input,
  // normalized by normw and eps while it is staged; block 0 also writes
  // the normalized row to xb, the op's declared input.
  u64 normw, xb;
  double eps;
};

template <class F, int NX, int R, bool GU>
__device__ __forceinline__ void matvec_body(const MVArgs& a) {
  constexpr int NW = GU ? 2 : 1;
  constexpr int WARPS = MV_THREADS / 32;
  __shared__ float red[WARPS][NW * R * NX];

  i64 b = blockIdx.x;
  const u8* W[NW];
  float* Y;
  i64 rows;
  if (GU) {
    W[0] = (const u8*)a.w0;
    W[NW - 1] = (const u8*)a.w1;
    Y = (float*)a.y0;
    rows = a.rows0;
  } else if (b >= a.blk2) {
    b -= a.blk2;
    W[0] = (const u8*)a.w2;
    Y = (float*)a.y2;
    rows = a.rows2;
  } else if (b >= a.blk1) {
    b -= a.blk1;
    W[0] = (const u8*)a.w1;
    Y = (float*)a.y1;
    rows = a.rows1;
  } else {
    W[0] = (const u8*)a.w0;
    Y = (float*)a.y0;
    rows = a.rows0;
  }
  const i64 row0 = b * R;
  const i64 cols = a.cols, nunits = cols / F::UNIT;
  const int nx = (int)a.nx;
  const float* x = (const float*)a.x;

  float acc[NW][R][NX];
#pragma unroll
  for (int wv = 0; wv < NW; wv++)
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int n = 0; n < NX; n++) acc[wv][r][n] = 0.f;

  for (i64 u = threadIdx.x; u < nunits; u += MV_THREADS) {
    typename F::Raw raw[NW][R];
#pragma unroll
    for (int wv = 0; wv < NW; wv++)
#pragma unroll
      for (int r = 0; r < R; r++)
        if (row0 + r < rows) F::load(raw[wv][r], W[wv], rows, cols, row0 + r, u);
#pragma unroll
    for (int n = 0; n < NX; n++) {
      if (n < nx) {
        float xv[F::UNIT];
        float xs[F::RUNS];
        const float* xr = x + n * cols;
#pragma unroll
        for (int run = 0; run < F::RUNS; run++) {
          const float* p = xr + F::xoff(u, run);
          float s = 0.f;
          if constexpr (F::RUNLEN % 4 == 0) {
#pragma unroll
            for (int i = 0; i < F::RUNLEN / 4; i++) {
              const float4 v = __ldg((const float4*)p + i);
              xv[run * F::RUNLEN + 4 * i + 0] = v.x;
              xv[run * F::RUNLEN + 4 * i + 1] = v.y;
              xv[run * F::RUNLEN + 4 * i + 2] = v.z;
              xv[run * F::RUNLEN + 4 * i + 3] = v.w;
              s += (v.x + v.y) + (v.z + v.w);
            }
          } else {
#pragma unroll
            for (int i = 0; i < F::RUNLEN; i++) {
              xv[run * F::RUNLEN + i] = __ldg(p + i);
              s += xv[run * F::RUNLEN + i];
            }
          }
          xs[run] = s;
        }
#pragma unroll
        for (int wv = 0; wv < NW; wv++)
#pragma unroll
          for (int r = 0; r < R; r++)
            if (row0 + r < rows) acc[wv][r][n] += F::dot(raw[wv][r], u, xv, xs);
      }
    }
  }

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int wv = 0; wv < NW; wv++)
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int n = 0; n < NX; n++) {
        const float v = warp_sum(acc[wv][r][n]);
        if (lane == 0) red[warp][(wv * R + r) * NX + n] = v;
      }
  __syncthreads();
  for (int i = threadIdx.x; i < R * NX; i += MV_THREADS) {
    const int r = i / NX, n = i % NX;
    const i64 row = row0 + r;
    if (row >= rows || n >= nx) continue;
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; w++) {
      s0 += red[w][r * NX + n];
      if (GU) s1 += red[w][(R + r) * NX + n];
    }
    const float out = GU ? silu(s0) * s1 : s0;
    Y[n * rows + row] = out;
    if (!GU && a.resid) ((float*)a.resid)[n * rows + row] += out;
  }
}

// Instantiations: NX=8 activation rows, one output row a block, for any
// row count (one included): a row's sums do not depend on how many rows
// the launch holds. kernels.go holds the same R.
#define MV_KERNELS(F, name)                                                                                   \
  extern "C" __global__ void __launch_bounds__(MV_THREADS) mv_##name##_8(const MVArgs a) {                    \
    pdl_start();                                                                                             \
    matvec_body<F, 8, 1, false>(a);                                                                           \
  }                                                                                                           \
  extern "C" __global__ void __launch_bounds__(MV_THREADS) gu_##name##_8(const MVArgs a) {                    \
    pdl_start();                                                                                             \
    matvec_body<F, 8, 1, true>(a);                                                                            \
  }

FORMATS(MV_KERNELS)

// ---- the decode matvec: one activation row, persistent warps, x staged in
// shared memory.
//
// Each warp owns R consecutive output rows (a group) at a time and walks
// the whole row with its 32 lanes, unit u = lane + 32·i (the order of the
// sum: see lane_unit), so no block-level
// reduction or barrier is needed. Warps stride over all groups of the
// launch (the grid holds only as many blocks as fit on the GPU at once), and
// the weight loads of the next step (the next units, or the next group's
// first) are issued before the current step's arithmetic, so a warp always
// has its next 16-byte loads in flight while it computes. Groups are
// numbered across the launch's weights: [0, blk1) are weight 0's, [blk1,
// blk2) weight 1's, [blk2, blk3) weight 2's.
//
// A lane's unit needs 32 x values that are contiguous in x, so the lanes
// of a warp would read 32 different 128-byte lines per load from global
// memory. Instead the block first copies x into shared memory in the order
// the lanes read it, [i][16 bytes k of the unit][lane], with the sum of each
// run beside it: each load is then one conflict-free 512-byte row. For the
// quantized formats x is staged as int16 with a scale per run, and the
// dots run two products per dp2a instruction (formats.cuh, idot): the
// float version spent its time converting nibbles to floats.
// Shared memory: mvsSmem in kernels.go.

template <class F, int R, bool GU>
struct MVBGroup {
  typename F::RowP rp[GU ? 2 : 1][R];
  float* y;
  i64 rows, row0;
};

template <class F, int R, bool GU>
__device__ __forceinline__ MVBGroup<F, R, GU> mvb_group(const MVArgs& a, i64 g) {
  MVBGroup<F, R, GU> m;
  const u8* w[2];
  if (GU) {
    w[0] = (const u8*)a.w0;
    w[1] = (const u8*)a.w1;
    m.y = (float*)a.y0;
    m.rows = a.rows0;
  } else if (g >= a.blk2) {
    g -= a.blk2;
    w[0] = (const u8*)a.w2;
    m.y = (float*)a.y2;
    m.rows = a.rows2;
  } else if (g >= a.blk1) {
    g -= a.blk1;
    w[0] = (const u8*)a.w1;
    m.y = (float*)a.y1;
    m.rows = a.rows1;
  } else {
    w[0] = (const u8*)a.w0;
    m.y = (float*)a.y0;
    m.rows = a.rows0;
  }
  m.row0 = g * R;
#pragma unroll
  for (int wv = 0; wv < (GU ? 2 : 1); wv++)
#pragma unroll
    for (int r = 0; r < R; r++) m.rp[wv][r] = F::rowp(w[wv], m.rows, a.cols, min(m.row0 + r, m.rows - 1));
  return m;
}

// mvs_stage stages one activation row x (cols values) into shared memory at
// xs4, in the layout below, normalized by g (RMSNorm with eps) when g is set;
// xb, when set, receives the normalized row. A row's staged values do not
// depend on the block size: each run is quantized by one thread, and with a
// norm the first 256 threads take the sum of squares in a fixed order
// (block_sum adds the other warps' exact zeros), so kernels of 8 and 16
// warps, and the many-row kernels, stage the same bits. Ends with a barrier.
// Lane l of a staged-x warp takes the units u ≡ l (mod 32), and the warp
// adds its 32 lane sums with warp_tree_sum, a butterfly from xor 1 up: the
// partial sums of units 2j and 2j+1 first, then those pairs' sums
// pairwise, and so on: the natural pairwise tree over u mod 32 ("classes"),
// which the GEMM (gemm.cu) rebuilds from contiguous ranges of units. (The
// tree was first had by giving lane l the units of its 5-bit reversal and
// keeping warp_sum's xor-16-first butterfly: the same bits, but a warp's
// 16-byte weight loads then scattered each quarter-warp over four 128-byte
// lines, and decode lost 7 % on the H200: 414 against 448 tok/s.)
// lane_unit and unit_slot name the lane's class and the unit's staging
// slot (both the identity now).
__device__ __forceinline__ int lane_unit(int lane) { return lane; }
__device__ __forceinline__ float warp_tree_sum(float v) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) v = __fadd_rn(v, __shfl_xor_sync(FULL_MASK, v, o));
  return v;
}
__device__ __forceinline__ int unit_slot(int u) { return u; }

template <class F>
__device__ __forceinline__ void mvs_stage(const float* x, const float* g, float eps, float* xb, float4* xs4, i64 cols) {
  constexpr int U4 = F::UNIT / 4, RL4 = F::RUNLEN / 4;
  const int nunits = (int)(cols / F::UNIT);
  const int iters = (nunits + 31) >> 5;
  float* xsum = (float*)(xs4 + (i64)iters * 32 * U4);
  // Quantized formats: x as int16, [i][uint4 k of the unit][lane], and per
  // unit a float4 (scale of run 0, of run 1, sum of run 0, of run 1) at
  // [i][lane]. Float formats: x as float, [i][float4 k][lane], and the run
  // sums [i][run][lane].
  constexpr int Q4 = F::UNIT / 8, RQ = F::RUNLEN / 8;
  uint4* xq4 = (uint4*)xs4;
  float4* sxq = (float4*)(xq4 + (i64)iters * 32 * Q4);
  if constexpr (F::IDOT) {
    // One pass over x: with a norm, v = x·g is quantized (a run's scale
    // does not depend on the norm's factor, which multiplies the scales
    // and sums once the block has summed x²).
    float ss = 0.f;
    const int nth = g ? 256 : (int)blockDim.x;
    for (i64 idx = threadIdx.x; idx < (i64)nunits * F::RUNS && (int)threadIdx.x < nth; idx += nth) {
      const int u = (int)(idx / F::RUNS), run = (int)(idx % F::RUNS);
      const i64 col = F::xoff(u, run);
      float v[F::RUNLEN];
#pragma unroll
      for (int k = 0; k < RL4; k++) {
        float4 t = __ldg((const float4*)(x + col) + k);
        if (g) {
          ss = fmaf(t.x, t.x, fmaf(t.y, t.y, fmaf(t.z, t.z, fmaf(t.w, t.w, ss))));
          const float4 w = __ldg((const float4*)(g + col) + k);
          t = make_float4(t.x * w.x, t.y * w.y, t.z * w.z, t.w * w.w);
        }
        v[4 * k] = t.x;
        v[4 * k + 1] = t.y;
        v[4 * k + 2] = t.z;
        v[4 * k + 3] = t.w;
      }
      float amax = 0.f, sum = 0.f;
#pragma unroll
      for (int i = 0; i < F::RUNLEN; i++) {
        amax = fmaxf(amax, fabsf(v[i]));
        sum += v[i];
      }
      const float inv = amax > 0.f ? 32767.f / amax : 0.f;
      const i64 base = (u >> 5) * Q4 + run * RQ;
#pragma unroll
      for (int k = 0; k < RQ; k++) {
        u32 wq[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
          const int q0 = max(-32767, min(32767, __float2int_rn(v[8 * k + 2 * j] * inv)));
          const int q1 = max(-32767, min(32767, __float2int_rn(v[8 * k + 2 * j + 1] * inv)));
          wq[j] = ((u32)q0 & 0xffffu) | ((u32)q1 << 16);
        }
        xq4[(base + k) * 32 + lane_unit(u & 31)] = make_uint4(wq[0], wq[1], wq[2], wq[3]);
      }
      float* sq = (float*)(sxq + unit_slot(u));
      sq[run] = amax / 32767.f;
      sq[2 + run] = sum;
    }
    if (g) {
      ss = block_sum(ss);  // also the barrier after the pass
      const float scale = 1.0f / sqrtf(ss / (float)cols + eps);
      for (int u = threadIdx.x; u < nunits; u += blockDim.x) {
        const float4 t = sxq[unit_slot(u)];
        sxq[unit_slot(u)] = make_float4(t.x * scale, t.y * scale, t.z * scale, t.w * scale);
      }
      if (xb) {
        float4* xb4 = (float4*)xb;
        for (i64 i = threadIdx.x; i < cols / 4; i += blockDim.x) {
          const float4 t = __ldg((const float4*)x + i), w = __ldg((const float4*)g + i);
          xb4[i] = make_float4(t.x * scale * w.x, t.y * scale * w.y, t.z * scale * w.z, t.w * scale * w.w);
        }
      }
    }
    __syncthreads();
  } else {
    float scale = 1.f;
    if (g) {
      float ss = 0.f;
      if (threadIdx.x < 256)
        for (i64 i = threadIdx.x; i < cols; i += 256) ss = fmaf(x[i], x[i], ss);
      ss = block_sum(ss);
      scale = 1.0f / sqrtf(ss / (float)cols + eps);
    }
    for (i64 idx = threadIdx.x; idx < (i64)nunits * U4; idx += blockDim.x) {
      const int u = (int)(idx / U4);
      const int rem = (int)(idx % U4), run = rem / RL4, k = rem % RL4;
      const i64 col = F::xoff(u, run) + 4 * k;
      float4 v = __ldg((const float4*)(x + col));
      if (g) {
        const float4 w = __ldg((const float4*)(g + col));
        v = make_float4(v.x * scale * w.x, v.y * scale * w.y, v.z * scale * w.z, v.w * scale * w.w);
        if (xb) *(float4*)(xb + col) = v;
      }
      xs4[((u >> 5) * U4 + rem) * 32 + lane_unit(u & 31)] = v;
    }
    __syncthreads();
    for (i64 idx = threadIdx.x; idx < (i64)nunits * F::RUNS; idx += blockDim.x) {
      const int u = (int)(idx / F::RUNS);
      const int run = (int)(idx % F::RUNS);
      float s = 0.f;
#pragma unroll
      for (int k = 0; k < RL4; k++) {
        const float4 v = xs4[((u >> 5) * U4 + run * RL4 + k) * 32 + lane_unit(u & 31)];
        s += (v.x + v.y) + (v.z + v.w);
      }
      xsum[((u >> 5) * F::RUNS + run) * 32 + lane_unit(u & 31)] = s;
    }
    __syncthreads();
  }
}

// bid and nblk are this block's index and the number of blocks doing a
// (blockIdx.x and gridDim.x, unless a launch does two weights' formats).
template <class F, int R, int U, int W, bool GU>
__device__ __forceinline__ void mvs_body(const MVArgs& a, int bid, int nblk) {
  constexpr int NW = GU ? 2 : 1;
  constexpr int U4 = F::UNIT / 4, RL4 = F::RUNLEN / 4;
  typedef typename F::Raw Raw;
  extern __shared__ float4 xs4[];
  const int lane = threadIdx.x & 31;
  const i64 cols = a.cols;
  const int nunits = (int)(cols / F::UNIT);
  const int iters = (nunits + 31) >> 5;
  float* xsum = (float*)(xs4 + (i64)iters * 32 * U4);
  const i64 ngroups = a.blk3, gstride = (i64)nblk * W;
  i64 grp = (i64)bid * W + (threadIdx.x >> 5);
  const int lu = lane_unit(lane);  // the lane's units are lu + 32·i
  const typename F::Lane ln = F::lane_of(lu);

  // The first weights are on their way while x is staged.
  Raw raw[U][NW][R];
  MVBGroup<F, R, GU> cur = mvb_group<F, R, GU>(a, grp < ngroups ? grp : 0);
  auto load = [&](int it0) {
#pragma unroll
    for (int j = 0; j < U; j++) {
      const int u = lu + 32 * (it0 + j);
      if (it0 + j < iters && u < nunits) {
#pragma unroll
        for (int wv = 0; wv < NW; wv++)
#pragma unroll
          for (int r = 0; r < R; r++) F::loadl(raw[j][wv][r], cur.rp[wv][r], ln, u);
      }
    }
  };
  if (grp < ngroups) load(0);
  // Everything above reads only weights; x is the previous kernel's.
  pdl_wait();

  mvs_stage<F>((const float*)a.x, (const float*)a.normw, (float)a.eps, bid == 0 ? (float*)a.xb : nullptr, xs4, cols);
  constexpr int Q4 = F::UNIT / 8;
  const uint4* xq4 = (const uint4*)xs4;
  const float4* sxq = (const float4*)(xq4 + (i64)iters * 32 * Q4);
  if (grp >= ngroups) return;

  // Each group: the lane's units of its R rows, U at a time, all U loads
  // issued before the first is used.
  for (;;) {
    // This warp's last group: the next kernel may start filling the SMs
    // this block leaves.
    if (grp + gstride >= ngroups) pdl_trigger();
    float acc[NW][R];
#pragma unroll
    for (int wv = 0; wv < NW; wv++)
#pragma unroll
      for (int r = 0; r < R; r++) acc[wv][r] = 0.f;
    for (int it0 = 0; it0 < iters; it0 += U) {
      if (it0 > 0) load(it0);
#pragma unroll
      for (int j = 0; j < U; j++) {
        const int it = it0 + j, u = lu + 32 * it;
        if (it < iters && u < nunits) {
          if constexpr (F::IDOT) {
            u32 xq[F::UNIT / 2];
            float sx[F::RUNS], xs[F::RUNS];
#pragma unroll
            for (int k = 0; k < Q4; k++) {
              const uint4 v = xq4[(it * Q4 + k) * 32 + lane];
              xq[4 * k + 0] = v.x;
              xq[4 * k + 1] = v.y;
              xq[4 * k + 2] = v.z;
              xq[4 * k + 3] = v.w;
            }
            const float4 sq = sxq[it * 32 + lane];
            sx[0] = sq.x;
            xs[0] = sq.z;
            if constexpr (F::RUNS == 2) {
              sx[F::RUNS - 1] = sq.y;
              xs[F::RUNS - 1] = sq.w;
            }
#pragma unroll
            for (int wv = 0; wv < NW; wv++)
#pragma unroll
              for (int r = 0; r < R; r++) acc[wv][r] = __fadd_rn(acc[wv][r], F::idotl(raw[j][wv][r], ln, xq, sx, xs));
          } else {
            float xv[F::UNIT];
            float xs[F::RUNS];
#pragma unroll
            for (int k = 0; k < U4; k++) {
              const float4 v = xs4[(it * U4 + k) * 32 + lane];
              xv[4 * k + 0] = v.x;
              xv[4 * k + 1] = v.y;
              xv[4 * k + 2] = v.z;
              xv[4 * k + 3] = v.w;
            }
#pragma unroll
            for (int run = 0; run < F::RUNS; run++) xs[run] = xsum[(it * F::RUNS + run) * 32 + lane];
#pragma unroll
            for (int wv = 0; wv < NW; wv++)
#pragma unroll
              for (int r = 0; r < R; r++) acc[wv][r] += F::dot(raw[j][wv][r], u, xv, xs);
          }
        }
      }
    }
    // The next group's first loads go out before this one's reduction.
    const MVBGroup<F, R, GU> done = cur;
    grp += gstride;
    const bool more = grp < ngroups;
    if (more) {
      cur = mvb_group<F, R, GU>(a, grp);
      load(0);
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
      const float s0 = warp_tree_sum(acc[0][r]);
      const float s1 = GU ? warp_tree_sum(acc[NW - 1][r]) : 0.f;
      const i64 row = done.row0 + r;
      if (lane == r && row < done.rows) {
        const float out = GU ? silu(s0) * s1 : s0;
        done.y[row] = out;
        if (!GU && a.resid) ((float*)a.resid)[row] += out;
      }
    }
    if (!more) break;
  }
}

// R rows a warp, U units of each in flight, W warps a block, at least B
// blocks an SM (a register cap). kernels.go
// holds the same table; the one-value float formats (f16s, bf16s, f32s)
// have none and use mv_*_1.
#define MVS_KERNEL(F, name, R, U, W, B)                                                                            \
  extern "C" __global__ void __launch_bounds__(W * 32, B) mvs_##name##_r##R##u##U##w##W##b##B(const MVArgs a) {   \
    mvs_body<F, R, U, W, false>(a, blockIdx.x, gridDim.x);                                                                                \
  }
#define GUS_KERNEL(F, name, R, U, W, B)                                                                            \
  extern "C" __global__ void __launch_bounds__(W * 32, B) gus_##name##_r##R##u##U##w##W##b##B(const MVArgs a) {   \
    mvs_body<F, R, U, W, true>(a, blockIdx.x, gridDim.x);                                                                                 \
  }
#define MVS_KERNELS(F, name)       \
  MVS_KERNEL(F, name, 1, 4, 8, 1)  \
  MVS_KERNEL(F, name, 1, 4, 8, 3)  \
  MVS_KERNEL(F, name, 1, 2, 8, 3)  \
  MVS_KERNEL(F, name, 2, 2, 8, 2)  \
  MVS_KERNEL(F, name, 1, 4, 16, 1) \
  GUS_KERNEL(F, name, 1, 4, 8, 1)  \
  GUS_KERNEL(F, name, 1, 4, 16, 1)

VFORMATS(MVS_KERNELS)

// ---- many activation rows with the decode kernels' numerics: mvn/gun.
//
// Block (x, y) stages activation rows y·NX .. y·NX+NX-1 (mvs_stage, each in
// its own region of shared memory) and its warps stride over output rows
// as in mvs_body, one output row a warp, reading each weight unit once for
// all NX rows. Each (output row, activation row) sum is the same sequence
// of operations as mvs_body's for that row alone (the same staged x, the
// same units per lane in the same order, the same warp sum), so a row's
// result is bitwise the same whatever the row count: a decode row alone,
// beside other sequences' rows, or inside a prompt chunk.
#define MVN_WARPS 8

template <class F>
__device__ __forceinline__ i64 mvn_region(i64 cols) {
  const i64 nu = ((cols / F::UNIT + 31) >> 5) * 32;  // float4s of one staged row (mvsSmem)
  return F::IDOT ? nu * (F::UNIT / 8 + 1) : nu * (F::UNIT + F::RUNS) / 4;
}

template <class F, int NX, bool GU>
__device__ __forceinline__ void mvn_body(const MVArgs& a) {
  constexpr int NW = GU ? 2 : 1, U = 2, W = MVN_WARPS;
  constexpr int U4 = F::UNIT / 4, Q4 = F::UNIT / 8;
  typedef typename F::Raw Raw;
  extern __shared__ float4 xs4[];
  const int lane = threadIdx.x & 31;
  const i64 cols = a.cols;
  const int nunits = (int)(cols / F::UNIT);
  const int iters = (nunits + 31) >> 5;
  const i64 region = mvn_region<F>(cols);
  const i64 x0 = (i64)blockIdx.y * NX;
  const int nx = (int)min((i64)NX, a.nx - x0);
  const i64 ngroups = a.blk3, gstride = (i64)gridDim.x * W;
  i64 grp = (i64)blockIdx.x * W + (threadIdx.x >> 5);
  const int lu = lane_unit(lane);  // the lane's units are lu + 32·i
  const typename F::Lane ln = F::lane_of(lu);

  Raw raw[U][NW][1];
  MVBGroup<F, 1, GU> cur = mvb_group<F, 1, GU>(a, grp < ngroups ? grp : 0);
  auto load = [&](int it0) {
#pragma unroll
    for (int j = 0; j < U; j++) {
      const int u = lu + 32 * (it0 + j);
      if (it0 + j < iters && u < nunits) {
#pragma unroll
        for (int wv = 0; wv < NW; wv++) F::loadl(raw[j][wv][0], cur.rp[wv][0], ln, u);
      }
    }
  };
  if (grp < ngroups) load(0);
  pdl_wait();
  for (int n = 0; n < nx; n++) {
    const i64 xr = x0 + n;
    const float* x = (const float*)a.x + xr * cols;
    float* xb = blockIdx.x == 0 && a.xb ? (float*)a.xb + xr * cols : nullptr;
    mvs_stage<F>(x, (const float*)a.normw, (float)a.eps, xb, xs4 + n * region, cols);
  }
  if (grp >= ngroups) return;

  for (;;) {
    if (grp + gstride >= ngroups) pdl_trigger();
    float acc[NX][NW];
#pragma unroll
    for (int n = 0; n < NX; n++)
#pragma unroll
      for (int wv = 0; wv < NW; wv++) acc[n][wv] = 0.f;
    for (int it0 = 0; it0 < iters; it0 += U) {
      if (it0 > 0) load(it0);
#pragma unroll
      for (int j = 0; j < U; j++) {
        const int it = it0 + j, u = lu + 32 * it;
        if (it < iters && u < nunits) {
#pragma unroll
          for (int n = 0; n < NX; n++) {
            if (n >= nx) break;
            const float4* rs = xs4 + n * region;
            if constexpr (F::IDOT) {
              const uint4* xq4 = (const uint4*)rs;
              const float4* sxq = (const float4*)(xq4 + (i64)iters * 32 * Q4);
              u32 xq[F::UNIT / 2];
              float sx[F::RUNS], xs[F::RUNS];
#pragma unroll
              for (int k = 0; k < Q4; k++) {
                const uint4 v = xq4[(it * Q4 + k) * 32 + lane];
                xq[4 * k + 0] = v.x;
                xq[4 * k + 1] = v.y;
                xq[4 * k + 2] = v.z;
                xq[4 * k + 3] = v.w;
              }
              const float4 sq = sxq[it * 32 + lane];
              sx[0] = sq.x;
              xs[0] = sq.z;
              if constexpr (F::RUNS == 2) {
                sx[F::RUNS - 1] = sq.y;
                xs[F::RUNS - 1] = sq.w;
              }
#pragma unroll
              for (int wv = 0; wv < NW; wv++) acc[n][wv] = __fadd_rn(acc[n][wv], F::idotl(raw[j][wv][0], ln, xq, sx, xs));
            } else {
              const float* xsum = (const float*)(rs + (i64)iters * 32 * U4);
              float xv[F::UNIT];
              float xs[F::RUNS];
#pragma unroll
              for (int k = 0; k < U4; k++) {
                const float4 v = rs[(it * U4 + k) * 32 + lane];
                xv[4 * k + 0] = v.x;
                xv[4 * k + 1] = v.y;
                xv[4 * k + 2] = v.z;
                xv[4 * k + 3] = v.w;
              }
#pragma unroll
              for (int run = 0; run < F::RUNS; run++) xs[run] = xsum[(it * F::RUNS + run) * 32 + lane];
#pragma unroll
              for (int wv = 0; wv < NW; wv++) acc[n][wv] += F::dot(raw[j][wv][0], u, xv, xs);
            }
          }
        }
      }
    }
    const MVBGroup<F, 1, GU> done = cur;
    grp += gstride;
    const bool more = grp < ngroups;
    if (more) {
      cur = mvb_group<F, 1, GU>(a, grp);
      load(0);
    }
#pragma unroll
    for (int n = 0; n < NX; n++) {
      if (n >= nx) break;
      const float s0 = warp_tree_sum(acc[n][0]);
      const float s1 = GU ? warp_tree_sum(acc[n][NW - 1]) : 0.f;
      const i64 row = done.row0;
      if (lane == 0 && row < done.rows) {
        const float out = GU ? silu(s0) * s1 : s0;
        const i64 o = (x0 + n) * done.rows + row;
        done.y[o] = out;
        if (!GU && a.resid) ((float*)a.resid)[o] += out;
      }
    }
    if (!more) break;
  }
}

#define MVN_KERNEL(F, name, NX)                                                                        \
  extern "C" __global__ void __launch_bounds__(MVN_WARPS * 32, 1) mvn_##name##_##NX(const MVArgs a) {   \
    mvn_body<F, NX, false>(a);                                                                          \
  }                                                                                                     \
  extern "C" __global__ void __launch_bounds__(MVN_WARPS * 32, 1) gun_##name##_##NX(const MVArgs a) {   \
    mvn_body<F, NX, true>(a);                                                                           \
  }
#define MVN_KERNELS(F, name) MVN_KERNEL(F, name, 2) MVN_KERNEL(F, name, 4) MVN_KERNEL(F, name, 8)

VFORMATS(MVN_KERNELS)

// Two formats in one launch: the q and k projections in one format and v
// in another (Q4_K_M and Q5_K_M files keep v in Q6_K in some layers).
// Blocks [0, nb0) do a0's weights with F0's kernel, the others a1's with
// F1's, each with its own staged x; the launch saves the second kernel's
// start and drain. Each side keeps its format's decode variant
// (kernels.go: pairKernels).
struct MV2Args {
  MVArgs a0, a1;
  i64 nb0;
};

#define MVS2_KERNEL(F0, n0, R0, U0, F1, n1, R1, U1)                                                         \
  extern "C" __global__ void __launch_bounds__(256, 2) mvs2_##n0##_##n1(const MV2Args p) {                  \
    if ((i64)blockIdx.x < p.nb0)                                                                           \
      mvs_body<F0, R0, U0, 8, false>(p.a0, blockIdx.x, (int)p.nb0);                                        \
    else                                                                                                   \
      mvs_body<F1, R1, U1, 8, false>(p.a1, blockIdx.x - (int)p.nb0, gridDim.x - (int)p.nb0);               \
  }

MVS2_KERNEL(Q4K, q4_k, 1, 4, Q6K, q6_k, 2, 2)
MVS2_KERNEL(Q5K, q5_k, 1, 4, Q6K, q6_k, 2, 2)

// ---- dequantization: embedding rows, and f16 copies of weights for the
// tensor-core GEMMs of prefill.

struct DeqArgs {
  u64 w;           // weight
  i64 rows, cols;  // its shape
  u64 out;         // [nrows][cols] float (f16out=0) or f16
  i64 row0, nrows; // rows row0.. (tokens = 0), or rows tokens[0..nrows)
  u64 tokens;      // int32 token ids, or 0
  i64 f16out;
};

// Grid: x covers a row's units (256 threads a block), y strides over rows.
template <class F>
__device__ __forceinline__ void deq_body(const DeqArgs& a) {
  const i64 nunits = a.cols / F::UNIT;
  const i64 u = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (u >= nunits) return;
  for (i64 r = blockIdx.y; r < a.nrows; r += gridDim.y) {
    i64 row = a.tokens ? (i64)((const int*)a.tokens)[r] : a.row0 + r;
    float v[F::UNIT];
    if (row >= 0 && row < a.rows) {
      typename F::Raw raw;
      F::load(raw, (const u8*)a.w, a.rows, a.cols, row, u);
      F::deq(raw, u, v);
    } else {
#pragma unroll
      for (int i = 0; i < F::UNIT; i++) v[i] = 0.f;  // an id outside the table: never read past it
    }
#pragma unroll
    for (int run = 0; run < F::RUNS; run++) {
      const i64 o = r * a.cols + F::xoff(u, run);
      const float* vr = v + run * F::RUNLEN;
      if (a.f16out) {
        u16* out = (u16*)a.out + o;
        if constexpr (F::RUNLEN % 8 == 0) {
#pragma unroll
          for (int i = 0; i < F::RUNLEN; i += 8) {
            uint4 pk;
            pk.x = (u32)f2h(vr[i + 0]) | ((u32)f2h(vr[i + 1]) << 16);
            pk.y = (u32)f2h(vr[i + 2]) | ((u32)f2h(vr[i + 3]) << 16);
            pk.z = (u32)f2h(vr[i + 4]) | ((u32)f2h(vr[i + 5]) << 16);
            pk.w = (u32)f2h(vr[i + 6]) | ((u32)f2h(vr[i + 7]) << 16);
            *(uint4*)(out + i) = pk;
          }
        } else {
#pragma unroll
          for (int i = 0; i < F::RUNLEN; i++) out[i] = f2h(vr[i]);
        }
      } else {
        float* out = (float*)a.out + o;
        if constexpr (F::RUNLEN % 4 == 0) {
#pragma unroll
          for (int i = 0; i < F::RUNLEN; i += 4) *(float4*)(out + i) = make_float4(vr[i], vr[i + 1], vr[i + 2], vr[i + 3]);
        } else {
#pragma unroll
          for (int i = 0; i < F::RUNLEN; i++) out[i] = vr[i];
        }
      }
    }
  }
}

#define DEQ_KERNELS(F, name) \
  extern "C" __global__ void __launch_bounds__(256) deq_##name(const DeqArgs a) { \
    pdl_start();                                                                      \
    deq_body<F>(a);                                                                   \
  }

FORMATS(DEQ_KERNELS)
