// attention.cu: causal grouped-query attention over the paged KV cache.
//
// Every row is computed the same way whatever else the launch holds, so
// that its bits depend only on its own sequence (batch invariance): a row
// at position p attends over positions 0..p of its sequence, read through
// its page table, in chunks of ATT_CHUNK positions. Each chunk gives a
// partial (max m, sum l, unnormalized output o) computed by a fixed set of
// warps over fixed positions; the chunks are then merged in order 0, 1,
// 2, ... by att_merge, either by the one block that walked them all or,
// when a row's chunks are spread over the blocks of grid.z, by the last of
// them to finish, from the partials in device memory. Both orders are the
// same sequence of operations, so the split of a launch (which depends on
// the batch) never shows in a row's result.
//
// attn_dec: head size 32·EPL (64, 128, 256) and G = 1, 2, 4 or 8 query
// heads a KV head; a block per (row, KV head, z). attn_gen: any other
// shape, a block per (row, query head, z).

#define ATT_CHUNK 256

struct AttnArgs {
  u64 q;       // [rows][nh·hd] float, rope applied (unless k is set)
  u64 kc, vc;  // the layer's cache [slots][nkv·hd] f16 (float with kv32)
  u64 out;     // [rows][nh·hd] float
  u64 part;    // [rows][nh][maxch][hd+2] float: o, m, l of each chunk (gridDim.z > 1)
  u64 bat;     // the batch (common.cuh)
  i64 rows, nseq, nh, nkv, hd;
  i64 maxch;   // chunks of the largest context the cache holds
  double scale;
  u64 counters;  // int per (row, block column), zero between launches (gridDim.z > 1)
  // attn_dec only: rope of q and of the new k, and the store of k and v at
  // the row's position, done here (fused from the op queue) when k is set;
  // only when every sequence has one row in the batch.
  u64 k, v;      // [rows][nkv·hd] float
  u64 freqs;     // [npairs] double
  i64 npairs;
  double pos_scale;
  i64 kv32;      // the cache holds float32, not f16
};

// Merges chunk (m, l, o) into the running (M, L, O): the one merge of every
// path, with explicit roundings.
__device__ __forceinline__ void att_merge(float& M, float& L, float& O, float m, float l, float o) {
  const float mn = fmaxf(M, m);
  const float ca = expf(M - mn), cb = expf(m - mn);
  L = __fadd_rn(__fmul_rn(L, ca), __fmul_rn(l, cb));
  O = __fadd_rn(__fmul_rn(O, ca), __fmul_rn(o, cb));
  M = mn;
}

__device__ __forceinline__ float att_final(float O, float L) { return L > 0.f ? __fdiv_rn(O, L) : 0.f; }

// The merge of a row's chunks 0..nchunks-1 from their partials: element d
// of head, as att_merge over them in order.
__device__ __forceinline__ float att_merge_parts(const float* pp, i64 nchunks, int hd, int d) {
  float M = __ldcg(pp + hd), L = __ldcg(pp + hd + 1), O = __ldcg(pp + d);
  for (i64 c = 1; c < nchunks; c++) {
    const float* p = pp + c * (hd + 2);
    att_merge(M, L, O, __ldcg(p + hd), __ldcg(p + hd + 1), __ldcg(p + d));
  }
  return att_final(O, L);
}

// Lane l's page of a chunk: the pool page of positions t_begin + 16l ..
// t_begin + 16l + 15 (lanes past the row's last page get 0, never used).
__device__ __forceinline__ int chunk_page(const int* pages, i64 t_begin, i64 pos, int lane) {
  return lane < ATT_CHUNK / 16 && t_begin + 16 * lane <= pos ? pages[(t_begin >> 4) + lane] : 0;
}

#define ATTD_WARPS 16

