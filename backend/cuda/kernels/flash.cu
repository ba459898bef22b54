// flash.cu: attention over the f16 KV cache on the tensor cores
// (mma.sync m16n8k16, f16 inputs, f32 accumulation), for head sizes 64 and
// 128 and 1 to 16 query heads a KV head. Two kernels of one family, with
// the same arithmetic for every row, so that a row has the same bits
// whichever computes it (batch invariance across chunkings and prefix-cache
// hits, where a prompt row may be computed by either):
//
//   fa_pre_<HD>: prompt chunks. A block of 4 warps per (tile of a
//     sequence's rows, KV head). The tile's M rows are (position, query
//     head) pairs, m = position index · G + head, 16 rows a warp, 64 a
//     block (64/G positions); every warp walks all key tiles itself.
//   fa_dec_<HD>: one row a sequence (decode). A block of 4 warps per (row,
//     KV head, split z): the G query heads of the row are the M rows of one
//     16-row tile that the four warps share, each warp taking a quarter of
//     the keys in the score product and a quarter of the head dimension in
//     the output product, with the row statistics exchanged through shared
//     memory. Split z takes the row's chunks z·split .. z·split + split - 1.
//
// The arithmetic of a row (what both evaluate, in this order):
//   positions in chunks of ATT_CHUNK = 256 (the scalar kernels' chunks),
//   each in 4 key tiles of FA_BN = 64 at absolute positions;
//   in a tile: s = mma chain over the head dimension of f16(q)·k (16 at a
//     time, in order), s2 = s·scale·log2(e) (rounded), masked to -inf past
//     the row's position; the tile max t (exact in any order), m' = max(m,
//     t), α = 2^(m − m'), p = f16(2^(s2 − m')); the tile's sum of p in four
//     groups of 16 keys (per lane (p0+p1)+(p2+p3), then over the quad of
//     lanes by xor 1, 2), the groups as (g0+g1)+(g2+g3); l = l·α + sum;
//     o = o·α, then the mma chain over the tile's keys of p·v (16 at a
//     time, in order);
//   each chunk starts from (−inf, 0, 0) and gives a partial (m, l, o); the
//   row's chunks are merged in order 0, 1, 2, ... by fa_merge (explicit
//   roundings, base 2), then o / l.
// The mma's output for a row depends only on that row of A; keys a row
// does not see are masked to p = 0 exactly (key tiles past a row's
// position leave its state unchanged: α = 1, sums + 0), and keys past the
// last position of the launch's rows are zeros in shared memory. So a
// row's bits do not depend on the other rows of its tile, on the tile, or
// on the split.

#define FA_BN 64
#define FA_WARPS 4
#define FA_THREADS (FA_WARPS * 32)
#define FA_LOG2E 1.4426950408889634

struct FaArgs {
  u64 q;            // [rows][nh·hd] float, rope applied (unless k is set)
  u64 kc, vc;       // the layer's cache [slots][nkv·hd] f16
  u64 out;          // [rows][nh·hd] float
  u64 part;         // [rows][nh][maxch][hd+2] float: o, m, l of each chunk (fa_dec, more than one split active)
  u64 bat;          // the batch (common.cuh)
  i64 rows, nh, nkv;
  i64 maxch;        // chunks of the largest context the cache holds
  double scale;     // softmax scale
  u64 counters;     // int per (row, KV head), zero between launches (fa_dec)
  u64 k, v;         // fa_dec: [rows][nkv·hd] float, the new k (rotated here) and v, when the rope is folded in
  u64 freqs;        // [npairs] double
  i64 npairs;
  double pos_scale;
  u64 tiles;        // fa_pre: [tiles][2] int: first row, positions
  i64 split;        // fa_dec: chunks a block
  i64 mixed;        // fa_dec: the batch has sequences of several rows (fa_pre's), which it skips
  i64 mode;         // fa_dec: FA_DEC_MERGE4 | FA_DEC_PREFETCH | FA_DEC_FILL (0: the path measured before them); no bits change
  i64 slots;        // fa_dec, FA_DEC_FILL: blocks the GPU runs at once (occupancy · SMs)
};

// fa_dec's variants (FaArgs.mode), none of which changes a bit of the
// result: FA_DEC_MERGE4, the last block merges four elements a thread with
// FA_MC chunks' loads in flight (fa_merge_parts4); FA_DEC_PREFETCH, the
// first two tiles' loads go out before pdl_wait when they lie wholly below
// the row's position (those positions were written by earlier runs: in a
// run, only the row's own position pos is written, by kv_store/rope_kv of
// this layer or by this kernel itself).
#define FA_DEC_MERGE4 1
#define FA_DEC_PREFETCH 2
// FA_DEC_FILL: the chunks a block takes come from the batch's positions
// (every block computes the same value): the smallest split, not below
// a.split, whose blocks fit in one wave of a.slots. Only which block
// computes which chunk depends on it.
#define FA_DEC_FILL 4

