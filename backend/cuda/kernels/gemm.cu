// gemm.cu: the quantized matmul for 2–512 activation rows on the tensor
// cores, with the bits of the one-row decode kernel (mvs, matvec.cu).
//
// What mvs computes for one output row o and one activation row x: x is
// staged as int16 with a float scale per run of 16 values (mvs_stage);
// lane l of a warp takes the units u ≡ lane_unit(l) (mod 32) in order,
// and for each unit the exact integer sums s_r = Σ q·xq of its runs feed
// the format's float epilogue F::fin (formats.cuh), accumulated in the
// lane (acc = acc + fin(...)); the warp's butterfly then adds the 32 lane
// sums in the natural pairwise tree over u mod 32 ("classes": classes 2j
// and 2j+1 first, then pairs of pairs).
//
// This kernel computes the same numbers for a tile of 128 weight rows × 32
// activation rows: the integer sums come from int8 MMA (mma.sync m16n8k16
// .s32, exact), with x's int16 split into a signed high byte and an
// unsigned low byte (xq = 256·hi + lo: two products, s = 256·s_hi + s_lo,
// exact in int32); the float epilogue is F::fin on the same inputs, in the
// same order. A block walks its classes one pair (2j, 2j+1) at a time, all
// units of the pair in order (u = 32·it + 2j, +1: 32 contiguous bytes of
// each weight row a step), keeping one accumulator per class, and folds
// finished pairs into the tree with a binary counter (a stack of 4
// levels). So every output has exactly mvs's sequence of roundings,
// whatever the tile, the row count or the split.
//
// Split over classes: a block may take only the classes [32·sp/S,
// 32·(sp+1)/S) (S = nsplit, a power of two up to 16): a complete subtree.
// Its partial goes to part[sp][n][·], and gemm_fin adds the S partials in
// the tree's remaining levels. S only spreads small products over more
// SMs; it never changes a bit.
//
// Weights and x go through shared memory in GEMM_STAGES stages
// (cp.async): per step a block copies its 128 rows' bytes of the two
// units and the two units' staged x for its 32 activation rows. x is
// staged once per launch by xstage (mvs_stage, so a row's int16 values and
// scales are mvs's bits; with the RMSNorm folded in as in mvs) into
// xq: [unit][npad][t][run][hi word, lo word] (the B fragments: thread t of
// an MMA holds values 4t..4t+3 of a run), then [unit][npad] float4 (scale
// of run 0, run 1, sum of run 0, run 1).
//
// Warps: 8, each 16 weight rows × 32 activation rows (4 MMA tiles of 8
// columns; tiles past the batch skipped). GateUp: warps 0-3 take gate rows
// and 4-7 the same up rows; the pair meets in shared memory (or in
// gemm_fin), out = silu(gate)·up as gun writes it.

#define GEMM_WARPS 8
#define GEMM_NT 4                // MMA tiles of 8 activation rows a warp
#define GEMM_TN (8 * GEMM_NT)    // activation rows a block
#define GEMM_TO (16 * GEMM_WARPS)  // weight rows a block
#define GEMM_STAGES 4
#define GEMM_MAXSPLIT 16

struct GemmArgs {
  u64 w0, w1, w2;           // weights (GateUp: gate, up)
  u64 y0, y1, y2;           // outputs [n][rows_i] float
  i64 rows0, rows1, rows2;  // rows of each weight
  i64 t1, t2, t3;           // first tile of weights 1, 2; total tiles (weight-row tiles)
  u64 xq;                   // staged x (xstage)
  u64 resid;                // [n][rows0] float, or 0
  i64 cols, n, npad;        // weight row width, activation rows, rows of xq
  i64 nsplit;               // S
  u64 part;                 // [S][n][ptot] partials when S > 1
  i64 ptot;                 // rows0+rows1+rows2 (GateUp: 2·rows0)
};

// ---- cp.async

