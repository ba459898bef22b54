// hgemm.cu: the layers' products of prompt rows, on the tensor cores in f16.
//
// Prompt rows (the rows of ml.Batch that are not Gen) have numerics of
// their own, as on the CPU (docs/CUDA.md, Batches and invariance): x is
// rounded to f16 (normalized first by hprep when an RMSNorm is folded in
// front), the weight rows are dequantized to f16 by deq_* (exactly), and
// hgemm multiplies them with f16 MMA (mma.sync m16n8k16) accumulating in
// float32 over k in one fixed order: k tiles of 32 from 0 up, two k16
// steps a tile, into one accumulator. There is no split over k, and an
// MMA's output element depends only on its row of A and its column of B,
// so an output's bits depend on its x row and its weight row alone: not on
// the row count, the row's place in a tile, the chunk of weight rows, or
// the other rows of the launch.
//
// Tiling of the reference kernel hgemm: a block takes 128 x rows by 128
// weight rows (8 warps, 2 by 4, each 64 by 32: 4 x 4 MMA tiles of 16 x 8;
// or 64 weight rows, 4 warps: hgemm_n64), k tiles of 32 halves in a
// 3-stage cp.async ring (rows padded to 40 halves, so ldmatrix's eight
// 16-byte rows fall in distinct banks). Rows past n or r are filled with
// zeros by the copies and never stored. The variants (hgemm_tile, at the
// end) tile otherwise with the same arithmetic an output.

struct HPrepArgs {
  u64 x;      // [n][cols] float: the op's input, or the raw rows of a folded RMSNorm
  u64 normw;  // [cols] float: the RMSNorm's weight, or 0
  u64 xb;     // [n][cols] float: where the normalized rows go (the op's declared input), or 0
  u64 x16;    // [n][cols] f16: the rows for hgemm
  i64 n, cols;
  double eps;
};

// One block a row.
extern "C" __global__ void __launch_bounds__(256) hprep(const HPrepArgs a) {
  pdl_start();
  const i64 r = blockIdx.x;
  if (r >= a.n) return;
  const float* x = (const float*)a.x + r * a.cols;
  u16* o = (u16*)a.x16 + r * a.cols;
  if (!a.normw) {
    for (i64 i = threadIdx.x; i < a.cols; i += blockDim.x) o[i] = f2h(x[i]);
    return;
  }
  float ss = 0.f;
  for (i64 i = threadIdx.x; i < a.cols; i += blockDim.x) ss = fmaf(x[i], x[i], ss);
  ss = block_sum(ss);
  const float scale = 1.0f / sqrtf(__fadd_rn(__fdiv_rn(ss, (float)a.cols), (float)a.eps));
  const float* w = (const float*)a.normw;
  float* xb = a.xb ? (float*)a.xb + r * a.cols : nullptr;
  for (i64 i = threadIdx.x; i < a.cols; i += blockDim.x) {
    const float v = __fmul_rn(__fmul_rn(x[i], scale), w[i]);
    if (xb) xb[i] = v;
    o[i] = f2h(v);
  }
}

struct HGemmArgs {
  u64 x;      // [n][k] f16
  u64 w;      // [r][k] f16: weight rows (a chunk of them)
  u64 y;      // [n][ldy] float: y[i][j] for j < r (offset to the chunk's first row)
  u64 resid;  // [n][ldy] float, or 0: resid += y as well
  i64 n, r, k, ldy;
};

#define HG_BM 128
#define HG_BN 128
#define HG_BK 32
#define HG_LD 40
#define HG_ST 3

__device__ __forceinline__ void hg_cp16(u32 dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0) : "memory");
}