template <int EPL>
__device__ __forceinline__ void ld_halfs(const u16* p, float* f) {
  if constexpr (EPL == 1) {
    f[0] = h2f(p[0]);
  } else if constexpr (EPL == 2) {
    const u32 w = *(const u32*)p;
    f[0] = h2f((u16)(w & 0xffff));
    f[1] = h2f((u16)(w >> 16));
  } else if constexpr (EPL == 4) {
    const uint2 w = *(const uint2*)p;
    f[0] = h2f((u16)(w.x & 0xffff));
    f[1] = h2f((u16)(w.x >> 16));
    f[2] = h2f((u16)(w.y & 0xffff));
    f[3] = h2f((u16)(w.y >> 16));
  } else {
    const uint4 w = *(const uint4*)p;
    const u32 ww[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      f[2 * i] = h2f((u16)(ww[i] & 0xffff));
      f[2 * i + 1] = h2f((u16)(ww[i] >> 16));
    }
  }
}

// One step of warp_sum32_t: lanes exchange half of their O values with the
// lane O away and keep the sums of the other half.
template <int O>
__device__ __forceinline__ void warp_sum_t_step(float* v, int lane) {
  const bool up = lane & O;
#pragma unroll
  for (int i = 0; i < O; i++) {
    const float send = up ? v[i] : v[i + O];
    const float keep = up ? v[i + O] : v[i];
    v[i] = keep + __shfl_xor_sync(FULL_MASK, send, O);
  }
}

// v[0..32) summed over the warp, transposed: afterwards v[0] of lane L is
// the warp's sum of v[L].
__device__ __forceinline__ void warp_sum32_t(float* v, int lane) {
  warp_sum_t_step<16>(v, lane);
  warp_sum_t_step<8>(v, lane);
  warp_sum_t_step<4>(v, lane);
  warp_sum_t_step<2>(v, lane);
  warp_sum_t_step<1>(v, lane);
}

// EPL cache values from element i on: f16, or float32 with kv32.
template <int EPL>
__device__ __forceinline__ void ld_kv(u64 base, i64 i, bool kv32, float* f) {
  if (!kv32) {
    ld_halfs<EPL>((const u16*)base + i, f);
    return;
  }
  const float* p = (const float*)base + i;
  if constexpr (EPL == 1) {
    f[0] = p[0];
  } else if constexpr (EPL == 2) {
    const float2 w = *(const float2*)p;
    f[0] = w.x;
    f[1] = w.y;
  } else {
#pragma unroll
    for (int j = 0; j < EPL; j += 4) {
      const float4 w = *(const float4*)(p + j);
      f[j] = w.x;
      f[j + 1] = w.y;
      f[j + 2] = w.z;
      f[j + 3] = w.w;
    }
  }
}

// ---- attn_dec: a block of ATTD_WARPS warps per (row, KV head, z).
//
// Block z of a row takes its chunks z, z+nz, ... (nz = gridDim.z); in a
// chunk, warp w walks positions t_begin + w + ATTD_WARPS·j. Lanes hold EPL
// consecutive values of the head (the K and V rows of a position are one
// coalesced line), q for the G heads sits in registers, and each warp keeps
// its own running max, sum and output; the warps are merged in order
// through shared memory at the end of each chunk. Shared memory:
// ATTD_WARPS·G·(32·EPL + 2) floats.
//
// With G·P = 32 (G = 4 or 8), a warp scores P positions for its G heads at
// a time: the 32 partial dot products are summed over the warp by a
// transpose-reduce (16+8+4+2+1 shuffles, after which lane L holds score
// L = j·G + g), so the softmax of a round is one exp a lane, not 2·P·G.

