// topk.cpp: the CPU check of the batched top-k kernel (kernels/topk.cu,
// topk.sh). Random rows with heavy ties (a grid of 1/4, four values, all
// equal, signed zeros) and without; one launch over a list of rows asked
// for in any order and more than once, each with its own k (1 to the whole
// row) and gather list. The candidates are ranked as backend/cuda/topk.go
// ranks them and must equal the first k of the row sorted by value, the
// lower column first on ties (ml.TopKHost's order), and the gathered values
// the row's. What this cannot see: speed, and races a real warp scheduler
// would expose (the fibers switch only at barriers).
#include "emu.h"
#include <algorithm>
#include <random>

// The warp intrinsics topk.cu uses beyond emu.h's.
static unsigned emu_uxch[32][32];
inline unsigned __shfl_up_sync(unsigned, unsigned v, int o) {
  int w = emu_cur->warp, l = emu_cur->tid.x & 31;
  emu_bar_wait(emu_warpbar[w]);
  emu_uxch[w][l] = v;
  emu_bar_wait(emu_warpbar[w]);
  unsigned r = l >= o ? emu_uxch[w][l - o] : v;
  emu_bar_wait(emu_warpbar[w]);
  return r;
}
inline unsigned __ballot_sync(unsigned, bool p) {
  int w = emu_cur->warp, l = emu_cur->tid.x & 31;
  emu_bar_wait(emu_warpbar[w]);
  emu_uxch[w][l] = p;
  emu_bar_wait(emu_warpbar[w]);
  unsigned r = 0;
  for (int i = 0; i < 32; i++) r |= emu_uxch[w][i] << i;
  emu_bar_wait(emu_warpbar[w]);
  return r;
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned o = *p; *p += v; return o; }  // fibers never interleave here

#include "topk.inc"

static std::mt19937_64 rng(17);

int main() {
  int errors = 0;
  for (int cols : {1, 17, 1000, 4099, 32000}) {
    for (int kind = 0; kind < 5; kind++) {
      const int rows = 5;
      std::vector<float> x((size_t)rows * cols);
      std::normal_distribution<double> nd;
      for (auto& v : x) {
        switch (kind) {
          case 0: v = (float)(nd(rng) * 3); break;
          case 1: v = (float)(std::round(nd(rng) * 4) / 4); break;
          case 2: v = (float)(rng() % 4) - 1.5f; break;
          case 3: v = -1.5f; break;
          default: v = rng() % 5 == 0 ? (float)nd(rng) : (rng() % 2 ? 0.f : -0.f);
        }
      }
      // The request: n rows, their k and gather lists, laid out as topk.go does.
      const int n = 1 + rng() % 8;
      std::vector<int> row(n), k(n), desc(5 * n);
      std::vector<std::vector<int>> gather(n);
      int e = 0;
      for (int i = 0; i < n; i++) {
        const int ks[] = {1, 2, 40, 1000, cols, 1 + (int)(rng() % cols)};
        row[i] = rng() % rows;
        k[i] = std::min(ks[(i + kind) % 6], cols);
        for (int j = 0, ng = (rng() % 4) * (rng() % 30); j < ng; j++) gather[i].push_back(rng() % cols);
      }
      for (int i = 0; i < n; i++) {
        int* d = &desc[5 * i];
        d[0] = row[i], d[1] = k[i], d[2] = e, d[3] = (int)desc.size(), d[4] = (int)gather[i].size();
        desc.insert(desc.end(), gather[i].begin(), gather[i].end());
        e += k[i] + (int)gather[i].size();
      }
      std::vector<int> out(2 * e, 0x7fc00001);
      TopKArgs a{(u64)(uintptr_t)x.data(), cols, (u64)(uintptr_t)desc.data(), (u64)(uintptr_t)out.data()};
      emu_launch({1, (unsigned)n, 1}, TOPK_THREADS, 0, [&] { topk(a); });
      int bad = 0;
      e = 0;
      for (int i = 0; i < n; i++) {
        const float* xr = &x[(size_t)row[i] * cols];
        auto better = [&](int a, int b) { return xr[a] > xr[b] || (xr[a] == xr[b] && a < b); };
        std::vector<int> want(cols);
        for (int c = 0; c < cols; c++) want[c] = c;
        std::stable_sort(want.begin(), want.end(), better);
        // topk.go: rank the candidates by value, then by their index.
        std::vector<int> idx(k[i]);
        for (int j = 0; j < k[i]; j++) idx[j] = j;
        auto cv = [&](int j) { return __int_as_float(out[2 * (e + j) + 1]); };
        std::stable_sort(idx.begin(), idx.end(), [&](int p, int q) { return cv(p) > cv(q) || (cv(p) == cv(q) && p < q); });
        for (int j = 0; j < k[i]; j++) {
          const int id = out[2 * (e + idx[j])];
          if (id != want[j] || __float_as_uint(cv(idx[j])) != __float_as_uint(xr[want[j]])) {
            if (bad < 3) printf("  cols %d kind %d request %d (row %d, k %d): entry %d is %d, want %d\n", cols, kind, i, row[i], k[i], j, id, want[j]);
            bad++;
          }
        }
        e += k[i];
        for (int g : gather[i]) {
          if (out[2 * e] != g || __float_as_uint(__int_as_float(out[2 * e + 1])) != __float_as_uint(xr[g])) {
            if (bad < 3) printf("  cols %d kind %d request %d: gathered column %d wrong\n", cols, kind, i, g);
            bad++;
          }
          e++;
        }
      }
      printf("cols %d kind %d: %d rows, %d entries, %d wrong\n", cols, kind, n, e, bad);
      fflush(stdout);
      errors += bad > 0;
    }
  }
  printf("%s\n", errors ? "FAIL" : "ALL EQUAL");
  return errors != 0;
}