#if __CUDA_ARCH__ >= 800

__device__ __forceinline__ u32 smem_u32(const void* p) {
  u64 a;
  asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
  return (u32)a;
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_u32(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Two floats as f16 (each rounded as f2h rounds), lo in the low half.
__device__ __forceinline__ u32 pack_h2(float lo, float hi) {
  u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ float h2_lo(u32 v) { return h2f((u16)(v & 0xffff)); }
__device__ __forceinline__ float h2_hi(u32 v) { return h2f((u16)(v >> 16)); }

// d += a·b, m16n8k16, row-major A (16×16 f16), column-major B (16×8 f16),
// f32 accumulators.
__device__ __forceinline__ void mma16816(float* d, const u32* a, u32 b0, u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8×8 f16 matrices from shared memory, transposed (the B operand of
// p·v from v stored [key][dim]).
__device__ __forceinline__ void ldsm_x4_t(const void* p, u32& r0, u32& r1, u32& r2, u32& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(smem_u32(p))
               : "memory");
}

#endif  // __CUDA_ARCH__ >= 800

// Merges chunk (m, l, o) into the running (M, L, O), base 2.
__device__ __forceinline__ void fa_merge(float& M, float& L, float& O, float m, float l, float o) {
  const float mn = fmaxf(M, m);
  const float ca = exp2f(__fsub_rn(M, mn)), cb = exp2f(__fsub_rn(m, mn));
  L = __fadd_rn(__fmul_rn(L, ca), __fmul_rn(l, cb));
  O = __fadd_rn(__fmul_rn(O, ca), __fmul_rn(o, cb));
  M = mn;
}

// The merge of a row's chunk partials 0..n-1 in order (element d), loads
// eight chunks ahead of their merges.
__device__ __forceinline__ float fa_merge_parts(const float* pp, i64 n, int hd, int d) {
  float M = __ldcg(pp + hd), L = __ldcg(pp + hd + 1), O = __ldcg(pp + d);
  for (i64 c = 1; c < n; c += 8) {
    float mm[8], ll[8], oo[8];
#pragma unroll
    for (int j = 0; j < 8; j++) {
      mm[j] = ll[j] = oo[j] = 0.f;
      if (c + j < n) {
        const float* p = pp + (c + j) * (hd + 2);
        mm[j] = __ldcg(p + hd);
        ll[j] = __ldcg(p + hd + 1);
        oo[j] = __ldcg(p + d);
      }
    }
#pragma unroll
    for (int j = 0; j < 8; j++)
      if (c + j < n) fa_merge(M, L, O, mm[j], ll[j], oo[j]);
  }
  return L > 0.f ? __fdiv_rn(O, L) : 0.f;
}

// The same merge (the same fold, chunk 0 then 1, 2, ... with fa_merge) for
// FA_ME elements at once (pp[k]: the partials of element k's head, d[k] its
// index, ok[k] whether there is one): the loads of FA_MC chunks of every
// element go out before their merges, so that a merge of n chunks waits
// for about n / FA_MC round trips to L2, not n · FA_ME (dbc2eab).
#define FA_ME 4
#define FA_MC 8
__device__ __forceinline__ void fa_merge_parts4(const float* const* pp, const int* d, const bool* ok, i64 n, int hd, float* res) {
  float M[FA_ME], L[FA_ME], O[FA_ME];
#pragma unroll
  for (int k = 0; k < FA_ME; k++) {
    M[k] = L[k] = O[k] = 0.f;
    if (ok[k]) {
      M[k] = __ldcg(pp[k] + hd);
      L[k] = __ldcg(pp[k] + hd + 1);
      O[k] = __ldcg(pp[k] + d[k]);
    }
  }
  for (i64 c = 1; c < n; c += FA_MC) {
    float mm[FA_ME][FA_MC], ll[FA_ME][FA_MC], oo[FA_ME][FA_MC];
#pragma unroll
    for (int k = 0; k < FA_ME; k++)
#pragma unroll
      for (int j = 0; j < FA_MC; j++) {
        mm[k][j] = ll[k][j] = oo[k][j] = 0.f;
        if (ok[k] && c + j < n) {
          const float* p = pp[k] + (c + j) * (hd + 2);
          mm[k][j] = __ldcg(p + hd);
          ll[k][j] = __ldcg(p + hd + 1);
          oo[k][j] = __ldcg(p + d[k]);
        }
      }
#pragma unroll
    for (int k = 0; k < FA_ME; k++)
#pragma unroll
      for (int j = 0; j < FA_MC; j++)
        if (c + j < n) fa_merge(M[k], L[k], O[k], mm[k][j], ll[k][j], oo[k][j]);
  }
#pragma unroll
  for (int k = 0; k < FA_ME; k++) res[k] = L[k] > 0.f ? __fdiv_rn(O[k], L[k]) : 0.f;
}

#if __CUDA_ARCH__ >= 800

// Shared memory row of a key: HD values and 8 of padding (conflict-free
// fragment loads).
#define FA_SR(HD) ((HD) + 8)

// Issues the loads of keys base .. base+63 of KV head kvh into ks, vs:
// positions up to kmax from the cache through the page table (cp.async),
// the others as zeros; position skip (the rope's new key, written by the
// caller) is left alone.
template <int HD>
__device__ __forceinline__ void fa_load(const FaArgs& a, const int* pages, int kvh, i64 base, i64 kmax, i64 skip, u16* ks,
                                        u16* vs) {
  constexpr int CPR = HD / 8;  // 16-byte pieces a key
  const i64 kvdim = a.nkv * HD;
#pragma unroll
  for (int i = 0; i < FA_BN * CPR / FA_THREADS; i++) {
    const int e = threadIdx.x + i * FA_THREADS;
    const int j = e / CPR, c = e % CPR;
    const i64 t = base + j;
    u16* kd = ks + j * FA_SR(HD) + c * 8;
    u16* vd = vs + j * FA_SR(HD) + c * 8;
    if (t == skip) continue;
    if (t <= kmax) {
      const i64 off = kv_slot(pages, t) * kvdim + (i64)kvh * HD + c * 8;
      cp_async16(kd, (const u16*)a.kc + off);
      cp_async16(vd, (const u16*)a.vc + off);
    } else {
      *(uint4*)kd = make_uint4(0, 0, 0, 0);
      *(uint4*)vd = make_uint4(0, 0, 0, 0);
    }
  }
}

// The quad's (4 lanes of a row) max and sum.
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, 1));
  return fmaxf(v, __shfl_xor_sync(FULL_MASK, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v = __fadd_rn(v, __shfl_xor_sync(FULL_MASK, v, 1));
  return __fadd_rn(v, __shfl_xor_sync(FULL_MASK, v, 2));
}

// A lane's sum of the p of one 16-key group of one row: two n-tiles' pairs.
__device__ __forceinline__ float fa_group_sum(u32 pa, u32 pb) {
  return __fadd_rn(__fadd_rn(h2_lo(pa), h2_hi(pa)), __fadd_rn(h2_lo(pb), h2_hi(pb)));
}

// The A fragments of f16(q) for M rows (r0 + 8h: the lane's two rows, q0
// and q1 their query rows, nullptr for none), rotated by the rope (cs, sn
// for pairs below npairs) when rot is set.
template <int HD>
__device__ __forceinline__ void fa_load_q(u32 (*qa)[4], const float* q0, const float* q1, bool rot, const float* cs,
                                          const float* sn, i64 npairs) {
  const int tig = threadIdx.x & 3;
#pragma unroll
  for (int kk = 0; kk < HD / 16; kk++)
#pragma unroll
    for (int h = 0; h < 4; h++) {
      const float* qp = (h & 1) ? q1 : q0;
      const int d = kk * 16 + 2 * tig + (h >> 1) * 8;
      float x0 = 0.f, x1 = 0.f;
      if (qp) {
        const float2 w = *(const float2*)(qp + d);
        x0 = w.x;
        x1 = w.y;
        if (rot && d / 2 < npairs) rope_rot(x0, x1, cs[d / 2], sn[d / 2], x0, x1);
      }
      qa[kk][h] = pack_h2(x0, x1);
    }
}

// ---- fa_pre: prompt tiles.

template <int HD>
__device__ __forceinline__ void fa_pre_body(const FaArgs& a) {
  extern __shared__ __align__(16) u8 fsm[];
  constexpr int SR = FA_SR(HD), KT = HD / 16, NT = HD / 8;
  u16* Ks = (u16*)fsm;                        // [2][FA_BN][SR]
  u16* Vs = Ks + 2 * FA_BN * SR;              // [2][FA_BN][SR]
  float* ROs = (float*)(Vs + 2 * FA_BN * SR);  // [warp][NT·4][32]: the lane's running merged o
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tig = lane & 3;
  const int kvh = blockIdx.y;
  const int G = (int)(a.nh / a.nkv);
  const int* tl = (const int*)a.tiles + 2 * blockIdx.x;
  const i64 r0 = tl[0];
  const int np = tl[1];
  const BatchRow br = batch_row(a.bat, a.rows, 0, r0);
  const i64 P0 = br.pos, P1 = P0 + np - 1;
  const i64 qdim = a.nh * HD;
  // The lane's two M rows (g and g+8 of the warp's 16).
  i64 rpos[2];
  const float* qrow[2];
  float* orow[2];
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int mi = warp * 16 + g + 8 * h, pi = mi / G;
    const i64 head = (i64)kvh * G + mi % G;
    const bool valid = pi < np;
    rpos[h] = P0 + min(pi, np - 1);
    qrow[h] = valid ? (const float*)a.q + (r0 + pi) * qdim + head * HD : nullptr;
    orow[h] = valid ? (float*)a.out + (r0 + pi) * qdim + head * HD : nullptr;
  }
  const bool wact = warp * 16 < np * G;  // the warp has rows
  const i64 Pw = P0 + min(np - 1, (warp * 16 + 15) / G);
  const int T = (int)(P1 / FA_BN) + 1;  // key tiles of the block
  const int Tw = wact ? (int)(Pw / FA_BN) + 1 : 0;  // of the warp (the rest are masked for all its rows)
  const float sl2 = (float)(a.scale * FA_LOG2E);
  pdl_wait();
  pdl_trigger();
  fa_load<HD>(a, br.pages, kvh, 0, P1, -1, Ks, Vs);
  cp_async_commit();
  u32 qa[KT][4];
  fa_load_q<HD>(qa, qrow[0], qrow[1], false, nullptr, nullptr, 0);
  float m[2], l[2], RM[2], RL[2];
  float o[NT][4];
  float* ro = ROs + warp * (NT * 4 * 32) + lane;
  for (int tau = 0; tau < T; tau++) {
    const int st = tau & 1;
    cp_async_wait<0>();
    __syncthreads();  // tile tau is in; every warp is done with tile tau-1
    if (tau + 1 < T) {
      fa_load<HD>(a, br.pages, kvh, (i64)(tau + 1) * FA_BN, P1, -1, Ks + (st ^ 1) * FA_BN * SR, Vs + (st ^ 1) * FA_BN * SR);
      cp_async_commit();
    }
    if (tau >= Tw) continue;
    const u16* ks = Ks + st * FA_BN * SR;
    const u16* vs = Vs + st * FA_BN * SR;
    const i64 base = (i64)tau * FA_BN;
    if (tau % (ATT_CHUNK / FA_BN) == 0) {
#pragma unroll
      for (int h = 0; h < 2; h++) {
        m[h] = NEG_INF;
        l[h] = 0.f;
      }
#pragma unroll
      for (int j = 0; j < NT; j++)
#pragma unroll
        for (int c = 0; c < 4; c++) o[j][c] = 0.f;
    }
    // Scores: 8 n-tiles of 8 keys.
    float s[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int c = 0; c < 4; c++) s[j][c] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KT; kk++)
#pragma unroll
      for (int j = 0; j < 8; j++) {
        const u16* kp = ks + (j * 8 + g) * SR + kk * 16 + 2 * tig;
        mma16816(s[j], qa[kk], *(const u32*)kp, *(const u32*)(kp + 8));
      }
    float mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int c = 0; c < 4; c++) {
        const int h = c >> 1;
        const i64 key = base + j * 8 + 2 * tig + (c & 1);
        const float v = key <= rpos[h] ? __fmul_rn(s[j][c], sl2) : NEG_INF;
        s[j][c] = v;
        mx[h] = fmaxf(mx[h], v);
      }
    float muse[2], alpha[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const float mn = fmaxf(m[h], quad_max(mx[h]));
      muse[h] = mn == NEG_INF ? 0.f : mn;
      alpha[h] = exp2f(__fsub_rn(m[h], muse[h]));
      m[h] = mn;
    }
    u32 pp[8][2];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int h = 0; h < 2; h++)
        pp[j][h] = pack_h2(exp2f(__fsub_rn(s[j][2 * h], muse[h])), exp2f(__fsub_rn(s[j][2 * h + 1], muse[h])));
#pragma unroll
    for (int h = 0; h < 2; h++) {
      float gs[4];
#pragma unroll
      for (int gi = 0; gi < 4; gi++) gs[gi] = quad_sum(fa_group_sum(pp[2 * gi][h], pp[2 * gi + 1][h]));
      const float ts = __fadd_rn(__fadd_rn(gs[0], gs[1]), __fadd_rn(gs[2], gs[3]));
      l[h] = __fadd_rn(__fmul_rn(l[h], alpha[h]), ts);
    }
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int c = 0; c < 4; c++) o[j][c] = __fmul_rn(o[j][c], alpha[c >> 1]);
    // o += p·v: 4 k-steps of 16 keys, the head in pairs of n-tiles.
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      const u32 pa[4] = {pp[2 * kk][0], pp[2 * kk][1], pp[2 * kk + 1][0], pp[2 * kk + 1][1]};
#pragma unroll
      for (int jp = 0; jp < NT / 2; jp++) {
        u32 b0, b1, b2, b3;
        ldsm_x4_t(vs + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * SR + jp * 16 + (lane >> 4) * 8, b0, b1, b2, b3);
        mma16816(o[2 * jp], pa, b0, b1);
        mma16816(o[2 * jp + 1], pa, b2, b3);
      }
    }
    // The end of a chunk: merge it into the rows that reach it.
    if (tau % (ATT_CHUNK / FA_BN) == ATT_CHUNK / FA_BN - 1 || tau == Tw - 1) {
      const i64 ch = tau / (ATT_CHUNK / FA_BN);
      float ca[2], cb[2];
      bool take[2];
#pragma unroll
      for (int h = 0; h < 2; h++) {
        take[h] = rpos[h] >= ch * ATT_CHUNK;
        ca[h] = cb[h] = 0.f;
        if (take[h]) {
          if (ch == 0) {
            RM[h] = m[h];
            RL[h] = l[h];
          } else {
            const float mn = fmaxf(RM[h], m[h]);
            ca[h] = exp2f(__fsub_rn(RM[h], mn));
            cb[h] = exp2f(__fsub_rn(m[h], mn));
            RL[h] = __fadd_rn(__fmul_rn(RL[h], ca[h]), __fmul_rn(l[h], cb[h]));
            RM[h] = mn;
          }
        }
      }
#pragma unroll
      for (int j = 0; j < NT; j++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const int h = c >> 1;
          if (!take[h]) continue;
          float* r = ro + (j * 4 + c) * 32;
          *r = ch == 0 ? o[j][c] : __fadd_rn(__fmul_rn(*r, ca[h]), __fmul_rn(o[j][c], cb[h]));
        }
    }
  }
  if (!wact) return;
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      if (!orow[h]) continue;
      const float L = RL[h];
      float2 w;
      w.x = L > 0.f ? __fdiv_rn(ro[(j * 4 + 2 * h) * 32], L) : 0.f;
      w.y = L > 0.f ? __fdiv_rn(ro[(j * 4 + 2 * h + 1) * 32], L) : 0.f;
      *(float2*)(orow[h] + j * 8 + 2 * tig) = w;
    }
}

