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
  u64 kc, vc;  // the layer's cache [ctx][nkv·hd] f16
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
  const u16* kc = (const u16*)a.kc;
  const u16* vc = (const u16*)a.vc;

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
        kv = h2f(kc[o]);
        vv = h2f(vc[o]);
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
// A block takes one KV head and one split of the KV length; each of its
// ATTD_WARPS warps walks positions t = t_begin + warp + ATTD_WARPS·j. Lanes
// hold EPL consecutive values of the head (the K and V rows of a position
// are read as one coalesced line), q for the G heads sits in registers, and
// each warp keeps its own running max, sum and output. The warps are merged
// through shared memory at the end, and the splits by their last block as
// in attention(). Shared memory: ATTD_WARPS·G·(32·EPL + 2) floats.

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

template <int EPL, int G>
__device__ __forceinline__ void attn_dec_body(const AttnArgs& a) {
  // (a.k is set only where EPL is even; see attnDec in lower.go.)
  extern __shared__ float smd[];
  constexpr int HD = 32 * EPL;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kvh = blockIdx.y;
  const i64 split = blockIdx.z;
  const i64 pos0 = ((const int*)a.pos0)[0];
  const i64 kvdim = a.nkv * HD;
  const float scale = (float)a.scale;

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
  if (a.k) {
    // Rope: the lane's pairs (2i, 2i+1), i = lane·EPL/2 + e/2, at pos0.
    static_assert(EPL % 2 == 0, "rope in attn_dec needs whole pairs in a lane");
    float cs[EPL / 2], sn[EPL / 2];
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
    float kn[EPL], vn[EPL];
    const float* kp = (const float*)a.k + (i64)kvh * HD + lane * EPL;
    const float* vp = (const float*)a.v + (i64)kvh * HD + lane * EPL;
#pragma unroll
    for (int e = 0; e < EPL; e += 2) {
      const float c = cs[e / 2], s = sn[e / 2];
#pragma unroll
      for (int g = 0; g < G; g++) {
        const float x0 = q[g][e], x1 = q[g][e + 1];
        q[g][e] = x0 * c - x1 * s;
        q[g][e + 1] = x0 * s + x1 * c;
      }
      const float k0 = kp[e], k1 = kp[e + 1];
      kn[e] = k0 * c - k1 * s;
      kn[e + 1] = k0 * s + k1 * c;
      vn[e] = vp[e];
      vn[e + 1] = vp[e + 1];
    }
    // The block whose split holds pos0 writes the rotated q and k back (the
    // op's results) and stores k and v into the cache, before its warps
    // read the cache.
    if (pos0 / a.split_len == split && warp == 0) {
#pragma unroll
      for (int g = 0; g < G; g++) {
        float* qp = (float*)a.q + (i64)(kvh * G + g) * HD + lane * EPL;
#pragma unroll
        for (int e = 0; e < EPL; e++) qp[e] = q[g][e];
      }
      float* kw = (float*)a.k + (i64)kvh * HD + lane * EPL;
      u16* kcw = (u16*)a.kc + pos0 * kvdim + (i64)kvh * HD + lane * EPL;
      u16* vcw = (u16*)a.vc + pos0 * kvdim + (i64)kvh * HD + lane * EPL;
#pragma unroll
      for (int e = 0; e < EPL; e++) {
        kw[e] = kn[e];
        kcw[e] = f2h(kn[e]);
        vcw[e] = f2h(vn[e]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int g = 0; g < G; g++)
#pragma unroll
    for (int e = 0; e < EPL; e++) q[g][e] *= scale;
  const i64 t_begin = split * a.split_len;
  const i64 t_end = min(min(t_begin + a.split_len, pos0 + 1), a.ctx);
  const u16* kc = (const u16*)a.kc + (i64)kvh * HD + lane * EPL;
  const u16* vc = (const u16*)a.vc + (i64)kvh * HD + lane * EPL;
#pragma unroll 2
  for (i64 t = t_begin + warp; t < t_end; t += ATTD_WARPS) {
    float kf[EPL], vf[EPL];
    ld_halfs<EPL>(kc + t * kvdim, kf);
    ld_halfs<EPL>(vc + t * kvdim, vf);
#pragma unroll
    for (int g = 0; g < G; g++) {
      float s = 0.f;
#pragma unroll
      for (int e = 0; e < EPL; e++) s = fmaf(q[g][e], kf[e], s);
      s = warp_sum(s);
      const float mn = fmaxf(m[g], s);
      const float c = expf(m[g] - mn), p = expf(s - mn);
      l[g] = l[g] * c + p;
#pragma unroll
      for (int e = 0; e < EPL; e++) o[g][e] = fmaf(o[g][e], c, p * vf[e]);
      m[g] = mn;
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
  const bool direct = a.nsplit == 1;
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
  if (direct) return;

  __shared__ int last;
  __threadfence();
  __syncthreads();
  int* cnt = (int*)a.counters + blockIdx.y;
  if (threadIdx.x == 0) last = atomicAdd(cnt, 1) == (int)a.nsplit - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  // Merge the splits: the weight of each (split, head) first, one a thread
  // (reusing sm), then every output sums its splits' values, eight loads in
  // flight at a time.
  const i64 stride = a.nh * (HD + 2);
  const int ns = (int)a.nsplit;
  float* wsm = smd;  // [ns][G] weights, then [G] max and [G] 1/denominator
  for (int i = threadIdx.x; i < ns * G; i += blockDim.x) {
    const int s = i / G, g = i % G;
    wsm[i] = __ldcg((const float*)a.part + s * stride + (i64)(kvh * G + g) * (HD + 2) + HD);
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
      den = fmaf(w, __ldcg((const float*)a.part + s * stride + (i64)(kvh * G + g) * (HD + 2) + HD + 1), den);
    }
    wsm[ns * G + g] = den > 0.f ? 1.f / den : 0.f;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * HD; i += blockDim.x) {
    const int g = i / HD, d = i % HD;
    const int head = kvh * G + g;
    const float* base = (const float*)a.part + (i64)head * (HD + 2) + d;
    float num = 0.f;
#pragma unroll 8
    for (int s = 0; s < ns; s++) num = fmaf(wsm[s * G + g], __ldcg(base + s * stride), num);
    ((float*)a.out)[(i64)head * HD + d] = num * wsm[ns * G + g];
  }
  if (threadIdx.x == 0) *cnt = 0;
}

#define ATTD_KERNEL(EPL, G) \
  extern "C" __global__ void __launch_bounds__(ATTD_WARPS * 32) attn_dec_##EPL##_##G(const AttnArgs a) { \
    pdl_start();                                                                                                \
    attn_dec_body<EPL, G>(a);                                                                                   \
  }
#define ATTD_KERNELS(EPL) ATTD_KERNEL(EPL, 1) ATTD_KERNEL(EPL, 2) ATTD_KERNEL(EPL, 4) ATTD_KERNEL(EPL, 8)
ATTD_KERNELS(2)
ATTD_KERNELS(4)
ATTD_KERNELS(8)