__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}
__device__ __forceinline__ void cp16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// ---- int8 MMA: d = A·B, A 16×16 (rows g, g+8 in a0, a1; bytes 4t..4t+3),
// B 16×8 (column g, bytes 4t..4t+3), d (g, 2t), (g, 2t+1), (g+8, 2t),
// (g+8, 2t+1). AS: A signed (Q8_0) or unsigned; B signed (x's high
// bytes) or unsigned (low bytes).
template <bool AS, bool BS>
__device__ __forceinline__ void mma8(int* d, u32 a0, u32 a1, u32 b) {
  const int z = 0;
  if (AS && BS)
    asm("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%7,%7,%7};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(a0), "r"(a1), "r"(b), "r"(z));
  else if (AS)
    asm("mma.sync.aligned.m16n8k16.row.col.s32.s8.u8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%7,%7,%7};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(a0), "r"(a1), "r"(b), "r"(z));
  else if (BS)
    asm("mma.sync.aligned.m16n8k16.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%7,%7,%7};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(a0), "r"(a1), "r"(b), "r"(z));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.s32.u8.u8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%7,%7,%7};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(a0), "r"(a1), "r"(b), "r"(z));
}

// ---- each format's side of the GEMM: which bytes of a row a step copies
// (NCH chunks into WB bytes of the stage), the A fragment words of a unit
// (thread t: word t of the unit's 16 bytes, per run, as mvs's idotl forms
// them), and the unit's weight scales (F::WS, as idotl gets them). par is
// the parity of the step's first f16 d index (row·dblocks + dblk(u0)): d
// planes are copied four bytes at a time. The two units of a step are 2k,
// 2k+1.

struct GQ4K {
  typedef Q4K F;
  static constexpr int NCH = 3, WB = 48;
  static constexpr bool SHARED_WS = true, AS = false;  // units 2k, 2k+1 share their sub-blocks' scales
  static __device__ __forceinline__ bool valid(int k, int u0, int nunits) { return true; }
  static __device__ __forceinline__ void chunk(u8* d, const u8* w, i64 rows, i64 cols, i64 row, int u0, int k) {
    const u8* b = w + (row * (cols >> 8) + (u0 >> 3)) * 144;
    if (k < 2)
      cp16(d + 16 * k, b + 16 + 16 * ((u0 & 7) + k));
    else
      cp16(d + 32, b);
  }
  static __device__ __forceinline__ i64 dblocks(i64 cols) { return 0; }
  static __device__ __forceinline__ int dblk(int u0) { return 0; }
  static __device__ __forceinline__ void frag(const u8* s, int u, int i, int t, u32* a) {
    const u32 w = *(const u32*)(s + 16 * i + 4 * t);
    a[0] = w & 0x0F0F0F0Fu;
    a[1] = w & 0xF0F0F0F0u;  // 16·q, as idotl
  }
  static __device__ __forceinline__ F::WS ws(const u8* s, int u, int i, int par) {
    F::WS w;
    k4scalesl(*(const uint4*)(s + 32), k4lane(u & 7), w.d1, w.m1, w.d2, w.m2);
    return w;
  }
};

struct GQ5K {
  typedef Q5K F;
  static constexpr int NCH = 5, WB = 80;
  static constexpr bool SHARED_WS = true, AS = false;
  static __device__ __forceinline__ bool valid(int k, int u0, int nunits) { return true; }
  static __device__ __forceinline__ void chunk(u8* d, const u8* w, i64 rows, i64 cols, i64 row, int u0, int k) {
    const u8* b = w + (row * (cols >> 8) + (u0 >> 3)) * 176;
    if (k < 2)
      cp16(d + 16 * k, b + 48 + 16 * ((u0 & 7) + k));  // qs of units u0, u0+1
    else if (k < 4)
      cp16(d + 32 + 16 * (k - 2), b + 16 + 16 * (k - 2));  // qh: both halves
    else
      cp16(d + 64, b);
  }
  static __device__ __forceinline__ i64 dblocks(i64 cols) { return 0; }
  static __device__ __forceinline__ int dblk(int u0) { return 0; }
  static __device__ __forceinline__ void frag(const u8* s, int u, int i, int t, u32* a) {
    const u32 qw = *(const u32*)(s + 16 * i + 4 * t);
    const u32 hw = *(const u32*)(s + 32 + 16 * (u & 1) + 4 * t);
    const int sh = 2 * ((u & 7) >> 1);
    a[0] = (qw & 0x0F0F0F0Fu) | (((hw >> sh) & 0x01010101u) << 4);
    a[1] = ((qw >> 4) & 0x0F0F0F0Fu) | (((hw >> (sh + 1)) & 0x01010101u) << 4);
  }
  static __device__ __forceinline__ F::WS ws(const u8* s, int u, int i, int par) {
    F::WS w;
    k4scalesl(*(const uint4*)(s + 64), k4lane(u & 7), w.d1, w.m1, w.d2, w.m2);
    return w;
  }
};

struct GQ6K {
  typedef Q6K F;
  static constexpr int NCH = 6, WB = 96;  // ql 32, qh 32, scales 16, d 4
  static constexpr bool SHARED_WS = false, AS = false;
  static __device__ __forceinline__ bool valid(int k, int u0, int nunits) { return true; }
  static __device__ __forceinline__ void chunk(u8* d, const u8* w, i64 rows, i64 cols, i64 row, int u0, int k) {
    const i64 nb = cols >> 8, bi = row * nb + (u0 >> 3);
    const int c = u0 & 7, h = c >> 2, j = c & 3;  // j even
    const u8* a = w + bi * 192;
    if (k < 2)
      cp16(d + 16 * k, a + 64 * h + 16 * (j + k));
    else if (k < 4)
      cp16(d + 32 + 16 * (k - 2), a + 128 + 32 * h + 16 * (k - 2));
    else if (k == 4)
      cp16(d + 64, w + rows * nb * 192 + bi * 16);
    else
      cp4(d + 80, w + rows * nb * 208 + ((bi * 2) & ~(i64)3));
  }
  static __device__ __forceinline__ i64 dblocks(i64 cols) { return cols >> 8; }
  static __device__ __forceinline__ int dblk(int u0) { return u0 >> 3; }
  static __device__ __forceinline__ void frag(const u8* s, int u, int i, int t, u32* a) {
    const u32 qw = *(const u32*)(s + 16 * i + 4 * t);
    const u32 hw = *(const u32*)(s + 32 + 16 * i + 4 * t);
    const int sh = 2 * ((u & 3) >> 1);
    a[0] = (qw & 0x0F0F0F0Fu) | (((hw >> sh) & 0x03030303u) << 4);
    a[1] = ((qw >> 4) & 0x0F0F0F0Fu) | (((hw >> (sh + 4)) & 0x03030303u) << 4);
  }
  static __device__ __forceinline__ F::WS ws(const u8* s, int u, int i, int par) {
    const uint4 sc = *(const uint4*)(s + 64);
    const bool h = (u & 7) >= 4;
    const u32 d = (*(const u32*)(s + 80) >> (16 * par)) & 0xffffu;
    return F::wsw(h ? sc.z : sc.x, h ? sc.w : sc.y, d, 24 - 8 * (u & 3));
  }
};

struct GQ80 {
  typedef Q80 F;
  static constexpr int NCH = 3, WB = 48;  // the block's 32 quants, d
  static constexpr bool SHARED_WS = true, AS = true;
  static __device__ __forceinline__ bool valid(int k, int u0, int nunits) { return true; }
  static __device__ __forceinline__ void chunk(u8* d, const u8* w, i64 rows, i64 cols, i64 row, int u0, int k) {
    const i64 nb = cols >> 5, bi = row * nb + (u0 >> 1);
    if (k < 2)
      cp16(d + 16 * k, w + bi * 32 + 16 * k);
    else
      cp4(d + 32, w + rows * nb * 32 + ((bi * 2) & ~(i64)3));
  }
  static __device__ __forceinline__ i64 dblocks(i64 cols) { return cols >> 5; }
  static __device__ __forceinline__ int dblk(int u0) { return u0 >> 1; }
  static __device__ __forceinline__ void frag(const u8* s, int u, int i, int t, u32* a) { a[0] = *(const u32*)(s + 16 * i + 4 * t); }
  static __device__ __forceinline__ F::WS ws(const u8* s, int u, int i, int par) {
    return {h2f((u16)((*(const u32*)(s + 32) >> (16 * par)) & 0xffffu))};
  }
};

struct GQ40 {
  typedef Q40 F;
  static constexpr int NCH = 4, WB = 48;  // two blocks' quants, their d
  static constexpr bool SHARED_WS = false, AS = false;
  static __device__ __forceinline__ bool valid(int k, int u0, int nunits) { return u0 + (k & 1) < nunits; }
  static __device__ __forceinline__ void chunk(u8* d, const u8* w, i64 rows, i64 cols, i64 row, int u0, int k) {
    const i64 nb = cols >> 5, bi = row * nb + u0 + (k & 1);
    if (k < 2)
      cp16(d + 16 * k, w + bi * 16);
    else
      cp4(d + 32 + 4 * (k - 2), w + rows * nb * 16 + ((bi * 2) & ~(i64)3));
  }
  static __device__ __forceinline__ i64 dblocks(i64 cols) { return cols >> 5; }
  static __device__ __forceinline__ int dblk(int u0) { return u0; }
  static __device__ __forceinline__ void frag(const u8* s, int u, int i, int t, u32* a) {
    const u32 w = *(const u32*)(s + 16 * i + 4 * t);
    a[0] = w & 0x0F0F0F0Fu;
    a[1] = w & 0xF0F0F0F0u;  // 16·q
  }
  static __device__ __forceinline__ F::WS ws(const u8* s, int u, int i, int par) {
    return {h2f((u16)((*(const u32*)(s + 32 + 4 * i) >> (16 * ((par + i) & 1))) & 0xffffu))};
  }
};

// ---- xstage: activation row blockIdx.x staged by mvs_stage (normalized on
// the way when normw is set; xb then gets the normalized row), then written
// out in the GEMM's layout.
struct XStageArgs {
  u64 x, normw, xb, xq;
  i64 cols, npad;
  double eps;
};

template <class F>
__device__ __forceinline__ void xstage_body(const XStageArgs& a) {
  constexpr int Q4 = F::UNIT / 8, RQ = F::RUNLEN / 8, RUNS = F::RUNS;
  extern __shared__ float4 xs4[];
  const i64 n = blockIdx.x, cols = a.cols;
  const int nunits = (int)(cols / F::UNIT), iters = (nunits + 31) >> 5;
  pdl_wait();
  mvs_stage<F>((const float*)a.x + n * cols, (const float*)a.normw, (float)a.eps, a.xb ? (float*)a.xb + n * cols : nullptr, xs4, cols);
  pdl_trigger();
  const uint4* xq4 = (const uint4*)xs4;
  const float4* sxq = (const float4*)(xq4 + (i64)iters * 32 * Q4);
  u8* xq = (u8*)a.xq;
  float4* xsg = (float4*)(xq + (i64)nunits * a.npad * RUNS * 32);
  for (int u = threadIdx.x; u < nunits; u += blockDim.x) {
    const int sl = lane_unit(u & 31);
    u32 o[RUNS * 8];  // [t][run][hi, lo]
#pragma unroll
    for (int run = 0; run < RUNS; run++)
#pragma unroll
      for (int k = 0; k < RQ; k++) {
        const uint4 v = xq4[((u >> 5) * Q4 + run * RQ + k) * 32 + sl];
        o[((2 * k) * RUNS + run) * 2 + 0] = __byte_perm(v.x, v.y, 0x7531);
        o[((2 * k) * RUNS + run) * 2 + 1] = __byte_perm(v.x, v.y, 0x6420);
        o[((2 * k + 1) * RUNS + run) * 2 + 0] = __byte_perm(v.z, v.w, 0x7531);
        o[((2 * k + 1) * RUNS + run) * 2 + 1] = __byte_perm(v.z, v.w, 0x6420);
      }
    uint4* dst = (uint4*)(xq + ((i64)u * a.npad + n) * RUNS * 32);
#pragma unroll
    for (int k = 0; k < RUNS * 2; k++) dst[k] = make_uint4(o[4 * k], o[4 * k + 1], o[4 * k + 2], o[4 * k + 3]);
    xsg[(i64)u * a.npad + n] = sxq[(u & ~31) | sl];
  }
}

// ---- the GEMM
template <class G, bool GU>
__device__ __forceinline__ void gemm_body(const GemmArgs& a) {
  typedef typename G::F F;
  typedef typename F::WS WS;
  constexpr int RUNS = F::RUNS, RB = RUNS * 32, NT = GEMM_NT, TN = GEMM_TN;
  constexpr int WBYTES = GEMM_TO * G::WB, XQB = 2 * TN * RB, STAGE = WBYTES + XQB + 2 * TN * 16;
  extern __shared__ float4 gsm[];
  u8* sm = (u8*)gsm;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const i64 cols = a.cols, N = a.n;
  const int nunits = (int)(cols / F::UNIT), iters = (nunits + 31) >> 5;
  // Grid: x over the 32-row tiles of activations, so that the blocks of
  // one weight tile run side by side and DRAM sees each weight byte about
  // once; y over (weight tile, split).
  const int S = (int)a.nsplit, bt = (int)(blockIdx.y / S), sp = (int)(blockIdx.y % S);
  const int P = 16 / S, j0 = sp * P;  // class pairs j0 .. j0+P-1
  const int nsteps = P * iters;
  const i64 nb = (i64)blockIdx.x * TN;
  const int ntv = (int)min((i64)NT, (N - nb + 7) >> 3);  // MMA tiles with rows in the batch
  const int nvr = ntv * 8;

  // This block's weight rows: block row br (0..127) is row wrow(br) of W(br).
  const u8* W0;
  const u8* W1 = nullptr;
  i64 rows, rb, poff = 0;
  float* Y;
  if (GU) {
    W0 = (const u8*)a.w0;
    W1 = (const u8*)a.w1;
    rows = a.rows0;
    rb = (i64)bt * (GEMM_TO / 2);
    Y = (float*)a.y0;
  } else if (bt >= a.t2) {
    W0 = (const u8*)a.w2;
    rows = a.rows2;
    rb = (i64)(bt - a.t2) * GEMM_TO;
    poff = a.rows0 + a.rows1;
    Y = (float*)a.y2;
  } else if (bt >= a.t1) {
    W0 = (const u8*)a.w1;
    rows = a.rows1;
    rb = (i64)(bt - a.t1) * GEMM_TO;
    poff = a.rows0;
    Y = (float*)a.y1;
  } else {
    W0 = (const u8*)a.w0;
    rows = a.rows0;
    rb = (i64)bt * GEMM_TO;
    Y = (float*)a.y0;
  }
  auto wrow = [&](int br) -> i64 { return min(rb + (GU ? (br & (GEMM_TO / 2 - 1)) : br), rows - 1); };
  auto wptr = [&](int br) -> const u8* { return GU && br >= GEMM_TO / 2 ? W1 : W0; };

  const u8* xqg = (const u8*)a.xq;
  const u8* xsg = xqg + (i64)nunits * a.npad * RB;
  auto step_u0 = [&](int s) { return 32 * (s % iters) + 2 * (j0 + s / iters); };
  // Each thread's copies, the same every step but for the units: weight
  // chunks tid, tid+256, ... (row br, chunk k), x chunks likewise.
  constexpr int NWC = (GEMM_TO * G::NCH + GEMM_WARPS * 32 - 1) / (GEMM_WARPS * 32);
  constexpr int QC = RB / 16;  // 16-byte chunks of a row's staged unit
  constexpr int NXC = (2 * TN * (QC + 1) + GEMM_WARPS * 32 - 1) / (GEMM_WARPS * 32);
  const u8* cw[NWC];
  i64 crow[NWC];
  int ck[NWC], cdst[NWC];
#pragma unroll
  for (int j = 0; j < NWC; j++) {
    const int c = tid + j * GEMM_WARPS * 32, br = c / G::NCH;
    ck[j] = c < GEMM_TO * G::NCH ? c % G::NCH : -1;
    cdst[j] = br * G::WB;
    crow[j] = wrow(min(br, GEMM_TO - 1));
    cw[j] = wptr(min(br, GEMM_TO - 1));
  }
  int xi[NXC], xk[NXC];
  i64 xr[NXC];
#pragma unroll
  for (int j = 0; j < NXC; j++) {
    const int c = tid + j * GEMM_WARPS * 32, i = c / (TN * (QC + 1)), rem = c % (TN * (QC + 1));
    const int r = rem / (QC + 1);
    xi[j] = i;
    xk[j] = c < 2 * TN * (QC + 1) && r < nvr ? rem % (QC + 1) : -1;
    xr[j] = nb + r;
  }
  auto copy_w = [&](int s) {
    u8* st = sm + (s % GEMM_STAGES) * STAGE;
    const int u0 = step_u0(s);
    if (u0 >= nunits) return;
#pragma unroll
    for (int j = 0; j < NWC; j++)
      if (ck[j] >= 0 && G::valid(ck[j], u0, nunits)) G::chunk(st + cdst[j], cw[j], rows, cols, crow[j], u0, ck[j]);
  };
  auto copy_x = [&](int s) {
    u8* st = sm + (s % GEMM_STAGES) * STAGE;
    const int u0 = step_u0(s);
#pragma unroll
    for (int j = 0; j < NXC; j++) {
      const int u = u0 + xi[j], k = xk[j];
      if (k < 0 || u >= nunits) continue;
      const i64 src = (i64)u * a.npad + xr[j];
      const int r = (int)(xr[j] - nb);
      if (k < QC)
        cp16(st + WBYTES + (xi[j] * TN + r) * RB + 16 * k, xqg + src * RB + 16 * k);
      else
        cp16(st + WBYTES + XQB + (xi[j] * TN + r) * 16, xsg + src * 16);
    }
  };

  // The first stages' weights are on their way before the wait (they
  // depend on no earlier kernel); x after it.
  for (int s = 0; s < GEMM_STAGES - 1; s++)
    if (s < nsteps) copy_w(s);
  pdl_wait();
  for (int s = 0; s < GEMM_STAGES - 1; s++) {
    if (s < nsteps) copy_x(s);
    cp_commit();
  }
  pdl_trigger();

  // This thread's weight rows in the stage: 16·warp + g and + 8.
  const int br0 = 16 * warp + g;
  const int rpar0 = (int)((wrow(br0) * G::dblocks(cols)) & 1), rpar1 = (int)((wrow(br0 + 8) * G::dblocks(cols)) & 1);
  float acc[2][NT][4], stk[4][NT][4];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][nt][e] = stk[2 * i][nt][e] = stk[2 * i + 1][nt][e] = 0.f;

  for (int s = 0; s < nsteps; s++) {
    cp_wait<GEMM_STAGES - 2>();
    __syncthreads();
    if (s + GEMM_STAGES - 1 < nsteps) {
      copy_w(s + GEMM_STAGES - 1);
      copy_x(s + GEMM_STAGES - 1);
    }
    cp_commit();

    const u8* st = sm + (s % GEMM_STAGES) * STAGE;
    const int u0 = step_u0(s);
    const u8* r0 = st + br0 * G::WB;
    const u8* r1 = r0 + 8 * G::WB;
    const int par0 = (rpar0 + G::dblk(u0)) & 1, par1 = (rpar1 + G::dblk(u0)) & 1;
    WS ws0, ws1;
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int u = u0 + i;
      if (u >= nunits) break;
      u32 a0[RUNS], a1[RUNS];
      G::frag(r0, u, i, t, a0);
      G::frag(r1, u, i, t, a1);
      if (!G::SHARED_WS || i == 0) {
        ws0 = G::ws(r0, u, i, par0);
        ws1 = G::ws(r1, u, i, par1);
      }
      const u8* xq = st + WBYTES + i * TN * RB;
      const float4* xs = (const float4*)(st + WBYTES + XQB) + i * TN;
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        if (nt >= ntv) break;
        u32 bh[RUNS], bl[RUNS];
        if constexpr (RUNS == 2) {
          const uint4 b = *(const uint4*)(xq + (8 * nt + g) * RB + 16 * t);
          bh[0] = b.x;
          bl[0] = b.y;
          bh[RUNS - 1] = b.z;
          bl[RUNS - 1] = b.w;
        } else {
          const uint2 b = *(const uint2*)(xq + (8 * nt + g) * RB + 8 * t);
          bh[0] = b.x;
          bl[0] = b.y;
        }
        int dh[RUNS][4], dl[RUNS][4];
#pragma unroll
        for (int r = 0; r < RUNS; r++) {
          mma8<G::AS, true>(dh[r], a0[r], a1[r], bh[r]);
          mma8<G::AS, false>(dl[r], a0[r], a1[r], bl[r]);
        }
        const float4 xv[2] = {xs[8 * nt + 2 * t], xs[8 * nt + 2 * t + 1]};
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const float4 q = xv[e & 1];
          const float sx[2] = {q.x, q.y}, xsum[2] = {q.z, q.w};
          const int s0 = dh[0][e] * 256 + dl[0][e];
          const int s1 = RUNS == 2 ? dh[RUNS - 1][e] * 256 + dl[RUNS - 1][e] : 0;
          const float f = F::fin((e >> 1) ? ws1 : ws0, (float)s0, RUNS == 2 ? (float)s1 : 0.f, sx, xsum);
          acc[i][nt][e] = __fadd_rn(acc[i][nt][e], f);
        }
      }
    }

    if ((s + 1) % iters == 0) {
      // Classes 2j and 2j+1 are done: their sum joins the tree.
      const int p = s / iters;
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          // A binary counter: each trailing one bit of p adds the
          // finished subtree of that level; the first zero bit stores.
          // (Selects, not branches, so that stk stays in registers.)
          float v = __fadd_rn(acc[0][nt][e], acc[1][nt][e]);
          acc[0][nt][e] = acc[1][nt][e] = 0.f;
          bool carry = true;
#pragma unroll
          for (int l = 0; l < 4; l++) {
            const bool bit = (p >> l) & 1;
            const float sum = __fadd_rn(stk[l][nt][e], v);
            stk[l][nt][e] = carry && !bit ? v : stk[l][nt][e];
            v = carry && bit ? sum : v;
            carry = carry && bit;
          }
          if (p == P - 1) acc[0][nt][e] = v;  // the whole range: the result
        }
    }
  }
  // acc[0] holds each output's sum over this block's classes.
  const int wr = GU ? 16 * (warp & 3) : 16 * warp;  // the warp's first row in the tile
  if (S > 1) {
    float* part = (float*)a.part;
    const i64 po = GU && warp >= 4 ? a.rows0 : poff;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const i64 n = nb + 8 * nt + 2 * t + (e & 1), row = rb + wr + g + 8 * (e >> 1);
        if (nt < ntv && n < N && row < rows) part[((i64)sp * N + n) * a.ptot + po + row] = acc[0][nt][e];
      }
    return;
  }
  if (GU) {
    // Up warps hand their sums to the gate warps of the same rows.
    cp_wait<0>();
    __syncthreads();
    float* ex = (float*)sm;
    if (warp >= 4)
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) ex[((warp - 4) * 32 + lane) * (NT * 4) + nt * 4 + e] = acc[0][nt][e];
    __syncthreads();
    if (warp >= 4) return;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const i64 n = nb + 8 * nt + 2 * t + (e & 1), row = rb + wr + g + 8 * (e >> 1);
        if (nt < ntv && n < N && row < rows)
          Y[n * rows + row] = silu(acc[0][nt][e]) * ex[(warp * 32 + lane) * (NT * 4) + nt * 4 + e];
      }
    return;
  }
