// main.cpp: the CPU check of the many-row GEMM's invariance (run.sh).
// For each quantized format: random weights (GGUF blocks, repacked as
// weights.go does), random activations with outliers; the one-row decode
// kernels (mvs, gus; normalized and with the residual add) give each row's
// reference bits; xstage + gemm/gemmgu (+ gemm_fin) over all rows, with
// splits 1, 2 and 16, must reproduce them bit for bit. The one-row results
// are also compared with a float64 product of the dequantized weights
// (deq_*, NMSE). What this cannot see: speed, cp.async ordering, and the
// hardware's MMA fragment layout (emu.h implements the PTX ISA's).
#include "emu.h"
#include <random>
#include <string>
#include <map>
#include "kern.inc"

static std::mt19937_64 rng(7);
static double nrm() { static std::normal_distribution<double> d; return d(rng); }
static unsigned short f16(float v) { return f2h(v); }

struct Fmt { std::string name; int bs, ts, unit, runs; };
static Fmt fmts[] = {{"q4_k", 256, 144, 32, 2}, {"q5_k", 256, 176, 32, 2}, {"q6_k", 256, 210, 32, 2}, {"q8_0", 32, 34, 16, 1}, {"q4_0", 32, 18, 32, 2}};

// GGUF blocks, then the planes weights.go makes (+16 bytes).
static std::vector<unsigned char> make_weight(const Fmt& f, int cols, int rows) {
  int nb = rows * cols / f.bs;
  std::vector<unsigned char> b((size_t)nb * f.ts);
  for (auto& c : b) c = (unsigned char)rng();
  auto sc = [&](size_t off) { unsigned short h = f16((float)((std::uniform_real_distribution<double>(-1, 1)(rng)) * 0.01)); b[off] = h & 0xff; b[off + 1] = h >> 8; };
  for (int i = 0; i < nb; i++) {
    size_t o = (size_t)i * f.ts;
    if (f.name == "q4_k" || f.name == "q5_k") { sc(o); sc(o + 2); }
    else if (f.name == "q6_k") sc(o + 208);
    else sc(o);
  }
  if (f.name == "q4_k" || f.name == "q5_k") { b.resize(b.size() + 16); return b; }
  int qs = f.name == "q8_0" ? 32 : f.name == "q4_0" ? 16 : 192, scl = f.name == "q6_k" ? 16 : 0;
  std::vector<unsigned char> out(b.size() + 16, 0);
  size_t pB = (size_t)nb * qs, pC = (size_t)nb * (qs + scl);
  for (int i = 0; i < nb; i++) {
    const unsigned char* blk = &b[(size_t)i * f.ts];
    if (f.name == "q6_k") { memcpy(&out[(size_t)i * qs], blk, qs); memcpy(&out[pB + (size_t)i * 16], blk + 192, 16); out[pC + 2 * i] = blk[208]; out[pC + 2 * i + 1] = blk[209]; }
    else { memcpy(&out[(size_t)i * qs], blk + 2, qs); out[pC + 2 * i] = blk[0]; out[pC + 2 * i + 1] = blk[1]; }
  }
  return out;
}

typedef void (*MVK)(const MVArgs);
typedef void (*GK)(const GemmArgs);
typedef void (*XK)(const XStageArgs);
typedef void (*DK)(const DeqArgs);
struct Kern { DK deq; MVK mvs, mvs2, gus; XK xs; GK gemm, gemmgu; int smem_mvs; };
#define KS(F, n) {deq_##n, mvs_##n##_r1u4w8b1, mvs_##n##_r2u2w8b2, gus_##n##_r1u4w8b1, xstage_##n, gemm_##n, gemmgu_##n, 0}
static std::map<std::string, Kern> kerns = {{"q4_k", KS(Q4K, q4_k)}, {"q5_k", KS(Q5K, q5_k)}, {"q6_k", KS(Q6K, q6_k)}, {"q8_0", KS(Q80, q8_0)}, {"q4_0", KS(Q40, q4_0)}};

