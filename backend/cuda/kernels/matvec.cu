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

// Instantiations: NX=1 (decode) reads R=4 rows a block (2 for SwiGLU, which
// reads two weights); NX=8 (small batches) one row. kernels.go holds the
// same R values.
#define MV_KERNELS(F, name)                                                                                   \
  extern "C" __global__ void __launch_bounds__(MV_THREADS) mv_##name##_1(const MVArgs a) {                    \
    matvec_body<F, 1, 4, false>(a);                                                                           \
  }                                                                                                           \
  extern "C" __global__ void __launch_bounds__(MV_THREADS) mv_##name##_8(const MVArgs a) {                    \
    matvec_body<F, 8, 1, false>(a);                                                                           \
  }                                                                                                           \
  extern "C" __global__ void __launch_bounds__(MV_THREADS) gu_##name##_1(const MVArgs a) {                    \
    matvec_body<F, 1, 2, true>(a);                                                                            \
  }                                                                                                           \
  extern "C" __global__ void __launch_bounds__(MV_THREADS) gu_##name##_8(const MVArgs a) {                    \
    matvec_body<F, 8, 1, true>(a);                                                                            \
  }

FORMATS(MV_KERNELS)

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
  extern "C" __global__ void __launch_bounds__(256) deq_##name(const DeqArgs a) { deq_body<F>(a); }

FORMATS(DEQ_KERNELS)
