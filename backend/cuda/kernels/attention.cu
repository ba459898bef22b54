// attention.cu: causal grouped-query attention over the f16 KV cache.
//
// One kernel serves prefill and decode, in the manner of flash attention: a
// block takes br query rows × gb query heads that share one KV head (nq =
// br·gb queries, gb dividing the group size), walks KV tiles of ATT_TK
// positions through shared memory, and keeps a running max, sum and output
// per query (online softmax), so scores never go to device memory.
//
// Decode has one query row; it splits the KV length instead (flash-
// decoding): grid.z = nsplit blocks each take split_len positions and write
// an unnormalized partial output with its max and sum. Splits past the current length find nothing to do and write an
// empty partial; the last block of each column to finish merges them. The
// split count depends on the context size only, never on the position, so a
// captured decode graph stays valid as pos grows.
//
// Shared memory (floats): Q [nq][hd+1], O [nq][hd], K [TK][hd+1], V [TK][hd],
// S [nq][TK+1], and max, sum, rescale [nq] each; attnSmem in kernels.go
// computes the same.

#define ATT_THREADS 256
#define ATT_TK 32

struct AttnArgs {
  u64 q;       // [rows][nh·hd] float, rope applied
  u64 kc, vc;  // the layer's cache [ctx][nkv·hd] f16 (float with kv32)
  u64 out;     // [rows][nh·hd] float (nsplit = 1)
  u64 part;    // [nsplit][rows][nh][hd+2] float: O, max, sum (nsplit > 1)
  u64 pos0;    // int32: position of query row 0
  i64 rows, nh, nkv, hd, ctx;
  i64 nsplit, split_len;
  i64 gb, br;
  double scale;
  u64 counters;  // int per (x, y) block column, zero between launches (nsplit > 1)
  // attn_dec only: rope of q and of the new k, and the store of k and v at
  // pos0 into the cache, done here (fused from the op queue) when k is set.
  u64 k, v;      // [1][nkv·hd] float
  u64 freqs;     // [npairs] double
  i64 npairs;
  double pos_scale;
  i64 kv32;      // the cache holds float32, not f16
};

extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention(const AttnArgs a) {
  pdl_start();
  extern __shared__ float sm[];
  const int hd = (int)a.hd, gb = (int)a.gb, br = (int)a.br;
  const int nq = gb * br;
  const int G = (int)(a.nh / a.nkv);
  const int groups = G / gb;  // blocks per KV head along y
  const int kvh = blockIdx.y / groups;
  const int h0 = kvh * G + (blockIdx.y % groups) * gb;
  const i64 r0 = (i64)blockIdx.x * br;
  const i64 split = blockIdx.z;
  const i64 pos0 = ((const int*)a.pos0)[0];
  const i64 rlast = min(r0 + br, a.rows) - 1;
  const i64 kvdim = a.nkv * hd, qdim = a.nh * hd;
  const bool kv32 = a.kv32;

  float* Qs = sm;
  float* Os = Qs + nq * (hd + 1);
  float* Ks = Os + nq * hd;
  float* Vs = Ks + ATT_TK * (hd + 1);
  float* S = Vs + ATT_TK * hd;
  float* M = S + nq * (ATT_TK + 1);
  float* L = M + nq;
  float* A = L + nq;

  const float scale = (float)a.scale;
  for (int i = threadIdx.x; i < nq * hd; i += ATT_THREADS) {
    const int iq = i / hd, d = i % hd;
    const i64 row = r0 + iq / gb;
    const int head = h0 + iq % gb;
    float v = 0.f;
    if (row < a.rows) v = ((const float*)a.q)[row * qdim + (i64)head * hd + d] * scale;
    Qs[iq * (hd + 1) + d] = v;
    Os[iq * hd + d] = 0.f;
  }
  for (int i = threadIdx.x; i < nq; i += ATT_THREADS) {
    M[i] = NEG_INF;
    L[i] = 0.f;
    A[i] = 1.f;
  }

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const i64 t_begin = split * a.split_len;
  const i64 t_end = min(min(t_begin + a.split_len, pos0 + rlast + 1), a.ctx);
  for (i64 t0 = t_begin; t0 < t_end; t0 += ATT_TK) {
    __syncthreads();
    for (int i = threadIdx.x; i < ATT_TK * hd; i += ATT_THREADS) {
      const int t = i / hd, d = i % hd;
      const i64 tt = t0 + t;
      float kv = 0.f, vv = 0.f;
      if (tt < t_end) {
        const i64 o = tt * kvdim + (i64)kvh * hd + d;
        kv = kv_get(a.kc, o, kv32);
        vv = kv_get(a.vc, o, kv32);
      }
      Ks[t * (hd + 1) + d] = kv;
      Vs[t * hd + d] = vv;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nq * ATT_TK; i += ATT_THREADS) {
      const int iq = i / ATT_TK, t = i % ATT_TK;
      const i64 row = r0 + iq / gb, tt = t0 + t;
      float s = NEG_INF;
      if (row < a.rows && tt < t_end && tt <= pos0 + row) {
        const float* qp = Qs + iq * (hd + 1);
        const float* kp = Ks + t * (hd + 1);
        float acc = 0.f;
        for (int d = 0; d < hd; d++) acc = fmaf(qp[d], kp[d], acc);
        s = acc;
      }
      S[iq * (ATT_TK + 1) + t] = s;
    }
    __syncthreads();
    for (int iq = warp; iq < nq; iq += ATT_THREADS / 32) {
      const float s = S[iq * (ATT_TK + 1) + lane];
      const float mold = M[iq];
      const float mnew = fmaxf(mold, warp_max(s));
      float p = 0.f, alpha = 1.f;
      if (mnew != NEG_INF) {
        p = expf(s - mnew);
        alpha = expf(mold - mnew);
      }
      const float ps = warp_sum(p);
      S[iq * (ATT_TK + 1) + lane] = p;
      if (lane == 0) {
        M[iq] = mnew;
        L[iq] = L[iq] * alpha + ps;
        A[iq] = alpha;
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nq * hd; i += ATT_THREADS) {
      const int iq = i / hd, d = i % hd;
      const float* pp = S + iq * (ATT_TK + 1);
      float o = Os[iq * hd + d] * A[iq];
#pragma unroll 8
      for (int t = 0; t < ATT_TK; t++) o = fmaf(pp[t], Vs[t * hd + d], o);
      Os[iq * hd + d] = o;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < nq * hd; i += ATT_THREADS) {
    const int iq = i / hd, d = i % hd;
    const i64 row = r0 + iq / gb;
    const int head = h0 + iq % gb;
    if (row >= a.rows) continue;
    if (a.nsplit == 1) {
      const float l = L[iq];
      ((float*)a.out)[row * qdim + (i64)head * hd + d] = l > 0.f ? Os[iq * hd + d] / l : 0.f;
    } else {
      float* pp = (float*)a.part + ((split * a.rows + row) * a.nh + head) * (hd + 2);
      pp[d] = Os[iq * hd + d];
      if (d == 0) {
        pp[hd] = M[iq];
        pp[hd + 1] = L[iq];
      }
    }
  }
  if (a.nsplit == 1) return;

  // The last split block of this (x, y) column to finish merges all the
  // splits' partials (threadFenceReduction): no combine launch.
  __shared__ int last;
  __threadfence();
  __syncthreads();
  int* cnt = (int*)a.counters + blockIdx.x * gridDim.y + blockIdx.y;
  if (threadIdx.x == 0) {
    const int ticket = atomicAdd(cnt, 1);
    last = ticket == (int)a.nsplit - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  const i64 stride = a.rows * a.nh * (hd + 2);
  for (int i = threadIdx.x; i < nq * hd; i += ATT_THREADS) {
    const int iq = i / hd, d = i % hd;
    const i64 row = r0 + iq / gb;
    const int head = h0 + iq % gb;
    if (row >= a.rows) continue;
    const float* base = (const float*)a.part + (row * a.nh + head) * (hd + 2);
    float m = NEG_INF;
    for (i64 s = 0; s < a.nsplit; s++) m = fmaxf(m, __ldcg(base + s * stride + hd));
    float num = 0.f, den = 0.f;
    for (i64 s = 0; s < a.nsplit; s++) {
      const float ms = __ldcg(base + s * stride + hd);
      if (ms == NEG_INF) continue;
      const float w = expf(ms - m);
      num = fmaf(w, __ldcg(base + s * stride + d), num);
      den = fmaf(w, __ldcg(base + s * stride + hd + 1), den);
    }
    ((float*)a.out)[row * qdim + (i64)head * hd + d] = den > 0.f ? num / den : 0.f;
  }
  if (threadIdx.x == 0) *cnt = 0;
}

// ---- decode: one query row, head size 32·EPL, G query heads a KV head.
//
// A block takes one KV head and every nsplit-th chunk of split_len
// positions; each of its ATTD_WARPS warps walks a chunk's positions
// t = t_begin + warp + ATTD_WARPS·j. Lanes
// hold EPL consecutive values of the head (the K and V rows of a position
// are read as one coalesced line), q for the G heads sits in registers, and
// each warp keeps its own running max, sum and output. The warps are merged
// through shared memory at the end, and the splits by their last block as
// in attention(). Shared memory: ATTD_WARPS·G·(32·EPL + 2) floats.
//
// Only the blocks that have chunks up to pos0 run (the rest return at
// once), and with one of them the block writes the output directly: the
// plan depends on the context size alone, so graphs stay valid, while a
// short context costs one block a KV head and no merge, and a long one
// spreads over up to nsplit blocks a KV head.
//
// With G·P = 32 (G = 4 or 8), a warp scores P positions for its G heads at
// a time: the 32 partial dot products are summed over the warp by a
// transpose-reduce (16+8+4+2+1 shuffles, after which lane L holds score
// L = j·G + g), so the softmax of a round is one exp a lane, not 2·P·G.

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

template <int EPL, int G>
__device__ __forceinline__ void attn_dec_body(const AttnArgs& a) {
  // (a.k is set only where EPL is even; see attnDec in lower.go.)
  extern __shared__ float smd[];
  constexpr int HD = 32 * EPL;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kvh = blockIdx.y;
  const i64 split = blockIdx.z;
  // The position (uploaded before the run) and the rope's angles depend on
  // no earlier kernel: they are ready before the wait.
  const i64 pos0 = ((const int*)a.pos0)[0];
  const i64 kvdim = a.nkv * HD;
  const float scale = (float)a.scale;
  // Positions come in chunks of split_len; block z of a KV head takes
  // chunks z, z+nsplit, ... up to the one holding pos0 (the holder).
  const i64 nchunks = pos0 / a.split_len + 1;
  const i64 active = min(a.nsplit, nchunks);
  if (split >= active) return;
  const bool holder = split == (nchunks - 1) % a.nsplit;
  constexpr int NP = EPL / 2 > 0 ? EPL / 2 : 1;
  float cs[NP], sn[NP];
  if (a.k) {
    // Rope: the lane's pairs (2i, 2i+1), i = lane·EPL/2 + e/2, at pos0.
    static_assert(EPL % 2 == 0, "rope in attn_dec needs whole pairs in a lane");
#pragma unroll
    for (int e = 0; e < EPL / 2; e++) {
      const i64 i = lane * (EPL / 2) + e;
      cs[e] = 1.f;
      sn[e] = 0.f;
      if (i < a.npairs) {
        double s, c;
        sincos((double)pos0 * a.pos_scale * ((const double*)a.freqs)[i], &s, &c);
        cs[e] = (float)c;
        sn[e] = (float)s;
      }
    }
  }
  pdl_wait();
  pdl_trigger();

  float q[G][EPL], o[G][EPL], m[G], l[G];
#pragma unroll
  for (int g = 0; g < G; g++) {
    const float* qp = (const float*)a.q + (i64)(kvh * G + g) * HD + lane * EPL;
#pragma unroll
    for (int e = 0; e < EPL; e++) {
      q[g][e] = qp[e];
      o[g][e] = 0.f;
    }
    m[g] = NEG_INF;
    l[g] = 0.f;
  }
  // With the rope folded in, every warp of the block that holds pos0
  // rotates the new k and keeps k and v of pos0 in registers, as the cache
  // will hold them (f16 or float), for the warp that scores pos0. Once all its warps
  // have read k (the barrier before the merge), warp 0 writes rotated k
  // back (the op's result) and stores k and v into the cache, which no
  // block of this launch reads at pos0. Rotated q is written back at the
  // end by the block that writes the output, once every block of this KV
  // head has read q.
  float kn[EPL], vn[EPL], kr0[EPL];
  const bool own = a.k && holder;
  if (a.k) {
#pragma unroll
    for (int e = 0; e < EPL; e += 2) {
      const float c = cs[e / 2], s = sn[e / 2];
#pragma unroll
      for (int g = 0; g < G; g++) {
        const float x0 = q[g][e], x1 = q[g][e + 1];
        q[g][e] = x0 * c - x1 * s;
        q[g][e + 1] = x0 * s + x1 * c;
      }
    }
    if (own) {
      const float* kp = (const float*)a.k + (i64)kvh * HD + lane * EPL;
      const float* vp = (const float*)a.v + (i64)kvh * HD + lane * EPL;
      float kr[EPL];
#pragma unroll
      for (int e = 0; e < EPL; e += 2) {
        const float c = cs[e / 2], s = sn[e / 2];
        const float k0 = kp[e], k1 = kp[e + 1];
        kr[e] = k0 * c - k1 * s;
        kr[e + 1] = k0 * s + k1 * c;
        vn[e] = vp[e];
        vn[e + 1] = vp[e + 1];
      }
#pragma unroll
      for (int e = 0; e < EPL; e++) {
        kn[e] = kv_round(kr[e], a.kv32);
        vn[e] = kv_round(vn[e], a.kv32);
      }
      if (warp == 0) {
#pragma unroll
        for (int e = 0; e < EPL; e++) kr0[e] = kr[e];
      }
    }
  }
  // K and V of position t: from registers at pos0 when this block rotated
  // it, otherwise from the cache.
  auto kv_at = [&](i64 t, float* kf, float* vf) {
    if (own && t == pos0) {
#pragma unroll
      for (int e = 0; e < EPL; e++) {
        kf[e] = kn[e];
        vf[e] = vn[e];
      }
    } else {
      ld_kv<EPL>(a.kc, (i64)kvh * HD + lane * EPL + t * kvdim, a.kv32, kf);
      ld_kv<EPL>(a.vc, (i64)kvh * HD + lane * EPL + t * kvdim, a.kv32, vf);
    }
  };
  constexpr bool T32 = G == 4 || G == 8;
  if constexpr (T32) {
    constexpr int P = 32 / G;
    const int myj = lane / G;  // lane L scores position j = L/G for head L%G
    float mr = NEG_INF, lr = 0.f;  // running max and sum of head L%G
    for (i64 ch = split; ch < nchunks; ch += a.nsplit) {
      const i64 t_begin = ch * a.split_len;
      const i64 t_end = min(min(t_begin + a.split_len, pos0 + 1), a.ctx);
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
    for (i64 ch = split; ch < nchunks; ch += a.nsplit) {
      const i64 t_begin = ch * a.split_len;
      const i64 t_end = min(min(t_begin + a.split_len, pos0 + 1), a.ctx);
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
  }

  // Merge the warps: sm holds [warp][g][HD] outputs, then [warp][g] max, sum.
  float* so = smd;
  float* sml = smd + ATTD_WARPS * G * HD;
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
  if (own && warp == 0) {
    float* kw = (float*)a.k + (i64)kvh * HD + lane * EPL;
    const i64 o = pos0 * kvdim + (i64)kvh * HD + lane * EPL;
#pragma unroll
    for (int e = 0; e < EPL; e++) {
      kw[e] = kr0[e];
      kv_put(a.kc, o + e, kn[e], a.kv32);
      kv_put(a.vc, o + e, vn[e], a.kv32);
    }
  }
  const bool direct = active == 1;
  for (int i = threadIdx.x; i < G * HD; i += blockDim.x) {
    const int g = i / HD, d = i % HD;
    float mx = NEG_INF;
#pragma unroll
    for (int w = 0; w < ATTD_WARPS; w++) mx = fmaxf(mx, sml[2 * (w * G + g)]);
    float num = 0.f, den = 0.f;
    if (mx != NEG_INF) {
#pragma unroll
      for (int w = 0; w < ATTD_WARPS; w++) {
        const float c = expf(sml[2 * (w * G + g)] - mx);
        num = fmaf(c, so[(w * G + g) * HD + d], num);
        den = fmaf(c, sml[2 * (w * G + g) + 1], den);
      }
    }
    const int head = kvh * G + g;
    if (direct) {
      ((float*)a.out)[(i64)head * HD + d] = den > 0.f ? num / den : 0.f;
    } else {
      float* pp = (float*)a.part + (split * a.nh + head) * (HD + 2);
      pp[d] = num;
      if (d == 0) {
        pp[HD] = mx;
        pp[HD + 1] = den;
      }
    }
  }
  // Rotated q back (the rope's result), by the block that finishes the
  // output: every block of this KV head has read q by then.
  auto write_q = [&]() {
    if (a.k && warp == 0) {
#pragma unroll
      for (int g = 0; g < G; g++) {
        float* qp = (float*)a.q + (i64)(kvh * G + g) * HD + lane * EPL;
#pragma unroll
        for (int e = 0; e < EPL; e++) qp[e] = q[g][e];
      }
    }
  };
  if (direct) {
    write_q();
    return;
  }

  __shared__ int last;
  __threadfence();
  __syncthreads();
  int* cnt = (int*)a.counters + blockIdx.y;
  if (threadIdx.x == 0) last = atomicAdd(cnt, 1) == (int)active - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  write_q();
  // Merge the splits: the weight of each (split, head) first, then every
  // output sums its splits' values, sixteen loads in flight at a time.
  const i64 stride = a.nh * (HD + 2);
  const int ns = (int)active;
  // [ns][G] weights, then [G] 1/denominator, then [ns][G] sums; the
  // splits' max and sum are loaded by all threads at once.
  float* wsm = smd;
  float* dsm = smd + (ns + 1) * G;
  for (int i = threadIdx.x; i < ns * G; i += blockDim.x) {
    const int s = i / G, g = i % G;
    const float* pp = (const float*)a.part + s * stride + (i64)(kvh * G + g) * (HD + 2) + HD;
    wsm[i] = __ldcg(pp);
    dsm[i] = __ldcg(pp + 1);
  }
  __syncthreads();
  if (threadIdx.x < G) {
    const int g = threadIdx.x;
    float mx = NEG_INF;
    for (int s = 0; s < ns; s++) mx = fmaxf(mx, wsm[s * G + g]);
    float den = 0.f;
    for (int s = 0; s < ns; s++) {
      const float ms = wsm[s * G + g];
      const float w = ms == NEG_INF ? 0.f : expf(ms - mx);
      wsm[s * G + g] = w;
      den = fmaf(w, dsm[s * G + g], den);
    }
    wsm[ns * G + g] = den > 0.f ? 1.f / den : 0.f;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * HD; i += blockDim.x) {
    const int g = i / HD, d = i % HD;
    const int head = kvh * G + g;
    const float* base = (const float*)a.part + (i64)head * (HD + 2) + d;
    float num = 0.f;
#pragma unroll 16
    for (int s = 0; s < ns; s++) num = fmaf(wsm[s * G + g], __ldcg(base + s * stride), num);
    ((float*)a.out)[(i64)head * HD + d] = num * wsm[ns * G + g];
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