// ---- fa_dec: one row a sequence; the block's warps share its M tile.

#define FA_DEC_STAGES 3

// FA_DEC_FILL's split (from the per-run batch description, so it may run
// before pdl_wait): the smallest s in [a.split, maxch] with
// Σ_rows ceil(chunks/s) · nkv ≤ a.slots (maxch if none), by bisection.
// Rows of sequences with several rows (fa_pre's) do not count. Every
// thread returns the same value.
__device__ __forceinline__ i64 fa_dec_split(const FaArgs& a, int nkv) {
  __shared__ int sred[FA_WARPS];
  const int* bat = (const int*)a.bat;
  const int* toff = bat + a.rows;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  i64 lo = max((i64)1, a.split), hi = a.maxch;
  while (lo < hi) {
    const i64 s = (lo + hi) / 2;
    int n = 0;
    for (i64 r = tid; r < a.rows; r += FA_THREADS) {
      if (a.mixed && ((r > 0 && toff[r - 1] == toff[r]) || (r + 1 < a.rows && toff[r + 1] == toff[r]))) continue;
      const i64 ch = (i64)bat[r] / ATT_CHUNK + 1;
      n += (int)((ch + s - 1) / s);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
    __syncthreads();  // sred's previous round is read
    if (lane == 0) sred[warp] = n;
    __syncthreads();
    int tot = 0;
#pragma unroll
    for (int w = 0; w < FA_WARPS; w++) tot += sred[w];
    if ((i64)tot * nkv <= a.slots)
      hi = s;
    else
      lo = s + 1;
  }
  return lo;
}

template <int HD>
__device__ __forceinline__ void fa_dec_body(const FaArgs& a) {
  extern __shared__ __align__(16) u8 fsm[];
  constexpr int SR = FA_SR(HD), KT = HD / 16, DW = HD / FA_WARPS, NTW = DW / 8;
  constexpr int NS = FA_DEC_STAGES, PSR = FA_BN + 8;
  u16* Ks = (u16*)fsm;                   // [NS][FA_BN][SR]
  u16* Vs = Ks + NS * FA_BN * SR;        // [NS][FA_BN][SR]
  u16* Ps = Vs + NS * FA_BN * SR;        // [16][PSR]: p of the tile
  float* rmax = (float*)(Ps + 16 * PSR);  // [warp][16]: group maxima
  float* rsum = rmax + FA_WARPS * 16;    // [warp][16]: group sums
  float* rcs = rsum + FA_WARPS * 16;     // [HD/2]: the rope at the row's position
  float* rsn = rcs + HD / 2;
  __shared__ int last;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tig = lane & 3;
  const i64 row = blockIdx.x;
  const int kvh = blockIdx.y, z = blockIdx.z;
  const int G = (int)(a.nh / a.nkv);
  const int* bat = (const int*)a.bat;
  if (a.mixed) {
    // Rows of sequences with several rows are fa_pre's.
    const int* toff = bat + a.rows;
    if ((row > 0 && toff[row - 1] == toff[row]) || (row + 1 < a.rows && toff[row + 1] == toff[row])) return;
  }
  const BatchRow br = batch_row(a.bat, a.rows, 0, row);
  const i64 pos = br.pos;
  const i64 nchunks = pos / ATT_CHUNK + 1;
  i64 split = a.split;
  if (a.mode & FA_DEC_FILL) split = fa_dec_split(a, (int)a.nkv);
  const i64 active = (nchunks + split - 1) / split;
  if (z >= active) return;
  const i64 c0 = (i64)z * split, c1 = min(nchunks, c0 + split);
  const bool own = a.k && c1 == nchunks;  // this block's chunks hold pos, and the rope is folded in
  const int T = (int)((min(pos, c1 * ATT_CHUNK - 1) - c0 * ATT_CHUNK) / FA_BN) + 1;
  const i64 kvdim = a.nkv * HD, qdim = a.nh * HD;
  const float sl2 = (float)(a.scale * FA_LOG2E);
  if (a.k) {
    for (int i = tid; i < HD / 2; i += FA_THREADS) {
      float c = 1.f, s = 0.f;
      if (i < a.npairs) rope_cs(pos, a.pos_scale, ((const double*)a.freqs)[i], c, s);
      rcs[i] = c;
      rsn[i] = s;
    }
  }
  // The loads of tile t into its stage, with the new key (rotated, rounded
  // as the cache will hold it) from the inputs when this block owns pos.
  auto issue = [&](int t) {
    const i64 base = c0 * ATT_CHUNK + (i64)t * FA_BN;
    u16* ks = Ks + (t % NS) * FA_BN * SR;
    u16* vs = Vs + (t % NS) * FA_BN * SR;
    fa_load<HD>(a, br.pages, kvh, base, pos, own ? pos : -1, ks, vs);
    if (own && pos < base + FA_BN) {
      const int j = (int)(pos - base);
      for (int i = tid; i < HD / 2; i += FA_THREADS) {
        const float* kp = (const float*)a.k + row * kvdim + (i64)kvh * HD + 2 * i;
        const float* vp = (const float*)a.v + row * kvdim + (i64)kvh * HD + 2 * i;
        float x0 = kp[0], x1 = kp[1];
        if (i < a.npairs) rope_rot(x0, x1, rcs[i], rsn[i], x0, x1);
        *(u32*)(ks + j * SR + 2 * i) = pack_h2(x0, x1);
        *(u32*)(vs + j * SR + 2 * i) = pack_h2(vp[0], vp[1]);
      }
    }
    cp_async_commit();
  };
  // Tiles 0 and 1 (in that order: one commit group each), those wholly
  // below pos before the wait when FA_DEC_PREFETCH is set. Such a tile
  // reads only cache positions that earlier runs wrote (no kernel of this
  // run writes them), the page table (uploaded ahead of the run) and, for
  // its stage, no shared memory that rcs/rsn use.
  const int T0 = min(T, 2);
  int pre = 0;
  if (a.mode & FA_DEC_PREFETCH)
    while (pre < T0 && c0 * ATT_CHUNK + (i64)(pre + 1) * FA_BN <= pos) issue(pre++);
  pdl_wait();
  pdl_trigger();
  __syncthreads();  // rcs, rsn
  while (pre < T0) issue(pre++);
  u32 qa[KT][4];
  {
    const float* qb = (const float*)a.q + row * qdim + (i64)kvh * G * HD;
    fa_load_q<HD>(qa, g < G ? qb + g * HD : nullptr, g + 8 < G ? qb + (g + 8) * HD : nullptr, a.k != 0, rcs, rsn, a.npairs);
  }
  float m[2], l[2], RM[2], RL[2];
  float o[NTW][4], RO[NTW][4];
  for (int tau = 0; tau < T; tau++) {
    if (tau + 1 < T)
      cp_async_wait<1>();
    else
      cp_async_wait<0>();
    __syncthreads();  // tile tau is in; every warp is done with tile tau-1 (its stage, Ps, rmax, rsum)
    if (tau + 2 < T) issue(tau + 2);
    const u16* ks = Ks + (tau % NS) * FA_BN * SR;
    const u16* vs = Vs + (tau % NS) * FA_BN * SR;
    const i64 base = c0 * ATT_CHUNK + (i64)tau * FA_BN;
    if (base % ATT_CHUNK == 0) {
#pragma unroll
      for (int h = 0; h < 2; h++) {
        m[h] = NEG_INF;
        l[h] = 0.f;
      }
#pragma unroll
      for (int j = 0; j < NTW; j++)
#pragma unroll
        for (int c = 0; c < 4; c++) o[j][c] = 0.f;
    }
    // Scores of the warp's 16 keys (n-tiles 2w, 2w+1 of the tile).
    float s[2][4];
#pragma unroll
    for (int jj = 0; jj < 2; jj++)
#pragma unroll
      for (int c = 0; c < 4; c++) s[jj][c] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KT; kk++)
#pragma unroll
      for (int jj = 0; jj < 2; jj++) {
        const u16* kp = ks + (warp * 16 + jj * 8 + g) * SR + kk * 16 + 2 * tig;
        mma16816(s[jj], qa[kk], *(const u32*)kp, *(const u32*)(kp + 8));
      }
    float mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
    for (int jj = 0; jj < 2; jj++)
#pragma unroll
      for (int c = 0; c < 4; c++) {
        const i64 key = base + warp * 16 + jj * 8 + 2 * tig + (c & 1);
        const float v = key <= pos ? __fmul_rn(s[jj][c], sl2) : NEG_INF;
        s[jj][c] = v;
        mx[c >> 1] = fmaxf(mx[c >> 1], v);
      }
#pragma unroll
    for (int h = 0; h < 2; h++) {
      mx[h] = quad_max(mx[h]);
      if (tig == 0) rmax[warp * 16 + g + 8 * h] = mx[h];
    }
    __syncthreads();
    float muse[2], alpha[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int r = g + 8 * h;
      const float t = fmaxf(fmaxf(rmax[r], rmax[16 + r]), fmaxf(rmax[32 + r], rmax[48 + r]));
      const float mn = fmaxf(m[h], t);
      muse[h] = mn == NEG_INF ? 0.f : mn;
      alpha[h] = exp2f(__fsub_rn(m[h], muse[h]));
      m[h] = mn;
    }
    u32 pp[2][2];
#pragma unroll
    for (int jj = 0; jj < 2; jj++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        pp[jj][h] = pack_h2(exp2f(__fsub_rn(s[jj][2 * h], muse[h])), exp2f(__fsub_rn(s[jj][2 * h + 1], muse[h])));
        *(u32*)(Ps + (g + 8 * h) * PSR + warp * 16 + jj * 8 + 2 * tig) = pp[jj][h];
      }
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const float gs = quad_sum(fa_group_sum(pp[0][h], pp[1][h]));
      if (tig == 0) rsum[warp * 16 + g + 8 * h] = gs;
    }
    __syncthreads();
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int r = g + 8 * h;
      const float ts = __fadd_rn(__fadd_rn(rsum[r], rsum[16 + r]), __fadd_rn(rsum[32 + r], rsum[48 + r]));
      l[h] = __fadd_rn(__fmul_rn(l[h], alpha[h]), ts);
    }