__device__ __forceinline__ void hg_ldsm4(u32 addr, u32* r) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void hg_mma(float* c, const u32* a, u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Grid: x over weight-row tiles, y over x-row tiles. WN warps along the
// weight rows (BN = 32·WN weight rows a block: 4 for hgemm, 2 for
// hgemm_n64; each output's arithmetic is the same in both. hgemm_n64 was
// meant for grids that do not fill the GPU twice, and measured slower:
// hgemm.go). Dynamic
// shared memory hgemmSmem (backend/cuda/hgemm.go). k must be a multiple of
// 32.
template <int WN>
__device__ __forceinline__ void hgemm_body(const HGemmArgs& a) {
  constexpr int BN = 32 * WN, THREADS = 64 * WN, AJ = (HG_BM * 4) / THREADS;
  extern __shared__ __align__(16) u8 hg_smem[];
  pdl_start();
  u16* As = (u16*)hg_smem;               // [HG_ST][HG_BM][HG_LD]
  u16* Bs = As + HG_ST * HG_BM * HG_LD;  // [HG_ST][BN][HG_LD]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / WN, wn = warp % WN;
  const i64 m0 = (i64)blockIdx.y * HG_BM, n0 = (i64)blockIdx.x * BN;
  const u16* X = (const u16*)a.x;
  const u16* W = (const u16*)a.w;
  const int KT = (int)(a.k / HG_BK);
  const u32 as0 = smem_addr(As), bs0 = smem_addr(Bs);

  // A stage is HG_BM·4 16-byte pieces of x and BN·4 of weights: AJ and two
  // a thread.
  auto load = [&](int s, int kt) {
#pragma unroll
    for (int j = 0; j < AJ; j++) {
      const int c = tid + j * THREADS;
      const int row = c >> 2, col = (c & 3) * 8;
      const i64 xr = m0 + row;
      const bool ok = xr < a.n;
      hg_cp16(as0 + (u32)((s * HG_BM + row) * HG_LD + col) * 2, ok ? X + xr * a.k + (i64)kt * HG_BK + col : X, ok);
    }
#pragma unroll
    for (int j = 0; j < 2; j++) {
      const int c = tid + j * THREADS;
      const int row = c >> 2, col = (c & 3) * 8;
      const i64 wr = n0 + row;
      const bool ok = wr < a.r;
      hg_cp16(bs0 + (u32)((s * BN + row) * HG_LD + col) * 2, ok ? W + wr * a.k + (i64)kt * HG_BK + col : W, ok);
    }
  };

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

#pragma unroll
  for (int s = 0; s < HG_ST - 1; s++) {
    if (s < KT) load(s, s);
    cp_commit();
  }
  for (int kt = 0; kt < KT; kt++) {
    cp_wait<HG_ST - 2>();
    __syncthreads();
    const int nk = kt + HG_ST - 1;
    if (nk < KT) load(nk % HG_ST, nk);
    cp_commit();
    const int s = kt % HG_ST;
#pragma unroll
    for (int kk = 0; kk < HG_BK; kk += 16) {
      u32 af[4][4], bf[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; mi++) {
        const int row = wm * 64 + mi * 16 + (lane & 15), col = kk + (lane >> 4) * 8;
        hg_ldsm4(as0 + (u32)((s * HG_BM + row) * HG_LD + col) * 2, af[mi]);
      }
#pragma unroll
      for (int nj = 0; nj < 2; nj++) {
        const int row = wn * 32 + nj * 16 + (lane & 7) + ((lane >> 4) << 3), col = kk + ((lane >> 3) & 1) * 8;
        u32 t[4];
        hg_ldsm4(bs0 + (u32)((s * BN + row) * HG_LD + col) * 2, t);
        bf[2 * nj][0] = t[0];
        bf[2 * nj][1] = t[1];
        bf[2 * nj + 1][0] = t[2];
        bf[2 * nj + 1][1] = t[3];
      }
#pragma unroll
      for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++) hg_mma(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
    }
  }
  cp_wait<0>();

  const int g = lane >> 2, t4 = lane & 3;
  float* Y = (float*)a.y;
  float* R = (float*)a.resid;
#pragma unroll
  for (int mi = 0; mi < 4; mi++)
#pragma unroll
    for (int ni = 0; ni < 4; ni++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const i64 row = m0 + wm * 64 + mi * 16 + g + 8 * h;
        const i64 col = n0 + wn * 32 + ni * 8 + 2 * t4;
        if (row >= a.n) continue;
#pragma unroll
        for (int e = 0; e < 2; e++) {
          if (col + e >= a.r) continue;
          const float v = acc[mi][ni][2 * h + e];
          const i64 o = row * a.ldy + col + e;
          Y[o] = v;
          if (R) R[o] = __fadd_rn(R[o], v);
        }
      }
}

extern "C" __global__ void __launch_bounds__(256, 2) hgemm(const HGemmArgs a) { hgemm_body<4>(a); }
extern "C" __global__ void __launch_bounds__(128, 4) hgemm_n64(const HGemmArgs a) { hgemm_body<2>(a); }

// ---- hgemm variants: one template, several tilings (hgemm.go
// hgemmVariants). The arithmetic of each output is the reference hgemm's:
// one float accumulator, m16n8k16 MMAs over k16 steps from 0 up, in order
// (a k tile of BK holds BK/16 of them, done in order; the k16 steps past k
// of a last partial tile are skipped, not multiplied by zeros). So every
// variant gives hgemm's bits at every shape (TestHGemmVariants).
//
// A block: BM x rows by BN weight rows, WM x WN warps, each (BM/WM) by
// (BN/WN): MI = BM/WM/16 by NI = BN/WN/8 MMA tiles. k tiles of BK halves
// in an ST-stage cp.async ring, rows padded to BK+8 halves (ldmatrix's
// eight 16-byte rows in distinct banks for BK 32 and 64). FB = 2 loads the
// next k16 step's fragments from shared memory before the MMAs of this
// one. The epilogue stores float2 pairs when y (and resid) and ldy allow.
// Dynamic shared memory ST·(BM+BN)·(BK+8)·2 bytes (hgemmVariant.smem).
// k must be a multiple of 32.
template <int BM, int BN, int WM, int WN, int BK, int ST, int FB>
__device__ __forceinline__ void hgemm_tile(const HGemmArgs& a) {
  constexpr int THREADS = 32 * WM * WN, TM = BM / WM, TN = BN / WN, MI = TM / 16, NI = TN / 8;
  constexpr int LD = BK + 8, CPR = BK / 8, AJ = BM * CPR / THREADS, BJ = BN * CPR / THREADS, KS = BK / 16;
  static_assert(AJ * THREADS == BM * CPR && BJ * THREADS == BN * CPR, "copies must divide among the threads");
  static_assert(TM % 16 == 0 && TN % 16 == 0 && BK % 32 == 0 && ST >= 2 && (FB == 1 || FB == 2), "tile shape");
  extern __shared__ __align__(16) u8 hg_smem[];
  pdl_start();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / WN, wn = warp % WN;
  const i64 m0 = (i64)blockIdx.y * BM, n0 = (i64)blockIdx.x * BN;
  const u16* X = (const u16*)a.x;
  const u16* W = (const u16*)a.w;
  const int KT = (int)((a.k + BK - 1) / BK);
  const u32 as0 = smem_addr(hg_smem), bs0 = as0 + (u32)(ST * BM * LD * 2);

  auto load = [&](int s, int kt) {
#pragma unroll
    for (int j = 0; j < AJ; j++) {
      const int c = tid + j * THREADS;
      const int row = c / CPR, col = (c % CPR) * 8;
      const i64 xr = m0 + row, kc = (i64)kt * BK + col;
      const bool ok = xr < a.n && (BK == 32 || kc < a.k);
      hg_cp16(as0 + (u32)((s * BM + row) * LD + col) * 2, ok ? X + xr * a.k + kc : X, ok);
    }
#pragma unroll
    for (int j = 0; j < BJ; j++) {
      const int c = tid + j * THREADS;
      const int row = c / CPR, col = (c % CPR) * 8;
      const i64 wr = n0 + row, kc = (i64)kt * BK + col;
      const bool ok = wr < a.r && (BK == 32 || kc < a.k);
      hg_cp16(bs0 + (u32)((s * BN + row) * LD + col) * 2, ok ? W + wr * a.k + kc : W, ok);
    }
  };

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; i++)
#pragma unroll
    for (int j = 0; j < NI; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

  // Each lane's ldmatrix row offsets (halves) within a stage.
  const int arow = wm * TM + (lane & 15), acol = (lane >> 4) * 8;
  const int brow = wn * TN + (lane & 7) + ((lane >> 4) << 3), bcol = ((lane >> 3) & 1) * 8;
  u32 af[FB][MI][4], bf[FB][NI][2];
  auto frags = [&](int f, int s, int kk) {
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
      hg_ldsm4(as0 + (u32)((s * BM + arow + mi * 16) * LD + kk + acol) * 2, af[f][mi]);
#pragma unroll
    for (int nj = 0; nj < NI / 2; nj++) {
      u32 t[4];
      hg_ldsm4(bs0 + (u32)((s * BN + brow + nj * 16) * LD + kk + bcol) * 2, t);
      bf[f][2 * nj][0] = t[0];
      bf[f][2 * nj][1] = t[1];
      bf[f][2 * nj + 1][0] = t[2];
      bf[f][2 * nj + 1][1] = t[3];
    }
  };

#pragma unroll
  for (int s = 0; s < ST - 1; s++) {
    if (s < KT) load(s, s);
    cp_commit();
  }
  for (int kt = 0; kt < KT; kt++) {
    cp_wait<ST - 2>();
    __syncthreads();
    const int nk = kt + ST - 1;
    if (nk < KT) load(nk % ST, nk);
    cp_commit();
    const int s = kt % ST;
    // k16 steps of this tile inside k (all of them but in a last tile of
    // a k that BK does not divide).
    const int ks = BK == 32 ? KS : (int)min((i64)KS, (a.k - (i64)kt * BK) / 16);
    if (FB == 2) frags(0, s, 0);
#pragma unroll
    for (int q = 0; q < KS; q++) {
      const int f = FB == 2 ? (q & 1) : 0;
      if (FB == 2) {
        if (q + 1 < KS) frags(f ^ 1, s, (q + 1) * 16);
      } else {
        frags(0, s, q * 16);
      }
      if (BK == 32 || q < ks) {
#pragma unroll
        for (int mi = 0; mi < MI; mi++)
#pragma unroll
          for (int ni = 0; ni < NI; ni++) hg_mma(acc[mi][ni], af[f][mi], bf[f][ni][0], bf[f][ni][1]);
      }
    }
  }
  cp_wait<0>();

  const int g = lane >> 2, t4 = lane & 3;
  float* Y = (float*)a.y;
  float* R = (float*)a.resid;
  const bool v2 = (a.ldy & 1) == 0 && (a.y & 7) == 0 && (a.resid & 7) == 0;
#pragma unroll
  for (int mi = 0; mi < MI; mi++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const i64 row = m0 + wm * TM + mi * 16 + g + 8 * h;
      if (row >= a.n) continue;
#pragma unroll
      for (int ni = 0; ni < NI; ni++) {
        const i64 col = n0 + wn * TN + ni * 8 + 2 * t4;
        const float v0 = acc[mi][ni][2 * h], v1 = acc[mi][ni][2 * h + 1];
        const i64 o = row * a.ldy + col;
        if (v2 && col + 1 < a.r) {
          *(float2*)(Y + o) = make_float2(v0, v1);
          if (R) {
            const float2 p = *(const float2*)(R + o);
            *(float2*)(R + o) = make_float2(__fadd_rn(p.x, v0), __fadd_rn(p.y, v1));
          }
          continue;
        }
        if (col < a.r) {
          Y[o] = v0;
          if (R) R[o] = __fadd_rn(R[o], v0);
        }
        if (col + 1 < a.r) {
          Y[o + 1] = v1;
          if (R) R[o + 1] = __fadd_rn(R[o + 1], v1);
        }
      }
    }
}

// HGEMM_VARIANT(BM, BN, WM, WN, BK, ST, FB, MINB) defines the kernel
// hgemm_<BM>x<BN>_w<WM>x<WN>_k<BK>_s<ST>_f<FB>, at least MINB blocks an SM.
// The list is hgemm.go's hgemmVariants (TestHGemmVariantNames).
#define HGEMM_VARIANT(BM, BN, WM, WN, BK, ST, FB, MINB)                                                      \
  extern "C" __global__ void __launch_bounds__(32 * WM * WN, MINB)                                          \
      hgemm_##BM##x##BN##_w##WM##x##WN##_k##BK##_s##ST##_f##FB(const HGemmArgs a) {                         \
    hgemm_tile<BM, BN, WM, WN, BK, ST, FB>(a);                                                              \
  }

HGEMM_VARIANT(128, 256, 2, 4, 32, 4, 2, 1)
HGEMM_VARIANT(256, 128, 4, 2, 32, 4, 2, 1)
HGEMM_VARIANT(128, 256, 2, 4, 64, 3, 2, 1)
HGEMM_VARIANT(128, 128, 2, 2, 32, 4, 2, 2)
HGEMM_VARIANT(128, 128, 2, 2, 64, 3, 2, 2)
HGEMM_VARIANT(128, 128, 2, 4, 32, 4, 1, 2)
HGEMM_VARIANT(128, 128, 2, 4, 64, 3, 1, 2)
HGEMM_VARIANT(64, 128, 2, 2, 32, 4, 2, 3)