template <int EPL, int G>
__device__ __forceinline__ void attn_dec_body(const AttnArgs& a) {
  // (a.k is set only where EPL is even; see attnDec in lower.go.)
  extern __shared__ float smd[];
  constexpr int HD = 32 * EPL;
  constexpr int NT = ATTD_WARPS * 32;
  constexpr int PT = (G * HD + NT - 1) / NT;  // outputs a thread merges
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const i64 row = blockIdx.x;
  const int kvh = blockIdx.y;
  const int z = blockIdx.z, nz = gridDim.z;
  // The batch (uploaded before the run) and the rope's angles depend on
  // no earlier kernel: they are ready before the wait.
  const BatchRow br = batch_row(a.bat, a.rows, a.nseq, row);
  const i64 pos = br.pos;
  const i64 kvdim = a.nkv * HD, qdim = a.nh * HD;
  const float scale = (float)a.scale;
  const i64 nchunks = pos / ATT_CHUNK + 1;
  const i64 active = min((i64)nz, nchunks);
  if (z >= active) return;
  const bool holder = z == (nchunks - 1) % nz;
  int pg = chunk_page(br.pages, (i64)z * ATT_CHUNK, pos, lane);
  constexpr int NP = EPL / 2 > 0 ? EPL / 2 : 1;
  float cs[NP], sn[NP];
  if (a.k) {
    // Rope: the lane's pairs (2i, 2i+1), i = lane·EPL/2 + e/2, at pos.
    static_assert(EPL % 2 == 0, "rope in attn_dec needs whole pairs in a lane");
#pragma unroll
    for (int e = 0; e < EPL / 2; e++) {
      const i64 i = lane * (EPL / 2) + e;
      cs[e] = 1.f;
      sn[e] = 0.f;
      if (i < a.npairs) rope_cs(pos, a.pos_scale, ((const double*)a.freqs)[i], cs[e], sn[e]);
    }
  }
  pdl_wait();
  pdl_trigger();

  float q[G][EPL];
#pragma unroll
  for (int g = 0; g < G; g++) {
    const float* qp = (const float*)a.q + row * qdim + (i64)(kvh * G + g) * HD + lane * EPL;
#pragma unroll
    for (int e = 0; e < EPL; e++) q[g][e] = qp[e];
  }
  // With the rope folded in, every warp of the block that holds pos
  // rotates the new k and keeps k and v of pos in registers, as the cache
  // will hold them (f16 or float), for the warp that scores pos. Warp 0
  // writes rotated k back (the op's result) and stores k and v into the
  // cache at the end; no block of this launch reads the cache at pos
  // (one row a sequence). Rotated q is written back by the block that
  // writes the output, once every block of this row and KV head has read q.
  float kn[EPL], vn[EPL], kr0[EPL];
  const bool own = a.k && holder;
  if (a.k) {
    // Pairs past npairs stay as they are (as rope and rope_kv leave them).
#pragma unroll
    for (int e = 0; e < EPL; e += 2) {
      if (lane * (EPL / 2) + e / 2 >= a.npairs) continue;
#pragma unroll
      for (int g = 0; g < G; g++) rope_rot(q[g][e], q[g][e + 1], cs[e / 2], sn[e / 2], q[g][e], q[g][e + 1]);
    }
    if (own) {
      const float* kp = (const float*)a.k + row * kvdim + (i64)kvh * HD + lane * EPL;
      const float* vp = (const float*)a.v + row * kvdim + (i64)kvh * HD + lane * EPL;
      float kr[EPL];
#pragma unroll
      for (int e = 0; e < EPL; e += 2) {
        kr[e] = kp[e];
        kr[e + 1] = kp[e + 1];
        if (lane * (EPL / 2) + e / 2 < a.npairs) rope_rot(kr[e], kr[e + 1], cs[e / 2], sn[e / 2], kr[e], kr[e + 1]);
        vn[e] = vp[e];
        vn[e + 1] = vp[e + 1];
      }
#pragma unroll
      for (int e = 0; e < EPL; e++) {
        kn[e] = kv_round(kr[e], a.kv32);
        vn[e] = kv_round(vn[e], a.kv32);
        kr0[e] = kr[e];
      }
    }
  }
  float* so = smd;
  float* sml = smd + ATTD_WARPS * G * HD;
  float RM[PT], RL[PT], RO[PT];  // the running merge (nz = 1)
  const bool direct = nchunks == 1;
  for (i64 ch = z; ch < nchunks; ch += nz) {
    const i64 t_begin = ch * ATT_CHUNK;
    const i64 t_end = min(t_begin + ATT_CHUNK, pos + 1);
    // Lane l holds the pool page of the chunk's l-th 16 positions (for the
    // first chunk, loaded before the wait).
    if (ch != z) pg = chunk_page(br.pages, t_begin, pos, lane);
    // K and V of position t (warp-uniform): from registers at pos when
    // this block rotated it, otherwise from the cache.
    auto kv_at = [&](i64 t, float* kf, float* vf) {
      const i64 slot = (i64)__shfl_sync(FULL_MASK, pg, (int)((t - t_begin) >> 4)) * 16 + (t & 15);
      if (own && t == pos) {
#pragma unroll
        for (int e = 0; e < EPL; e++) {
          kf[e] = kn[e];
          vf[e] = vn[e];
        }
      } else {
        ld_kv<EPL>(a.kc, (i64)kvh * HD + lane * EPL + slot * kvdim, a.kv32, kf);
        ld_kv<EPL>(a.vc, (i64)kvh * HD + lane * EPL + slot * kvdim, a.kv32, vf);
      }
    };
    float o[G][EPL], m[G], l[G];
#pragma unroll
    for (int g = 0; g < G; g++) {
#pragma unroll
      for (int e = 0; e < EPL; e++) o[g][e] = 0.f;
      m[g] = NEG_INF;
      l[g] = 0.f;
    }
    constexpr bool T32 = G == 4 || G == 8;
    if constexpr (T32) {
      constexpr int P = 32 / G;
      const int myj = lane / G;  // lane L scores position j = L/G for head L%G
      float mr = NEG_INF, lr = 0.f;  // running max and sum of head L%G
      for (i64 t0 = t_begin + warp; t0 < t_end; t0 += P * ATTD_WARPS) {
        float kf[P][EPL], vf[P][EPL], sc[32];
#pragma unroll
        for (int j = 0; j < P; j++) {
          const i64 t = t0 + j * ATTD_WARPS;
          if (t < t_end) {
            kv_at(t, kf[j], vf[j]);
          } else {
#pragma unroll
            for (int e = 0; e < EPL; e++) kf[j][e] = vf[j][e] = 0.f;
          }
        }
#pragma unroll
        for (int j = 0; j < P; j++)
#pragma unroll
          for (int g = 0; g < G; g++) {
            float s = 0.f;
#pragma unroll
            for (int e = 0; e < EPL; e++) s = fmaf(q[g][e], kf[j][e], s);
            sc[j * G + g] = s;
          }
        warp_sum32_t(sc, lane);
        const bool valid = t0 + myj * ATTD_WARPS < t_end;
        const float s = valid ? sc[0] * scale : NEG_INF;
        float mx = s;
#pragma unroll
        for (int off = G; off < 32; off <<= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, off));
        const float mn = fmaxf(mr, mx);  // finite: position t0 is valid
        const float c = expf(mr - mn);
        const float p = valid ? expf(s - mn) : 0.f;
        float ps = p;
#pragma unroll
        for (int off = G; off < 32; off <<= 1) ps += __shfl_xor_sync(FULL_MASK, ps, off);
        lr = lr * c + ps;
        mr = mn;
#pragma unroll
        for (int g = 0; g < G; g++) {
          const float cg = __shfl_sync(FULL_MASK, c, g);
#pragma unroll
          for (int e = 0; e < EPL; e++) o[g][e] *= cg;
        }
#pragma unroll
        for (int j = 0; j < P; j++)
#pragma unroll
          for (int g = 0; g < G; g++) {
            const float pj = __shfl_sync(FULL_MASK, p, j * G + g);
#pragma unroll
            for (int e = 0; e < EPL; e++) o[g][e] = fmaf(pj, vf[j][e], o[g][e]);
          }
      }
#pragma unroll
      for (int g = 0; g < G; g++) {
        m[g] = __shfl_sync(FULL_MASK, mr, g);
        l[g] = __shfl_sync(FULL_MASK, lr, g);
      }
    } else {
      // A warp scores P positions' keys and values loaded before the first
      // is used, one head and position at a time.
      constexpr int P = EPL * G <= 16 ? 8 : (EPL * G <= 32 ? 4 : 2);
      for (i64 t0 = t_begin + warp; t0 < t_end; t0 += P * ATTD_WARPS) {
        float kf[P][EPL], vf[P][EPL];
#pragma unroll
        for (int j = 0; j < P; j++) {
          const i64 t = t0 + j * ATTD_WARPS;
          if (t < t_end) kv_at(t, kf[j], vf[j]);
        }
#pragma unroll
        for (int j = 0; j < P; j++) {
          if (t0 + j * ATTD_WARPS >= t_end) break;
#pragma unroll
          for (int g = 0; g < G; g++) {
            float s = 0.f;
#pragma unroll
            for (int e = 0; e < EPL; e++) s = fmaf(q[g][e], kf[j][e], s);
            s = warp_sum(s) * scale;
            const float mn = fmaxf(m[g], s);
            const float c = expf(m[g] - mn), p = expf(s - mn);
            l[g] = l[g] * c + p;
#pragma unroll
            for (int e = 0; e < EPL; e++) o[g][e] = fmaf(o[g][e], c, p * vf[j][e]);
            m[g] = mn;
          }
        }
      }
    }

    // Merge the warps in order: sm holds [warp][g][HD] outputs, then
    // [warp][g] max, sum.
    if (ch != z) __syncthreads();  // the previous chunk's merge has read sm
#pragma unroll
    for (int g = 0; g < G; g++) {
#pragma unroll
      for (int e = 0; e < EPL; e++) so[(warp * G + g) * HD + lane * EPL + e] = o[g][e];
      if (lane == 0) {
        sml[2 * (warp * G + g)] = m[g];
        sml[2 * (warp * G + g) + 1] = l[g];
      }
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < PT; k++) {
      const int i = threadIdx.x + k * NT;
      if (i >= G * HD) break;
      const int g = i / HD, d = i % HD;
      float mx = NEG_INF;
#pragma unroll
      for (int w = 0; w < ATTD_WARPS; w++) mx = fmaxf(mx, sml[2 * (w * G + g)]);
      float num = 0.f, den = 0.f;
#pragma unroll
      for (int w = 0; w < ATTD_WARPS; w++) {
        const float ms = sml[2 * (w * G + g)];
        const float c = ms == NEG_INF ? 0.f : expf(ms - mx);
        num = fmaf(c, so[(w * G + g) * HD + d], num);
        den = fmaf(c, sml[2 * (w * G + g) + 1], den);
      }
      const int head = kvh * G + g;
      if (nz == 1) {
        if (ch == 0) {
          RM[k] = mx;
          RL[k] = den;
          RO[k] = num;
        } else {
          att_merge(RM[k], RL[k], RO[k], mx, den, num);
        }
      } else if (direct) {
        ((float*)a.out)[row * qdim + (i64)head * HD + d] = att_final(num, den);
      } else {
        float* pp = (float*)a.part + ((row * a.nh + head) * a.maxch + ch) * (HD + 2);
        pp[d] = num;
        if (d == 0) {
          pp[HD] = mx;
          pp[HD + 1] = den;
        }
      }
    }
  }
  if (own && warp == 0) {
    float* kw = (float*)a.k + row * kvdim + (i64)kvh * HD + lane * EPL;
    const i64 o = kv_slot(br.pages, pos) * kvdim + (i64)kvh * HD + lane * EPL;
#pragma unroll
    for (int e = 0; e < EPL; e++) {
      kw[e] = kr0[e];
      kv_put(a.kc, o + e, kn[e], a.kv32);
      kv_put(a.vc, o + e, vn[e], a.kv32);
    }
  }
  // Rotated q back (the rope's result), by the block that finishes the
  // output: every block of this row and KV head has read q by then.
  auto write_q = [&]() {
    if (a.k && warp == 0) {
#pragma unroll
      for (int g = 0; g < G; g++) {
        float* qp = (float*)a.q + row * qdim + (i64)(kvh * G + g) * HD + lane * EPL;
#pragma unroll
        for (int e = 0; e < EPL; e++) qp[e] = q[g][e];
      }
    }
  };
  if (nz == 1) {
#pragma unroll
    for (int k = 0; k < PT; k++) {
      const int i = threadIdx.x + k * NT;
      if (i >= G * HD) break;
      const int g = i / HD, d = i % HD;
      ((float*)a.out)[row * qdim + (i64)(kvh * G + g) * HD + d] = att_final(RO[k], RL[k]);
    }
    write_q();
    return;
  }
  if (direct) {
    write_q();
    return;
  }
  __shared__ int last;
  __threadfence();
  __syncthreads();
  int* cnt = (int*)a.counters + row * gridDim.y + blockIdx.y;
  if (threadIdx.x == 0) last = atomicAdd(cnt, 1) == (int)active - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  write_q();
  for (int i = threadIdx.x; i < G * HD; i += NT) {
    const int g = i / HD, d = i % HD;
    const int head = kvh * G + g;
    const float* pp = (const float*)a.part + (row * a.nh + head) * a.maxch * (HD + 2);
    ((float*)a.out)[row * qdim + (i64)head * HD + d] = att_merge_parts(pp, nchunks, HD, d);
  }
  if (threadIdx.x == 0) *cnt = 0;
}

