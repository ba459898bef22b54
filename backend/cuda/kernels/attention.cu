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
};

extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention(const AttnArgs a) {
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