static int mvs_smem(const Fmt& f, int cols) { int nu = (cols / f.unit + 31) / 32 * 32; return 2 * nu * f.unit + 16 * nu; }
static const int WB[] = {48, 80, 96, 48, 48};
static int errors = 0;
static u64 P(const void* p) { return (u64)(uintptr_t)p; }

int main(int argc, char** argv) {
  for (int fi = 0; fi < 5; fi++) {
    const Fmt& f = fmts[fi];
    if (argc > 1 && f.name != argv[1]) continue;
    Kern& k = kerns[f.name];
    for (int cols : {f.bs == 256 ? 768 : 96, 2048}) {
      const int rows = 300, N = argc > 2 ? atoi(argv[2]) : 40;
      auto wg = make_weight(f, cols, rows), wu = make_weight(f, cols, rows);
      std::vector<float> x((size_t)N * cols), g(cols), resid0((size_t)N * rows);
      for (size_t i = 0; i < x.size(); i++) x[i] = (float)nrm() * (i % 97 == 0 ? 50.f : 1.f);
      for (auto& v : g) v = (float)(1 + 0.2 * nrm());
      for (auto& v : resid0) v = (float)nrm();
      // dequantized weights through the kernel
      std::vector<float> W((size_t)rows * cols);
      int nunits = cols / f.unit;
      DeqArgs da{P(wg.data()), rows, cols, P(W.data()), 0, rows, 0, 0};
      emu_launch({(unsigned)((nunits + 255) / 256), (unsigned)rows, 1}, 256, 0, [&] { k.deq(da); });
      // one row at a time: mvs (plain, r2 variant for q6_k, norm, resid), gus
      int smem = mvs_smem(f, cols);
      std::vector<float> y1((size_t)N * rows), yn1((size_t)N * rows), yr1 = resid0, h1((size_t)N * rows), xb1((size_t)N * cols), yu1((size_t)N * rows);
      for (int n = 0; n < N; n++) {
        auto mv = [&](MVK fn, int R, const unsigned char* w0, const unsigned char* w1, float* y, float* res, const float* nw, float* xb) {
          int groups = (rows + R - 1) / R;
          MVArgs a{P(w0), P(w1), 0, P(y), 0, 0, rows, 0, 0, groups, groups, groups, P(&x[(size_t)n * cols]), P(res), cols, 1, P(nw), P(xb), 1e-5};
          emu_launch({(unsigned)((groups + 7) / 8), 1, 1}, 256, smem, [&] { fn(a); });
        };
        mv(f.name == "q6_k" ? k.mvs2 : k.mvs, f.name == "q6_k" ? 2 : 1, wg.data(), nullptr, &y1[(size_t)n * rows], nullptr, nullptr, nullptr);
        mv(k.mvs, 1, wg.data(), nullptr, &yn1[(size_t)n * rows], nullptr, g.data(), &xb1[(size_t)n * cols]);
        std::vector<float> tmp(rows);
        mv(k.mvs, 1, wg.data(), nullptr, tmp.data(), &yr1[(size_t)n * rows], nullptr, nullptr);
        mv(k.gus, 1, wg.data(), wu.data(), &h1[(size_t)n * rows], nullptr, nullptr, nullptr);
        mv(k.mvs, 1, wu.data(), nullptr, &yu1[(size_t)n * rows], nullptr, nullptr, nullptr);
      }
      // the reference
      double en = 0, ed = 0;
      for (int n = 0; n < N; n++) for (int o = 0; o < rows; o++) {
        double s = 0; for (int c = 0; c < cols; c++) s += (double)W[(size_t)o * cols + c] * x[(size_t)n * cols + c];
        double d = y1[(size_t)n * rows + o] - s; en += d * d; ed += s * s;
      }
      printf("%s %dx%d: mvs NMSE %.3g\n", f.name.c_str(), cols, rows, en / ed);
      // the GEMM
      int npad = (N + 7) / 8 * 8;
      std::vector<unsigned char> xq((size_t)nunits * npad * (32 * f.runs + 16));
      for (int S : {1, 2, 16}) for (int mode = 0; mode < 5; mode++) {  // plain, norm, resid, gateup, three weights
        if (S == 2 && mode != 0) continue;
        bool gu = mode == 3, three = mode == 4;
        std::vector<float> y((size_t)N * rows, NAN), yr = resid0, xb((size_t)N * cols, NAN), yb((size_t)N * rows, NAN), yc((size_t)N * rows, NAN);
        XStageArgs xa{P(x.data()), mode == 1 ? P(g.data()) : 0, mode == 1 ? P(xb.data()) : 0, P(xq.data()), cols, npad, 1e-5};
        emu_launch({(unsigned)N, 1, 1}, 256, smem, [&] { k.xs(xa); });
        int to = gu ? 64 : 128, t1 = (rows + to - 1) / to, ptot = gu ? 2 * rows : three ? 3 * rows : rows;
        std::vector<float> part((size_t)S * N * ptot, NAN);
        GemmArgs ga{P(wg.data()), P(gu || three ? wu.data() : nullptr), P(three ? wg.data() : nullptr), P(y.data()), P(yb.data()), P(yc.data()),
                    rows, three ? rows : 0, three ? rows : 0, t1, three ? 2 * t1 : t1, three ? 3 * t1 : t1, P(xq.data()), mode == 2 ? P(yr.data()) : 0,
                    cols, N, npad, S, P(part.data()), ptot};
        int t3 = three ? 3 * t1 : t1;
        int sm = 4 * (128 * WB[fi] + 2 * 32 * 32 * f.runs + 2 * 32 * 16);
        emu_launch({(unsigned)((N + 31) / 32), (unsigned)(t3 * S), 1}, 256, sm, [&] { gu ? k.gemmgu(ga) : k.gemm(ga); });
        if (S > 1) emu_launch({(unsigned)((N * (gu ? rows : ptot) + 255) / 256), 1, 1}, 256, 0, [&] { gu ? gemm_fin_gu(ga) : gemm_fin(ga); });
        const std::vector<float>& want = mode == 0 || mode == 2 || mode == 4 ? y1 : mode == 1 ? yn1 : h1;
        int bad = 0;
        for (size_t i = 0; i < y.size(); i++) if (__float_as_uint(y[i]) != __float_as_uint(want[i])) { if (bad < 3) printf("  S=%d mode=%d: out %zu (n %zu row %zu) %a vs %a\n", S, mode, i, i / rows, i % rows, y[i], want[i]); bad++; }
        if (three) for (size_t i = 0; i < y.size(); i++) {
          if (__float_as_uint(yb[i]) != __float_as_uint(yu1[i])) { if (bad < 3) printf("  weight 1 out %zu differs\n", i); bad++; }
          if (__float_as_uint(yc[i]) != __float_as_uint(y1[i])) { if (bad < 3) printf("  weight 2 out %zu differs\n", i); bad++; }
        }
        if (mode == 2) for (size_t i = 0; i < yr.size(); i++) if (__float_as_uint(yr[i]) != __float_as_uint(yr1[i])) { if (bad < 3) printf("  resid %zu differs\n", i); bad++; }
        if (mode == 1) for (size_t i = 0; i < xb.size(); i++) if (__float_as_uint(xb[i]) != __float_as_uint(xb1[i])) { if (bad < 3) printf("  xb %zu differs\n", i); bad++; }
        printf("%s %dx%d N=%d S=%d mode=%d: %d of %zu differ\n", f.name.c_str(), cols, rows, N, S, mode, bad, y.size());
        errors += bad > 0;
        fflush(stdout);
      }
    }
  }
  printf("%s\n", errors ? "FAIL" : "ALL BITS EQUAL");
  return errors != 0;
}