// attn_dec_body waits for the previous kernel itself (after the rope angles).
#define ATTD_KERNEL(EPL, G)                                                                            \
  extern "C" __global__ void __launch_bounds__(ATTD_WARPS * 32) attn_dec_##EPL##_##G(const AttnArgs a) { \
    attn_dec_body<EPL, G>(a);                                                                           \
  }
#define ATTD_KERNELS(EPL) ATTD_KERNEL(EPL, 1) ATTD_KERNEL(EPL, 2) ATTD_KERNEL(EPL, 4) ATTD_KERNEL(EPL, 8)
ATTD_KERNELS(2)
ATTD_KERNELS(4)
ATTD_KERNELS(8)

// ---- attn_gen: any head size up to 256 and any grouping; a block of
// ATTG_WARPS warps per (row, query head, z), reading the cache only (the
// KV store is an earlier launch). The same chunks and merges as attn_dec:
// warp w walks positions t_begin + w + ATTG_WARPS·j of a chunk, lanes hold
// values lane + 32·e of the head.

#define ATTG_WARPS 8
#define ATTG_NE 8  // values a lane, at most (head size 256)

extern "C" __global__ void __launch_bounds__(ATTG_WARPS * 32) attn_gen(const AttnArgs a) {
  __shared__ float so[ATTG_WARPS][256];
  __shared__ float sml[ATTG_WARPS][2];
  __shared__ int last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int hd = (int)a.hd;
  const i64 row = blockIdx.x;
  const int head = blockIdx.y;
  const int z = blockIdx.z, nz = gridDim.z;
  const int G = (int)(a.nh / a.nkv), kvh = head / G;
  const BatchRow br = batch_row(a.bat, a.rows, a.nseq, row);
  const i64 pos = br.pos;
  const i64 kvdim = a.nkv * hd, qdim = a.nh * hd;
  const float scale = (float)a.scale;
  const i64 nchunks = pos / ATT_CHUNK + 1;
  const i64 active = min((i64)nz, nchunks);
  if (z >= active) return;
  int pg = chunk_page(br.pages, (i64)z * ATT_CHUNK, pos, lane);
  pdl_wait();
  pdl_trigger();
  float q[ATTG_NE];
#pragma unroll
  for (int e = 0; e < ATTG_NE; e++) {
    const int d = lane + 32 * e;
    q[e] = d < hd ? ((const float*)a.q)[row * qdim + (i64)head * hd + d] : 0.f;
  }
  const bool direct = nchunks == 1;
  float RM = 0.f, RL = 0.f, RO = 0.f;
  for (i64 ch = z; ch < nchunks; ch += nz) {
    const i64 t_begin = ch * ATT_CHUNK;
    const i64 t_end = min(t_begin + ATT_CHUNK, pos + 1);
    if (ch != z) pg = chunk_page(br.pages, t_begin, pos, lane);
    float o[ATTG_NE], m = NEG_INF, l = 0.f;
#pragma unroll
    for (int e = 0; e < ATTG_NE; e++) o[e] = 0.f;
    for (i64 t = t_begin + warp; t < t_end; t += ATTG_WARPS) {
      const i64 slot = (i64)__shfl_sync(FULL_MASK, pg, (int)((t - t_begin) >> 4)) * 16 + (t & 15);
      const i64 base = slot * kvdim + (i64)kvh * hd;
      float kf[ATTG_NE], vf[ATTG_NE];
#pragma unroll
      for (int e = 0; e < ATTG_NE; e++) {
        const int d = lane + 32 * e;
        kf[e] = d < hd ? kv_get(a.kc, base + d, a.kv32) : 0.f;
        vf[e] = d < hd ? kv_get(a.vc, base + d, a.kv32) : 0.f;
      }
      float s = 0.f;
#pragma unroll
      for (int e = 0; e < ATTG_NE; e++) s = fmaf(q[e], kf[e], s);
      s = warp_sum(s) * scale;
      const float mn = fmaxf(m, s);
      const float c = expf(m - mn), p = expf(s - mn);
      l = l * c + p;
#pragma unroll
      for (int e = 0; e < ATTG_NE; e++) o[e] = fmaf(o[e], c, p * vf[e]);
      m = mn;
    }
    if (ch != z) __syncthreads();  // the previous chunk's merge has read so
#pragma unroll
    for (int e = 0; e < ATTG_NE; e++) {
      const int d = lane + 32 * e;
      if (d < hd) so[warp][d] = o[e];
    }
    if (lane == 0) {
      sml[warp][0] = m;
      sml[warp][1] = l;
    }
    __syncthreads();
    const int d = threadIdx.x;
    if (d < hd) {
      float mx = NEG_INF;
#pragma unroll
      for (int w = 0; w < ATTG_WARPS; w++) mx = fmaxf(mx, sml[w][0]);
      float num = 0.f, den = 0.f;
#pragma unroll
      for (int w = 0; w < ATTG_WARPS; w++) {
        const float ms = sml[w][0];
        const float c = ms == NEG_INF ? 0.f : expf(ms - mx);
        num = fmaf(c, so[w][d], num);
        den = fmaf(c, sml[w][1], den);
      }
      if (nz == 1) {
        if (ch == 0) {
          RM = mx;
          RL = den;
          RO = num;
        } else {
          att_merge(RM, RL, RO, mx, den, num);
        }
      } else if (direct) {
        ((float*)a.out)[row * qdim + (i64)head * hd + d] = att_final(num, den);
      } else {
        float* pp = (float*)a.part + ((row * a.nh + head) * a.maxch + ch) * (hd + 2);
        pp[d] = num;
        if (d == 0) {
          pp[hd] = mx;
          pp[hd + 1] = den;
        }
      }
    }
  }
  if (nz == 1) {
    if (threadIdx.x < hd) ((float*)a.out)[row * qdim + (i64)head * hd + threadIdx.x] = att_final(RO, RL);
    return;
  }
  if (direct) return;
  __threadfence();
  __syncthreads();
  int* cnt = (int*)a.counters + row * gridDim.y + blockIdx.y;
  if (threadIdx.x == 0) last = atomicAdd(cnt, 1) == (int)active - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  if (threadIdx.x < hd) {
    const float* pp = (const float*)a.part + (row * a.nh + head) * a.maxch * (hd + 2);
    ((float*)a.out)[row * qdim + (i64)head * hd + threadIdx.x] = att_merge_parts(pp, nchunks, hd, threadIdx.x);
  }
  if (threadIdx.x == 0) *cnt = 0;
}