#pragma unroll
    for (int j = 0; j < NTW; j++)
#pragma unroll
      for (int c = 0; c < 4; c++) o[j][c] = __fmul_rn(o[j][c], alpha[c >> 1]);
    // o += p·v for the warp's DW values of the head.
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      u32 pa[4];
      const u16* pr = Ps + g * PSR + kk * 16 + 2 * tig;
      pa[0] = *(const u32*)pr;
      pa[1] = *(const u32*)(pr + 8 * PSR);
      pa[2] = *(const u32*)(pr + 8);
      pa[3] = *(const u32*)(pr + 8 * PSR + 8);
#pragma unroll
      for (int jp = 0; jp < NTW / 2; jp++) {
        u32 b0, b1, b2, b3;
        ldsm_x4_t(vs + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * SR + warp * DW + jp * 16 + (lane >> 4) * 8, b0, b1, b2,
                  b3);
        mma16816(o[2 * jp], pa, b0, b1);
        mma16816(o[2 * jp + 1], pa, b2, b3);
      }
    }
    if ((base + FA_BN) % ATT_CHUNK == 0 || tau == T - 1) {
      const i64 ch = base / ATT_CHUNK;
      if (active == 1) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
          if (ch == 0) {
            RM[h] = m[h];
            RL[h] = l[h];
#pragma unroll
            for (int j = 0; j < NTW; j++) {
              RO[j][2 * h] = o[j][2 * h];
              RO[j][2 * h + 1] = o[j][2 * h + 1];
            }
          } else {
            const float mn = fmaxf(RM[h], m[h]);
            const float ca = exp2f(__fsub_rn(RM[h], mn)), cb = exp2f(__fsub_rn(m[h], mn));
            RL[h] = __fadd_rn(__fmul_rn(RL[h], ca), __fmul_rn(l[h], cb));
            RM[h] = mn;
#pragma unroll
            for (int j = 0; j < NTW; j++)
#pragma unroll
              for (int e = 0; e < 2; e++)
                RO[j][2 * h + e] = __fadd_rn(__fmul_rn(RO[j][2 * h + e], ca), __fmul_rn(o[j][2 * h + e], cb));
          }
        }
      } else {
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int r = g + 8 * h;
          if (r >= G) continue;
          float* pp = (float*)a.part + ((row * a.nh + (i64)kvh * G + r) * a.maxch + ch) * (HD + 2);
#pragma unroll
          for (int j = 0; j < NTW; j++) {
            float2 w;
            w.x = o[j][2 * h];
            w.y = o[j][2 * h + 1];
            *(float2*)(pp + warp * DW + j * 8 + 2 * tig) = w;
          }
          if (warp == 0 && tig == 0) {
            pp[HD] = m[h];
            pp[HD + 1] = l[h];
          }
        }
      }
    }
  }
  // The new key and value into the cache, rotated k back (the rope's
  // result): no other block of this launch reads position pos.
  if (own) {
    const i64 so = kv_slot(br.pages, pos) * kvdim + (i64)kvh * HD;
    for (int i = tid; i < HD / 2; i += FA_THREADS) {
      float* kp = (float*)a.k + row * kvdim + (i64)kvh * HD + 2 * i;
      const float* vp = (const float*)a.v + row * kvdim + (i64)kvh * HD + 2 * i;
      float x0 = kp[0], x1 = kp[1];
      if (i < a.npairs) {
        rope_rot(x0, x1, rcs[i], rsn[i], x0, x1);
        kp[0] = x0;
        kp[1] = x1;
      }
      *(u32*)((u16*)a.kc + so + 2 * i) = pack_h2(x0, x1);
      *(u32*)((u16*)a.vc + so + 2 * i) = pack_h2(vp[0], vp[1]);
    }
  }
  // Rotated q back, by the block that finishes the output (every block of
  // this row and KV head has read q by then).
  auto write_q = [&]() {
    if (!a.k) return;
    for (int i = tid; i < G * HD / 2; i += FA_THREADS) {
      const int d = (2 * i) % HD;
      if (d / 2 >= a.npairs) continue;
      float* qp = (float*)a.q + row * qdim + (i64)kvh * G * HD + 2 * i;
      float x0 = qp[0], x1 = qp[1];
      rope_rot(x0, x1, rcs[d / 2], rsn[d / 2], x0, x1);
      qp[0] = x0;
      qp[1] = x1;
    }
  };
  if (active == 1) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int r = g + 8 * h;
      if (r >= G) continue;
      float* op = (float*)a.out + row * qdim + ((i64)kvh * G + r) * HD + warp * DW + 2 * tig;