#pragma unroll
  for (int nt = 0; nt < NT; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const i64 n = nb + 8 * nt + 2 * t + (e & 1), row = rb + wr + g + 8 * (e >> 1);
      if (nt < ntv && n < N && row < rows) {
        const float out = acc[0][nt][e];
        Y[n * rows + row] = out;
        if (a.resid) ((float*)a.resid)[n * rows + row] += out;
      }
    }
}

// gemm_fin: the S partials of each output added in the tree's last levels
// (pairwise, natural order), then the epilogue. One thread an output.
template <bool GU>
__device__ __forceinline__ void gemm_fin_body(const GemmArgs& a) {
  const i64 N = a.n, cnt = GU ? a.rows0 : a.ptot;
  const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= N * cnt) return;
  const i64 n = idx / cnt, o = idx % cnt;
  const int S = (int)a.nsplit;
  const float* part = (const float*)a.part;
  auto tree = [&](i64 col) {
    float v[GEMM_MAXSPLIT];
#pragma unroll
    for (int i = 0; i < GEMM_MAXSPLIT; i++)
      if (i < S) v[i] = part[((i64)i * N + n) * a.ptot + col];
#pragma unroll
    for (int w = 1; w < GEMM_MAXSPLIT; w *= 2)
#pragma unroll
      for (int i = 0; i + w < GEMM_MAXSPLIT; i += 2 * w)
        if (i + w < S) v[i] = __fadd_rn(v[i], v[i + w]);
    return v[0];
  };
  if (GU) {
    ((float*)a.y0)[n * a.rows0 + o] = silu(tree(o)) * tree(a.rows0 + o);
    return;
  }
  const float out = tree(o);
  if (o < a.rows0) {
    ((float*)a.y0)[n * a.rows0 + o] = out;
    if (a.resid) ((float*)a.resid)[n * a.rows0 + o] += out;
  } else if (o < a.rows0 + a.rows1) {
    ((float*)a.y1)[n * a.rows1 + o - a.rows0] = out;
  } else {
    ((float*)a.y2)[n * a.rows2 + o - a.rows0 - a.rows1] = out;
  }
}