#pragma unroll
      for (int j = 0; j < NTW; j++) {
        float2 w;
        w.x = RL[h] > 0.f ? __fdiv_rn(RO[j][2 * h], RL[h]) : 0.f;
        w.y = RL[h] > 0.f ? __fdiv_rn(RO[j][2 * h + 1], RL[h]) : 0.f;
        *(float2*)(op + j * 8) = w;
      }
    }
    __syncthreads();  // every warp has read q (fa_load_q) before it is written
    write_q();
    return;
  }
  __threadfence();
  __syncthreads();
  int* cnt = (int*)a.counters + row * gridDim.y + kvh;
  if (tid == 0) last = atomicAdd(cnt, 1) == (int)active - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  write_q();
  if (a.mode & FA_DEC_MERGE4) {
    for (int i0 = tid; i0 < G * HD; i0 += FA_ME * FA_THREADS) {
      const float* pp[FA_ME];
      int d[FA_ME];
      bool ok[FA_ME];
      float res[FA_ME];
#pragma unroll
      for (int k = 0; k < FA_ME; k++) {
        const int i = i0 + k * FA_THREADS, r = i / HD;
        ok[k] = i < G * HD;
        d[k] = i % HD;
        pp[k] = (const float*)a.part + (row * a.nh + (i64)kvh * G + r) * a.maxch * (HD + 2);
      }
      fa_merge_parts4(pp, d, ok, nchunks, HD, res);
#pragma unroll
      for (int k = 0; k < FA_ME; k++)
        if (ok[k]) ((float*)a.out)[row * qdim + (i64)kvh * G * HD + i0 + k * FA_THREADS] = res[k];
    }
  } else {
    for (int i = tid; i < G * HD; i += FA_THREADS) {
      const int r = i / HD, d = i % HD;
      const float* pp = (const float*)a.part + (row * a.nh + (i64)kvh * G + r) * a.maxch * (HD + 2);
      ((float*)a.out)[row * qdim + ((i64)kvh * G + r) * HD + d] = fa_merge_parts(pp, nchunks, HD, d);
    }
  }
  if (tid == 0) *cnt = 0;
}

#endif  // __CUDA_ARCH__ >= 800

// The bodies wait for the previous kernel themselves (after the batch and
// the rope's angles). Below sm_80 the kernels are empty and never launched.
#if __CUDA_ARCH__ >= 800
#define FA_KERNELS(HD)                                                                                        \
  extern "C" __global__ void __launch_bounds__(FA_THREADS) fa_pre_##HD(const FaArgs a) { fa_pre_body<HD>(a); } \
  extern "C" __global__ void __launch_bounds__(FA_THREADS) fa_dec_##HD(const FaArgs a) { fa_dec_body<HD>(a); }
#else
#define FA_KERNELS(HD)                                                                           \
  extern "C" __global__ void __launch_bounds__(FA_THREADS) fa_pre_##HD(const FaArgs a) { pdl_start(); } \
  extern "C" __global__ void __launch_bounds__(FA_THREADS) fa_dec_##HD(const FaArgs a) { pdl_start(); }
#endif
FA_KERNELS(64)
FA_KERNELS(128)