extern "C" __global__ void __launch_bounds__(256) gemm_fin(const GemmArgs a) {
  pdl_start();
  gemm_fin_body<false>(a);
}
extern "C" __global__ void __launch_bounds__(256) gemm_fin_gu(const GemmArgs a) {
  pdl_start();
  gemm_fin_body<true>(a);
}

#define GEMM_KERNELS(G, F, name)                                                                           \
  extern "C" __global__ void __launch_bounds__(256) xstage_##name(const XStageArgs a) { xstage_body<F>(a); } \
  extern "C" __global__ void __launch_bounds__(GEMM_WARPS * 32, 1) gemm_##name(const GemmArgs a) {           \
    gemm_body<G, false>(a);                                                                                 \
  }                                                                                                         \
  extern "C" __global__ void __launch_bounds__(GEMM_WARPS * 32, 1) gemmgu_##name(const GemmArgs a) {         \
    gemm_body<G, true>(a);                                                                                  \
  }

GEMM_KERNELS(GQ4K, Q4K, q4_k)
GEMM_KERNELS(GQ5K, Q5K, q5_k)
GEMM_KERNELS(GQ6K, Q6K, q6_k)
GEMM_KERNELS(GQ80, Q80, q8_0)
GEMM_KERNELS(GQ40, Q40, q4_0)
